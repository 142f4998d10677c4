"""Reading raw labelled files for `python -m training.prepare`: CSV or JSONL (gzipped or not), strictly, every
problem a `PrepareError` naming the file, the line and the fix; and the label map file.

    raw = read_records(Path("data/raw/smashwords_details.csv"), text_cols=["text"], labels_col="labels")
    raw.frame          # text parts, labels (lists), passthrough columns, `_line`; see training.data for the steps

CSV goes through the strict reader the batch CLI shares (`deployment.formats.csv_records`), so an unclosed quote is
an error naming its line in both.
"""
from __future__ import annotations

import gzip
import io
import json
import re
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

from deployment.formats import CsvError, csv_records, repeated, unique_keys
from training.data import LINE_COL, PARTS_COL, TEXT_JOIN, PrepareError, normalise_label, parse_labels_cell

_SURROGATE = re.compile("[\ud800-\udfff]")


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


def read_csv_rows(path: Path, text: str) -> tuple[list[str], list[dict[str, str]], list[int]]:
    """Header, rows as dicts and the 1-based line on which each row starts (texts may span lines). The batch
    CLI reads CSV through the same strict reader (`deployment.formats.csv_records`), so the two agree."""
    try:
        return _csv_rows(path, csv_records(io.StringIO(text, newline="")))
    except CsvError as e:
        raise PrepareError(f"{path} {e}") from None


def _csv_rows(path: Path, records) -> tuple[list[str], list[dict[str, str]], list[int]]:
    _, header = next(records, (1, None))
    if header is None:
        raise PrepareError(f"{path}: empty file; expected a header line like url,title,text,labels")
    header = [h.strip() for h in header]
    repeats = repeated(header)
    if repeats:   # a dict per row keeps one of them: the other column's cells would vanish without a word
        raise PrepareError(
            f"{path} line 1 (header): column name(s) {', '.join(map(repr, repeats))} appear more than once; "
            "rename them so each column has its own name"
        )
    rows, lines = [], []
    for start, values in records:
        if values and len(values) != len(header):
            raise PrepareError(
                f"{path} line {start}: expected {len(header)} fields ({','.join(header)}), found {len(values)}; "
                "quote fields that contain commas"
            )
        if values:  # a blank line between records is not a row
            rows.append(dict(zip(header, values)))
            lines.append(start)
    return header, rows, lines



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
            obj = json.loads(line, strict=False, object_pairs_hook=unique_keys)
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

    Columns named like the output's own (`text`, `labels`, `split`, `_line`, `_parts`) that are not the ones used are
    kept as `source_<name>` (a file that also has that name is refused); columns holding lists or objects (e.g. CMU's `label_ids`, which would go stale once labels
    are merged and pruned) are left out and listed in `dropped_columns`.
    """
    path = Path(path)
    fmt = detect_format(path) if fmt == "auto" else fmt
    content, raw = read_text_file(path)
    if fmt == "csv":
        columns, rows, lines = read_csv_rows(path, content)
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
        name = f"source_{col}" if col in ("text", "labels", "split", LINE_COL, PARTS_COL) else col
        if name != col and name in columns:   # two columns under one name: one would vanish without a word
            raise PrepareError(f"{path}: column '{col}' is kept as '{name}' (the output uses its name), but the file "
                               f"also has a column '{name}'; rename one of them")
        data[name] = pd.Series(values, dtype=object)   # as read: ids stay "007", ints don't become floats
        passthrough.append(name)
    # One construction: adding columns one by one costs a copy of the block list each (quadratic in columns).
    frame = pd.DataFrame({"text": texts, LINE_COL: lines, **data, "labels": pd.Series(labels, dtype=object),
                          PARTS_COL: pd.Series(parts_per_row, dtype=object)})
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
