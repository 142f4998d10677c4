"""Seeded generators of hostile strings and rows for the scraper's CSV tests (hypothesis is not installed).

    rng = random.Random(7)
    hostile_text(rng)          # '\r"NA,\x00\u2028😀\ud800' ...: the characters that have broken CSV files before
    hostile_rows(seed, 300)    # rows for DETAIL-like columns, deterministic for a seed

Used by tests/test_scraper_storage.py, and run as a child process by it (`python -m tests.scraper_site.hostile
OUT SEED N`) to be killed with SIGKILL in the middle of writing.
"""
from __future__ import annotations

import random
import sys
import time

COLUMNS = ("url", "title", "text", "labels")

# Pieces chosen for what each one has broken somewhere: line ends of every kind (csv, str.splitlines, pandas),
# quoting and separators, NUL and other C0/C1 controls, Unicode line separators, a BOM, pandas' NA words, a
# spreadsheet formula, escapes, zero-width and astral characters, lone and paired surrogates.
PIECES = ("\r", "\n", "\r\n", "\n\r", "\r\r", "\x00", '"', '""', "\",\"", ",", "'", "\t", "\x0b", "\x0c", "\x1c",
          "\x1d", "\x1e", "\x1f", "\x7f", "\x85", "\u2028", "\u2029", "\ufeff", "\ufffd", " ", "  ", "é", "»", "😀",
          "\u200b", "NA", "null", "NaN", "", "#", "=1+1", "\\", "\\N", "a", "word", "\x1b[31m", "\ud800", "\udfff",
          "\ud83d\ude00", "<p>", "&amp;")


def hostile_text(rng: random.Random, max_pieces: int = 12) -> str:
    pieces = [rng.choice(PIECES) for _ in range(rng.randint(0, max_pieces))]
    if rng.random() < 0.2:                                   # any code point at all, surrogates included
        pieces.append(chr(rng.randint(0, 0x10FFFF)))
    if rng.random() < 0.01:                                  # a cell over csv's default 128 KiB field limit
        pieces.append("long description " * 9000)
    return "".join(pieces)


def hostile_rows(seed: int, n: int) -> list[dict]:
    rng = random.Random(seed)
    return [{"url": f"https://example.org/item/{i}?q={hostile_text(rng, 3)}", "title": hostile_text(rng),
             "text": hostile_text(rng, 30), "labels": [hostile_text(rng, 3) for _ in range(rng.randint(0, 3))]}
            for i in range(n)]


def main(out: str, seed: int, n: int) -> None:
    """Write the rows one by one, slowly enough to be killed half-way (the parent decides when)."""
    from scraper.storage import CsvAppender

    with CsvAppender(out, COLUMNS, log=lambda message: None) as appender:
        for row in hostile_rows(seed, n):
            appender.write(row)
            time.sleep(0.002)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
