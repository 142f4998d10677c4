"""Multilabel-stratified splitting by iterative stratification (Sechidis, Tsoumakas & Vlahavas, 2011).

A random split of multilabel data leaves rare labels missing from valid or test, or crowded into one of them.
Iterative stratification deals out rows label by label, rarest label first, each row to the fold that still
"wants" that label most, so every fold gets close to its share of every label. Pure functions over a binary
label matrix; used by `python -m training.prepare`, usable on its own:

    >>> import numpy as np
    >>> from training.split import iterative_stratification
    >>> y = np.random.default_rng(0).random((1000, 20)) < 0.1
    >>> folds = iterative_stratification(y, (0.8, 0.1, 0.1), seed=42)   # fold index 0/1/2 per row

Reference: K. Sechidis, G. Tsoumakas, I. Vlahavas. "On the Stratification of Multi-Label Data". ECML PKDD 2011.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def _check_fractions(fractions: Sequence[float]) -> np.ndarray:
    r = np.asarray(fractions, dtype=float)
    if r.ndim != 1 or len(r) < 1 or (r < 0).any() or not np.isclose(r.sum(), 1.0) or r[0] <= 0:
        raise ValueError(f"fractions must be >= 0, sum to 1 and give the first fold a share; got {list(fractions)}")
    return r


def iterative_stratification(
    y: np.ndarray, fractions: Sequence[float], seed: int = 0, progress: bool = False
) -> np.ndarray:
    """Assign each row of the binary matrix `y` [n_rows, n_labels] to a fold; returns int64 fold ids [n_rows].

    Follows Algorithm 1 of Sechidis et al.: fold j wants `fractions[j] * n` rows and `fractions[j] * n_i` rows of
    each label i. Repeatedly take the label with the fewest rows still unassigned (ties at random) and hand each
    of its unassigned rows (in random order) to the fold that wants that label most; ties go to the fold that
    wants the most rows overall, then at random. Rows without labels go to the folds that want the most rows.
    Folds with a zero fraction get nothing. Deterministic for a given seed.

    Cost: each row is placed once with O(n_labels) bookkeeping, plus one O(n_labels) scan per label, so
    O(n_rows * n_labels) in all (30k rows x 100 labels takes well under a second).
    """
    y = np.asarray(y).astype(bool)
    if y.ndim != 2:
        raise ValueError(f"y must be a 2-D [n_rows, n_labels] matrix; got shape {y.shape}")
    r = _check_fractions(fractions)
    n_rows, n_labels = y.shape
    rng = np.random.default_rng(seed)
    folds = np.full(n_rows, -1, dtype=np.int64)
    open_folds = r > 0

    per_label = y.sum(axis=0).astype(np.int64)
    want_rows = r * n_rows                                  # [F] rows each fold still wants
    want_label = np.outer(r, per_label).astype(float)       # [F, L] rows of each label each fold still wants
    remaining = per_label.copy()                            # [L] unassigned rows per label
    rows_of_label = [np.flatnonzero(y[:, j]) for j in range(n_labels)]
    labels_of_row = [np.flatnonzero(row) for row in y]
    closed = np.where(open_folds, 0.0, -np.inf)              # added to scores so closed folds never win

    def pick(scores: np.ndarray) -> int:
        """Fold with the highest score; ties by rows wanted, then at random."""
        scores = scores + closed
        best = np.flatnonzero(scores == scores.max())
        if len(best) > 1:
            rows = want_rows[best]
            best = best[rows == rows.max()]
            if len(best) > 1:
                return int(best[rng.integers(len(best))])
        return int(best[0])

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n_rows, desc="split", unit="row", disable=None, leave=False)
    while True:
        pending = remaining > 0
        if not pending.any():
            break
        fewest = remaining[pending].min()
        candidates = np.flatnonzero(remaining == fewest)
        label = int(candidates[rng.integers(len(candidates))]) if len(candidates) > 1 else int(candidates[0])
        rows = rows_of_label[label]
        rows = rows[folds[rows] < 0]
        for i in rows[rng.permutation(len(rows))]:
            fold = pick(want_label[:, label])
            folds[i] = fold
            row_labels = labels_of_row[i]
            want_label[fold, row_labels] -= 1
            remaining[row_labels] -= 1
            want_rows[fold] -= 1
        if bar is not None:
            bar.update(len(rows))

    unlabelled = np.flatnonzero(folds < 0)
    for i in unlabelled[rng.permutation(len(unlabelled))]:
        fold = pick(want_rows)
        folds[i] = fold
        want_rows[fold] -= 1
    if bar is not None:
        bar.update(len(unlabelled))
        bar.close()
    return folds


def ensure_labels_in_fold(y: np.ndarray, folds: np.ndarray, fold: int = 0) -> tuple[np.ndarray, list[int]]:
    """Move rows into `fold` until it holds every label that occurs at all; returns (new folds, moved rows).

    A model cannot learn a label it never sees in train. For each label missing from `fold`, the row that
    carries it with the fewest labels is moved (the smallest disturbance to the other folds), lowest index first.
    Labels whose only rows are already in `fold` need nothing; stratification makes moves rare (labels with
    one or two rows).
    """
    y = np.asarray(y).astype(bool)
    folds = np.asarray(folds).copy()
    moved: list[int] = []
    n_per_row = y.sum(axis=1)
    for label in range(y.shape[1]):
        has = y[:, label]
        if not has.any() or (has & (folds == fold)).any():
            continue
        candidates = np.flatnonzero(has)
        row = int(candidates[np.argmin(n_per_row[candidates])])   # argmin takes the first of equals
        folds[row] = fold
        moved.append(row)
    return folds, moved


def label_proportion_error(y: np.ndarray, folds: np.ndarray, fractions: Sequence[float]) -> float:
    """Mean over labels and folds of |share of the label's rows in the fold - the fold's fraction|.

    Sechidis et al.'s "label distribution" measure, without the per-fold normalisation: 0 is perfect.
    """
    y = np.asarray(y).astype(bool)
    r = np.asarray(fractions, dtype=float)
    per_label = y.sum(axis=0)
    present = per_label > 0
    errors = [np.abs(y[folds == j][:, present].sum(axis=0) / per_label[present] - r[j]) for j in range(len(r))]
    return float(np.mean(errors))
