"""Cover downloads (`python -m scraper.covers`) against the local site: missing, corrupt, truncated and
non-image covers are recorded and the run goes on; good covers are validated and saved once."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scraper import covers, details_scraper, url_scraper
from scraper.covers import check_image, cover_stem
from tests.scraper_site.site import BOOKS, JPEG_BYTES, PNG_BYTES, Fault, LocalSite

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--delay", "0", "--timeout", "0.5", "--retries", "1", "--no-progress"]


def read_csv(path):
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_images_are_recognised_by_signature_content_type_and_end_marker():
    assert check_image(PNG_BYTES, "image/png") == ("png", "", "")
    assert check_image(JPEG_BYTES, "image/jpeg")[0] == "jpg"
    assert check_image(PNG_BYTES, "image/jpeg")[0] == "png"          # the bytes decide the extension
    assert check_image(b"GIF89a" + b"\x00" * 20 + b";", "image/gif")[0] == "gif"
    webp = b"RIFF" + (20).to_bytes(4, "little") + b"WEBPVP8 " + b"\x00" * 12
    assert check_image(webp, "image/webp")[0] == "webp"
    assert check_image(b"<html>Not found</html>", "text/html")[1] == "not_image"
    assert check_image(b"<html>oops</html>", "image/png")[1] == "corrupt_image"
    assert check_image(PNG_BYTES[:30], "image/png")[1] == "truncated_image"
    assert check_image(b"", "image/png")[1] == "empty"


def test_cover_files_are_named_after_the_book():
    assert cover_stem("https://www.smashwords.com/books/view/52") == "52"
    assert len(cover_stem("https://example.org/some/book")) == 16


@pytest.fixture
def details_csv(tmp_path):
    """A real details CSV from both scraper stages, so cover_url comes from the book pages themselves."""
    with LocalSite.build() as site:
        urls = tmp_path / "urls.csv"
        assert url_scraper.run(["--site", "smashwords", "--start-url", site.url("/books/category/1"),
                                "--out", str(urls), *FAST]) == 0
        details = tmp_path / "details.csv"
        assert details_scraper.run(["--site", "smashwords", "--urls", str(urls), "--out", str(details), *FAST]) == 0
        yield site, details


def test_cover_url_column_comes_from_book_pages(details_csv):
    site, details = details_csv
    rows = read_csv(details)
    assert sorted(r["cover_url"] for r in rows) == sorted(site.url(b.cover_path) for b in BOOKS)


def test_covers_download_with_missing_and_corrupt_images_and_resume(details_csv, tmp_path, capsys):
    site, details = details_csv
    site.robots = "User-agent: *\nDisallow: /covers/8-thumb.png\n"
    site.fault("/covers/2-thumb.png", Fault(status=404))
    site.fault("/covers/3-thumb.png", Fault(body=b"this is not an image", headers={"Content-Type": "image/png"}))
    site.fault("/covers/4-thumb.png", Fault(body=b"<html><body>Cover coming soon</body></html>",
                                            headers={"Content-Type": "text/html"}))
    site.fault("/covers/5-thumb.png", Fault(truncate_at=30))
    site.fault("/covers/6-thumb.png", Fault(status=503), times=1)
    site.add("/covers/7-thumb.png", JPEG_BYTES, "image/jpeg")
    out = tmp_path / "covers"
    argv = ["--details", str(details), "--out", str(out), "--workers", "3", *FAST]

    assert covers.run(argv) == 0
    assert "covers: 8 pages fetched, 3 rows written, 5 errors" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir() if p.suffix in (".png", ".jpg")) == ["1.png", "6.png", "7.jpg"]
    assert (out / "1.png").read_bytes() == PNG_BYTES and (out / "7.jpg").read_bytes() == JPEG_BYTES
    manifest = {r["url"]: r for r in read_csv(out / "covers.csv")}
    assert {r["file"] for r in manifest.values()} == {"1.png", "6.png", "7.jpg"}
    assert manifest[site.url("/books/view/7")]["cover_url"] == site.url("/covers/7-thumb.png")
    errors = {r["url"]: (r["status"], r["reason"]) for r in read_csv(out / "covers.errors.csv")}
    assert errors == {site.url("/books/view/2"): ("404", "http_404"),
                      site.url("/books/view/3"): ("200", "corrupt_image"),
                      site.url("/books/view/4"): ("200", "not_image"),
                      site.url("/books/view/5"): ("200", "truncated_image"),
                      site.url("/books/view/8"): ("", "robots_disallowed")}
    assert site.hits("/covers/6-thumb.png") == 2 and site.hits("/covers/8-thumb.png") == 0
    assert not list(out.glob("*.part*"))

    hits = len(site.requests)
    assert covers.run(argv) == 0                                   # rerun: everything is done or permanent
    assert len(site.requests) - hits == 0 or all(p == "/robots.txt" for p, _, _ in site.requests[hits:])
    assert "8 skipped as done" in capsys.readouterr().out

    site.faults.clear()
    site.robots = "User-agent: *\nDisallow: /private/\n"
    assert covers.run(argv + ["--retry-errors"]) == 0              # the site is fixed: fetch what failed
    manifest_rows = read_csv(out / "covers.csv")
    assert len(manifest_rows) == len({r["url"] for r in manifest_rows}) == 8
    assert site.hits("/covers/1-thumb.png") == 1                   # saved covers are never fetched twice


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    ("url,title\nhttps://x/books/view/1,T\n", "has no cover_url column"),
])
def test_covers_bad_input_exits_2_with_one_line(tmp_path, capsys, content, message):
    details = tmp_path / "details.csv"
    if content is not None:
        details.write_text(content)
    assert covers.run(["--details", str(details), "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_rows_without_a_cover_url_are_counted_not_fetched(tmp_path, capsys):
    details = tmp_path / "details.csv"
    details.write_text('url,title,text,labels,cover_url\nhttps://x/books/view/1,T,text,"[""A""]",\n')
    assert covers.run(["--details", str(details), "--out", str(tmp_path / "c"), *FAST]) == 0
    assert "no_cover_url 1" in capsys.readouterr().out


def test_python_m_scraper_covers_runs_as_a_user_runs_it_and_cleans_only_its_own_temporary_files(details_csv,
                                                                                                 tmp_path):
    """`python -m scraper.covers` in a subprocess; leftovers of dead runs go (staging files of deployment.files,
    `<id>.<ext>.part<thread>` of older versions), files that merely look alike stay, and so does the staging
    file of a live process."""
    site, details = details_csv
    out = tmp_path / "covers"
    out.mkdir()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)                                        # a process that has ended
    theirs = {"x.partners.csv": b"id,partner\n", "notes.part1.txt": b"mine", "2.png.partial": b"kept",
              "cover.part3": b"not a cover name", f".x.partners.csv.partial-{dead_pid}": b"not a cover",
              f".9.png.partial-{os.getpid()}": b"a live process is writing it"}
    for name, content in theirs.items():
        (out / name).write_bytes(content)
    (out / "3.png.part140234").write_bytes(PNG_BYTES[:20])            # ours: a kill -9 mid-write (older version)
    (out / "0123abcd0123abcd.jpg.part77").write_bytes(b"\xff\xd8")    # ours too (a URL-hash stem)
    (out / f".4.png.partial-{dead_pid}").write_bytes(PNG_BYTES[:20])   # deployment.files' staging name, dead run
    (out / f".5.jpg.old-{dead_pid}").write_bytes(b"\xff\xd8")
    result = subprocess.run([sys.executable, "-m", "scraper.covers", "--details", str(details), "--out", str(out),
                             *FAST], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"covers: {len(BOOKS)} pages fetched, {len(BOOKS)} rows written, 0 errors" in result.stdout
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name in theirs} == theirs
    assert not (out / "3.png.part140234").exists() and not (out / "0123abcd0123abcd.jpg.part77").exists()
    assert not (out / f".4.png.partial-{dead_pid}").exists() and not (out / f".5.jpg.old-{dead_pid}").exists()
    assert sorted(p.name for p in out.glob("*.png")) == sorted(f"{b.id}.png" for b in BOOKS)
