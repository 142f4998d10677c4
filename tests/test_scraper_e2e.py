"""Both scraper stages end to end against a real threaded HTTP server on 127.0.0.1, with faults injected:
404, 500, 503, 429 + Retry-After, a page slower than the timeout, a cut-off transfer, truncated and garbage
HTML, a robots.txt-disallowed path, an unreachable robots.txt, and the Stack Exchange API's JSON."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from scraper import details_scraper, url_scraper
from scraper.client import DEFAULT_USER_AGENT
from scraper.storage import errors_path
from tests.scraper_site.site import BOOKS, QUESTIONS, Fault, LocalSite, WaitRecorder

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--delay", "0", "--timeout", "0.5", "--retries", "1", "--no-progress"]


def read_csv(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def site():
    with LocalSite.build() as running:
        yield running


def scrape_urls(site, tmp_path, *extra, site_name="smashwords", starts=("/books/category/1",)) -> Path:
    out = tmp_path / f"{site_name}_urls.csv"
    argv = ["--site", site_name, "--out", str(out), *FAST, *extra]
    for start in starts:
        argv += ["--start-url", site.url(start)]
    assert url_scraper.run(argv) == 0
    return out


# ---------------------------------------------------------------- stage 1
def test_url_stage_follows_next_links_and_dedupes_books_listed_in_two_categories(site, tmp_path):
    out = scrape_urls(site, tmp_path, starts=("/books/category/1", "/books/category/2"))
    rows = read_csv(out)
    assert [r["url"] for r in rows] == [site.url(b.path) for b in BOOKS]
    assert [r["title"] for r in rows] == [b.title for b in BOOKS]
    assert [r["cover_url"] for r in rows] == [site.url(b.cover_path) for b in BOOKS]
    assert [r["page_url"] for r in read_csv(tmp_path / "smashwords_urls.pages.csv")] == [
        site.url("/books/category/1"), site.url("/books/category/1/20"), site.url("/books/category/1/40"),
        site.url("/books/category/2")]


def test_url_stage_stackoverflow_listing_with_rel_next(site, tmp_path):
    out = scrape_urls(site, tmp_path, site_name="stackoverflow", starts=("/questions/tagged/python",))
    assert [(r["url"], r["title"]) for r in read_csv(out)] == [(site.url(q.path), q.title) for q in QUESTIONS]


def test_url_stage_rerun_continues_after_the_last_finished_page(site, tmp_path):
    scrape_urls(site, tmp_path, "--max-pages", "1")
    assert len(read_csv(tmp_path / "smashwords_urls.csv")) == 3
    scrape_urls(site, tmp_path)                                   # same command, no page limit
    rows = read_csv(tmp_path / "smashwords_urls.csv")
    assert [r["url"] for r in rows] == [site.url(b.path) for b in BOOKS]
    assert site.hits("/books/category/1") == 1                   # the finished page was not fetched again


def test_a_failed_listing_page_is_recorded_and_the_other_start_urls_go_on(site, tmp_path):
    site.fault("/books/category/1/20", Fault(status=404))
    scrape_urls(site, tmp_path, starts=("/books/category/1", "/books/category/2"))
    errors = read_csv(errors_path(tmp_path / "smashwords_urls.csv"))
    assert [(e["url"], e["status"], e["reason"]) for e in errors] == [
        (site.url("/books/category/1/20"), "404", "http_404")]
    assert len(read_csv(tmp_path / "smashwords_urls.csv")) == 3 + 2  # page 1, then category 2's new books


# ---------------------------------------------------------------- stage 2
def test_details_stage_writes_exact_rows_for_both_page_variants(site, tmp_path):
    urls = scrape_urls(site, tmp_path, starts=("/books/category/1",))
    out = tmp_path / "smashwords_details.csv"
    assert details_scraper.run(["--site", "smashwords", "--urls", str(urls), "--out", str(out), *FAST]) == 0
    rows = {r["url"]: r for r in read_csv(out)}
    assert list(read_csv(out)[0]) == ["url", "title", "text", "labels", "author", "price", "words", "published",
                                      "cover_url"]
    for book in BOOKS:                                            # even ids: JSON-LD pages; odd ids: microdata
        row = rows[site.url(book.path)]
        assert row["title"] == book.title
        assert row["text"] == book.text
        assert json.loads(row["labels"]) == book.labels
        assert (row["author"], row["price"], row["words"], row["published"]) == (
            book.author, f"{book.price} USD", str(book.words), book.published)
        assert row["cover_url"] == site.url(book.cover_path)


def test_details_stage_survives_every_injected_fault_and_the_rerun_retries_only_transient_ones(site, tmp_path,
                                                                                                capsys, monkeypatch):
    waits = WaitRecorder().install(monkeypatch)
    site.robots = "User-agent: *\nDisallow: /books/view/8\n"
    truncated_at = site.routes["/books/view/6"].body.index(b'"genre"')      # cut inside the JSON-LD
    site.fault("/books/view/1", Fault(short_read=True), times=1)            # connection cut mid-body, then fine
    site.fault("/books/view/2", Fault(status=404))
    site.fault("/books/view/3", Fault(status=500))
    site.fault("/books/view/4", Fault(status=429, headers={"Retry-After": "1"}), times=1)
    site.fault("/books/view/5", Fault(delay=1.5))                           # timeout is 0.5 s
    site.fault("/books/view/6", Fault(truncate_at=truncated_at))
    site.fault("/books/view/7", Fault(body=b"\x00\x9f<<garbage>> \xff" * 50, headers={"Content-Type": "text/html"}))
    urls = tmp_path / "urls.csv"
    listed = [site.url(b.path) for b in BOOKS] + [site.url(BOOKS[0].cover_path), "not a url"]
    urls.write_text("url,title\n" + "".join(f"{u},\n" for u in listed))
    out = tmp_path / "details.csv"
    argv = ["--site", "smashwords", "--urls", str(urls), "--out", str(out), "--workers", "4", *FAST]

    assert details_scraper.run(argv) == 0
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert summary.startswith("details_scraper smashwords: 10 pages fetched, 2 rows written, 8 errors (")
    assert "pages/s" in summary and "http_404 1" in summary
    assert sorted(r["url"] for r in read_csv(out)) == [site.url("/books/view/1"), site.url("/books/view/4")]
    errors = {e["url"]: (e["status"], e["reason"]) for e in read_csv(errors_path(out))}
    assert errors == {
        site.url("/books/view/2"): ("404", "http_404"),
        site.url("/books/view/3"): ("500", "http_500"),
        site.url("/books/view/5"): ("", "timeout"),
        site.url("/books/view/6"): ("200", "no_labels"),
        site.url("/books/view/7"): ("200", "unrecognised_page"),
        site.url("/books/view/8"): ("", "robots_disallowed"),
        site.url(BOOKS[0].cover_path): ("200", "not_html"),
        "not a url": ("", "bad_url"),
    }
    assert site.hits("/books/view/3") == 2                                 # retried once, then given up
    assert site.hits("/books/view/8") == 0                                 # robots.txt obeyed
    assert site.hits("/robots.txt") == 1
    assert site.hits("/books/view/4") == 2 and max(waits.waits) >= 1.0     # Retry-After: 1 asked for and waited

    site.faults.clear()                                                     # the site recovers; same command again
    assert details_scraper.run(argv) == 0
    rows = read_csv(out)
    assert sorted(r["url"] for r in rows) == [site.url(f"/books/view/{i}") for i in (1, 3, 4, 5)]
    assert site.hits("/books/view/2") == 1 and site.hits("/books/view/6") == 1   # permanent errors not refetched
    assert ", 8 skipped as done," in capsys.readouterr().out


def test_stackoverflow_details_keep_question_tags_not_sidebar_tags(site, tmp_path):
    q = QUESTIONS[3]
    body = site.routes[q.path].body
    site.fault(q.path, Fault(truncate_at=body.index(b'<div class="post-taglist')))   # cut before the tags
    urls = scrape_urls(site, tmp_path, site_name="stackoverflow", starts=("/questions/tagged/python",))
    out = tmp_path / "so_details.csv"
    assert details_scraper.run(["--site", "stackoverflow", "--urls", str(urls), "--out", str(out), *FAST]) == 0
    rows = {r["url"]: r for r in read_csv(out)}
    assert set(rows) == {site.url(x.path) for x in QUESTIONS if x is not q}
    for x in QUESTIONS:
        if x is q:
            continue
        row = rows[site.url(x.path)]
        assert (row["title"], row["text"], json.loads(row["labels"])) == (x.title, x.text, x.tags)
        assert (row["score"], row["asked"], row["answers"]) == (str(x.score), x.asked, str(x.answers))
    assert [(e["reason"]) for e in read_csv(errors_path(out))] == ["no_labels"]


def test_base_url_points_site_urls_at_a_mirror_and_rows_keep_the_listed_url(site, tmp_path):
    urls = tmp_path / "urls.txt"
    urls.write_text("https://www.smashwords.com/books/view/1\nhttps://www.smashwords.com/books/view/2\n")
    out = tmp_path / "details.csv"
    assert details_scraper.run(["--site", "smashwords", "--urls", str(urls), "--out", str(out),
                                "--base-url", site.root, *FAST]) == 0
    assert sorted(r["url"] for r in read_csv(out)) == ["https://www.smashwords.com/books/view/1",
                                                       "https://www.smashwords.com/books/view/2"]
    assert site.hits("/books/view/1") == 1


# ---------------------------------------------------------------- politeness
def test_workers_share_one_per_host_delay_send_the_project_user_agent_and_read_robots_once(site, tmp_path,
                                                                                         monkeypatch):
    waits = WaitRecorder().install(monkeypatch)
    urls = tmp_path / "urls.txt"
    urls.write_text("".join(site.url(q.path) + "\n" for q in QUESTIONS))
    out = tmp_path / "so.csv"
    argv = ["--site", "stackoverflow", "--urls", str(urls), "--out", str(out), "--workers", "4", "--delay", "0.15",
            "--timeout", "2", "--no-progress"]
    assert details_scraper.run(argv) == 0
    assert len(site.requests) == 1 + len(QUESTIONS)
    # 4 workers, one host: robots.txt takes the first slot, then every request its own slot 0.15 s after the last
    assert sorted(waits.waits) == [round(0.15 * k, 6) for k in range(1, len(QUESTIONS) + 1)]
    assert {agent for _, agent, _ in site.requests} == {DEFAULT_USER_AGENT}
    assert "multilabel-text-pipeline/0.1" in DEFAULT_USER_AGENT and "research scraper" in DEFAULT_USER_AGENT
    assert site.hits("/robots.txt") == 1


def test_robots_crawl_delay_wins_over_a_smaller_delay(site, tmp_path, capsys, monkeypatch):
    waits = WaitRecorder().install(monkeypatch)
    site.robots = "User-agent: *\nCrawl-delay: 1.5\n"
    urls = tmp_path / "urls.txt"
    urls.write_text(site.url(QUESTIONS[0].path) + "\n" + site.url(QUESTIONS[1].path) + "\n")
    argv = ["--site", "stackoverflow", "--urls", str(urls), "--out", str(tmp_path / "o.csv"), *FAST, "--workers", "2"]
    assert details_scraper.run(argv) == 0
    assert len(site.times("/questions/")) == 2
    assert waits.waits == [1.5]                      # the second page waits the fractional Crawl-delay, not --delay 0
    assert "Crawl-delay 1.5s" in capsys.readouterr().err


def test_ignore_robots_warns_loudly_and_unreachable_robots_blocks_the_host(site, tmp_path, capsys):
    site.robots = "User-agent: *\nDisallow: /\n"
    urls = tmp_path / "urls.txt"
    urls.write_text(site.url(QUESTIONS[0].path) + "\n")
    out = tmp_path / "o.csv"
    assert details_scraper.run(["--site", "stackoverflow", "--urls", str(urls), "--out", str(out), *FAST,
                                "--ignore-robots"]) == 0
    assert "WARNING: --ignore-robots" in capsys.readouterr().err
    assert len(read_csv(out)) == 1 and site.hits("/robots.txt") == 0

    site.fault("/robots.txt", Fault(status=503))
    out2 = tmp_path / "o2.csv"
    assert details_scraper.run(["--site", "stackoverflow", "--urls", str(urls), "--out", str(out2), *FAST]) == 1
    assert [e["reason"] for e in read_csv(errors_path(out2))] == ["robots_unreachable"]
    assert "robots.txt unreachable" in capsys.readouterr().err


# ---------------------------------------------------------------- Stack Exchange API
def test_api_source_pages_until_has_more_is_false_and_honours_backoff(site, tmp_path, capsys, monkeypatch):
    waits = WaitRecorder().install(monkeypatch)
    site.api_pages[1]["backoff"] = 1
    out = tmp_path / "api.csv"
    argv = ["--site", "stackoverflow", "--source", "api", "--api-base-url", site.root, "--pagesize", "3",
            "--tagged", "python", "--out", str(out), *FAST]
    assert details_scraper.run(argv) == 0
    rows = read_csv(out)
    assert [(r["title"], r["text"], json.loads(r["labels"])) for r in rows] == [(q.title, q.text, q.tags)
                                                                              for q in QUESTIONS]
    assert [(r["score"], r["asked"], r["answers"]) for r in rows] == [(str(q.score), q.asked, str(q.answers))
                                                                      for q in QUESTIONS]
    # two pages asked for (a 0.5 s timeout on a loaded machine may retry one: same URL, not a third page)
    pages = {p for p, _, _ in site.requests if p.startswith("/2.3/questions")}
    assert len(pages) == 2 and waits.waits == [1.0]                        # page 2 waited the backoff
    output = capsys.readouterr()
    assert "quota_remaining 298" in output.out and "backoff" in output.err
    assert site.hits("/robots.txt") == 0                                   # an API, not a crawl

    asked = len(site.times("/2.3/questions"))
    assert details_scraper.run(argv) == 0                                  # rerun: nothing left to fetch
    assert len(site.times("/2.3/questions")) == asked and len(read_csv(out)) == len(QUESTIONS)


def test_api_error_object_is_recorded_and_ends_the_run(site, tmp_path):
    body = json.dumps({"error_id": 502, "error_name": "throttle_violation",
                       "error_message": "too many requests from this IP, more requests available in 600 seconds"})
    site.fault("/2.3/questions", Fault(status=400, body=body.encode()))
    out = tmp_path / "api.csv"
    assert details_scraper.run(["--site", "stackoverflow", "--source", "api", "--api-base-url", site.root,
                                "--out", str(out), *FAST]) == 1
    [error] = read_csv(errors_path(out))
    assert (error["status"], error["reason"]) == ("400", "api_throttle_violation")
    assert "more requests available in 600 seconds" in error["detail"]


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("argv, message", [
    (["--site", "smashwords", "--urls", "missing.csv", "--out", "o.csv"], "does not exist"),
    (["--site", "goodreads", "--urls", "u.csv"], "invalid choice: 'goodreads'"),
    (["--site", "smashwords", "--urls", "u.csv", "--workers", "0"], "argument --workers: must be an integer >= 1"),
    (["--site", "smashwords", "--source", "api"], "only available for --site stackoverflow"),
])
def test_details_bad_input_is_one_clear_line_and_exit_code_2(tmp_path, capsys, argv, message, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "u.csv").write_text("url\nhttp://127.0.0.1:9/x\n")
    with pytest.raises(SystemExit) as exit_info:
        sys.exit(details_scraper.run(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("argv, message", [
    (["--site", "smashwords", "--start-url", "ftp://x/y"], "is not an absolute http(s) URL"),
    (["--site", "smashwords", "--start-url", "books/category/1"], "is not an absolute http(s) URL"),
    (["--site", "stackoverflow", "--max-pages", "-1"], "argument --max-pages: must be an integer >= 0"),
    (["--site", "smashwords", "--start-url", "http://x/\x00y"], "control characters"),
])
def test_url_stage_bad_input_is_one_clear_line_and_exit_code_2(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        sys.exit(url_scraper.run(argv + ["--out", str(tmp_path / "o.csv")]))
    assert exit_info.value.code == 2
    assert not (tmp_path / "o.csv").exists()
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_an_output_file_of_another_kind_is_refused_not_appended_to(tmp_path, capsys):
    out = tmp_path / "o.csv"
    out.write_text("text,labels\nhello,[]\n")
    (tmp_path / "u.csv").write_text("url\nhttp://127.0.0.1:9/x\n")
    assert details_scraper.run(["--site", "smashwords", "--urls", str(tmp_path / "u.csv"), "--out", str(out)]) == 2
    assert "choose another --out" in capsys.readouterr().err
    assert out.read_text() == "text,labels\nhello,[]\n"


def test_commands_have_help_and_run_as_modules():
    for module in ("scraper.url_scraper", "scraper.details_scraper", "scraper.covers"):
        result = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True,
                                timeout=30)
        assert result.returncode == 0, result.stderr
        for option in ("--delay", "--ignore-robots", "--deadline", "--max-redirects", "--max-crawl-delay"):
            assert option in result.stdout, (module, option)
