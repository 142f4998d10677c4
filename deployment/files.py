"""Files, the one way: atomic outputs (one helper for folders, one for files, one guarantee for every stage),
and CSV cells of any size without changing the csv module's limit for the rest of the process.

The guarantee: a reader sees the old output or the new one, never half of either. The new content is built
under a hidden name beside the target (`.<name>.partial-<pid>`) and renamed into place only when complete;
if anything fails the old output is still there, untouched (a folder that was moved aside is moved back).
Leftovers of a run killed with `kill -9` are removed by the next run that writes the same target, once the
process that made them is gone.

    from deployment.files import large_csv_fields, replace_dir, replace_file
    with replace_dir(out, owned_by="report.json") as tmp:     # refuses to replace a folder that isn't ours
        (tmp / "dataset.csv").write_text(...)
    with replace_file(path, newline="") as fh:
        fh.write(...)
    with large_csv_fields():
        rows = list(csv.reader(fh))

It lives in deployment/ (standard library only) because the Space, which is that folder alone, writes files too.
"""
from __future__ import annotations

import csv
import os
import re
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator


class LocationError(ValueError):
    """An input or output file, folder or URI that a command cannot use at all (the message names it): the batch
    CLI's and Spark's "file not found", "not UTF-8", "is the input". `hint` is advice for the command line only
    (an option to pass); the Gradio app, which shares the batch path, shows the message. Not the predictor's
    `InputError`, which is about one text or argument of a request."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


class OutputError(RuntimeError):
    """The output location cannot be used (it holds something that is not this stage's output)."""


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # someone else's live process
        return True
    return True


def clean_stale(target: Path) -> list[Path]:
    """Remove `.<name>.partial-<pid>` / `.<name>.old-<pid>` leftovers of dead processes beside `target`."""
    target = Path(target)
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.(?:partial|old)-(\d{{1,9}})$")
    removed = []
    if not target.parent.is_dir():
        return removed
    for entry in target.parent.iterdir():
        m = pattern.match(entry.name)
        if m and not _pid_alive(int(m.group(1))):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def staging_path(target: Path, kind: str = "partial") -> Path:
    target = Path(target)
    return target.parent / f".{target.name}.{kind}-{os.getpid()}"


def _swap_in(tmp: Path, out: Path) -> None:
    """Rename `tmp` to `out`; an existing `out` is moved aside first and moved back if the rename fails."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = staging_path(out, "old")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def check_replaceable(out: str | Path, owned_by: str | None = None, what: str = "output") -> None:
    """OutputError unless `out` is absent, empty, or an earlier output of this stage (has `owned_by`).

    Stages call it before long work too, so a bad --out fails in a second, not after an hour of training."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out} exists and is a file, not a folder; choose another output path")
    if owned_by and out.is_dir() and any(out.iterdir()) and not (out / owned_by).exists():
        raise OutputError(f"{out} exists and is not a {what} (no {owned_by}): refusing to replace it; "
                          "choose a new output folder or remove it")


@contextmanager
def replace_dir(out: str | Path, owned_by: str | None = None, what: str = "output") -> Iterator[Path]:
    """Yield an empty staging folder; when the block ends without an error it replaces `out` as a whole.

    `owned_by` names a file every earlier output of this stage has: an existing non-empty `out` without it is
    someone else's folder, and OutputError refuses to replace it (a mistyped --out never wipes a folder).
    """
    out = Path(out)
    check_replaceable(out, owned_by, what)
    out.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(out)
    tmp = staging_path(out)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        _swap_in(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def replace_file(path: str | Path, mode: str = "w", encoding: str | None = "utf-8",
                 newline: str | None = None, errors: str | None = None) -> Iterator[IO]:
    """Yield a file object for a staging file that replaces `path` when the block ends without an error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path)
    tmp = staging_path(path)
    binary = "b" in mode
    try:
        with open(tmp, mode, encoding=None if binary else encoding, newline=None if binary else newline,
                  errors=None if binary else errors) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    """`path.write_text(text)` (UTF-8), atomically."""
    with replace_file(path, newline="") as fh:
        fh.write(text)


def write_bytes(path: str | Path, data: bytes) -> None:
    """`path.write_bytes(data)`, atomically."""
    with replace_file(path, "wb") as fh:
        fh.write(data)


@contextmanager
def large_csv_fields() -> Iterator[None]:
    """Let the csv module read cells of any size while the block runs, then restore the previous limit: long
    descriptions are normal, and the default 128 KiB cap is not a format rule, but the limit is process-wide."""
    previous = csv.field_size_limit()
    csv.field_size_limit(sys.maxsize)
    try:
        yield
    finally:
        csv.field_size_limit(previous)
