"""Redirects through the real details command against two local servers, each with its own robots.txt: every
hop passes the robots.txt of its own host, a disallowed hop is an error row (never content), loops and long
chains end as errors, and each host's robots.txt is read and its Crawl-delay applied."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from scraper import details_scraper
from scraper.storage import errors_path
from tests.scraper_site.site import BOOKS, Fault, LocalSite, WaitRecorder

FAST = ["--delay", "0", "--timeout", "2", "--retries", "0", "--no-progress"]


def read_csv(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def sites():
    """`home` disallows /private/; `other` (another port: another host to robots.txt) disallows /secret/ and
    asks for a Crawl-delay of 2.5 s."""
    with LocalSite.build(robots="User-agent: *\nDisallow: /private/\n") as home, \
            LocalSite.build(robots="User-agent: *\nDisallow: /secret/\nCrawl-delay: 2.5\n") as other:
        yield home, other


def redirect(site: LocalSite, path: str, location: str, status: int = 302) -> str:
    site.fault(path, Fault(status=status, headers={"Location": location}))
    return site.url(path)


def run_details(tmp_path: Path, urls: list[str], *extra: str) -> tuple[dict, dict]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    listed = tmp_path / "urls.txt"
    listed.write_text("".join(u + "\n" for u in urls))
    out = tmp_path / "details.csv"
    code = details_scraper.run(["--site", "smashwords", "--urls", str(listed), "--out", str(out), *FAST, *extra])
    assert code in (0, 1)
    rows = {r["url"]: r for r in read_csv(out)}
    errors = {e["url"]: e for e in read_csv(errors_path(out))} if errors_path(out).exists() else {}
    return rows, errors


def test_a_redirect_to_a_disallowed_path_on_the_same_host_is_an_error_row_not_content(sites, tmp_path):
    home, _ = sites
    home.add("/private/book", home.routes[BOOKS[0].path].body)          # a real book page, behind robots.txt
    start = redirect(home, "/go/1", "/private/book")
    rows, errors = run_details(tmp_path, [start])
    assert rows == {}
    assert errors[start]["reason"] == "robots_disallowed"
    assert home.url("/private/book") in errors[start]["detail"]
    assert home.hits("/private/book") == 0 and home.hits("/go/1") == 1


def test_a_redirect_to_another_host_obeys_that_hosts_robots_txt_and_crawl_delay(sites, tmp_path, monkeypatch):
    home, other = sites
    waits = WaitRecorder().install(monkeypatch)
    other.add("/secret/book", home.routes[BOOKS[0].path].body)
    other.add("/books/view/2", home.routes[BOOKS[1].path].body)
    other.add("/books/view/3", home.routes[BOOKS[2].path].body)
    blocked = redirect(home, "/go/secret", other.url("/secret/book"), status=301)
    allowed = redirect(home, "/go/2", other.url("/books/view/2"), status=307)
    allowed_too = redirect(home, "/go/3", other.url("/books/view/3"), status=308)
    rows, errors = run_details(tmp_path, [blocked, allowed, allowed_too], "--workers", "1")

    assert errors[blocked]["reason"] == "robots_disallowed" and other.hits("/secret/book") == 0
    assert set(rows) == {allowed, allowed_too}                      # rows keep the URL as listed
    assert json.loads(rows[allowed]["labels"]) == BOOKS[1].labels
    assert other.hits("/robots.txt") == 1 and home.hits("/robots.txt") == 1
    # the second request to `other` waited its own Crawl-delay, though --delay is 0 and `home` asks for none
    assert waits.waits == [2.5]


@pytest.mark.parametrize("chain, reason", [
    ({"/loop/a": "/loop/b", "/loop/b": "/loop/a"}, "redirect_loop"),
    ({"/loop/a": "/loop/a"}, "redirect_loop"),
    ({f"/chain/{i}": f"/chain/{i + 1}" for i in range(7)}, "too_many_redirects"),
    ({"/js": "javascript:alert(1)"}, "bad_redirect"),
    ({"/ftp": "ftp://127.0.0.1/book"}, "bad_redirect"),
    ({"/ctl": "/books/view/1\x00"}, "bad_redirect"),
])
def test_loops_long_chains_and_non_http_targets_end_as_error_rows(sites, tmp_path, chain, reason):
    home, _ = sites
    for path, location in chain.items():
        redirect(home, path, location)
    start = home.url(next(iter(chain)))
    rows, errors = run_details(tmp_path, [start])
    assert rows == {} and errors[start]["reason"] == reason
    assert sum(home.hits(path) for path in chain) <= 6               # at most 1 + --max-redirects hops


def test_the_hop_limit_is_an_option_and_zero_follows_nothing(sites, tmp_path):
    home, _ = sites
    start = redirect(home, "/go/1", BOOKS[0].path)
    rows, errors = run_details(tmp_path, [start], "--max-redirects", "0")
    assert rows == {} and errors[start]["reason"] == "too_many_redirects"
    assert home.hits(BOOKS[0].path) == 0

    rows, errors = run_details(tmp_path / "again", [start], "--max-redirects", "1")
    assert set(rows) == {start} and errors == {}


def test_a_redirected_robots_txt_is_followed_and_its_rules_apply(sites, tmp_path):
    home, other = sites
    home.fault("/robots.txt", Fault(status=301, headers={"Location": other.url("/robots.txt")}))
    home.add("/secret/x", home.routes[BOOKS[0].path].body)
    rows, errors = run_details(tmp_path, [home.url("/secret/x"), home.url(BOOKS[1].path)])
    assert errors[home.url("/secret/x")]["reason"] == "robots_disallowed" and home.hits("/secret/x") == 0
    assert set(rows) == {home.url(BOOKS[1].path)}


def test_a_robots_txt_redirect_loop_blocks_the_host(sites, tmp_path):
    home, _ = sites
    home.fault("/robots.txt", Fault(status=302, headers={"Location": "/robots2.txt"}))
    home.fault("/robots2.txt", Fault(status=302, headers={"Location": "/robots.txt"}))
    rows, errors = run_details(tmp_path, [home.url(BOOKS[0].path)])
    assert rows == {} and errors[home.url(BOOKS[0].path)]["reason"] == "robots_unreachable"
    assert home.hits(BOOKS[0].path) == 0


def test_a_redirect_announcing_a_100_gb_body_is_followed_without_reading_it(sites, tmp_path):
    """requests' own redirect resolver read 3xx bodies whole, uncapped: this was a MemoryError (found by fuzzing)."""
    home, _ = sites
    home.fault("/huge-redirect", Fault(raw=b"HTTP/1.1 302 Found\r\nLocation: " + BOOKS[1].path.encode()
                                       + b"\r\nContent-Length: 99999999999\r\nContent-Encoding: gzip\r\n"
                                       + b"Connection: close\r\n\r\n"
                                       + b"x" * 100_000))
    start = home.url("/huge-redirect")
    rows, errors = run_details(tmp_path, [start])
    assert errors == {} and json.loads(rows[start]["labels"]) == BOOKS[1].labels
