"""deployment.version.bundle_version: a bundle's content hash, the model version every answer and correction names.
One test over the ways a folder can change: a copy elsewhere keeps the version, any change to what the predictor
could read changes it, leftovers of an interrupted write (hidden names) do not."""
from __future__ import annotations

import shutil

from deployment.version import bundle_files, bundle_version, short_version


def test_the_version_follows_the_bundles_content_not_its_place(tiny_bundle, tmp_path):
    base = bundle_version(tiny_bundle)
    copy = tmp_path / "elsewhere" / "bundle"
    shutil.copytree(tiny_bundle, copy)
    assert bundle_version(copy) == base and len(base) == 64 and short_version(base) == base[:12]
    seen = {base}
    changes = {
        "one byte of bundle.json": lambda d: (d / "bundle.json").write_bytes((d / "bundle.json").read_bytes() + b" "),
        "a file renamed": lambda d: (d / "eval.json").rename(d / "eval2.json"),
        "a file added": lambda d: (d / "notes.txt").write_text("x"),
        "a file removed": lambda d: (d / "README.md").unlink(),
        "a file in a subfolder": lambda d: ((d / "extra").mkdir(), (d / "extra" / "x.bin").write_bytes(b"\0")),
    }
    for what, change in changes.items():
        variant = tmp_path / what.replace(" ", "_")
        shutil.copytree(tiny_bundle, variant)
        change(variant)
        version = bundle_version(variant)
        assert version not in seen, what
        seen.add(version)
    hidden = tmp_path / "hidden"
    shutil.copytree(tiny_bundle, hidden)
    (hidden / ".model.onnx.partial-123").write_bytes(b"half a file")
    assert bundle_version(hidden) == base
    assert [p.name for p in bundle_files(hidden)] == sorted(p.name for p in bundle_files(tiny_bundle))
