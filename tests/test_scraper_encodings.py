"""Page encodings through real scrapes of the local site: every combination of a byte order mark, a charset in the
Content-Type header, a `<meta>` charset and the body's real encoding (UTF-8, windows-1252, Latin-1, UTF-16 with
a BOM) gives back exactly the text the page was written with, in the details and in the listing stage; and a page
that yields nothing after a doubtful decode is a retryable error, fetched again by the next run."""
from __future__ import annotations

import csv
import itertools
import random
from pathlib import Path

import pytest

from scraper import details_scraper, url_scraper
from scraper.client import is_transient
from scraper.storage import errors_path
from tests.scraper_site.site import Book, LocalSite, render_book, render_book_listing

FAST = ["--delay", "0", "--timeout", "5", "--retries", "0", "--no-progress", "--workers", "4"]
TEMPLATE_META = '<meta charset="utf-8">'

# What each body can hold. UTF-8 text includes the letters whose UTF-8 bytes windows-1252 leaves unassigned
# (Á = C3 81, ŝ = C5 9D): handed bytes and a windows-1252 <meta>, lxml stopped there and left an empty page.
REPERTOIRE = {
    "utf-8": "ÁáŝŐőéèçñøßÆ€—“”日本語Ελληνικάкириллица😀",
    "windows-1252": "éèçñøßÆ€—“”‘’…ŒœšŸžÀÿ",
    "latin-1": "éèçñøßÆÀÿ¡¿«»°±µ¶·",
}
BODIES = {                                     # body kind: (how the bytes are made, which repertoire)
    "utf-8": (lambda text: text.encode("utf-8"), "utf-8"),
    "utf-8 with BOM": (lambda text: b"\xef\xbb\xbf" + text.encode("utf-8"), "utf-8"),
    "windows-1252": (lambda text: text.encode("cp1252"), "windows-1252"),
    "latin-1": (lambda text: text.encode("latin-1"), "latin-1"),
    "utf-16-le with BOM": (lambda text: b"\xff\xfe" + text.encode("utf-16-le"), "utf-8"),
    "utf-16-be with BOM": (lambda text: b"\xfe\xff" + text.encode("utf-16-be"), "utf-8"),
}
HEADERS = [None, "utf-8", "iso-8859-1", "latin1", "windows-1252", "UTF-16", "x-bogus"]   # charset= in the header
METAS = [None, "utf-8", "windows-1252", "ISO-8859-1", "utf-16",
         '<meta http-equiv="Content-Type" content="text/html; charset=latin1">']


def read_csv(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def words(rng: random.Random, repertoire: str, n: int) -> str:
    """`n` words, each with a non-ASCII letter followed by ASCII ones, so that windows-1252 and Latin-1 bytes are
    never valid UTF-8 by accident (a real text's accented letter is followed by a letter, a space or a stop)."""
    return " ".join(rng.choice(repertoire) + rng.choice(["ab", "cd", "Ef", "x"]) + rng.choice(["", ",", "."])
                    for _ in range(n))


def meta_tag(meta: str | None) -> str:
    if meta is None:
        return ""
    return meta if meta.startswith("<") else f'<meta charset="{meta}">'


def content_type(header: str | None) -> str:
    return "text/html" if header is None else f"text/html; charset={header}"


def variants():
    return list(itertools.product(BODIES, HEADERS, METAS))


def book_for(rng: random.Random, number: int, repertoire: str) -> Book:
    # odd ids render the microdata layout, where title and text come from the markup (JSON-LD is ASCII-escaped)
    return Book(2 * number + 1, words(rng, REPERTOIRE[repertoire], 4), "Ann Author",
                [words(rng, REPERTOIRE[repertoire], 12), words(rng, REPERTOIRE[repertoire], 6)],
                [["Fiction", "Drama"]], 1000, "1.99", "2020-01-02")


def serve(site: LocalSite, path: str, html: str, body: str, header: str | None, meta: str | None) -> None:
    encode, _ = BODIES[body]
    site.add(path, encode(html.replace(TEMPLATE_META, meta_tag(meta))), content_type(header))


@pytest.fixture
def site():
    with LocalSite.build(books=[], questions=[]) as running:
        yield running


def test_every_bom_header_meta_and_body_combination_stores_the_original_text(site, tmp_path):
    rng = random.Random(7)
    expected, urls = {}, []
    for number, (body, header, meta) in enumerate(variants()):
        book = book_for(rng, number, BODIES[body][1])
        path = f"/enc/{number}"
        serve(site, path, render_book(book, site.root), body, header, meta)
        expected[site.url(path)] = (book, (body, header, meta))
        urls.append(site.url(path))
    listed = tmp_path / "urls.txt"
    listed.write_text("".join(u + "\n" for u in urls), encoding="utf-8")
    out = tmp_path / "details.csv"
    assert details_scraper.run(["--site", "smashwords", "--urls", str(listed), "--out", str(out), *FAST]) == 0
    rows = {r["url"]: r for r in read_csv(out)}
    wrong = [variant for url, (book, variant) in expected.items()
             if (rows.get(url, {}).get("title"), rows.get(url, {}).get("text")) != (book.title, book.text)]
    assert not wrong, f"{len(wrong)} of {len(expected)} variants stored another text, e.g. {wrong[:5]}"
    assert len(rows) == len(expected) == 6 * 7 * 6


def test_listing_pages_in_every_encoding_give_their_titles(site, tmp_path):
    rng = random.Random(11)
    starts, expected = [], {}
    for number, (body, header, meta) in enumerate(variants()[::4]):      # a quarter of the combinations
        book = book_for(rng, number, BODIES[body][1])
        path = f"/listing/{number}"
        serve(site, path, render_book_listing([book], "Newest", None, site.root), body, header, meta)
        starts += ["--start-url", site.url(path)]
        expected[site.url(book.path)] = (book.title, (body, header, meta))
    out = tmp_path / "urls.csv"
    assert url_scraper.run(["--site", "smashwords", "--out", str(out), *FAST[:-2], *starts]) == 0
    titles = {r["url"]: r["title"] for r in read_csv(out)}
    wrong = [variant for url, (title, variant) in expected.items() if titles.get(url) != title]
    assert not wrong, f"{len(wrong)} of {len(expected)} listings gave other titles, e.g. {wrong[:5]}"


def test_a_page_that_yields_nothing_after_a_doubtful_decode_is_retried_by_the_next_run(site, tmp_path):
    rng = random.Random(3)
    pages = {}
    # EBCDIC: undeclared, and under a label the WHATWG list does not have; both are read as a windows-1252 guess
    for number, header in enumerate(("text/html", "text/html; charset=IBM037")):
        book = book_for(rng, number, "latin-1")
        site.add(f"/doubt/{number}", render_book(book, site.root).encode("cp500"), header)
        pages[site.url(f"/doubt/{number}")] = book
    listed = tmp_path / "urls.txt"
    listed.write_text("".join(u + "\n" for u in pages), encoding="utf-8")
    out = tmp_path / "details.csv"
    argv = ["--site", "smashwords", "--urls", str(listed), "--out", str(out), *FAST]
    assert details_scraper.run(argv) == 1                                 # pages tried, nothing written
    errors = {e["url"]: e for e in read_csv(errors_path(out))}
    assert {url: e["reason"] for url, e in errors.items()} == {url: "encoding_suspect" for url in pages}
    assert all(is_transient(e["reason"]) and "windows-1252" in e["detail"] for e in errors.values())

    for number, (url, book) in enumerate(pages.items()):                  # the site fixes its pages
        site.add(f"/doubt/{number}", render_book(book, site.root))
    assert details_scraper.run(argv) == 0
    assert {r["url"]: r["text"] for r in read_csv(out)} == {url: book.text for url, book in pages.items()}
    assert all(site.hits(f"/doubt/{n}") == 2 for n in range(len(pages)))
