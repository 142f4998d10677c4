"""bench.combine: every combination/decoding rule re-scored on a trained model's outputs. The shipped row must
reproduce the model's metrics.json, the parts alone must reproduce its transformer and baseline rows, and the
rules it adds must do what they say."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

import config
from bench.combine import at_least_one
from tests.test_train import tiny_backbone, tiny_data, trained  # noqa: F401  (module fixtures: a tiny blended model)


def _combine(*args):
    return subprocess.run([sys.executable, "-m", "bench.combine", *map(str, args)], capture_output=True, text=True,
                          cwd=config.ROOT, timeout=600)


def test_combine_reproduces_the_model_and_scores_every_rule(trained, tmp_path):  # noqa: F811
    out = tmp_path / "combine.json"
    proc = _combine("--model", trained, "--out", out, "--folds", "3", "--repeats", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "valid windows" in proc.stderr and "test windows" in proc.stderr        # progress bars
    r = json.loads(out.read_text())
    m = json.loads((trained / "metrics.json").read_text())
    assert r["reproduced"] is True
    rows = {row["rule"]: row for row in r["results"]}
    first = r["results"][0]
    assert first["group"] == "shipped"
    assert (first["test_micro_f1"], first["test_macro_f1"]) == pytest.approx(
        (m["model"]["micro_f1"], m["model"]["macro_f1"]), abs=1e-9)
    assert first["test_micro_delta"] == first["test_macro_delta"] == 0
    # the parts alone, as training measured them (same windows, pooling and thresholds)
    alone = rows["transformer alone, per-label thresholds"]
    assert (alone["test_micro_f1"], alone["test_macro_f1"]) == pytest.approx(
        (m["transformer"]["micro_f1"], m["transformer"]["macro_f1"]), abs=1e-9)
    assert rows["transformer alone, global thresholds"]["test_micro_f1"] == pytest.approx(
        m["transformer"]["global_threshold"]["micro_f1"], abs=1e-9)
    tfidf = rows["TF-IDF alone, per-label thresholds"]
    assert tfidf["test_micro_f1"] == pytest.approx(m["baseline"]["micro_f1"], abs=1e-6)
    groups = {row["group"] for row in r["results"]}
    assert groups == {"shipped", "parts", "combination", "thresholds", "decoding", "pooling", "choice"}
    for row in r["results"]:
        assert row["test_micro_delta"] == pytest.approx(row["test_micro_f1"] - first["test_micro_f1"])
    assert len(r["cross_fit"]["scores"]) == 2 and all(len(v) == 2 for v in r["cross_fit"]["scores"].values())
    assert "| rule (chosen on valid) |" in proc.stdout and "reproduced" in proc.stdout


def test_combine_refuses_a_model_without_its_tfidf_part_or_a_missing_dir(trained, tmp_path):  # noqa: F811
    bare = tmp_path / "bare"
    shutil.copytree(trained, bare)
    shutil.rmtree(bare / "linear")
    proc = _combine("--model", bare, "--out", tmp_path / "x.json", "--no-progress")
    assert proc.returncode == 2 and "no TF-IDF part" in proc.stderr
    proc = _combine("--model", tmp_path / "nowhere", "--out", tmp_path / "x.json")
    assert proc.returncode == 2 and "nowhere: model directory does not exist" in proc.stderr
    assert not (tmp_path / "x.json").exists()


def test_at_least_one_label_fills_only_empty_rows_with_the_label_nearest_its_threshold():
    rng = np.random.default_rng(0)
    probs = rng.random((300, 4)) * 0.6
    th = np.array([0.5, 0.3, 0.55, 0.58])
    pred = at_least_one(probs, th)
    plain = probs >= th
    assert pred.any(1).all()
    keep = plain.any(1)
    assert (pred[keep] == plain[keep]).all()
    empty = np.flatnonzero(~keep)
    assert len(empty) > 10 and (pred[empty].sum(1) == 1).all()
    margin = np.log(probs / (1 - probs)) - np.log(th / (1 - th))
    assert (pred[empty].argmax(1) == margin[empty].argmax(1)).all()
