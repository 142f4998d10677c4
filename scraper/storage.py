"""Append-only CSV outputs that survive Ctrl-C and `kill -9` with no lost and no duplicated rows.

Each row is formatted in memory and written with one `write` + `flush`, so after a crash the file holds
whole rows plus at most one torn row at the end. `repair_and_read` finds the end of the last complete
row (a CSV row may span lines: descriptions contain newlines) and truncates the file there; the command
then skips every URL already present. Labels are JSON lists in their cell; nothing is ever `eval`ed.
"""
from __future__ import annotations

import csv
import io
import json
import os
import threading
from pathlib import Path
from typing import Iterable

ERROR_COLUMNS = ("url", "status", "reason", "detail")


def _physical_lines(data: bytes) -> Iterable[tuple[bytes, int]]:
    """(line, end offset) pairs, each line keeping its terminator."""
    start = 0
    while start < len(data):
        end = data.find(b"\n", start)
        end = len(data) if end == -1 else end + 1
        yield data[start:end], end
        start = end


def repair_and_read(path: Path, columns: Iterable[str]) -> list[dict]:
    """Rows of an existing output CSV, truncating a torn last row in place; [] when the file is absent or empty.

    Raises ValueError when the header differs from `columns` (the user pointed --out at another kind of file).
    """
    columns = list(columns)
    if not path.exists() or path.stat().st_size == 0:
        return []
    data = path.read_bytes()
    lines = _physical_lines(data)
    consumed = {"end": 0}

    def text_lines():
        for line, end in lines:
            consumed["end"] = end
            yield line.decode("utf-8", errors="replace")

    reader = csv.reader(text_lines())
    good_end = 0
    rows: list[dict] = []
    try:
        header = next(reader)
    except (StopIteration, csv.Error):
        header = []
    if header != columns:
        if not data.endswith(b"\n") and b"\n" not in data:        # torn header: nothing real was written yet
            path.write_bytes(b"")
            return []
        raise ValueError(f"{path} has columns {header}, expected {columns}: choose another --out or move it away")
    good_end = consumed["end"]
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error:                                          # EOF inside a quoted field: a torn row
            break
        row_end = consumed["end"]
        complete = data[:row_end].endswith(b"\n") and len(row) == len(columns)
        if not complete:
            break
        rows.append(dict(zip(columns, row)))
        good_end = row_end
    if good_end < len(data):
        with open(path, "r+b") as handle:
            handle.truncate(good_end)
    return rows


class CsvAppender:
    """Thread-safe, append-only CSV writer: header once, then one flushed `write` per row."""

    def __init__(self, path: Path, columns: Iterable[str]):
        self.path = Path(path)
        self.columns = list(columns)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists() or self.path.stat().st_size == 0
        self._file = open(self.path, "a", encoding="utf-8", newline="")
        self._lock = threading.Lock()
        self.rows_written = 0
        if new:
            self._write(self.columns)

    def _write(self, values: list) -> None:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow(values)
        self._file.write(buffer.getvalue())
        self._file.flush()

    def write(self, row: dict) -> None:
        values = [cell(row.get(column)) for column in self.columns]
        with self._lock:
            self._write(values)
            self.rows_written += 1

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.flush()
                os.fsync(self._file.fileno())
                self._file.close()

    def __enter__(self) -> "CsvAppender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def cell(value) -> str:
    """CSV cell text: lists (labels) as JSON, None as empty."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value), ensure_ascii=False)
    return str(value)


def read_labels(cell_text: str) -> list[str]:
    """The inverse of `cell` for a labels column: JSON only, never `eval`."""
    value = json.loads(cell_text) if cell_text else []
    if not isinstance(value, list):
        raise ValueError(f"labels cell is not a JSON list: {cell_text[:80]!r}")
    return [str(v) for v in value]


def errors_path(out: Path) -> Path:
    """`data/raw/x_details.csv` → `data/raw/x_details.errors.csv`."""
    out = Path(out)
    return out.with_name(out.stem + ".errors" + (out.suffix or ".csv"))


def sidecar(out: Path, name: str, suffix: str = ".csv") -> Path:
    out = Path(out)
    return out.with_name(f"{out.stem}.{name}{suffix}")
