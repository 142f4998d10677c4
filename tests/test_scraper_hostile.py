"""Hostile input at every scraper boundary, through the real commands and the local site: pages (deep nesting,
charsets, wrong Content-Type, garbage, 21 MB), servers (dripping bytes, absurd Retry-After, hostile robots.txt),
input files (a BOM, non-UTF-8), URLs with control characters, and option values. Each gets a row or an error
row with a reason, and the run goes on; nothing crashes, nothing hangs."""
from __future__ import annotations

import csv
import json
import random
import subprocess
import sys
from email.utils import formatdate
from pathlib import Path

import pytest

from deployment.files import large_csv_fields
from scraper import covers, details_scraper
from scraper.storage import errors_path
from tests.scraper_site.site import BOOKS, PNG_BYTES, Fault, LocalSite, WaitRecorder

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--delay", "0", "--timeout", "2", "--retries", "0", "--no-progress"]
BOOK_PAGE = ('<html><head>{head}</head><body><h1>{title}</h1><div class="well">{text}</div>'
             '<div class="category"><a>Fiction</a> &raquo; <a>Drama</a></div></body></html>')


def read_csv(path: Path) -> list[dict]:
    with large_csv_fields(), open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def site():
    with LocalSite.build() as running:
        yield running


def details(site: LocalSite, tmp_path: Path, urls: list[str], *extra: str, site_name: str = "smashwords"):
    listed = tmp_path / "urls.txt"
    listed.write_text("".join(u + "\n" for u in urls), encoding="utf-8")
    out = tmp_path / "details.csv"
    code = details_scraper.run(["--site", site_name, "--urls", str(listed), "--out", str(out), *FAST, *extra])
    rows = {r["url"]: r for r in read_csv(out)}
    errors = {e["url"]: e for e in read_csv(errors_path(out))} if errors_path(out).exists() else {}
    return code, rows, errors


# ---------------------------------------------------------------- pages
def test_a_book_page_nested_5000_divs_deep_gives_its_row(site, tmp_path):
    book = BOOKS[0]                                          # odd id: the microdata page, text from the markup
    page = site.routes[book.path].body.decode()
    opening = '<div class="card-body" itemprop="description">'
    page = page.replace(opening, opening + "<div>" * 5000).replace("</div></div>\n        <h2>Categories",
                                                                     "</div>" * 5000 + "</div></div>\n<h2>Categories")
    assert page.count("<div>") >= 5000
    site.add("/deep/1", page)
    code, rows, errors = details(site, tmp_path, [site.url("/deep/1")])
    assert code == 0 and errors == {}
    row = rows[site.url("/deep/1")]
    assert (row["title"], row["text"], json.loads(row["labels"])) == (book.title, book.text, book.labels)


PAGES = {
    # name: (body, Content-Type, expected reason or the (title, text) of the row)
    "charset in <meta> only": (BOOK_PAGE.format(head='<meta charset="iso-8859-1">', title="Caf\xe9",
                                                text="R\xe9sum\xe9.").encode("latin-1"), "text/html",
                               ("Café", "Résumé.")),
    "charset in an XML declaration only": (('<?xml version="1.0" encoding="koi8-r"?>' + BOOK_PAGE.format(
        head="", title="Привет", text="Книга.")).encode("koi8-r"), "application/xhtml+xml", ("Привет", "Книга.")),
    "a stray invalid byte in UTF-8": (BOOK_PAGE.format(head="", title="Caf\xe9", text="Text \udcfe.").encode(
        "utf-8", "surrogateescape"), "text/html; charset=utf-8", ("Caf\xe9", "Text \ufffd.")),
    "labelled UTF-8, no valid UTF-8 in it": (BOOK_PAGE.format(head="", title="Bad \udcff byte",
                                                               text="Text \udcfe.").encode("utf-8", "surrogateescape"),
                                             "text/html; charset=utf-8", ("Bad \xff byte", "Text \xfe.")),  # cp1252
    "unknown charset": (BOOK_PAGE.format(head="", title="Odd", text="Charset.").encode(),
                        "text/html; charset=x-klingon", ("Odd", "Charset.")),
    "NUL and control bytes": (BOOK_PAGE.format(head="", title="N\x00U\x01L", text="a\x00b\x1bc").encode(),
                              "text/html", ("N\ufffdUL", "a\ufffdbc")),      # lxml makes NUL U+FFFD
    "JSON-LD nested 100,000 deep": (BOOK_PAGE.format(
        head='<script type="application/ld+json">' + "[" * 100_000 + "]" * 100_000 + "</script>",
        title="Deep JSON", text="Layout text.").encode(), "text/html", ("Deep JSON", "Layout text.")),
    "lone surrogates in JSON-LD": (BOOK_PAGE.format(
        head='<script type="application/ld+json">{"@type": "Book", "name": "LD \\ud800 title", '
             '"description": "<p>A description \\udfff with markup.</p>", "genre": ["Fiction"]}</script>',
        title="Layout title", text="Short.").encode(), "text/html",
        ("LD \ufffd title", "A description \ufffd with markup.")),
    "HTML served as JSON": (BOOK_PAGE.format(head="", title="T", text="x").encode(), "application/json", "not_html"),
    "an image": (PNG_BYTES, "image/png", "not_html"),
    "binary garbage": (random.Random(3).randbytes(50_000), "text/html", "unrecognised_page"),
    "empty body": (b"", "text/html", "unrecognised_page"),
    "21 MB page": (b"<p>" + b"x" * (21 * 1024 * 1024) + b"</p>", "text/html", "too_large"),
}


def test_hostile_pages_each_give_a_row_or_an_error_row_and_the_run_goes_on(site, tmp_path):
    urls = {}
    for n, (name, (body, content_type, _)) in enumerate(PAGES.items()):
        site.fault(f"/hostile/{n}", Fault(body=body, headers={"Content-Type": content_type}))
        urls[name] = site.url(f"/hostile/{n}")
    code, rows, errors = details(site, tmp_path, list(urls.values()) + [site.url(BOOKS[1].path)], "--workers", "2")
    assert code == 0 and site.url(BOOKS[1].path) in rows
    for name, (_, _, expected) in PAGES.items():
        if isinstance(expected, tuple):
            assert (rows[urls[name]]["title"], rows[urls[name]]["text"]) == expected, name
        else:
            assert errors[urls[name]]["reason"] == expected, name


# ---------------------------------------------------------------- servers
@pytest.mark.parametrize("drip_headers", [False, True], ids=["dripped body", "dripped headers"])
def test_a_server_that_drips_bytes_is_cut_at_the_deadline_and_retried_by_the_next_run(site, tmp_path, drip_headers):
    slow = BOOKS[0].path
    site.fault(slow, Fault(drip=0.02, drip_headers=drip_headers))   # a 2.4 KB page at 50 bytes/s: ~48 s
    urls = [site.url(slow), site.url(BOOKS[1].path)]
    code, rows, errors = details(site, tmp_path, urls, "--deadline", "0.3", "--timeout", "0.25")
    assert code == 0 and set(rows) == {urls[1]}
    assert errors[urls[0]]["reason"] == "deadline_exceeded" and "--deadline 0.3s" in errors[urls[0]]["detail"]

    site.faults.clear()                                              # the server recovers: a transient error
    code, rows, errors = details(site, tmp_path, urls, "--deadline", "0.3")
    assert set(rows) == set(urls)


@pytest.mark.parametrize("retry_after", ["1e12", "99999999999", formatdate(253402300000, usegmt=True), "-1", "inf"])
def test_an_absurd_retry_after_is_capped_never_slept(site, tmp_path, monkeypatch, retry_after):
    waits = WaitRecorder().install(monkeypatch)
    site.fault(BOOKS[0].path, Fault(status=429, headers={"Retry-After": retry_after}), times=1)
    code, rows, errors = details(site, tmp_path, [site.url(BOOKS[0].path)], "--retries", "1",
                                 "--max-retry-after", "5")
    assert code == 0 and list(rows) == [site.url(BOOKS[0].path)]
    assert waits.waits and max(waits.waits) <= 5


ROBOTS = {
    # name: (robots.txt body or a Fault, expected reason for /books/view/1, or "" when the page is fetched)
    "binary garbage": (random.Random(4).randbytes(4000), ""),
    "an HTML soft-404": (b"<html><body><h1>Page not found</h1></body></html>", ""),
    "1 MB, the rule past 500 KiB": (b"User-agent: *\n" + b"Disallow: /nothing-here\n" * 45_000
                                    + b"Disallow: /books/\n", ""),
    "1 MB, the rule up front": (b"User-agent: *\nDisallow: /books/\n" + b"# padding\n" * 100_000,
                                "robots_disallowed"),
    "Crawl-delay 1e9": (b"User-agent: *\nCrawl-delay: 1e9\n", "robots_crawl_delay"),
    "Crawl-delay 86400": (b"User-agent: *\nCrawl-delay: 86400\n", "robots_crawl_delay"),
    "429 Too Many Requests": (Fault(status=429), "robots_unreachable"),
    "403 Forbidden": (Fault(status=403), ""),
}


@pytest.mark.parametrize("name", list(ROBOTS))
def test_hostile_robots_txt(site, tmp_path, monkeypatch, name):
    WaitRecorder().install(monkeypatch)                             # a Crawl-delay is recorded, not slept
    robots, expected = ROBOTS[name]
    if isinstance(robots, Fault):
        site.fault("/robots.txt", robots)
    else:
        site.robots = robots.decode("latin-1")
    url = site.url(BOOKS[0].path)
    code, rows, errors = details(site, tmp_path, [url])
    if expected:
        assert errors[url]["reason"] == expected and site.hits(BOOKS[0].path) == 0
    else:
        assert list(rows) == [url]


# ---------------------------------------------------------------- input files and URLs
def test_urls_with_control_characters_and_broken_syntax_are_error_rows(site, tmp_path):
    good = site.url(BOOKS[0].path)
    bad = [site.url("/books/view/1\x00x"), site.url("/books/view/\x7f1"), "http://127.0.0.1:99999/books/view/1",
           "http://[::1/books/view/1", "http://exa mple.com/books/view/1", "https:///books/view/1",
           "javascript:alert(1)", "file:///etc/passwd"]
    code, rows, errors = details(site, tmp_path, [good] + bad)
    assert code == 0 and list(rows) == [good]
    assert {url: e["reason"] for url, e in errors.items()} == {url: "bad_url" for url in bad}


@pytest.mark.parametrize("content", [
    "\ufeffurl,title\r\n{url},Excel's title\r\n",          # Excel: BOM and CRLF
    "\ufeff{url}\n",                                        # a plain list with a BOM
    "# my list\n\n{url}\n",                                 # a plain list starting with a comment
])
def test_url_lists_saved_by_excel_or_by_hand_are_read(site, tmp_path, content):
    urls = tmp_path / "urls.csv"
    urls.write_text(content.format(url=site.url(BOOKS[0].path)), encoding="utf-8")
    out = tmp_path / "details.csv"
    assert details_scraper.run(["--site", "smashwords", "--urls", str(urls), "--out", str(out), *FAST]) == 0
    assert [r["url"] for r in read_csv(out)] == [site.url(BOOKS[0].path)]


def test_a_url_list_that_is_not_utf8_is_one_clear_error(tmp_path, capsys):
    urls = tmp_path / "urls.csv"
    urls.write_bytes(b"url,title\nhttp://127.0.0.1:9/books/view/1,Caf\xe9\n")
    assert details_scraper.run(["--site", "smashwords", "--urls", str(urls), "--out", str(tmp_path / "o.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert "line 2: not valid UTF-8 (byte 0xe9)" in err and len(err.splitlines()) == 1


def test_covers_read_a_details_csv_saved_by_excel(site, tmp_path):
    details_csv = tmp_path / "details.csv"
    details_csv.write_text(f"\ufeffurl,title,cover_url\r\n{site.url(BOOKS[0].path)},T,{site.url(BOOKS[0].cover_path)}"
                           f"\r\n", encoding="utf-8")
    out = tmp_path / "covers"
    assert covers.run(["--details", str(details_csv), "--out", str(out), *FAST]) == 0
    assert (out / "1.png").read_bytes() == PNG_BYTES


# ---------------------------------------------------------------- options
@pytest.mark.parametrize("module, argv, message", [
    ("scraper.details_scraper", ["--site", "smashwords", "--workers", "0"], "argument --workers: must be an integer >= 1"),
    ("scraper.details_scraper", ["--site", "smashwords", "--workers", "100000"], "<= 64, got '100000'"),
    ("scraper.details_scraper", ["--site", "smashwords", "--delay", "nan"], "argument --delay: must be a number >= 0"),
    ("scraper.url_scraper", ["--site", "smashwords", "--timeout", "0"], "argument --timeout: must be a number > 0"),
    ("scraper.url_scraper", ["--site", "smashwords", "--deadline", "inf"], "argument --deadline: must be a number > 0"),
    ("scraper.url_scraper", ["--site", "smashwords", "--max-pages", "1.5"], "argument --max-pages: must be an integer"),
    ("scraper.covers", ["--retries", "-1"], "argument --retries: must be an integer >= 0 and <= 20"),
    ("scraper.covers", ["--user-agent", "bot\r\nX-Injected: 1"], "argument --user-agent: must be a non-empty line"),
])
def test_bad_option_values_are_refused_by_the_parser_with_exit_code_2(tmp_path, module, argv, message):
    out = ["--out", str(tmp_path / ("covers" if module == "scraper.covers" else "out.csv"))]
    result = subprocess.run([sys.executable, "-m", module, *argv, *out], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())                             # refused before any file is touched


@pytest.mark.parametrize("argv, message", [
    (["--site", "stackoverflow", "--source", "api", "--pagesize", "101"], "argument --pagesize: must be an integer"),
    (["--site", "stackoverflow", "--source", "api", "--max-pages", "-3"], "argument --max-pages"),
    (["--site", "smashwords", "--max-redirects", "21"], "argument --max-redirects: must be an integer >= 0 and <= 20"),
    (["--site", "smashwords", "--max-crawl-delay", "-1"], "argument --max-crawl-delay"),
    (["--site", "smashwords", "--max-retry-after", "1e400"], "argument --max-retry-after"),
    (["--site", "smashwords", "--user-agent", "  "], "argument --user-agent"),
])
def test_more_bad_option_values(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        details_scraper.run(argv + ["--out", str(tmp_path / "o.csv")])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


# ---------------------------------------------------------------- the listing chain
def test_a_pagination_loop_ends_and_the_rerun_does_not_loop_on_the_logged_chain(site, tmp_path):
    """Page A says next is B, B says next is A: the crawl stops; the rerun follows the logged chain A→B→A and
    stopped forever before (the jump along finished pages had no loop check)."""
    listing = site.routes["/books/category/1"].body.decode()
    site.add("/loop/a", listing.replace("/books/category/1/20", "/loop/b"))
    site.add("/loop/b", listing.replace("/books/category/1/20", "/loop/a"))
    command = [sys.executable, "-m", "scraper.url_scraper", "--site", "smashwords", "--start-url",
               site.url("/loop/a"), "--out", str(tmp_path / "urls.csv"), *FAST]
    for _ in range(2):
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
    assert site.hits("/loop/a") == 1 and site.hits("/loop/b") == 1
    assert "2 skipped as done" in result.stdout
    assert len(read_csv(tmp_path / "urls.csv")) == 3
