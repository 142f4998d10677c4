"""The model registry through its command (`python -m deployment.registry`), on real int8 bundles, on SQLite and on
a real PostgreSQL server: promote (compared first, refused when worse unless forced, and the force recorded),
rollback as a stack, the history, list; a corrupt or incomplete bundle refused with the reason and the served model
untouched; a crash between writing a bundle's copy and recording it (a child process killed at that point) leaves
the registry on a complete model, and the next promote finishes the job.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from tests.feedback_helpers import fresh_db, migrated
from tests.registry_helpers import blind_copy, bundle_version, registry

from deployment.predictor import Predictor
from deployment.registry.live import LiveModel
from deployment.registry.records import copy_problem
from feedback.db import make_engine

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bundles(tiny_bundle, tmp_path_factory) -> dict[str, Path]:
    """a: the session's tiny bundle; b: another seed (same labels); blind: a with every threshold at 1.0."""
    from tests.tiny_bundle import TINY_LABELS, make_tiny_bundle

    root = tmp_path_factory.mktemp("registry-bundles")
    return {"a": tiny_bundle, "b": make_tiny_bundle(root / "b", TINY_LABELS, seed=1),
            "blind": blind_copy(tiny_bundle, root / "blind")}


def current(url: str) -> str | None:
    from deployment.registry.state import read_pointer
    from feedback.db import reading

    engine = make_engine(url)
    try:
        with reading(engine) as conn:
            pointer = read_pointer(conn)
    finally:
        engine.dispose()
    return pointer and pointer.version


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_promote_compares_refuses_worse_unless_forced_and_rollback_walks_back(kind, bundles, tmp_path, request,
                                                                              capsys):
    url = fresh_db(kind, tmp_path, request)
    opts = ["--db", url, "--store", tmp_path / "store", "--by", "tester"]
    a, b, blind = (bundle_version(bundles[k]) for k in ("a", "b", "blind"))

    assert registry(capsys, "list", *opts)[0] == 0
    code, out, _ = registry(capsys, "promote", bundles["a"], *opts, "--switch-in", 0)
    assert code == 0 and f"promoted {a}" in out and "the first model promoted" in out
    assert registry(capsys, "promote", bundles["a"], *opts)[1].startswith("nothing to do")

    # compare: both models on the held-out rows of both data sets, intervals, per label, changed decisions
    code, out, _ = registry(capsys, "compare", bundles["b"], *opts, "--json", "--bootstrap", 200,
                            "--out", tmp_path / "cmp.json")
    report = json.loads(out)
    assert code == 0 and report == json.loads((tmp_path / "cmp.json").read_text())
    assert (report["candidate"], report["incumbent"]) == (b, a)
    assert report["rows"]["excluded_seen"] == 0 and report["rows"]["rows"] == report["slices"]["all"]["rows"] > 0
    whole = report["slices"]["all"]
    for who in ("candidate", "incumbent", "delta"):
        lo, hi = whole[who]["micro_f1_ci"]
        assert lo <= whole[who]["micro_f1"] <= hi
    assert whole["delta"]["micro_f1"] == pytest.approx(whole["candidate"]["micro_f1"] - whole["incumbent"]["micro_f1"],
                                                       abs=2e-4)
    assert set(whole["per_label"]) == set(Predictor.from_bundle(bundles["a"]).labels)

    # a candidate that predicts nothing is worse: refused, nothing changes; --force promotes it and says so
    code, _, err = registry(capsys, "promote", bundles["blind"], *opts)
    assert code == 3 and "worse than the incumbent" in err and "--force" in err
    assert current(url) == a
    code, out, _ = registry(capsys, "promote", bundles["blind"], *opts, "--force", "--reason", "a test")
    assert code == 0 and "FORCED" in out and current(url) == blind
    assert registry(capsys, "promote", bundles["b"], *opts)[0] == 0 and current(url) == b

    # rollback: one step back each time, then nothing left
    assert registry(capsys, "rollback", *opts)[0] == 0 and current(url) == blind
    assert registry(capsys, "rollback", *opts)[0] == 0 and current(url) == a
    code, _, err = registry(capsys, "rollback", *opts)
    assert code == 2 and "nothing to roll back to" in err and current(url) == a

    history = json.loads(registry(capsys, "history", *opts, "--json")[1])
    assert [(e["action"], e["version"], e["previous_version"], e["forced"]) for e in history] == [
        ("promote", a, None, False), ("promote", blind, a, True), ("promote", b, blind, False),
        ("rollback", blind, b, False), ("rollback", a, blind, False)]
    assert {e["actor"] for e in history} == {"tester"} and history[1]["reason"] == "a test"
    assert history[1]["comparison"]["slices"]["all"]["delta"]["micro_f1"] < -0.01
    listed = json.loads(registry(capsys, "list", *opts, "--json")[1])
    assert listed["current"] == a and {v["version"] for v in listed["versions"]} == {a, b, blind}
    record = next(v for v in listed["versions"] if v["version"] == a)["record"]
    assert record["data"]["rows"] == {"train": 20, "valid": 20, "test": 20} and record["settings"]["max_length"] == 64


def corrupt(bundle: Path, out: Path, how: str) -> Path:
    import shutil

    shutil.copytree(bundle, out)
    if how == "truncated model.onnx":
        data = (out / "model.onnx").read_bytes()
        (out / "model.onnx").write_bytes(data[: len(data) // 2])
    elif how == "no tokenizer.json":
        (out / "tokenizer.json").unlink()
    elif how == "bundle.json not JSON":
        (out / "bundle.json").write_text('{"labels": [')
    elif how == "labels the model does not output":
        info = json.loads((out / "bundle.json").read_text())
        info["labels"], info["thresholds"] = info["labels"][:-1], info["thresholds"][:-1]
        (out / "bundle.json").write_text(json.dumps(info))
    return out


def test_a_corrupt_or_incomplete_bundle_is_refused_and_the_served_model_is_untouched(bundles, tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    store = tmp_path / "store"
    opts = ["--db", url, "--store", store]
    a = bundle_version(bundles["a"])
    assert registry(capsys, "promote", bundles["a"], *opts)[0] == 0
    engine = make_engine(url)
    live = LiveModel(engine, Predictor.from_bundle, poll_s=3600)   # polled by hand below
    try:
        cases = {"truncated model.onnx": "model.onnx", "no tokenizer.json": "tokenizer.json",
                 "bundle.json not JSON": "bundle.json", "labels the model does not output": "model.onnx"}
        for how, named in cases.items():
            broken = corrupt(bundles["b"], tmp_path / how.replace(" ", "_"), how)
            code, _, err = registry(capsys, "promote", broken, *opts, "--force")
            assert code == 2 and named in err, (how, err)
            assert not (store / bundle_version(broken)).exists(), how   # nothing kept of it
        code, _, err = registry(capsys, "promote", tmp_path / "nowhere", *opts)
        assert code == 2 and "nowhere" in err

        # a registered copy damaged afterwards: refused by its hash, repaired by registering the intact bundle
        b = bundle_version(bundles["b"])
        assert registry(capsys, "register", bundles["b"], *opts)[0] == 0
        copy = store / b / "bundle" / "model.onnx"
        copy.write_bytes(copy.read_bytes()[:1000])
        code, _, err = registry(capsys, "promote", b[:10], *opts, "--force")
        assert code == 2 and "changed since it was registered" in err
        live.poll()
        assert current(url) == a and live.current().version == a
        assert registry(capsys, "register", bundles["b"], *opts)[0] == 0
        assert copy_problem(store / b / "bundle", b) is None
        assert registry(capsys, "promote", b[:10], *opts, "--force", "--switch-in", 0)[0] == 0
        live.poll()
        assert live.current().version == b
    finally:
        live.stop()
        engine.dispose()
    # the registry is torch-free and never imports training, even while it loads and compares two models
    probe = ("import sys; from deployment.registry.__main__ import main; code = main(sys.argv[1:]); "
             "print(code, sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'training', 'transformers'}))")
    proc = subprocess.run([sys.executable, "-c", probe, "compare", a[:8], *map(str, opts)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.stdout.strip().splitlines()[-1] == "0 []", proc.stdout[-2000:] + proc.stderr[-2000:]


KILL_AT = """
import os, shutil, signal, sys
import deployment.registry.records as records, deployment.registry.state as state
where = sys.argv[1]
if where == "before the row":       # the copy is complete and renamed into place; its row is not written yet
    state.add_version = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
else:                               # half-way through copying the files
    copied, original = [], shutil.copy2
    def copy2(*a, **k):
        copied.append(1)
        if len(copied) == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*a, **k)
    records.shutil.copy2 = copy2
from deployment.registry.__main__ import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_crash_while_registering_leaves_the_registry_on_a_complete_model(kind, bundles, tmp_path, request, capsys):
    url = fresh_db(kind, tmp_path, request)
    migrated(url)
    store = tmp_path / "store"
    opts = ["--db", url, "--store", store]
    a, b = bundle_version(bundles["a"]), bundle_version(bundles["b"])
    assert registry(capsys, "promote", bundles["a"], *opts)[0] == 0
    for where in ("while copying", "before the row"):
        proc = subprocess.run([sys.executable, "-c", KILL_AT, where, "promote", str(bundles["b"]), "--force",
                               *map(str, opts)], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert proc.returncode == -signal.SIGKILL, (where, proc.stderr[-2000:])
        assert current(url) == a
        listed = json.loads(registry(capsys, "list", *opts, "--json")[1])
        assert [v["version"] for v in listed["versions"]] == [a], where
        engine = make_engine(url)
        live = LiveModel(engine, Predictor.from_bundle, poll_s=3600)   # a server starting now serves the complete a
        try:
            assert live.current().version == a and copy_problem(Path(listed["versions"][0]["path"]), a) is None
        finally:
            live.stop()
            engine.dispose()
        if where == "while copying":
            assert any(p.name.startswith(f".{b}.partial-") for p in store.iterdir())
            assert not (store / b).exists()
        else:
            assert copy_problem(store / b / "bundle", b) is None   # complete, but no row names it
    code, _, err = registry(capsys, "promote", bundles["b"], *opts, "--force", "--switch-in", 0)
    assert code == 0 and current(url) == b, err
    assert sorted(p.name for p in store.iterdir()) == sorted([a, b])   # the killed copy's leftovers are gone
