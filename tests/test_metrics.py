"""Threshold tuning and multilabel metrics, checked against scikit-learn and brute force on generated arrays."""
import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score

from deployment.scoring import decide
from tests.cases import check_each
from training.metrics import (THRESHOLD_GRID, evaluate, multilabel_report, threshold_vector, top_frequency_baseline,
                              tune_thresholds)

LABELS = ["a", "b", "c", "d"]


def _random_case(seed=0, n=60):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 4)) < [0.5, 0.3, 0.1, 0.05]).astype(int)
    y[0, 3] = 0  # label d may be absent entirely in some draws: keep zero-division paths exercised
    pred = (rng.random((n, 4)) < 0.3).astype(int)
    return y, pred


def test_report_matches_sklearn_for_micro_macro_samples():
    check_each([0, 1, 2], _report_matches_sklearn_for_micro_macro_samples_case)


def _report_matches_sklearn_for_micro_macro_samples_case(seed):
    y, pred = _random_case(seed)
    rep = multilabel_report(y, pred, LABELS)
    for avg in ("micro", "macro", "samples"):
        assert rep[f"{avg}_f1"] == pytest.approx(f1_score(y, pred, average=avg, zero_division=0))
        assert rep[f"{avg}_precision"] == pytest.approx(precision_score(y, pred, average=avg, zero_division=0))
        assert rep[f"{avg}_recall"] == pytest.approx(recall_score(y, pred, average=avg, zero_division=0))
    per = f1_score(y, pred, average=None, zero_division=0)
    assert [rep["per_label"][lab]["f1"] for lab in LABELS] == pytest.approx(per)
    assert [rep["per_label"][lab]["support"] for lab in LABELS] == list(y.sum(0))


def test_report_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shape mismatch"):
        multilabel_report(np.zeros((3, 4)), np.zeros((3, 3)), LABELS)


def test_global_threshold_separates_perfectly_separable_scores():
    y = np.array([[1, 0], [1, 0], [0, 1], [0, 1], [0, 0]])
    probs = np.array([[0.8, 0.1], [0.7, 0.2], [0.2, 0.6], [0.1, 0.9], [0.3, 0.25]])
    th = tune_thresholds(probs, y, ["x", "y"], min_support=1)
    assert 0.3 < th["global"] <= 0.6
    assert f1_score(y, decide(probs, th["global"]), average="micro") == 1.0
    # per-label thresholds each separate their own label
    assert 0.3 < th["per_label"]["x"] <= 0.7 and 0.25 < th["per_label"]["y"] <= 0.6


def test_per_label_threshold_falls_back_to_global_for_rare_labels():
    rng = np.random.default_rng(0)
    y = np.zeros((40, 2), dtype=int)
    y[:20, 0] = 1
    y[0, 1] = 1  # one positive only
    probs = rng.random((40, 2))
    th = tune_thresholds(probs, y, ["common", "rare"], min_support=5)
    assert th["per_label"]["rare"] == th["global"] == th["rare"]   # 1 positive: too few to tune even pooled
    assert th["valid_support"] == {"common": 20, "rare": 1}


def _f1(y, pred) -> float:
    """F1 written out (the brute-force oracle over the grid; scikit-learn checks the chosen point)."""
    y, pred = np.asarray(y, dtype=bool), np.asarray(pred, dtype=bool)
    tp = (y & pred).sum()
    return 2 * tp / (y.sum() + pred.sum()) if y.sum() + pred.sum() else 0.0


def test_rare_labels_share_a_threshold_tuned_on_them_pooled():
    """Labels under min_support positives get one threshold: the best micro-F1 over those labels together (brute
    force on the grid here), not the global one the common labels set; common labels keep their own."""
    rng = np.random.default_rng(5)
    for case in range(30):
        n, n_common, n_rare = int(rng.integers(60, 200)), int(rng.integers(1, 4)), int(rng.integers(2, 8))
        y = np.zeros((n, n_common + n_rare), dtype=int)
        y[:, :n_common] = rng.random((n, n_common)) < 0.3
        for j in range(n_common, n_common + n_rare):
            y[rng.choice(n, int(rng.integers(0, 5)), replace=False), j] = 1
        # common labels score high, rare ones low: the global threshold does not suit the rare ones
        probs = np.clip(y * rng.uniform(0.2, 0.5) + rng.random(y.shape) * np.where(np.arange(y.shape[1]) < n_common,
                                                                                       0.7, 0.25), 0, 1)
        labels = [f"l{j}" for j in range(y.shape[1])]
        th = tune_thresholds(probs, y, labels, min_support=5)
        rare = y.sum(0) < 5
        grid = np.round(np.arange(0.02, 0.981, 0.01), 4)
        pooled = [_f1(y[:, rare].ravel(), probs[:, rare].ravel() >= t) for t in grid]
        if y[:, rare].sum() >= 5:
            got = f1_score(y[:, rare].ravel(), (probs[:, rare] >= th["rare"]).ravel(), zero_division=0)
            assert got == pytest.approx(max(pooled)), case
        else:
            assert th["rare"] == th["global"], case
        assert all(th["per_label"][labels[j]] == th["rare"] for j in np.flatnonzero(rare))
        for j in np.flatnonzero(~rare):
            best = max(_f1(y[:, j], probs[:, j] >= t) for t in grid)
            assert f1_score(y[:, j], probs[:, j] >= th["per_label"][labels[j]], zero_division=0) == pytest.approx(best)
    none_rare = tune_thresholds(np.array([[0.9], [0.1]] * 5), np.array([[1], [0]] * 5), ["a"], min_support=5)
    assert none_rare["rare"] is None


def test_tuned_per_label_thresholds_are_optimal_on_the_grid():
    rng = np.random.default_rng(3)
    y = (rng.random((200, 3)) < 0.3).astype(int)
    probs = np.clip(y * 0.3 + rng.random((200, 3)) * 0.7, 0, 1)
    th = tune_thresholds(probs, y, ["p", "q", "r"], min_support=1)
    for j, lab in enumerate("pqr"):
        best = max(f1_score(y[:, j], probs[:, j] >= t, zero_division=0) for t in np.arange(0.02, 0.99, 0.01))
        assert f1_score(y[:, j], probs[:, j] >= th["per_label"][lab], zero_division=0) == pytest.approx(best)


def test_evaluate_uses_per_label_thresholds_and_reports_global_too():
    y = np.array([[1, 0], [0, 1]])
    probs = np.array([[0.4, 0.1], [0.1, 0.4]])
    th = {"global": 0.5, "per_label": {"x": 0.3, "y": 0.3}}
    m = evaluate(probs, y, ["x", "y"], th)
    assert m["micro_f1"] == 1.0
    assert m["global_threshold"]["micro_f1"] == 0.0


def test_most_frequent_baseline_predicts_the_top_training_labels():
    y_train = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 0], [0, 1, 1]])
    pred = top_frequency_baseline(y_train, 3)
    assert pred.tolist() == [[1, 1, 0]] * 3  # mean of 1.75 labels -> the two most frequent


def _mean_f1(probs, y, th, labels):
    m = multilabel_report(y, decide(probs, th), labels)
    return (m["micro_f1"] + m["macro_f1"]) / 2


def test_the_mean_f1_objective_is_a_coordinate_optimum_no_worse_than_label_f1():
    """tune_thresholds(objective="mean_f1"): per-label thresholds on the grid, the rare labels still sharing one, no
    worse than the label-F1 thresholds it starts from on (micro + macro) / 2, and no single label's move (the rare
    ones together) on the grid improves it (brute force)."""
    def check(seed):
        rng = np.random.default_rng(seed)
        n, n_labels = int(rng.integers(80, 200)), int(rng.integers(2, 6))
        y = (rng.random((n, n_labels)) < rng.uniform(0.02, 0.4, n_labels)).astype(int)
        probs = np.clip(y * rng.uniform(0.1, 0.5, n_labels) + rng.random(y.shape) * 0.6, 0, 1)
        labels = [f"l{j}" for j in range(n_labels)]
        start = threshold_vector(tune_thresholds(probs, y, labels, 5), labels)
        tuned = tune_thresholds(probs, y, labels, 5, objective="mean_f1")
        got = threshold_vector(tuned, labels)
        assert set(np.round(got, 4)) <= set(THRESHOLD_GRID)
        assert tuned["global"] == tune_thresholds(probs, y, labels, 5)["global"]
        best = _mean_f1(probs, y, got, labels)
        assert best >= _mean_f1(probs, y, start, labels) - 1e-12
        rare = np.flatnonzero(y.sum(0) < 5)
        assert len(set(got[rare])) <= 1 and (tuned["rare"] is None) == (len(rare) == 0)
        coords = [[j] for j in range(n_labels) if j not in rare] + ([list(rare)] if len(rare) else [])
        for js in coords:
            for t in THRESHOLD_GRID:
                moved = got.copy()
                moved[js] = t
                assert _mean_f1(probs, y, moved, labels) <= best + 1e-12, (js, t)

    check_each(range(8), check)
    with pytest.raises(ValueError, match="objective must be one of"):
        tune_thresholds(np.zeros((2, 1)), np.zeros((2, 1)), ["a"], objective="accuracy")
