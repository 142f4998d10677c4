"""Credentials in URLs (`user:password@`) are never sent and never stored: a scrape whose start URL, listing links,
cover links, next link and redirect Locations carry many spellings of userinfo writes rows, logs and settings
without any of it, and the server never sees an Authorization header; the pages are still fetched."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

from scraper import covers, details_scraper
from scraper.client import strip_userinfo
from tests.scraper_site.site import BOOKS, Fault, LocalSite, render_book_listing

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--delay", "0", "--timeout", "5", "--retries", "0", "--no-progress"]
# Every secret holds "s3cr3t", so one search of every file finds any that leaked.
USERINFO = ["s3cr3tu{i}:s3cr3tp{i}@", "s3cr3tu{i}@", ":s3cr3tp{i}@", "s3cr3t%40u{i}:s3cr3t%3Ap{i}@",
            "s3cr3tu{i}:s3cr3t@p{i}@", "S3CR3TU{i}:S3CR3TP{i}@", "s3cr3tu{i}:@", "s3cr3tu{i}:s3cr3t%2Fp{i}@"]
SCHEMES = ["http://", "HTTP://", "Http://"]


def read_csv(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def with_userinfo(url: str, i: int) -> str:
    """`url` (http://host/...) with the i-th spelling of a scheme and userinfo."""
    return SCHEMES[i % len(SCHEMES)] + USERINFO[i % len(USERINFO)].format(i=i) + url.split("://", 1)[1]


def test_userinfo_in_every_kind_of_url_is_never_sent_nor_stored(tmp_path):
    with LocalSite.build() as site:
        host = site.root.split("://", 1)[1]
        # page 1 lists every book, each link and cover with userinfo; its next link (with userinfo) is page 2,
        # which lists two redirects whose Locations carry userinfo: one to a book, one to a disallowed path
        page = render_book_listing(BOOKS, "Everything", f"http://s3cr3tnext:s3cr3tpw@{host}/hop/2", site.root)
        for i, book in enumerate(BOOKS):
            for path in (book.path, book.cover_path):
                page = page.replace(f'"{site.url(path)}"', f'"{with_userinfo(site.url(path), i)}"')
        assert page.count("s3cr3t") >= 2 * len(BOOKS)
        site.add("/hop/1", page)
        redirects = [("/hop/to-book", BOOKS[2].path), ("/hop/to-private", "/private/x")]
        site.add("/hop/2", "".join(f'<div class="library-book"><a class="library-title" href="{path}">R</a></div>'
                                     for path, _ in redirects))
        for i, (path, target) in enumerate(redirects):
            site.fault(path, Fault(status=302, headers={"Location": with_userinfo(site.url(target), i + 1)}))

        urls = tmp_path / "urls.csv"
        stage1 = subprocess.run([sys.executable, "-m", "scraper.url_scraper", "--site", "smashwords", "--out",
                                 str(urls), "--start-url", with_userinfo(site.url("/hop/1"), 4), *FAST],
                                cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert stage1.returncode == 0, stage1.stderr
        assert "removed the user:password@ part" in stage1.stderr

        rows = read_csv(urls)
        expected = [site.url(b.path) for b in BOOKS] + [site.url(path) for path, _ in redirects]
        assert [r["url"] for r in rows] == expected
        assert [r["cover_url"] for r in rows[:len(BOOKS)]] == [site.url(b.cover_path) for b in BOOKS]

        out = tmp_path / "details.csv"
        assert details_scraper.run(["--site", "smashwords", "--urls", str(urls), "--out", str(out), *FAST]) == 0
        details = {r["url"]: r for r in read_csv(out)}
        assert set(details) == set(expected[:-1])                          # every book, and the redirect to one
        errors = read_csv(tmp_path / "details.errors.csv")
        assert [(e["url"], e["reason"]) for e in errors] == [(site.url("/hop/to-private"), "robots_disallowed")]
        assert site.url("/private/x") in errors[0]["detail"]                # the hop, named without userinfo
        assert covers.run(["--details", str(out), "--out", str(tmp_path / "covers"), *FAST]) == 0
        assert len(read_csv(tmp_path / "covers" / "covers.csv")) == len(BOOKS) + 1

        assert site.authorizations == []                                    # no request carried credentials
        assert site.hits(BOOKS[0].path) == 1 and site.hits("/hop/2") == 1
        for path in sorted(p for p in tmp_path.rglob("*") if p.is_file() and p.suffix in (".csv", ".json", ".txt")):
            text = path.read_text(encoding="utf-8", errors="replace").lower()
            assert "s3cr3t" not in text, f"{path.name} keeps a credential"
        assert "s3cr3t" not in (stage1.stdout + stage1.stderr).lower()


def test_strip_userinfo_keeps_everything_but_the_userinfo():
    for i in range(len(USERINFO) * len(SCHEMES)):
        for url in ("http://h/", "http://h:81/a/b?c=d@e#f", "http://[::1]:8/x", "http://h"):
            clean = strip_userinfo(with_userinfo(url, i))
            assert clean.lower() == url.lower() and "s3cr3t" not in clean.lower(), (i, url)
    assert strip_userinfo("http://h/a@b") == "http://h/a@b"                 # an @ in the path is not userinfo
    assert strip_userinfo("mailto:someone@example.com") == "mailto:someone@example.com"
