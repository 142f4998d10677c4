"""One run per output: while a real scraper process writes an output, a second run on it (either stage, any
options) exits with code 2 and a clear message before it makes a single request; after `kill -9` of the first,
the next run starts at once (the kernel dropped the lock) and resumes with every row exactly once."""
from __future__ import annotations

import os
import signal
import subprocess

from scraper import covers, url_scraper
from scraper.storage import OutputLock, lock_path
from tests.scraper_site.site import LocalSite, synthetic_books
from tests.test_scraper_resume import ROOT, details_command, read_rows, start_and_wait_for_rows

N_BOOKS = 40


def test_a_second_run_refuses_an_output_in_use_and_a_killed_run_leaves_no_lock_behind(tmp_path, capsys):
    site = LocalSite.build(books=synthetic_books(N_BOOKS), questions=[], per_page=20).start()
    site.page_delay = 0.25                     # ~5 s for the first run: long enough to try a second one beside it
    try:
        urls = tmp_path / "urls.csv"
        urls.write_text("url,title\n" + "".join(f"{site.url(b.path)},{b.title}\n" for b in site.books))
        out = tmp_path / "details.csv"
        first = start_and_wait_for_rows(details_command(urls, out), out, rows=2)

        second = subprocess.run(details_command(urls, out) + ["--user-agent", "second-run/1.0"], cwd=ROOT,
                                capture_output=True, text=True, timeout=60)
        assert first.poll() is None, "the first run ended before the second one was tried: make the site slower"
        assert second.returncode == 2, second.stderr
        assert f"{out} is being written by another run (process {first.pid}" in second.stderr
        assert "duplicate" in second.stderr and second.stdout == ""
        # the other stage on the same output, in this process: refused the same way
        assert url_scraper.run(["--site", "smashwords", "--out", str(out), "--user-agent", "third-run/1.0",
                                "--start-url", site.url("/books/category/1"), "--no-progress"]) == 2
        assert "is being written by another run" in capsys.readouterr().err
        assert not [path for path, agent, _ in site.requests if agent.startswith(("second-run", "third-run"))]

        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        written = len(read_rows(out))
        assert 2 <= written < N_BOOKS
        assert lock_path(out).exists()                         # left behind by kill -9, and yet not in the way
        site.page_delay = 0
        rerun = subprocess.run(details_command(urls, out), cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert rerun.returncode == 0, rerun.stderr
        assert "skipped as done" in rerun.stdout
        rows = read_rows(out)
        assert sorted(r["url"] for r in rows) == sorted(site.url(b.path) for b in site.books)   # each exactly once
    finally:
        site.stop()


def test_the_covers_command_refuses_a_folder_another_run_holds(tmp_path, capsys):
    details = tmp_path / "details.csv"
    details.write_text("url,cover_url\nhttp://127.0.0.1:9/books/view/1,http://127.0.0.1:9/covers/1.png\n")
    out = tmp_path / "covers"
    with OutputLock(out / "covers.lock", out):                 # what a running covers command holds
        assert covers.run(["--details", str(details), "--out", str(out), "--no-progress"]) == 2
    assert "is being written by another run (process " + str(os.getpid()) in capsys.readouterr().err
    assert not (out / "covers.csv").exists()                   # nothing read, repaired or written
