"""The registry's comparison, at its pure functions: F1 against scikit-learn, the paired bootstrap (an interval that
covers the estimate, a zero-width one for two identical models, a difference that is significant when one model is
clearly better), which rows count (held out by either, trained on by neither) and the promote verdict.
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import f1_score

from deployment.registry.compare import Row, compare_decisions, evaluation_rows, scores, verdict


def test_scores_match_scikit_learn_on_random_decisions():
    for case in range(30):
        rng = np.random.default_rng(case)
        n, L = rng.integers(1, 60), rng.integers(2, 8)   # one column reads as binary to scikit-learn
        y = rng.random((n, L)) < rng.uniform(0.05, 0.6)
        pred = rng.random((n, L)) < rng.uniform(0.0, 0.6)
        micro, macro, per_label = scores(y, pred)
        assert np.isclose(micro, f1_score(y, pred, average="micro", zero_division=0)), case
        assert np.isclose(macro, f1_score(y, pred, average="macro", zero_division=0)), case
        assert np.allclose(per_label, f1_score(y, pred, average=None, zero_division=0)), case
        weights = rng.integers(0, 3, size=(4, n)).astype(float)   # a resample: row i drawn weights[b, i] times
        b_micro, _, _ = scores(y, pred, weights)
        for b in range(4):
            idx = np.repeat(np.arange(n), weights[b].astype(int))
            expected = f1_score(y[idx], pred[idx], average="micro", zero_division=0) if len(idx) else 0.0
            assert np.isclose(b_micro[b], expected), case


def test_the_paired_bootstrap_and_the_verdict():
    rng = np.random.default_rng(0)
    labels = [f"L{j}" for j in range(5)]
    y = rng.random((300, 5)) < 0.3
    rows = [Row(f"text {i}", tuple(np.asarray(labels)[y[i]]), "feedback" if i % 5 == 0 else "test") for i in range(300)]
    noisy = y ^ (rng.random(y.shape) < 0.25)        # a weak model: a quarter of its decisions wrong
    better = y ^ (rng.random(y.shape) < 0.05)       # a strong one

    same = compare_decisions(rows, labels, noisy, noisy, rounds=300)
    assert same["slices"]["all"]["delta"]["micro_f1_ci"] == [0.0, 0.0] and same["changed"]["decisions"] == 0
    assert set(same["slices"]) == {"all", "test", "feedback"} and same["slices"]["feedback"]["rows"] == 60

    up = compare_decisions(rows, labels, better, noisy, rounds=300)
    whole = up["slices"]["all"]
    for who in ("candidate", "incumbent"):
        lo, hi = whole[who]["micro_f1_ci"]
        assert lo < whole[who]["micro_f1"] < hi
    assert whole["delta"]["micro_f1_ci"][0] > 0          # clearly better: the interval of the difference excludes 0
    changed = up["changed"]
    assert changed["fixed"] > changed["broken"] and changed["decisions"] == int((better != noisy).sum())
    assert verdict(up)[0] and not verdict(compare_decisions(rows, labels, noisy, better, rounds=0))[0]
    assert verdict(compare_decisions(rows, labels, noisy, better, rounds=0), tolerance=1.0)[0]


def test_only_rows_neither_model_trained_on_are_compared():
    incumbent = [Row("Seen by both.", ("a",), "train"), Row("Old test text", ("a",), "test"),
                 Row("Old valid text", ("b",), "valid"), Row("Moved to test later", ("a",), "train")]
    candidate = [Row("seen by both", ("a",), "train"), Row("old test text", ("a", "b"), "test"),
                 Row("Old valid text", ("b",), "valid"), Row("Moved to test later", ("a",), "test"),
                 Row("A correction", ("b",), "feedback"), Row("New test text", ("a",), "test")]
    rows, facts = evaluation_rows(candidate, incumbent)
    assert sorted((r.text, r.labels, r.split) for r in rows) == [
        ("A correction", ("b",), "feedback"), ("New test text", ("a",), "test"),
        ("old test text", ("a", "b"), "test")]    # the candidate's labels (the newest corrections) win
    assert facts["excluded_seen"] == 1 and (facts["test"], facts["feedback"]) == (2, 1)
