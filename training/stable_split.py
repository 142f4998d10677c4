"""Stable splits: a text keeps its split across re-prepares; only new texts are assigned; a feedback slice.

    python -m training.prepare --input base.csv --corrections corrections.jsonl --out data/processed/books
    python -m training.prepare --input base.csv --out data/processed/books --resplit     # start over

Why: a retrained model is compared with the one it would replace on rows neither trained on. If re-preparing
shuffled the split, the new test split would hold texts the old model trained on (and the new train split texts
the old model was tested on), and the comparison would be worthless.

How (`assign`, pure): the previous prepared data set is the record of where each text went. `training.prepare`
reads it from --out (or --previous DIR) before writing the new one; each text found there by its key (the key
duplicates are merged by) keeps its split, whatever its labels now are. A split is not recomputed from a hash of
the text: the first split was stratified over labels, and moved rows so train holds every label, which no
per-text hash can reproduce; reading the previous assignment keeps exactly what the earlier models saw.
New texts are dealt out by the same iterative stratification as a first split, among themselves (so they go
to train/valid/test in the requested shares, label by label); corrected new texts get a fourth fold, `feedback`,
of `--feedback-share` of them, a test slice no model trains on or tunes thresholds on (`training.train` reads
train/valid/test only; `deployment.registry compare` scores it). A text that was in `feedback` stays there. If a
label would be missing from train, a new row carrying it is moved to train (old rows never move).
Deterministic for a given seed. `--resplit` ignores the previous data set (every text assigned anew).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from training.corrections import CORRECTED_COL, text_keys
from training.data import SPLITS, PrepareError
from training.split import ensure_labels_in_fold, iterative_stratification

FEEDBACK = "feedback"
ALL_SPLITS = (*SPLITS, FEEDBACK)      # fold ids 0..3; `feedback` is fold 3
DEFAULT_FEEDBACK_SHARE = 0.2


def previous_dir(out: Path, previous: Path | None, resplit: bool) -> Path | None:
    """The prepared folder whose splits are kept: --previous, else --out when it holds an earlier dataset.csv;
    None with --resplit or when there is none. A --previous without a dataset.csv is an error."""
    if resplit:
        return None
    if previous is not None:
        if not (Path(previous) / "dataset.csv").is_file():
            raise PrepareError(f"--previous {previous}: no dataset.csv there; name an earlier training.prepare output")
        return Path(previous)
    return Path(out) if (Path(out) / "dataset.csv").is_file() else None


def read_previous(folder: Path, dedup: str) -> dict[str, str]:
    """{text key: split} of an earlier prepared data set (read and checked by `training.dataset.load_prepared`)."""
    from training.dataset import load_prepared

    df, _ = load_prepared(folder)
    keys = text_keys(df["text"], dedup)
    out: dict[str, str] = {}
    for key, split in zip(keys, df["split"]):
        out.setdefault(key, split)   # two old texts with one key (the key changed since): the first decides
    return out


def assign(keys: list[str], y: np.ndarray, corrected: np.ndarray, previous: dict[str, str],
           fractions: tuple[float, float, float], feedback_share: float, seed: int) -> tuple[np.ndarray, dict]:
    """Fold ids (0 train, 1 valid, 2 test, 3 feedback) for every row, and facts for the report."""
    if not 0 <= feedback_share < 1:
        raise PrepareError(f"--feedback-share {feedback_share:g}: give a share in [0, 1)")
    index = {s: i for i, s in enumerate(ALL_SPLITS)}
    folds = np.array([index[previous[k]] if k in previous else -1 for k in keys], dtype=np.int64)
    kept = folds >= 0
    y = np.asarray(y).astype(bool)
    corrected = np.asarray(corrected, dtype=bool)
    r = np.asarray(fractions, dtype=float)
    groups = ((~kept & ~corrected, tuple(r) + (0.0,)),
              (~kept & corrected, tuple(r * (1 - feedback_share)) + (feedback_share,)))
    for offset, (rows, shares) in enumerate(groups):
        rows = np.flatnonzero(rows)
        if len(rows):
            folds[rows] = iterative_stratification(y[rows], shares, seed=seed + offset)
    # Train must hold every label; only new rows may move there.
    missing = ~(y[folds == 0].any(axis=0))
    moved = []
    new_rows = np.flatnonzero(~kept)
    if missing.any() and len(new_rows):
        sub = y[new_rows] & missing
        sub_folds, moved_local = ensure_labels_in_fold(sub, folds[new_rows], fold=0)
        folds[new_rows] = sub_folds
        moved = [int(new_rows[i]) for i in moved_local]
    facts = {"kept": int(kept.sum()), "new": int((~kept).sum()), "new_corrected": int((~kept & corrected).sum()),
             "feedback_share": feedback_share, "moved_to_train": len(moved),
             "kept_by_split": {s: int((kept & (folds == i)).sum()) for i, s in enumerate(ALL_SPLITS)},
             "previous_texts_gone": len(set(previous) - set(keys))}
    return folds, facts


def split(df: pd.DataFrame, y: np.ndarray, labels: list[str], settings, steps: list[dict],
          previous: Path | None, log) -> tuple[pd.DataFrame, np.ndarray]:
    """training.prepare's split step when a previous data set or corrections are given (see the module doc)."""
    t0 = time.perf_counter()
    known = read_previous(previous, settings.dedup) if previous is not None else {}
    corrected = df[CORRECTED_COL].to_numpy(bool) if CORRECTED_COL in df else np.zeros(len(df), bool)
    keys = text_keys(df["text"], settings.dedup).tolist()
    folds, facts = assign(keys, y, corrected, known, settings.split, settings.feedback_share, settings.seed)
    df = df.drop(columns=[CORRECTED_COL], errors="ignore").assign(split=np.asarray(ALL_SPLITS)[folds])
    sizes = {s: int((df["split"] == s).sum()) for s in ALL_SPLITS}
    for s, fraction in zip(SPLITS, settings.split):
        if fraction > 0 and sizes[s] == 0:
            raise PrepareError(f"{settings.input}: no row landed in {s} (only {len(df)} rows); use more data or "
                               f"--split with {s} 0")
    steps.append({"step": "split", "rows_before": len(df), "rows_after": len(df), "labels_before": len(labels),
                  "labels_after": len(labels), "sizes": sizes, "moved_to_train": facts["moved_to_train"],
                  "stable": {"previous": str(previous) if previous else None, **facts},
                  "seconds": round(time.perf_counter() - t0, 3)})
    log(f"  {'split':<18} " + " / ".join(f"{s} {n}" for s, n in sizes.items())
        + f" ({facts['kept']} texts kept their split" + (f" from {previous}" if previous else "")
        + f", {facts['new']} new assigned; --resplit to split all anew)")
    return df, folds
