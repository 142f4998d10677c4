"""Interrupt a real scraper process (kill -9, Ctrl-C) mid-run, rerun the same command, and check the output
row by row against an uninterrupted run: nothing lost, nothing duplicated, nothing torn."""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.scraper_site.site import LocalSite, synthetic_books

ROOT = Path(__file__).resolve().parents[1]
N_BOOKS = 40


def read_rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def count_rows(path: Path) -> int:
    try:
        return len(read_rows(path))
    except (FileNotFoundError, csv.Error):
        return 0


def details_command(urls: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "scraper.details_scraper", "--site", "smashwords", "--urls", str(urls),
            "--out", str(out), "--workers", "2", "--delay", "0", "--timeout", "5", "--no-progress"]


def start_and_wait_for_rows(command: list[str], out: Path, rows: int) -> subprocess.Popen:
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while count_rows(out) < rows:
        assert process.poll() is None, f"scraper ended before it could be interrupted: {process.communicate()}"
        assert time.monotonic() < deadline, "scraper made no progress"
        time.sleep(0.02)
    return process


def setup_site_and_urls(tmp_path: Path):
    site = LocalSite.build(books=synthetic_books(N_BOOKS), questions=[], per_page=20).start()
    site.page_delay = 0.04                     # slow enough to interrupt in the middle, fast enough for CI
    urls = tmp_path / "urls.csv"
    urls.write_text("url,title\n" + "".join(f"{site.url(b.path)},{b.title}\n" for b in site.books))
    return site, urls


def test_kill_9_mid_run_then_rerun_gives_every_row_exactly_once(tmp_path):
    site, urls = setup_site_and_urls(tmp_path)
    try:
        reference = tmp_path / "reference.csv"         # an uninterrupted run of the same command
        subprocess.run(details_command(urls, reference), cwd=ROOT, check=True, capture_output=True, timeout=60)
        hits_before = len(site.requests)

        out = tmp_path / "details.csv"
        process = start_and_wait_for_rows(details_command(urls, out), out, rows=8)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        written_before_kill = count_rows(out)
        assert 8 <= written_before_kill < N_BOOKS

        rerun = subprocess.run(details_command(urls, out), cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert rerun.returncode == 0, rerun.stderr
        assert "skipped as done" in rerun.stdout

        expected = sorted(read_rows(reference), key=lambda r: r["url"])
        got = sorted(read_rows(out), key=lambda r: r["url"])
        assert len({r["url"] for r in got}) == len(got) == N_BOOKS
        for want, have in zip(expected, got):
            assert have == want
        # pages written before the kill were not fetched again (at most the in-flight ones were)
        fetched_after = len(site.requests) - hits_before
        assert fetched_after <= N_BOOKS + 2 * 2 + 2 * 2   # pages + in-flight at kill + robots.txt per run
    finally:
        site.stop()


def test_ctrl_c_stops_cleanly_with_a_summary_and_the_rerun_finishes(tmp_path):
    site, urls = setup_site_and_urls(tmp_path)
    site.page_delay = 0.2  # ~4 s for the whole run: the interrupt lands mid-run even on a fast, idle machine
    try:
        out = tmp_path / "details.csv"
        process = start_and_wait_for_rows(details_command(urls, out), out, rows=5)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=20)
        assert process.returncode == 130
        assert "rows written" in stdout and "pages/s" in stdout
        assert "rerun the same command" in stderr
        assert 5 <= count_rows(out) < N_BOOKS
        assert out.read_bytes().endswith(b"\n")

        rerun = subprocess.run(details_command(urls, out), cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert rerun.returncode == 0, rerun.stderr
        rows = read_rows(out)
        assert sorted(r["url"] for r in rows) == sorted(site.url(b.path) for b in site.books)
    finally:
        site.stop()
