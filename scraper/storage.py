"""Append-only CSV outputs that survive Ctrl-C and `kill -9` with no lost and no duplicated rows.

Writing: every field is quoted (`csv.QUOTE_ALL`), so a cell may hold anything a page or an API can put in a
string (`\\r`, `\\n`, `\\r\\n`, NUL and other control characters, quotes, commas, a BOM) and still reads back
exactly with the `csv` module and with `pandas.read_csv(..., dtype=str, keep_default_na=False)`.
Lone surrogates (a JSON `"\\ud800"` escape decodes to one) cannot be stored in UTF-8: they are written as
U+FFFD, counted, and reported when the file is closed; the row is never refused. Each row is encoded in
memory and written with one `os.write` on an O_APPEND descriptor, so after a crash the file holds whole
rows plus at most one torn row at the end. `sync()` makes the rows written so far durable (fsync): a
progress log is only told "this page is done" after that.

Resuming: `repair_and_read` splits the file into records at newlines outside quotes (a description spans
lines), so it never mistakes a newline or carriage return inside a cell for the end of a row. Then:
  - a torn last record (no terminating newline) is cut off, and its bytes are appended to
    `<stem>.torn.txt` beside the file: the page is fetched again, and nothing is destroyed;
  - a complete record is never cut. One the `csv` module cannot read, but a lenient parse can (a bare
    `\\r` in an unquoted cell, as versions before QUOTE_ALL wrote it), is kept and the file is rewritten
    once, atomically, with every cell quoted; one that cannot be parsed at all (wrong number of fields:
    edited by hand) stays in the file as it is, and both cases are counted and reported.
Labels are JSON lists in their cell; nothing is ever `eval`ed.

One run per output: `OutputLock` holds an exclusive `flock` on `<stem>.lock` beside the output for the whole
run, so a second run on the same output stops before it reads, repairs or requests anything (two appenders
would duplicate every row and double the request rate). The kernel drops the lock when the process ends,
`kill -9` included, so a stale lock file never blocks the next run; the file itself is left in place (removing
it would let a third run lock a new file while the second still waits on the old one).
"""
from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import re
import sys
import threading
from pathlib import Path
from typing import Callable, Iterable

from deployment.files import large_csv_fields, replace_file

ERROR_COLUMNS = ("url", "status", "reason", "detail")
QUOTING = csv.QUOTE_ALL                  # every cell quoted: no character in a cell can end a row early
BOM = "\ufeff"

_RECORD_TOKEN = re.compile(rb'["\n]')
_SURROGATE = re.compile("[\ud800-\udfff]")


def _warn(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- one run per output
class OutputLocked(Exception):
    """Another live process holds the output's lock."""


class OutputLock:
    """An exclusive, non-blocking `flock` on `lock_file` (see the module docstring), taken on creation; holds
    the owner's pid for the message a second run prints. Use as a context manager, or `release()`."""

    def __init__(self, lock_file: Path, output: Path):
        self.path = Path(lock_file)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)    # never truncated before the lock is ours
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 32, 0).decode("ascii", "replace").strip()
            os.close(self._fd)
            raise OutputLocked(f"{output} is being written by another run (process {holder or '?'}, lock "
                               f"{self.path}); wait for it to end or stop it: two runs on one output would "
                               f"duplicate its rows") from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)           # closing drops the flock
            self._fd = -1

    def __enter__(self) -> "OutputLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


# ---------------------------------------------------------------- writing
def storable(text: str) -> tuple[str, int]:
    """`text` as UTF-8 can store it, and how many lone surrogates were replaced by U+FFFD.

    A surrogate pair that arrived as two code points is joined into its character first; only unpaired
    halves are replaced.
    """
    if not _SURROGATE.search(text):
        return text, 0
    joined = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return joined, joined.count("\ufffd") - text.count("\ufffd")


def cell(value) -> str:
    """CSV cell text: lists (labels) as JSON, None as empty."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value), ensure_ascii=False)
    return str(value)


def format_row(values: Iterable[str]) -> str:
    """One CSV record, every field quoted, ending in `\\n`."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n", quoting=QUOTING).writerow(list(values))
    return buffer.getvalue()


class CsvAppender:
    """Thread-safe, append-only CSV writer: header once, then one `os.write` per row."""

    def __init__(self, path: Path, columns: Iterable[str], log: Callable[[str], None] = _warn):
        self.path = Path(path)
        self.columns = list(columns)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._lock = threading.Lock()
        self._log = log
        self.rows_written = 0
        self.surrogates_replaced = 0     # lone surrogates written as U+FFFD (reported on close)
        if os.fstat(self._fd).st_size == 0:
            self._write(self.columns)

    def _write(self, values: list[str]) -> None:
        data = memoryview(format_row(values).encode("utf-8"))
        while data:                      # os.write may write less than asked (disk nearly full): finish the row
            data = data[os.write(self._fd, data):]

    def write(self, row: dict) -> None:
        values, replaced = [], 0
        for column in self.columns:
            text, n = storable(cell(row.get(column)))
            values.append(text)
            replaced += n
        with self._lock:
            self._write(values)
            self.rows_written += 1
            self.surrogates_replaced += replaced

    def sync(self) -> None:
        """Make every row written so far durable (survives a power cut, not only a killed process)."""
        with self._lock:
            if self._fd >= 0:
                os.fsync(self._fd)

    def close(self) -> None:
        with self._lock:
            if self._fd < 0:
                return
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
        if self.surrogates_replaced:
            self._log(f"warning: {self.path}: {self.surrogates_replaced} lone surrogate(s) (invalid Unicode from the "
                      f"source) were written as U+FFFD")

    def __enter__(self) -> "CsvAppender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------- reading back
class Rows(list):
    """The complete rows of a repaired output, with what the repair did (also reported on stderr)."""
    cut_bytes: int = 0                   # torn tail removed (saved to the .torn.txt file)
    requoted: int = 0                    # complete rows rewritten with every cell quoted
    unreadable: int = 0                  # complete records kept in the file but not understood


def _split_records(data: bytes) -> tuple[list[tuple[int, int]], int]:
    """(start, end) of each record that ends with a newline outside quotes, and where the unterminated tail starts.

    A quote toggles the quoted state and `""` toggles it twice, so this is exact for any CSV the csv module
    writes, whatever the cells hold.
    """
    records: list[tuple[int, int]] = []
    start, quoted = 0, False
    for match in _RECORD_TOKEN.finditer(data):
        if match.group() == b'"':
            quoted = not quoted
        elif not quoted:
            records.append((start, match.end()))
            start = match.end()
    return records, start


def _strict_fields(text: str) -> list[str] | None:
    """Fields of one record as the csv module reads them, or None when it refuses the record."""
    try:
        rows = list(csv.reader([text], strict=True))
    except csv.Error:
        return None
    return rows[0] if len(rows) == 1 else None


def _lenient_fields(text: str) -> list[str] | None:
    """Fields of one record where only `,` and `"` are special (a bare `\\r` is text); None if a quote is unclosed."""
    fields: list[str] = []
    i, n = 0, len(text)
    while True:
        if i < n and text[i] == '"':
            parts, j = [], i + 1
            while True:
                k = text.find('"', j)
                if k == -1:
                    return None
                parts.append(text[j:k])
                if text.startswith('"', k + 1):
                    parts.append('"')
                    j = k + 2
                    continue
                j = k + 1
                break
            comma = text.find(",", j)
            end = n if comma == -1 else comma
            fields.append("".join(parts) + text[j:end])
        else:
            comma = text.find(",", i)
            end = n if comma == -1 else comma
            fields.append(text[i:end])
        if comma == -1:
            return fields
        i = comma + 1


def _record_text(data: bytes, start: int, end: int) -> str:
    """A record's text without its terminating newline; undecodable bytes kept as surrogate escapes."""
    return data[start:end].decode("utf-8", "surrogateescape").removesuffix("\n")


def _clean(values: list[str]) -> list[str]:
    return [storable(v)[0] for v in values]


def _header_prefixes(columns: list[str]) -> tuple[bytes, ...]:
    """The header lines this module writes now and wrote before QUOTE_ALL: a torn header is a prefix of one."""
    minimal = io.StringIO()
    csv.writer(minimal, lineterminator="\n").writerow(columns)
    return format_row(columns).encode("utf-8"), minimal.getvalue().encode("utf-8")


def torn_path(path: Path) -> Path:
    """`x_details.csv` → `x_details.torn.txt`: where cut-off bytes are kept."""
    return sidecar(path, "torn", ".txt")


def repair_and_read(path: Path, columns: Iterable[str], log: Callable[[str], None] = _warn) -> Rows:
    """Rows of an existing output CSV, after cutting a torn last row in place; [] when the file is absent or empty
    (see `_repair_and_read`)."""
    with large_csv_fields():
        return _repair_and_read(path, columns, log)


def _repair_and_read(path: Path, columns: Iterable[str], log: Callable[[str], None]) -> Rows:
    """Rows of an existing output CSV, after cutting a torn last row in place; [] when the file is absent or empty.

    Never drops a complete row (see the module docstring). Raises ValueError when the header differs from
    `columns` (the user pointed --out at another kind of file).
    """
    columns = list(columns)
    path = Path(path)
    rows = Rows()
    if not path.exists() or path.stat().st_size == 0:
        return rows
    data = path.read_bytes()
    records, tail_start = _split_records(data)
    body = data[3:] if data.startswith(BOM.encode()) else data
    if not records:
        if any(prefix.startswith(body) for prefix in _header_prefixes(columns)):
            # a torn header: nothing real was written yet; emptied in place, as the append-only file is appended
            path.write_bytes(b"")
            return rows
        raise ValueError(f"{path} has no complete header line, expected {columns}: choose another --out or "
                         f"move it away")
    header_start, header_end = records[0]
    header = _strict_fields(_record_text(data, header_start, header_end).removeprefix(BOM)) or []
    if header != columns:
        raise ValueError(f"{path} has columns {header}, expected {columns}: choose another --out or move it away")

    requote: dict[int, list[str]] = {}                         # record index → its fields, to be written quoted
    for index, (start, end) in enumerate(records[1:], start=1):
        text = _record_text(data, start, end)
        fields = _strict_fields(text)
        if fields is None or len(fields) != len(columns):
            lenient = _lenient_fields(text)
            if lenient is not None and len(lenient) == len(columns):
                requote[index] = lenient
                fields = lenient
            else:
                rows.unreadable += 1
                log(f"warning: {path}: the record at byte {start} has {len(fields or lenient or [])} fields, "
                    f"expected {len(columns)}; kept in the file as it is, not read")
                continue
        rows.append(dict(zip(columns, _clean(fields))))

    if tail_start < len(data):
        tail = data[tail_start:]
        with open(torn_path(path), "ab") as kept:
            kept.write(tail + (b"" if tail.endswith(b"\n") else b"\n"))
        rows.cut_bytes = len(tail)
        log(f"note: {path}: cut a torn last row ({len(tail)} bytes, kept in {torn_path(path).name}); "
            f"it will be fetched again")
    if requote:
        rows.requoted = len(requote)
        _rewrite(path, data, records, requote)
        log(f"warning: {path}: {len(requote)} row(s) held a bare carriage return in an unquoted cell (written by "
            f"an older version); rewrote the file with every cell quoted, no row changed")
    elif tail_start < len(data):
        with open(path, "r+b") as handle:            # cutting the tail in place keeps every complete row as it
            handle.truncate(tail_start)              # is: no copy of a large file, no moment without the file
    return rows


def _rewrite(path: Path, data: bytes, records: list[tuple[int, int]], requote: dict[int, list[str]]) -> None:
    """Replace `path` atomically by its complete records, the ones in `requote` written with every cell quoted."""
    with replace_file(path, "wb") as out:
        for index, (start, end) in enumerate(records):
            if index in requote:
                out.write(format_row(requote[index]).encode("utf-8", "surrogateescape"))
            else:
                out.write(data[start:end])


def read_text(path: Path, option: str) -> str:
    """A UTF-8 input file as text, without the BOM Excel puts first; ValueError naming the line of a bad byte."""
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ValueError(f"{option} {path} line {line}: not valid UTF-8 (byte {raw[exc.start]:#04x}); "
                         f"re-save the file as UTF-8") from None


def read_csv_dicts(path: Path, option: str) -> tuple[list[str], list[dict]]:
    """Header and rows of an input CSV a user hands a command (Excel's BOM accepted, long cells allowed).

    Raises ValueError with the option's name and the place of the problem when the file is not UTF-8 CSV.
    """
    text = read_text(path, option)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        with large_csv_fields():
            rows = list(reader)
    except csv.Error as exc:
        raise ValueError(f"{option} {path} line {reader.line_num}: malformed CSV ({exc})") from None
    return list(reader.fieldnames or []), rows


def errors_path(out: Path) -> Path:
    """`data/raw/x_details.csv` → `data/raw/x_details.errors.csv`."""
    out = Path(out)
    return out.with_name(out.stem + ".errors" + (out.suffix or ".csv"))


def lock_path(out: Path) -> Path:
    """`data/raw/x_details.csv` → `data/raw/x_details.lock`."""
    return sidecar(out, "lock", "")


def sidecar(out: Path, name: str, suffix: str = ".csv") -> Path:
    out = Path(out)
    return out.with_name(f"{out.stem}.{name}{suffix}")
