"""Reading, cleaning and loading labelled text: the pure building blocks of `python -m training.prepare`.

Two kinds of caller use this module:

* `training.prepare` (the data-preparation stage) reads a raw file with `training.rawfiles.read_records`, then runs the pure
  frame-to-frame steps below in order: `normalise_texts`, `drop_empty_text`, `deduplicate`,
  `apply_label_map`, `apply_hierarchy`, `prune_rare_labels`, `drop_unlabelled`.
* later stages read a prepared folder through `training.dataset` (the folder's writer and reader), which turns
  label lists into a matrix with `encode_labels`:

    >>> from training.data import encode_labels
    >>> y = encode_labels([["Fantasy"], []], ["Fantasy", "Horror"])   # uint8 [n_rows, n_labels]

A "frame" here is a DataFrame with a `text` column (str), a `labels` column (list[str]) and any passthrough
columns; `_line` (the 1-based source line of each row) travels with it so errors and the report can point at
the input, and `_parts` (the raw text columns of a row) lives from reading until `normalise_texts`.
Every problem with the input raises `PrepareError` with a one-line message naming the file, the line and the fix.
"""
from __future__ import annotations

import html
import json
import math
import re
import unicodedata
from collections import Counter
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import regex


SPLITS = ("train", "valid", "test")
HELD_OUT_SPLITS = ("feedback",)             # test slices no model trains on (training/stable_split.py)
HIERARCHY_SEP = " » "                       # canonical separator between levels of a hierarchical label
_HIERARCHY_SPLIT = re.compile(r"\s*»\s*|\s+>\s+")  # "»" with any spacing, ">" only with spaces (keeps "<3" whole)
LINE_COL = "_line"                          # internal column: 1-based line of the row in the input file
PARTS_COL = "_parts"                        # internal column: the raw text columns, joined after normalising
TEXT_JOIN = "\n\n"                          # several text columns (title, body) become one text, a blank line apart
# Characters that are invisible but make two copies of a text differ: C0/C1 controls (not tab/newline, which
# the whitespace collapse handles), zero-width space/joiners used as separators, BOM, soft hyphen.
_INVISIBLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\u2060\ufeff\u00ad]")
# Near-duplicate key: everything but letters, digits and combining marks goes (`regex`'s \w with \p{M} spelt
# out: Devanagari vowel signs and Thai vowels and tone marks are marks, and they are what tells "कि" from "की").
# "+" and "#" stay because they carry meaning in the question-tag data ("C++" / "C#" / "C" must not collapse).
_KEY_DROP = regex.compile(r"[^\w\p{M}+#]+")


class PrepareError(ValueError):
    """Bad input or settings for data preparation; the message is one line naming the file, row and fix."""


# --------------------------------------------------------------------------------------------------------
# text and label normalisation (pure)
# --------------------------------------------------------------------------------------------------------
def normalise_text(text: str) -> str:
    """Decode HTML entities, normalise unicode to NFC, drop invisible characters, collapse whitespace."""
    text = html.unescape(text)
    text = unicodedata.normalize("NFC", text)
    text = _INVISIBLE.sub("", text)
    return " ".join(text.split())


def dedup_key(text: str) -> str:
    """Key under which two texts count as the same: casefolded, NFKC, punctuation and spacing removed; letters,
    digits and combining marks of every script kept."""
    return _KEY_DROP.sub("", unicodedata.normalize("NFKC", text).casefold())


def normalise_label(label: str) -> str:
    """Clean one label like a text, and write hierarchy separators (`»`, ` > `) one way: `A » B`."""
    label = normalise_text(label)
    parts = _HIERARCHY_SPLIT.split(label)
    if len(parts) > 1 and any(parts):   # only a separator ("»"): no levels to join, the label stays as written
        label = HIERARCHY_SEP.join(p for p in parts if p)
    return label


def _dedupe(items: Iterable[str]) -> list[str]:
    """Drop repeats and empty strings, keeping first-seen order (the catalogue's own order of labels)."""
    return [x for x in dict.fromkeys(items) if x]


def parse_labels_cell(cell: Any, where: str) -> list[str]:
    """Labels from one cell: a JSON list of strings (CSV) or an already-decoded list (JSONL).

    Empty cells and JSON null mean "no labels" (the row is dropped later and counted). `where` names the
    place for the error message, e.g. "data/raw/x.csv line 17". The cell is parsed as JSON, never evaluated.
    """
    if cell is None or (isinstance(cell, float) and math.isnan(cell)):
        return []
    if isinstance(cell, str):
        stripped = cell.strip()
        if not stripped:
            return []
        try:
            cell = json.loads(stripped)
        except json.JSONDecodeError:
            raise PrepareError(
                f"{where}: labels cell is not valid JSON ({_preview(stripped)}); "
                'write labels as a JSON list like ["Fantasy", "Young Adult"]'
            ) from None
        if cell is None:
            return []
    if not isinstance(cell, list):
        raise PrepareError(
            f"{where}: labels cell is a JSON {type(cell).__name__}, not a list ({_preview(json.dumps(cell))}); "
            'write labels as a JSON list like ["Fantasy", "Young Adult"]'
        )
    bad = [x for x in cell if not isinstance(x, str)]
    if bad:
        raise PrepareError(
            f"{where}: labels must be strings, found {_preview(json.dumps(bad[0]))}; "
            'quote every label, e.g. ["2020", "Fantasy"]'
        )
    return _dedupe(normalise_label(x) for x in cell)


def _preview(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= width else text[: width - 1] + "…")


# --------------------------------------------------------------------------------------------------------
# pure frame steps: each returns a new frame and a dict of facts for the report
# --------------------------------------------------------------------------------------------------------
def label_counts(labels: Iterable[Sequence[str]]) -> Counter:
    """How many rows carry each label."""
    return Counter(label for row in labels for label in row)


def normalise_texts(df: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Apply `normalise_text` to every text. Several text columns are normalised one by one and then joined
    by a blank line (the whitespace collapse would otherwise erase the boundary between title and body)."""
    if PARTS_COL in df:
        new = [TEXT_JOIN.join(n for n in map(normalise_text, parts) if n) for parts in df[PARTS_COL]]
    else:
        new = [normalise_text(t) for t in df["text"]]
    changed = sum(a != b for a, b in zip(df["text"], new))
    out = df.drop(columns=[PARTS_COL], errors="ignore")
    out["text"] = new
    return out, {"rows_changed": int(changed)}


def drop_short_text(df: pd.DataFrame, min_words: int) -> tuple[pd.DataFrame, dict]:
    """Drop rows with fewer than `min_words` words: placeholders such as "To be added." carry no signal, and
    near-duplicate merging would fold every copy of one into a single row with many unrelated labels."""
    keep = df["text"].str.split().str.len() >= min_words
    return df[keep].reset_index(drop=True), {"dropped": int((~keep).sum()), "min_words": int(min_words)}


def drop_empty_text(df: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Drop rows whose text is empty (after normalisation, so whitespace-only or `&nbsp;` counts as empty)."""
    keep = df["text"].str.len() > 0
    return df[keep].reset_index(drop=True), {"dropped": int((~keep).sum())}


def deduplicate(df: pd.DataFrame, mode: str = "near") -> tuple[pd.DataFrame, dict]:
    """Keep the first row of each group of duplicate texts and give it the union of the group's labels.

    mode "exact" groups identical (normalised) texts; "near" groups texts with the same `dedup_key`, i.e.
    differing only in case, punctuation or spacing; "none" keeps everything. Duplicates must go before the
    split: the seeds' random split put ~30% of the test books in train too.
    """
    nothing = {"mode": mode, "duplicates_merged": 0, "groups": 0, "exact": 0, "near_exact": 0,
               "rows_with_labels_added": 0, "examples": []}
    if mode == "none" or df.empty:
        return df.reset_index(drop=True), nothing
    keys = df["text"] if mode == "exact" else df["text"].map(dedup_key)
    group = keys.groupby(keys, sort=False).ngroup().to_numpy()   # group id per row, numbered by first sight
    is_dup = pd.Series(group).duplicated().to_numpy()            # every row of a group but its first
    if not is_dup.any():
        return df.reset_index(drop=True), nothing
    keep_pos = np.flatnonzero(~is_dup)
    group_of_kept = group[keep_pos]
    kept_pos_by_group = dict(zip(group_of_kept.tolist(), keep_pos.tolist()))
    merged = {g: list(df["labels"].iat[p]) for g, p in kept_pos_by_group.items()}
    exact = near = 0
    examples = []
    dup_groups = set()
    lines = df[LINE_COL] if LINE_COL in df else pd.Series(np.arange(1, len(df) + 1))
    for pos in np.flatnonzero(is_dup):
        g = int(group[pos])
        kept = kept_pos_by_group[g]
        dup_groups.add(g)
        if df["text"].iat[pos] == df["text"].iat[kept]:
            exact += 1
        else:
            near += 1
        merged[g] = _dedupe([*merged[g], *df["labels"].iat[pos]])
        if len(examples) < 10:
            examples.append({"kept_line": int(lines.iat[kept]), "dropped_line": int(lines.iat[pos]),
                             "text": df["text"].iat[pos][:80]})
    out = df.iloc[keep_pos].reset_index(drop=True)
    out["labels"] = pd.Series([merged[g] for g in group_of_kept.tolist()], dtype=object)
    rows_with_labels_added = sum(
        len(merged[g]) > len(df["labels"].iat[kept_pos_by_group[g]]) for g in dup_groups
    )
    return out, {
        "mode": mode,
        "duplicates_merged": int(is_dup.sum()),   # rows removed
        "groups": len(dup_groups),
        "exact": exact,
        "near_exact": near,
        "rows_with_labels_added": int(rows_with_labels_added),
        "examples": examples,
    }


def apply_label_map(df: pd.DataFrame, mapping: Mapping[str, str | None]) -> tuple[pd.DataFrame, dict]:
    """Rename or merge labels ({old: new}) and drop labels ({old: null}); unmapped labels stay as they are."""
    present = label_counts(df["labels"])
    out = df.copy()
    out["labels"] = pd.Series(
        [_dedupe(mapping.get(x, x) for x in row) for row in df["labels"]],   # _dedupe drops the None (dropped)
        dtype=object,
    )
    return out, {
        "renamed": sorted(k for k, v in mapping.items() if v is not None and v != k and k in present),
        "dropped": sorted(k for k, v in mapping.items() if v is None and k in present),
        "unused_keys": sorted(k for k in mapping if k not in present),
    }


def hierarchy_levels(label: str, mode: str) -> list[str]:
    """The labels one hierarchical label stands for.

    keep:   "Fiction » Fantasy » Epic" as it is;
    leaf:   "Epic" (note: "Fiction » General" and "Nonfiction » General" both become "General");
    expand: every prefix path — "Fiction", "Fiction » Fantasy", "Fiction » Fantasy » Epic". Prefix paths
            rather than bare level names, so "General" under two parents stays two labels.
    """
    if mode == "keep":
        return [label]
    parts = label.split(HIERARCHY_SEP)
    if mode == "leaf":
        return [parts[-1]]
    if mode == "expand":
        return [HIERARCHY_SEP.join(parts[: i + 1]) for i in range(len(parts))]
    raise ValueError(f"unknown hierarchy mode {mode!r}")


def apply_hierarchy(df: pd.DataFrame, mode: str) -> tuple[pd.DataFrame, dict]:
    """Apply `hierarchy_levels` to every label of every row (labels arrive with canonical ` » ` separators)."""
    hierarchical = sum(HIERARCHY_SEP in x for x in label_counts(df["labels"]))
    if mode == "keep":
        return df, {"mode": mode, "hierarchical_labels": hierarchical}
    out = df.copy()
    out["labels"] = pd.Series(
        [_dedupe(level for x in row for level in hierarchy_levels(x, mode)) for row in df["labels"]], dtype=object
    )
    return out, {"mode": mode, "hierarchical_labels": hierarchical}


def min_count_for(min_freq: float, n_rows: int) -> int:
    """The smallest row count a label needs: min_freq < 1 is a share of rows, >= 1 an absolute count."""
    if min_freq < 0:
        raise PrepareError(f"--min-label-freq {min_freq}: must be >= 0 (a share like 0.01 or a count like 5)")
    if min_freq >= 1:
        if min_freq != int(min_freq):
            raise PrepareError(
                f"--min-label-freq {min_freq}: counts must be whole numbers; use e.g. 5, or a share below 1 like 0.01"
            )
        return int(min_freq)
    # a share: the label must be on at least min_freq of the rows; the epsilon keeps 0.01*300 = 3 (not 4)
    return max(1, math.ceil(min_freq * n_rows - 1e-9))


def prune_rare_labels(df: pd.DataFrame, min_freq: float) -> tuple[pd.DataFrame, dict]:
    """Remove labels carried by fewer rows than `min_count_for(min_freq, len(df))`; rows may end up empty."""
    counts = label_counts(df["labels"])
    min_count = min_count_for(min_freq, len(df))
    kept = {label for label, c in counts.items() if c >= min_count}
    out = df.copy()
    out["labels"] = pd.Series([[x for x in row if x in kept] for row in df["labels"]], dtype=object)
    dropped = {label: c for label, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if label not in kept}
    return out, {"min_freq": min_freq, "min_count": min_count, "dropped_labels": dropped}


def drop_unlabelled(df: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Drop rows with no labels left: a multilabel row without labels teaches "none of these", which the
    source never claimed."""
    keep = df["labels"].map(len) > 0
    return df[keep].reset_index(drop=True), {"dropped": int((~keep).sum())}


def label_vocabulary(labels: Iterable[Sequence[str]]) -> list[str]:
    """Labels in index order: most frequent first, ties by name, so index 0 is the commonest label."""
    counts = label_counts(labels)
    return sorted(counts, key=lambda x: (-counts[x], x))


def encode_labels(label_lists: Iterable[Sequence[str]], labels: Sequence[str]) -> np.ndarray:
    """A uint8 matrix [n_rows, n_labels]: 1 where row i carries labels[j]."""
    index = {label: j for j, label in enumerate(labels)}
    rows = list(label_lists)
    y = np.zeros((len(rows), len(index)), dtype=np.uint8)
    for i, row in enumerate(rows):
        for label in row:
            j = index.get(label)
            if j is None:
                raise PrepareError(f"row {i}: label {label!r} is not in the label list; re-run training.prepare")
            y[i, j] = 1
    return y
