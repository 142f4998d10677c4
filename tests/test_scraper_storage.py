"""The scraper's CSV files, property-style: seeded random rows of hostile strings are written with the project's
writer, interrupted (a torn last row, a real SIGKILL of the writing process), resumed, and read back through
`repair_and_read`, the csv module, pandas and `training.rawfiles.read_records`: exactly the rows written, each once."""
from __future__ import annotations

import csv
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from deployment.files import large_csv_fields
from scraper.storage import CsvAppender, cell, format_row, repair_and_read, storable, torn_path
from tests.scraper_site.hostile import COLUMNS, hostile_rows

ROOT = Path(__file__).resolve().parents[1]
N_ROWS = 300


def expected_cells(row: dict) -> list[str]:
    """What a cell must read back as: the value as written, lone surrogates as U+FFFD (the documented rule)."""
    return [storable(cell(row.get(column)))[0] for column in COLUMNS]


def write(path: Path, rows: list[dict]) -> int:
    with CsvAppender(path, COLUMNS, log=lambda message: None) as out:
        for row in rows:
            out.write(row)
    return out.surrogates_replaced


def read_with_csv(path: Path) -> list[list[str]]:
    with large_csv_fields(), open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle, strict=True))
    assert rows[0] == list(COLUMNS)
    return rows[1:]


def read_with_pandas(path: Path) -> list[list[str]]:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8")
    assert list(frame.columns) == list(COLUMNS)
    return frame.values.tolist()


def assert_reads_back(path: Path, rows: list[dict]) -> None:
    want = [expected_cells(row) for row in rows]
    assert [[r[c] for c in COLUMNS] for r in repair_and_read(path, COLUMNS)] == want
    assert read_with_csv(path) == want
    assert read_with_pandas(path) == want


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_hostile_rows_round_trip_through_every_reader(tmp_path, seed):
    rows = hostile_rows(seed, N_ROWS)
    path = tmp_path / "out.csv"
    replaced = write(path, rows)
    assert_reads_back(path, rows)
    # the surrogate rule is counted, not silent: as many replacements as lone surrogates went in
    assert replaced == sum(storable(cell(row[c]))[1] for row in rows for c in COLUMNS)
    assert replaced > 0                                   # the generator does produce lone surrogates


def test_the_training_reader_takes_the_scrapers_csv_whatever_the_cells_hold(tmp_path):
    """`training.prepare` reads the details CSV with its own strict reader: a bare \\r once made it refuse the file."""
    from training.data import PARTS_COL
    from training.rawfiles import read_records

    rows = [dict(row, labels=["A"]) for row in hostile_rows(11, N_ROWS)]
    path = tmp_path / "details.csv"
    write(path, rows)
    raw = read_records(path, ["text"], "labels")
    assert len(raw.frame) == N_ROWS
    assert [parts[0] for parts in raw.frame[PARTS_COL]] == [expected_cells(row)[2] for row in rows]
    assert list(raw.frame["title"]) == [expected_cells(row)[1] for row in rows]


def test_lone_surrogates_become_u_fffd_and_pairs_are_joined(tmp_path, capsys):
    path = tmp_path / "out.csv"
    with CsvAppender(path, COLUMNS) as out:
        out.write({"url": "https://x/1", "title": "a\ud800b", "text": "\ud83d\ude00", "labels": ["\udfff"]})
    assert out.surrogates_replaced == 2
    assert "2 lone surrogate(s)" in capsys.readouterr().err
    [row] = repair_and_read(path, COLUMNS)
    assert (row["title"], row["text"], row["labels"]) == ("a\ufffdb", "😀", '["\ufffd"]')


@pytest.mark.parametrize("seed", range(8))
def test_a_torn_row_anywhere_is_cut_kept_aside_and_the_resumed_run_gives_every_row_once(tmp_path, seed):
    rng = random.Random(seed)
    rows = hostile_rows(100 + seed, 60)
    path = tmp_path / "out.csv"
    done = rng.randint(0, len(rows) - 1)
    write(path, rows[:done])
    torn = format_row(expected_cells(rows[done])).encode("utf-8")
    # cut right after a \r, \n or quote of the row when it has one (the places a naive repair gets wrong)
    risky = [i + 1 for i, byte in enumerate(torn[:-1]) if byte in b'\r\n"']
    cut = rng.choice(risky) if risky and rng.random() < 0.7 else rng.randint(1, len(torn) - 1)
    with open(path, "ab") as handle:
        handle.write(torn[:cut])

    kept = repair_and_read(path, COLUMNS, log=lambda message: None)
    assert [[r[c] for c in COLUMNS] for r in kept] == [expected_cells(r) for r in rows[:done]]
    assert kept.cut_bytes == cut and torn_path(path).read_bytes().startswith(torn[:cut])
    write(path, rows[done:])                              # the rerun fetches the torn row again and goes on
    assert_reads_back(path, rows)


def test_a_real_sigkill_of_the_writer_then_resume_gives_every_row_once(tmp_path):
    path = tmp_path / "out.csv"
    seed, n = 21, N_ROWS
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    process = subprocess.Popen([sys.executable, "-m", "tests.scraper_site.hostile", str(path), str(seed), str(n)],
                               cwd=ROOT, env=env)
    deadline = time.monotonic() + 30
    while not path.exists() or path.stat().st_size < 20_000:
        assert process.poll() is None, "the writer finished before it could be killed"
        assert time.monotonic() < deadline, "the writer made no progress"
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)

    rows = hostile_rows(seed, n)
    kept = repair_and_read(path, COLUMNS, log=lambda message: None)
    assert 0 < len(kept) < n
    assert [[r[c] for c in COLUMNS] for r in kept] == [expected_cells(r) for r in rows[:len(kept)]]
    write(path, rows[len(kept):])
    assert_reads_back(path, rows)


def test_old_files_with_a_bare_carriage_return_are_requoted_not_cut(tmp_path, capsys):
    """Files written before every cell was quoted hold `\\r` unquoted; resuming once cut the file there."""
    path = tmp_path / "old.csv"
    path.write_bytes(b"url,title,text,labels\n"
                     b"https://x/1,Title\rwith CR,text,[]\n"
                     b'https://x/2,"Quoted, \r\nCRLF",more,"[""a""]"\n'
                     b"https://x/3,plain,last\r,[]\n")
    rows = repair_and_read(path, COLUMNS)
    assert [r["url"] for r in rows] == ["https://x/1", "https://x/2", "https://x/3"]
    cells = [[r[c] for c in COLUMNS] for r in rows]
    assert cells == [["https://x/1", "Title\rwith CR", "text", "[]"],
                     ["https://x/2", "Quoted, \r\nCRLF", "more", '["a"]'],
                     ["https://x/3", "plain", "last\r", "[]"]]
    assert rows.requoted == 2 and "rewrote the file" in capsys.readouterr().err
    assert read_with_csv(path) == cells and read_with_pandas(path) == cells


def test_a_complete_row_with_the_wrong_field_count_is_kept_and_reported_not_cut(tmp_path, capsys):
    path = tmp_path / "edited.csv"
    write(path, [{"url": "https://x/1", "title": "one", "text": "t", "labels": []}])
    with open(path, "ab") as handle:
        handle.write(b'"https://x/2","edited by hand"\n')           # a complete line, two fields short
    write(path, [{"url": "https://x/3", "title": "three", "text": "t", "labels": []}])
    before = path.read_bytes()
    rows = repair_and_read(path, COLUMNS)
    assert [r["url"] for r in rows] == ["https://x/1", "https://x/3"]
    assert rows.unreadable == 1 and "kept in the file as it is" in capsys.readouterr().err
    assert path.read_bytes() == before                                  # nothing cut, nothing rewritten


def test_a_bom_before_the_header_is_accepted_and_kept(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbfurl,title,text,labels\r\nhttps://x/1,T,text,[]\r\n")
    assert [r["url"] for r in repair_and_read(path, COLUMNS)] == ["https://x/1"]
    write(path, [{"url": "https://x/2", "title": "T2", "text": "t", "labels": []}])
    assert [r["url"] for r in repair_and_read(path, COLUMNS)] == ["https://x/1", "https://x/2"]


@pytest.mark.parametrize("content, message", [
    (b"id,name\n1,a\n", "has columns ['id', 'name'], expected"),
    (b"hello world", "has no complete header line"),                 # not ours: never wiped
])
def test_a_file_of_another_kind_is_refused_and_left_alone(tmp_path, content, message):
    path = tmp_path / "other.csv"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=re.escape(message)):
        repair_and_read(path, COLUMNS)
    assert path.read_bytes() == content


def test_a_torn_header_is_cleared_and_the_file_starts_again(tmp_path):
    path = tmp_path / "out.csv"
    path.write_bytes(format_row(COLUMNS).encode()[:7])
    assert repair_and_read(path, COLUMNS) == [] and path.read_bytes() == b""
    write(path, [{"url": "https://x/1", "title": "T", "text": "t", "labels": []}])
    assert [r["url"] for r in repair_and_read(path, COLUMNS)] == ["https://x/1"]
