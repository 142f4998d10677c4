"""Multilabel metrics and the one threshold tuner: pure functions over numpy arrays.

    probs: float [n, L] in [0, 1]      y: {0,1} [n, L]      thresholds: float or float [L]

Thresholds are tuned on `valid` only (`tune_thresholds`, on THRESHOLD_GRID) and every metric is reported on `test`
(`multilabel_report`). A label is predicted where its score reaches its threshold (`deployment.scoring.decide`,
what every server does). Precision/recall/F1 follow scikit-learn's definitions with `zero_division=0`.

The tuner's objectives (`objective=`): "label_f1" (each label its own best F1: what training ships) and "mean_f1"
(the per-label thresholds moved together for the best (micro-F1 + macro-F1) / 2: compared by `bench.combine`). Its
global threshold, the best micro-F1 over all labels, is also `micro_f1_at_best_threshold` (the valid curve's).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from deployment.scoring import decide

THRESHOLD_GRID = np.round(np.arange(0.02, 0.981, 0.01), 4)  # candidate thresholds, inclusive of both ends
OBJECTIVES = ("label_f1", "mean_f1")


def _prf(tp, fp, fn):
    tp, fp, fn = (np.asarray(a, dtype=np.float64) for a in (tp, fp, fn))
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        r = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
        f = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
    return p, r, f


def multilabel_report(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str]) -> dict:
    """Micro/macro/samples F1, precision, recall and per-label F1 with support (sklearn's definitions)."""
    y_true = np.asarray(y_true, dtype=bool)
    y_pred = np.asarray(y_pred, dtype=bool)
    if y_true.shape != y_pred.shape or y_true.shape[1] != len(labels):
        raise ValueError(f"shape mismatch: y_true {y_true.shape}, y_pred {y_pred.shape}, {len(labels)} labels")
    tp = (y_true & y_pred).sum(0)
    fp = (~y_true & y_pred).sum(0)
    fn = (y_true & ~y_pred).sum(0)
    p_l, r_l, f_l = _prf(tp, fp, fn)
    p_mi, r_mi, f_mi = _prf(tp.sum(), fp.sum(), fn.sum())
    # samples average: per row, then mean (rows with no true and no predicted labels score 0, as in sklearn)
    tp_s = (y_true & y_pred).sum(1)
    p_s, r_s, f_s = _prf(tp_s, (~y_true & y_pred).sum(1), (y_true & ~y_pred).sum(1))
    support = y_true.sum(0)
    return {
        "micro_f1": float(f_mi), "micro_precision": float(p_mi), "micro_recall": float(r_mi),
        "macro_f1": float(f_l.mean()), "macro_precision": float(p_l.mean()), "macro_recall": float(r_l.mean()),
        "samples_f1": float(f_s.mean()), "samples_precision": float(p_s.mean()), "samples_recall": float(r_s.mean()),
        "n_rows": int(y_true.shape[0]),
        "mean_labels_true": float(y_true.sum(1).mean()) if len(y_true) else 0.0,
        "mean_labels_predicted": float(y_pred.sum(1).mean()) if len(y_pred) else 0.0,
        "per_label": {
            lab: {"f1": float(f_l[i]), "precision": float(p_l[i]), "recall": float(r_l[i]), "support": int(support[i])}
            for i, lab in enumerate(labels)
        },
    }


def _f1_curves(probs: np.ndarray, y: np.ndarray, grid: np.ndarray):
    """tp/fp/fn for every (threshold, label): arrays [len(grid), L]. Vectorised over the grid."""
    y = np.asarray(y, dtype=bool)
    tp = np.empty((len(grid), y.shape[1]))
    fp = np.empty_like(tp)
    pos = y.sum(0)
    for i, t in enumerate(grid):
        pred = decide(probs, t)
        tp[i] = (pred & y).sum(0)
        fp[i] = (pred & ~y).sum(0)
    return tp, fp, pos - tp


def widest_best(scores: np.ndarray, grid: np.ndarray) -> float:
    """The middle of the widest run of best scores: stabler than the first argmax on small valid sets."""
    best = scores.max()
    idx = np.flatnonzero(np.isclose(scores, best, rtol=0, atol=1e-12))
    runs = np.split(idx, np.flatnonzero(np.diff(idx) > 1) + 1)
    run = max(runs, key=len)
    return float(grid[run[len(run) // 2]])


def best_label_f1(probs: np.ndarray, y: np.ndarray, grid: np.ndarray = THRESHOLD_GRID) -> np.ndarray:
    """Each label's F1 [L] at its best threshold on the grid."""
    tp, fp, fn = _f1_curves(np.asarray(probs, dtype=np.float64), y, grid)
    return _prf(tp, fp, fn)[2].max(0)


def micro_f1_at_best_threshold(probs: np.ndarray, y: np.ndarray, grid: np.ndarray = THRESHOLD_GRID
                               ) -> tuple[float, float]:
    """(micro-F1, threshold): the one global threshold on the grid with the best micro-F1 on (probs, y), chosen
    on the rows it is scored on: `tune_thresholds`'s "global"."""
    tp, fp, fn = _f1_curves(np.asarray(probs, dtype=np.float64), y, grid)
    micro = _prf(tp.sum(1), fp.sum(1), fn.sum(1))[2]
    return float(micro.max()), widest_best(micro, grid)


def tune_thresholds(probs: np.ndarray, y: np.ndarray, labels: Sequence[str], min_support: int = 5,
                    grid: np.ndarray = THRESHOLD_GRID, objective: str = "label_f1") -> dict:
    """A global threshold (best micro-F1) and per-label ones: the best label F1 on labels with ≥ min_support
    positives in `y`; the labels with fewer share one threshold, the best micro-F1 over them pooled ("rare"), when
    they have ≥ min_support positives together, else the global one. Returns the thresholds.json structure.
    With `objective="mean_f1"` the per-label thresholds then move, one label at a time (the rare ones together),
    while that raises (micro-F1 + macro-F1) / 2 on (probs, y): coordinate ascent on the grid from the F1 ones.

    Why the rare labels get their own: the global threshold is set by the common labels, and the probabilities of
    a label seen a handful of times sit lower. On a 150-label set (108 labels under 5 valid positives) the shared
    threshold tuned on the rare labels raised test macro-F1 by 1.6 points for TF-IDF and 2.2 for the blend."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    probs = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y, dtype=bool)
    tp, fp, fn = _f1_curves(probs, y, grid)
    _, _, micro = _prf(tp.sum(1), fp.sum(1), fn.sum(1))
    global_t = widest_best(micro, grid)
    _, _, per_f1 = _prf(tp, fp, fn)
    support = y.sum(0)
    rare = support < min_support
    rare_t = None
    if rare.any():
        rare_t = global_t
        if support[rare].sum() >= min_support:
            _, _, pooled = _prf(tp[:, rare].sum(1), fp[:, rare].sum(1), fn[:, rare].sum(1))
            rare_t = widest_best(pooled, grid)
    per = np.array([rare_t if rare[j] else widest_best(per_f1[:, j], grid) for j in range(len(labels))])
    if objective == "mean_f1":
        per = _mean_f1_ascent(tp, fp, fn, per_f1, per, rare, grid)
        rare_t = float(per[rare][0]) if rare.any() else None
    return {"global": global_t, "per_label": {lab: float(t) for lab, t in zip(labels, per)}, "rare": rare_t,
            "min_support": int(min_support), "valid_support": {lab: int(s) for lab, s in zip(labels, support)}}


def _mean_f1_ascent(tp, fp, fn, f1, start: np.ndarray, rare: np.ndarray, grid: np.ndarray,
                    passes: int = 10) -> np.ndarray:
    """Per-label thresholds for the best (micro-F1 + macro-F1) / 2 from the tp/fp/fn/F1 curves [grid, L]: coordinate
    ascent on the grid from `start`, the labels in `rare` moving together, at most `passes` sweeps."""
    idx = np.array([int(np.argmin(np.abs(grid - t))) for t in start])
    coords = [[j] for j in np.flatnonzero(~rare)] + ([list(np.flatnonzero(rare))] if rare.any() else [])
    cols = np.arange(len(start))

    def score(i):
        return (_prf(tp[i, cols].sum(), fp[i, cols].sum(), fn[i, cols].sum())[2] + f1[i, cols].mean()) / 2

    best = score(idx)
    for _ in range(passes):
        moved = False
        for js in coords:
            rest = {a: m[idx, cols].sum() - m[idx[js], js].sum()
                    for a, m in (("tp", tp), ("fp", fp), ("fn", fn), ("f1", f1))}
            micro = _prf(rest["tp"] + tp[:, js].sum(1), rest["fp"] + fp[:, js].sum(1),
                         rest["fn"] + fn[:, js].sum(1))[2]
            curve = (micro + (rest["f1"] + f1[:, js].sum(1)) / len(start)) / 2
            if curve.max() > best + 1e-12:
                idx[js] = int(np.argmin(np.abs(grid - widest_best(curve, grid))))
                best, moved = score(idx), True
        if not moved:
            break
    return grid[idx]


def threshold_vector(thresholds: dict, labels: Sequence[str]) -> np.ndarray:
    """The per-label thresholds of a thresholds.json dict as an array aligned with `labels`."""
    missing = [lab for lab in labels if lab not in thresholds["per_label"]]
    if missing:
        raise ValueError(f"thresholds have no entry for labels {missing[:5]}")
    return np.array([thresholds["per_label"][lab] for lab in labels], dtype=np.float64)


def evaluate(probs: np.ndarray, y: np.ndarray, labels: Sequence[str], thresholds: dict) -> dict:
    """Test-split report with the tuned per-label thresholds, plus the headline numbers at the global one."""
    per = multilabel_report(y, decide(probs, threshold_vector(thresholds, labels)), labels)
    glob = multilabel_report(y, decide(probs, thresholds["global"]), labels)
    per["global_threshold"] = {k: glob[k] for k in ("micro_f1", "macro_f1", "samples_f1")}
    return per


def top_frequency_baseline(y_train: np.ndarray, n_test: int) -> np.ndarray:
    """Predict, for every row, the k most frequent training labels (k = the mean label count, rounded)."""
    y_train = np.asarray(y_train)
    k = max(1, int(round(y_train.sum(1).mean())))
    top = np.argsort(-y_train.sum(0), kind="stable")[:k]
    pred = np.zeros((n_test, y_train.shape[1]), dtype=np.uint8)
    pred[:, top] = 1
    return pred


def markdown_table(rows: dict[str, dict], keys=("micro_f1", "macro_f1", "samples_f1", "micro_precision",
                                                 "micro_recall")) -> str:
    """A markdown table: one row per model, one column per metric."""
    head = "| model | " + " | ".join(keys) + " |\n|---|" + "---|" * len(keys) + "\n"
    body = "".join(f"| {name} | " + " | ".join(f"{m.get(k, float('nan')):.4f}" for k in keys) + " |\n"
                   for name, m in rows.items())
    return head + body


def per_label_table(report: dict) -> str:
    """Per-label precision/recall/F1/support as markdown, most frequent label first."""
    items = sorted(report["per_label"].items(), key=lambda kv: -kv[1]["support"])
    lines = ["| label | support | precision | recall | f1 |", "|---|---|---|---|---|"]
    lines += [f"| {lab} | {m['support']} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} |"
              for lab, m in items]
    return "\n".join(lines) + "\n"
