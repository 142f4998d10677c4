"""The prepared data set `data/processed/<name>/` (docs/CONTRACTS.md): its one writer and its one reader.

    from training.dataset import read_splits
    splits = read_splits("data/processed/books")           # every split's rows, texts and label matrix
    splits.texts["test"], splits.y["test"], splits.labels

`training.prepare` writes `dataset.csv` + `labels.json` with `write_dataset`. Every later reader goes through
`load_prepared` (the checked frame): training and the baseline take all three splits (`read_splits`), the
compression report, the bundle's choice of its linear part and the benchmarks one split against a model's labels
(`read_split`). A problem raises `training.data.PrepareError`, one line naming the file and the fix.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from training.data import HELD_OUT_SPLITS, LINE_COL, SPLITS, PrepareError, encode_labels, parse_labels_cell
from training.rawfiles import read_csv_rows, read_text_file


# --------------------------------------------------------------------------------------------- writing
def dataset_frame(df: pd.DataFrame, passthrough: Sequence[str]) -> pd.DataFrame:
    """The dataset.csv columns: text, labels (JSON lists), split, then the passthrough columns."""
    # One construction: adding columns one by one copies the block list each time (quadratic in columns).
    return pd.DataFrame({
        "text": df["text"],
        "labels": pd.Series([json.dumps(x, ensure_ascii=False) for x in df["labels"]], index=df.index, dtype=object),
        "split": df["split"],
        **{col: df[col] for col in passthrough if col in df and col != LINE_COL},
    })


def write_dataset(folder: Path, df: pd.DataFrame, labels: Sequence[str], passthrough: Sequence[str]) -> None:
    """`dataset.csv` and `labels.json` into `folder` (a staging folder: `training.prepare` swaps it into place)."""
    # Every cell quoted: with "\n" line ends the csv module leaves a cell holding a bare "\r" unquoted, and
    # every reader then cuts the row there (passthrough columns such as a title keep what the source had).
    dataset_frame(df, passthrough).to_csv(folder / "dataset.csv", index=False, lineterminator="\n",
                                          quoting=csv.QUOTE_ALL)
    (folder / "labels.json").write_text(
        json.dumps({x: i for i, x in enumerate(labels)}, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------------------------- reading
def load_prepared(processed_dir: str | Path) -> tuple[pd.DataFrame, list[str]]:
    """Read `dataset.csv` + `labels.json` written by `training.prepare` and check they agree.

    Returns the frame (`text`, `labels` as Python lists, `split`, passthrough columns) and the labels in index
    order. Raises PrepareError when the folder or a file is missing, a labels cell is malformed, a split name is
    unknown, a row has no labels, or a row carries a label that labels.json lacks.
    """
    folder = Path(processed_dir)
    fix = f"run `python -m training.prepare --out {folder}` first"
    if not folder.is_dir():
        raise PrepareError(f"{folder}: prepared data folder not found; {fix}")
    dataset_path, labels_path = folder / "dataset.csv", folder / "labels.json"
    for p in (dataset_path, labels_path):
        if not p.is_file():
            raise PrepareError(f"{p}: missing; {fix}")
    try:
        mapping = json.loads(labels_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PrepareError(f"{labels_path}: not valid JSON ({e}); {fix}") from None
    if not isinstance(mapping, dict) or not all(isinstance(v, int) for v in mapping.values()):
        raise PrepareError(f'{labels_path}: expected {{"label": index, ...}}; {fix}')
    if sorted(mapping.values()) != list(range(len(mapping))):
        raise PrepareError(f"{labels_path}: indices must be 0..{len(mapping) - 1} without gaps or repeats; {fix}")
    labels = sorted(mapping, key=mapping.__getitem__)

    content, _ = read_text_file(dataset_path)
    header, rows, lines = read_csv_rows(dataset_path, content)
    missing = [c for c in ("text", "labels", "split") if c not in header]
    if missing:
        raise PrepareError(f"{dataset_path} line 1 (header): no column {', '.join(missing)}; {fix}")
    known = set(labels)
    parsed = []
    for row, line in zip(rows, lines):
        where = f"{dataset_path} line {line}"
        row_labels = parse_labels_cell(row["labels"], where)
        if not row_labels:
            raise PrepareError(f"{where}: row has no labels; {fix}")
        unknown = [x for x in row_labels if x not in known]
        if unknown:
            raise PrepareError(f"{where}: label {unknown[0]!r} is not in {labels_path.name}; {fix}")
        if row["split"] not in SPLITS + HELD_OUT_SPLITS:
            raise PrepareError(f"{where}: split {row['split']!r} is not one of {', '.join(SPLITS + HELD_OUT_SPLITS)}; {fix}")
        parsed.append(row_labels)
    df = pd.DataFrame(rows, columns=header)
    df["labels"] = pd.Series(parsed, dtype=object)
    return df, labels


@dataclass
class Splits:
    """The three splits of a prepared folder: rows, texts and label matrices (uint8 [n, L]) per split name."""
    frames: dict[str, pd.DataFrame]
    texts: dict[str, list[str]]
    y: dict[str, np.ndarray]
    labels: list[str]


def read_splits(folder: str | Path, max_train_rows: int | None = None, seed: int = 0) -> Splits:
    """Every split of a prepared folder (each must have rows); `max_train_rows` subsamples train with `seed`."""
    df, labels = load_prepared(folder)
    frames = {}
    for s in SPLITS:
        part = df[df["split"] == s].reset_index(drop=True)
        if part.empty:
            raise PrepareError(f"{Path(folder) / 'dataset.csv'} has no {s!r} rows: re-run training.prepare")
        frames[s] = part
    if max_train_rows and len(frames["train"]) > max_train_rows:
        frames["train"] = frames["train"].sample(max_train_rows, random_state=seed).reset_index(drop=True)
    return Splits(frames, {s: p["text"].tolist() for s, p in frames.items()},
                  {s: encode_labels(p["labels"].tolist(), labels) for s, p in frames.items()}, labels)


@dataclass
class Split:
    """One split read against a model's labels: its texts, their label lists and matrix (bool [n, L]) restricted to
    those labels, how many of the rows' labels the model does not know, and where it came from (for reports)."""
    texts: list[str]
    label_lists: list[list[str]]
    y: np.ndarray
    unknown: int
    source: str


def read_split(folder: str | Path, split: str, labels: Sequence[str], limit: int | None = None) -> Split:
    """The first `limit` rows (all with None) of `split`, their labels matched to `labels` (a model's, which may
    be older than the data: labels it lacks are dropped and counted in `unknown`). No rows: an empty Split."""
    df, _ = load_prepared(folder)
    part = df[df["split"] == split]
    if limit:
        part = part.iloc[:limit]
    known = set(labels)
    targets = [[t for t in row if t in known] for row in part["labels"]]
    unknown = sum(len(row) for row in part["labels"]) - sum(len(t) for t in targets)
    return Split(part["text"].tolist(), targets, encode_labels(targets, labels).astype(bool), unknown,
                 f"{Path(folder) / 'dataset.csv'} (split={split}, {len(part)} texts)")
