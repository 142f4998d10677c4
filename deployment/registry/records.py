"""The registry's own copies of bundles, and the record kept about each (no database here).

    from deployment.registry.records import store_bundle, build_record, copy_problem
    path = store_bundle("models/books/bundle", version, store=Path("models/registry"), data_dir=...)

A registered model lives in `<store>/<version>/`: `bundle/` (a copy of the bundle folder, whose content hash is
the version), `data/` (dataset.csv, labels.json, report.json of the prepared data it was trained on, so `compare`
still knows which rows each model trained on after the prepared folder is re-prepared in place) and
`record.json` (the record, as stored in the database). The folder is built under a hidden staging name, its
bundle's hash checked against the version, its files fsynced, and only then renamed into place
(deployment.files.replace_dir): a crash leaves either no folder or a complete one, never half of one. The
database row is written after the rename; a crash in between leaves a complete folder no row names yet, which
the next registration of that bundle reuses after checking its hash.

Where the registry keeps copies: `--store DIR`, else $MLTC_REGISTRY_DIR, else models/registry. The database
records each copy's absolute path, so servers need only the database URL.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import config
from deployment.files import replace_dir
from deployment.predictor import read_bundle_info
from deployment.scoring import BundleError
from deployment.version import bundle_files, bundle_version

STORE_ENV = "MLTC_REGISTRY_DIR"
DEFAULT_STORE = config.MODELS_DIR / "registry"
DATA_FILES = ("dataset.csv", "labels.json", "report.json")   # what compare needs of the prepared data
RECORD_VERSION = 1


class RecordError(RuntimeError):
    """A bundle or its copy cannot be registered or used; the message says what is wrong."""


def resolve_store(store: str | Path | None) -> Path:
    return Path(store or os.environ.get(STORE_ENV, "").strip() or DEFAULT_STORE).expanduser().resolve()


def _resolve(path: str | None, *bases: Path) -> Path | None:
    """A path a stage recorded (absolute, or relative to where it ran: tried against `bases` and the repo root)."""
    if not path:
        return None
    p = Path(path).expanduser()
    candidates = [p] if p.is_absolute() else [*(b / p for b in bases), Path.cwd() / p, config.ROOT / p]
    return next((c.resolve() for c in candidates if c.exists()), None)


def model_dir_of(bundle_dir: Path) -> Path | None:
    """The trained-model folder a bundle was made from: eval.json's `model_dir`, else the bundle's parent when it
    holds a settings.json (compression writes models/<name>/bundle)."""
    try:
        recorded = json.loads((bundle_dir / "eval.json").read_text(encoding="utf-8")).get("model_dir")
    except (OSError, ValueError, AttributeError):
        recorded = None
    found = _resolve(recorded, bundle_dir.parent)
    if found is not None and (found / "settings.json").is_file():
        return found
    return bundle_dir.parent if (bundle_dir.parent / "settings.json").is_file() else None


def data_dir_of(bundle_dir: Path, info: dict, model_dir: Path | None) -> Path | None:
    """The prepared data folder the model was trained on: bundle.json's `source_dataset` (training's --data)."""
    found = _resolve(info.get("source_dataset"), *([model_dir] if model_dir else []), bundle_dir)
    return found if found is not None and (found / "dataset.csv").is_file() else None


def _read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _split_counts(dataset: Path) -> dict[str, int]:
    from deployment.registry.compare import read_dataset   # the registry's one dataset.csv reader

    counts: dict[str, int] = {}
    for row in read_dataset(dataset):
        counts[row.split] = counts.get(row.split, 0) + 1
    return counts


def build_record(bundle_dir: Path, info: dict, data_dir: Path | None, model_dir: Path | None) -> dict:
    """What the registry keeps about a model: how the bundle was made, its training settings and metrics, the
    data it was trained on (a manifest: file hash, rows per split, the input's hash) and the corrections in it."""
    settings = _read_json(model_dir / "settings.json") if model_dir else None
    metrics = _read_json(model_dir / "metrics.json") if model_dir else None
    data = corrections = None
    if data_dir is not None:
        report = _read_json(data_dir / "report.json") or {}
        steps = {s.get("step"): s for s in report.get("steps", []) if isinstance(s, dict)}
        data = {"source": str(data_dir), "dataset_sha256": _file_sha256(data_dir / "dataset.csv"),
                "rows": _split_counts(data_dir / "dataset.csv"), "name": report.get("name"),
                "input": {k: (report.get("input") or {}).get(k) for k in ("path", "sha256")},
                "prepared": report.get("created_at"), "stable_split": (steps.get("split") or {}).get("stable")}
        if "corrections" in steps:
            corrections = {k: v for k, v in steps["corrections"].items()
                           if k not in ("step", "rows_before", "rows_after", "labels_before", "labels_after")}
    model = (metrics or {}).get("model") if isinstance((metrics or {}).get("model"), dict) else {}
    return {
        "format_version": RECORD_VERSION,
        "bundle": {"created": info.get("created"), "command": info.get("command"), "backbone": info.get("backbone"),
                   "labels": len(info.get("labels", [])), "max_length": info.get("max_length"),
                   "quantization": (info.get("quantization") or {}).get("method"),
                   "served_metrics": (info.get("metrics") or {}).get("served")
                   if isinstance(info.get("metrics"), dict) else None},
        "model_dir": str(model_dir) if model_dir else None,
        "settings": settings,
        "metrics": {k: model.get(k) for k in ("micro_f1", "macro_f1", "samples_f1") if k in model} or None,
        "data": data,
        "corrections": corrections,
    }


def _fsync_tree(root: Path) -> None:
    """Flush every file and folder of `root` to disk, so the rename that publishes it cannot outrun its content."""
    for path in sorted(root.rglob("*"), reverse=True):
        flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
        fd = os.open(path, flags)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def copy_problem(copy: Path, version: str) -> str | None:
    """Why the registry's copy cannot be served (missing, files changed since it was registered), or None."""
    if not (copy / "bundle.json").is_file():
        return f"{copy}: the registry's copy is missing or incomplete (no bundle.json)"
    actual = bundle_version(copy)
    if actual != version:
        return (f"{copy}: the registry's copy changed since it was registered (its content hash is now "
                f"{actual[:12]}, not {version[:12]}): a file was edited, truncated or removed")
    return None


def store_bundle(bundle_dir: Path, version: str, store: Path, data_dir: Path | None, record: dict) -> Path:
    """Copy the bundle (and its prepared data) into `<store>/<version>/`; returns the copy's bundle folder.
    A complete copy already there (a registration that crashed before its row was written) is reused."""
    target = store / version
    if copy_problem(target / "bundle", version) is None:
        return target / "bundle"
    store.mkdir(parents=True, exist_ok=True)
    with replace_dir(target, owned_by="record.json", what="registry copy") as tmp:
        for path in bundle_files(bundle_dir):   # the files the version covers (no hidden leftovers)
            dest = tmp / "bundle" / path.relative_to(bundle_dir)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)
        if data_dir is not None:
            (tmp / "data").mkdir()
            for name in DATA_FILES:
                if (data_dir / name).is_file():
                    shutil.copy2(data_dir / name, tmp / "data" / name)
        (tmp / "record.json").write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        problem = copy_problem(tmp / "bundle", version)
        if problem:   # the source changed while it was copied
            raise RecordError(f"{bundle_dir} changed while it was being copied into the registry; try again "
                              f"({problem})")
        _fsync_tree(tmp)
    return target / "bundle"


def read_info(bundle_dir: Path) -> dict:
    """bundle.json, checked (BundleError names what is wrong)."""
    if not bundle_dir.is_dir():
        raise BundleError(f"{bundle_dir}: not a bundle folder (build one with `python -m compression.quantize`)")
    return read_bundle_info(bundle_dir / "bundle.json")


def data_of(copy: Path) -> Path | None:
    """The prepared data stored beside a registry copy (None when the model was registered without it)."""
    folder = copy.parent / "data"
    return folder if (folder / "dataset.csv").is_file() else None
