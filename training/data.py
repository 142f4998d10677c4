"""Reading, cleaning and loading labelled text: the pure building blocks of `python -m training.prepare`.

Two kinds of caller use this module:

* `training.prepare` (the data-preparation stage) reads a raw file with `read_records`, then runs the pure
  frame-to-frame steps below in order: `normalise_texts`, `drop_empty_text`, `deduplicate`,
  `apply_label_map`, `apply_hierarchy`, `prune_rare_labels`, `drop_unlabelled`.
* later stages (training, the baseline, notebooks) read a prepared folder with `load_prepared` and turn label
  lists into a matrix with `encode_labels`:

    >>> from training.data import load_prepared, encode_labels
    >>> df, labels = load_prepared("data/processed/cmu")      # df.labels holds Python lists
    >>> y = encode_labels(df.labels, labels)                   # uint8 [n_rows, n_labels]

A "frame" here is a DataFrame with a `text` column (str), a `labels` column (list[str]) and any passthrough
columns; `_line` (the 1-based source line of each row) travels with it so errors and the report can point at
the input, and `_parts` (the raw text columns of a row) lives from reading until `normalise_texts`.
Every problem with the input raises `PrepareError` with a one-line message naming the file, the line and the fix.
"""
from __future__ import annotations

import csv
import gzip
import html
import io
import json
import math
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from deployment.files import large_csv_fields

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
# Near-duplicate key: everything but word characters goes. "+" and "#" stay because they carry meaning in
# the question-tag data ("C++" / "C#" / "C" must not collapse into one question).
_KEY_DROP = re.compile(r"[^\w+#]+")
_SURROGATE = re.compile("[\ud800-\udfff]")


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
    """Key under which two texts count as the same: casefolded, NFKC, punctuation and spacing removed."""
    return _KEY_DROP.sub("", unicodedata.normalize("NFKC", text).casefold())


def normalise_label(label: str) -> str:
    """Clean one label like a text, and write hierarchy separators (`»`, ` > `) one way: `A » B`."""
    label = normalise_text(label)
    parts = [p for p in _HIERARCHY_SPLIT.split(label)]
    if len(parts) > 1:
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
# reading raw files
# --------------------------------------------------------------------------------------------------------
def detect_format(path: Path) -> str:
    """'csv' or 'jsonl' from the file name (a trailing .gz is allowed)."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    ext = suffixes[-1] if suffixes else ""
    if ext in (".csv",):
        return "csv"
    if ext in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    raise PrepareError(f"{path}: cannot tell the format from the name; use .csv/.jsonl(.gz) or pass --format")


def read_text_file(path: Path) -> tuple[str, bytes]:
    """The decoded text of a (possibly gzipped) UTF-8 file and its raw bytes (for the report's checksum)."""
    if not path.exists():
        raise PrepareError(f"{path}: file not found; check --input")
    if not path.is_file():
        raise PrepareError(f"{path}: not a file; --input must name a .csv or .jsonl(.gz) file")
    raw = path.read_bytes()
    data = raw
    if raw[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise PrepareError(f"{path}: corrupt gzip file ({e}); re-download or re-compress it") from None
    elif path.suffix.lower() == ".gz":
        raise PrepareError(f"{path}: named .gz but not gzip-compressed; rename it or compress it with gzip")
    try:
        return data.decode("utf-8-sig"), raw
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise PrepareError(
            f"{path} line {line}: not valid UTF-8 (byte {data[e.start]:#04x}); re-save the file as UTF-8"
        ) from None


def _read_csv_rows(path: Path, text: str) -> tuple[list[str], list[dict[str, str]], list[int]]:
    """Header, rows as dicts and the 1-based line on which each row starts (texts may span lines)."""
    with large_csv_fields():   # long descriptions are normal; the default 128 KiB cap is not a format rule
        return _csv_rows(path, text)


def _csv_rows(path: Path, text: str) -> tuple[list[str], list[dict[str, str]], list[int]]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise PrepareError(f"{path}: empty file; expected a header line like url,title,text,labels") from None
    except csv.Error as e:
        raise PrepareError(f"{path} line 1: malformed CSV header ({e}); fix the quoting") from None
    header = [h.strip() for h in header]
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:   # a dict per row keeps one of them: the other column's cells would vanish without a word
        raise PrepareError(
            f"{path} line 1 (header): column name(s) {', '.join(map(repr, repeated))} appear more than once; "
            "rename them so each column has its own name"
        )
    rows, lines = [], []
    start = reader.line_num + 1
    while True:
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise PrepareError(
                f"{path} line {start}: malformed CSV ({e}); quote fields that contain commas, quotes or newlines"
            ) from None
        if values and len(values) != len(header):
            raise PrepareError(
                f"{path} line {start}: expected {len(header)} fields ({','.join(header)}), found {len(values)}; "
                "quote fields that contain commas"
            )
        if values:  # a blank line between records is not a row
            rows.append(dict(zip(header, values)))
            lines.append(start)
        start = reader.line_num + 1
    return header, rows, lines


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    keys = [k for k, _ in pairs]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:   # json.loads would keep the last value silently
        raise ValueError(f"key(s) {', '.join(map(repr, repeated))} appear more than once in one object")
    return dict(pairs)


def _lone_surrogate(value: Any, key: str = "") -> tuple[str, str] | None:
    """(field, character) of the first lone surrogate in a decoded JSON value, or None.

    JSON can spell one ("\\ud800"); no UTF-8 file can hold it, so the row could never be written out.
    """
    if isinstance(value, str):
        found = _SURROGATE.search(value)
        return (key, f"U+{ord(found.group()):04X}") if found else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        hit = _lone_surrogate(k, key) if isinstance(k, str) else None
        hit = hit or _lone_surrogate(v, key or str(k))
        if hit:
            return hit
    return None


def _read_jsonl_rows(path: Path, text: str) -> tuple[list[str], list[dict[str, Any]], list[int]]:
    rows, lines, columns = [], [], {}
    # "\n" only: str.splitlines() also splits at U+2028, U+0085 and \x1c-\x1e, which a JSON string may hold.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            # strict=False: raw control characters inside strings (some producers write them) are read;
            # normalise_text drops them from the text anyway.
            obj = json.loads(line, strict=False, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as e:
            raise PrepareError(
                f"{path} line {number}: not valid JSON ({e.msg} at column {e.colno}); each line must be one JSON object"
            ) from None
        except (ValueError, RecursionError) as e:   # repeated keys, 4300+ digit numbers, deep nesting
            reason = "nested too deeply" if isinstance(e, RecursionError) else str(e).split(":")[0]
            raise PrepareError(f"{path} line {number}: cannot read this JSON object ({reason}); fix the line") from None
        surrogate = _lone_surrogate(obj)
        if surrogate:
            raise PrepareError(
                f"{path} line {number}: field '{surrogate[0]}' holds a lone surrogate ({surrogate[1]}, an unpaired "
                "\\uD800-\\uDFFF escape), which UTF-8 cannot store; fix or remove that value"
            )
        if not isinstance(obj, dict):
            raise PrepareError(
                f"{path} line {number}: a JSON {type(obj).__name__}, not an object; "
                'each line must look like {"text": "...", "labels": ["..."]}'
            )
        rows.append(obj)
        lines.append(number)
        columns.update(dict.fromkeys(obj))
    return list(columns), rows, lines


def _cell_text(value: Any, path: Path, line: int, col: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, (list, dict)):
        raise PrepareError(
            f"{path} line {line}: text column '{col}' holds a JSON {type(value).__name__}, not a string; "
            "pick text columns with --text-col"
        )
    return str(value)


@dataclass
class RawData:
    """What `read_records` found: the frame plus facts for the report."""

    frame: pd.DataFrame
    columns: list[str]
    format: str
    passthrough: list[str]
    dropped_columns: list[str] = field(default_factory=list)
    raw_bytes: bytes = b""


def read_records(
    path: Path, text_cols: Sequence[str], labels_col: str, fmt: str = "auto", progress: bool = False
) -> RawData:
    """Read a details CSV or JSONL(.gz) into a frame: `text` (the text columns joined by a blank line, raw),
    `_parts` (the raw text columns), `labels` (parsed, normalised lists), `_line`, and passthrough columns
    (the other scalar columns, as read).

    Columns named like the output's own (`text`, `labels`, `split`) that are not the ones used are kept as
    `source_<name>`; columns holding lists or objects (e.g. CMU's `label_ids`, which would go stale once labels
    are merged and pruned) are left out and listed in `dropped_columns`.
    """
    path = Path(path)
    fmt = detect_format(path) if fmt == "auto" else fmt
    content, raw = read_text_file(path)
    if fmt == "csv":
        columns, rows, lines = _read_csv_rows(path, content)
    else:
        columns, rows, lines = _read_jsonl_rows(path, content)
    if not rows:
        raise PrepareError(f"{path}: no data rows; the file has nothing to prepare")
    where_cols = "line 1 (header)" if fmt == "csv" else "every line"
    for col in [*text_cols, labels_col]:
        if col not in columns:
            option = "--labels-col" if col == labels_col else "--text-col"
            raise PrepareError(
                f"{path} {where_cols}: no column '{col}' (found: {', '.join(columns) or 'none'}); "
                f"pass the right name with {option}"
            )

    iterator: Iterable = zip(rows, lines)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, total=len(rows), desc="read", unit="row", disable=None, leave=False)
    texts, parts_per_row, labels = [], [], []
    for row, line in iterator:
        parts = [_cell_text(row.get(c), path, line, c) for c in text_cols]
        parts_per_row.append(parts)
        texts.append(TEXT_JOIN.join(p for p in parts if p.strip()))
        labels.append(parse_labels_cell(row.get(labels_col), f"{path} line {line}"))

    used = set(text_cols) | {labels_col}
    passthrough, dropped, data = [], [], {}
    for col in columns:
        if col in used and col not in text_cols:
            continue    # the labels column is replaced by the parsed one
        if col in used and col == "text":
            continue    # replaced by the normalised text
        values = [row.get(col) for row in rows]
        if any(isinstance(v, (list, dict)) for v in values):
            dropped.append(col)
            continue
        name = f"source_{col}" if col in ("text", "labels", "split", LINE_COL) else col
        data[name] = pd.Series(values, dtype=object)   # as read: ids stay "007", ints don't become floats
        passthrough.append(name)
    frame = pd.DataFrame({"text": texts, LINE_COL: lines})
    for name, values in data.items():
        frame[name] = values
    frame["labels"] = pd.Series(labels, dtype=object)
    frame[PARTS_COL] = pd.Series(parts_per_row, dtype=object)
    return RawData(frame, list(columns), fmt, passthrough, dropped, raw)


def load_label_map(path: Path) -> dict[str, str | None]:
    """A JSON object {old: new} (rename or merge) or {old: null} (drop); keys and values are normalised."""
    path = Path(path)
    if not path.is_file():
        raise PrepareError(f"{path}: label map file not found; check --label-map")
    try:
        mapping = json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        line = getattr(e, "lineno", 1)
        raise PrepareError(f"{path} line {line}: label map is not valid JSON ({e}); fix the file") from None
    if not isinstance(mapping, dict):
        raise PrepareError(f'{path}: label map must be a JSON object like {{"Sci-Fi": "Science Fiction", "Misc": null}}')
    out: dict[str, str | None] = {}
    for old, new in mapping.items():
        if new is not None and not isinstance(new, str):
            raise PrepareError(
                f"{path}: label map value for {old!r} is {json.dumps(new)}; use a label string, or null to drop it"
            )
        out[normalise_label(old)] = normalise_label(new) if isinstance(new, str) and new.strip() else None
    return out


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


# --------------------------------------------------------------------------------------------------------
# loading a prepared folder (used by training and the baseline)
# --------------------------------------------------------------------------------------------------------
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
    header, rows, lines = _read_csv_rows(dataset_path, content)
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
