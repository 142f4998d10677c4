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
from bench.combine import at_least_one, mean_f1_thresholds
from tests.test_train import tiny_backbone, tiny_data, trained  # noqa: F401  (module fixtures: a tiny blended model)
from training.metrics import THRESHOLD_GRID, multilabel_report, threshold_vector, tune_thresholds


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
        for k in ("valid_micro_f1", "valid_macro_f1", "test_micro_f1", "test_macro_f1"):
            assert 0 <= row[k] <= 1
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
    assert proc.returncode == 2 and "missing" in proc.stderr
    assert not (tmp_path / "x.json").exists()


def _objective(probs, y, th, labels):
    m = multilabel_report(y, probs >= th, labels)
    return (m["micro_f1"] + m["macro_f1"]) / 2


@pytest.mark.parametrize("seed", range(8))
def test_mean_f1_thresholds_improve_the_objective_and_no_single_move_improves_it(seed):
    rng = np.random.default_rng(seed)
    n, n_labels = int(rng.integers(80, 200)), int(rng.integers(2, 6))
    y = (rng.random((n, n_labels)) < rng.uniform(0.02, 0.4, n_labels)).astype(int)
    probs = np.clip(y * rng.uniform(0.1, 0.5, n_labels) + rng.random(y.shape) * 0.6, 0, 1)
    labels = [f"l{j}" for j in range(n_labels)]
    start = threshold_vector(tune_thresholds(probs, y, labels, 5), labels)
    got = mean_f1_thresholds(probs, y, labels, 5)
    assert set(np.round(got, 4)) <= set(THRESHOLD_GRID)
    best = _objective(probs, y, got, labels)
    assert best >= _objective(probs, y, start, labels) - 1e-12
    rare = np.flatnonzero(y.sum(0) < 5)
    assert len(set(got[rare])) <= 1                       # the rare labels still share one threshold
    coords = [[j] for j in range(n_labels) if j not in rare] + ([list(rare)] if len(rare) else [])
    for js in coords:                                   # a coordinate-wise optimum on the grid
        for t in THRESHOLD_GRID[::3]:
            moved = got.copy()
            moved[js] = t
            assert _objective(probs, y, moved, labels) <= best + 1e-12


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
