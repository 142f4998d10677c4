"""The Stack Exchange API mode (`details_scraper --source api`) against the local API: a capped backoff, malformed
items as error rows while the run goes on, malformed pages that end the run cleanly, and a SIGKILLed run with
hostile titles and tags that resumes to exactly the rows of an uninterrupted run."""
from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deployment.files import large_csv_fields
from scraper import details_scraper
from scraper.storage import errors_path, sidecar, storable
from tests.scraper_site.hostile import hostile_text
from tests.scraper_site.site import QUESTIONS, LocalSite, WaitRecorder, synthetic_questions

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--delay", "0", "--timeout", "2", "--retries", "0", "--no-progress"]


def read_csv(path: Path) -> list[dict]:
    with large_csv_fields(), open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def site():
    with LocalSite.build() as running:
        yield running


def api_argv(site: LocalSite, out: Path, *extra: str) -> list[str]:
    return ["--site", "stackoverflow", "--source", "api", "--api-base-url", site.root, "--pagesize", "3",
            "--out", str(out), *FAST, *extra]


@pytest.mark.parametrize("backoff, waited, message", [
    (1e9, 0.25, "asked for a 1e+09s backoff; waiting --max-retry-after 0.25s instead"),
    ("soon", 0.25, "unreadable backoff 'soon'"),
    (-5, 0.25, "unreadable backoff '-5'"),
    (0.1, 0.1, "asked for a 0.1s backoff"),
])
def test_the_api_backoff_is_capped_by_max_retry_after(site, tmp_path, capsys, monkeypatch, backoff, waited, message):
    waits = WaitRecorder().install(monkeypatch)
    site.api_pages[1]["backoff"] = backoff
    out = tmp_path / "api.csv"
    assert details_scraper.run(api_argv(site, out, "--max-retry-after", "0.25")) == 0
    assert len(read_csv(out)) == len(QUESTIONS)                  # both pages read: the run did not stall
    assert waits.waits == [waited]
    assert message in capsys.readouterr().err


def test_malformed_items_become_error_rows_and_the_run_goes_on(site, tmp_path, capsys):
    good = site.api_pages[1]["items"]
    bad = [dict(good[0], question_id=9001, link=site.url("/questions/9001/a"), creation_date="yesterday"),
           dict(good[0], question_id=9002, link=site.url("/questions/9002/b"), title=12345),
           dict(good[0], question_id=9003, link=site.url("/questions/9003/c"), tags=["python", 7]),
           dict(good[0], question_id=9004, link=site.url("/questions/9004/d"), creation_date=10 ** 20),
           {k: v for k, v in dict(good[0], question_id=9005, link=site.url("/questions/9005/e")).items()
            if k != "body"},
           {"title": "no link and no id", "body": "<p>x</p>", "tags": ["x"]},
           "not an object",
           None,
           dict(good[0], question_id=9006, link=site.url("/questions/9006/f"), tags=[]),
           dict(good[0], question_id=9007, link=site.url("/questions/9007/g"), body="<p> </p>")]
    site.api_pages[1]["items"] = bad[:5] + good + bad[5:]
    out = tmp_path / "api.csv"
    assert details_scraper.run(api_argv(site, out)) == 0
    assert [r["url"] for r in read_csv(out)] == [site.url(q.path) for q in QUESTIONS]
    errors = read_csv(errors_path(out))
    assert [(e["reason"], e["detail"]) for e in errors] == [
        ("api_bad_item", "`creation_date` is a JSON str ('yesterday'), expected int"),
        ("api_bad_item", "`title` is a JSON int ('12345'), expected str"),
        ("api_bad_item", "`tags` holds something other than strings: ['python', 7]"),
        ("api_bad_item", "`creation_date` 100000000000000000000 is not a date"),
        ("api_bad_item", "no `body`"),
        ("api_bad_item", "no usable `link` or `question_id` (link 'None')"),
        ("api_bad_item", "item is a JSON str, not an object"),
        ("api_bad_item", "item is a JSON NoneType, not an object"),
        ("no_labels", "question has no tags"),
        ("no_text", "question has no body text"),
    ]
    assert errors[0]["url"] == site.url("/questions/9001/a")
    assert errors[6]["url"].endswith("page=1#item-9")                 # no URL of its own: the page and index
    assert "10 errors (api_bad_item 8, no_labels 1, no_text 1)" in capsys.readouterr().out


def test_lone_surrogates_in_a_question_are_written_as_u_fffd_and_counted(site, tmp_path, capsys):
    """JSON escapes decode to lone surrogates, which UTF-8 cannot store and lxml cannot parse: they once
    crashed the whole run."""
    item = site.api_pages[1]["items"][0]
    item.update(title="Broken \ud800 title", body="<p>Body \udfff text</p>", tags=["py\ud83dthon"])
    out = tmp_path / "api.csv"
    assert details_scraper.run(api_argv(site, out)) == 0
    row = read_csv(out)[0]
    assert (row["title"], row["text"], json.loads(row["labels"])) == (
        "Broken \ufffd title", "Body \ufffd text", ["py\ufffdthon"])
    assert "2 lone surrogate(s) (invalid Unicode from the source) were written as U+FFFD" in capsys.readouterr().err


@pytest.mark.parametrize("page, reason, message", [
    ({"items": {"not": "a list"}, "has_more": True}, "api_bad_json", "`items` is a JSON dict, not a list"),
    (b"[" * 100_000 + b"]" * 100_000, "api_bad_json", "response is not a JSON object"),
    (b"\xff\xfe not utf-8", "api_bad_json", "response is not a JSON object"),
])
def test_a_malformed_page_is_one_error_row_and_the_run_ends_cleanly(site, tmp_path, page, reason, message):
    from tests.scraper_site.site import Fault
    body = page if isinstance(page, bytes) else json.dumps(page).encode()
    site.fault("/2.3/questions", Fault(status=200, body=body))
    out = tmp_path / "api.csv"
    assert details_scraper.run(api_argv(site, out)) == 1
    [error] = read_csv(errors_path(out))
    assert (error["reason"], error["detail"].split(" (")[0]) == (reason, message.split(" (")[0])


@pytest.mark.parametrize("has_more, warning", [
    ("yes", "has_more is 'yes', not true/false"),
    (True, "has no items although has_more is true"),
])
def test_a_server_that_never_says_has_more_false_cannot_loop_forever(site, tmp_path, capsys, has_more, warning):
    site.api_pages = {n: {"items": [] if has_more is True else site.api_pages[1]["items"], "has_more": has_more,
                          "quota_remaining": 5} for n in range(1, 50)}
    out = tmp_path / "api.csv"
    details_scraper.run(api_argv(site, out, "--max-pages", "0"))       # 0 = until has_more is false
    assert len(site.times("/2.3/questions")) == 1
    assert warning in capsys.readouterr().err


# ---------------------------------------------------------------- a real interrupted run
def hostile_questions(n: int) -> list:
    """Questions whose titles and tags hold the strings that broke the CSV files (\\r from `&#13;`, NUL, quotes)."""
    rng = random.Random(5)
    questions = synthetic_questions(n)
    for q in questions:
        q.title = f"Q{q.id} " + hostile_text(rng, 6)
        q.tags = [f"t{q.id}"] + [hostile_text(rng, 3) or "x" for _ in range(rng.randint(0, 2))]
    return questions


def api_command(root: str, out: Path) -> list[str]:
    return [sys.executable, "-m", "scraper.details_scraper", "--site", "stackoverflow", "--source", "api",
            "--api-base-url", root, "--pagesize", "4", "--max-pages", "0", "--out", str(out), *FAST]


def test_api_run_killed_with_sigkill_resumes_to_exactly_the_rows_of_an_uninterrupted_run(tmp_path):
    questions = hostile_questions(48)                                    # 12 API pages
    with LocalSite.build(questions=questions, books=[], per_page=4) as site:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        reference = tmp_path / "reference.csv"
        done = subprocess.run(api_command(site.root, reference), cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        expected = read_csv(reference)
        assert len(expected) == len(questions)
        assert [json.loads(r["labels"]) for r in expected] == [[storable(t)[0] for t in q.tags] for q in questions]

        site.page_delay = 0.15                                           # slow enough to kill in the middle
        out = tmp_path / "api.csv"
        process = subprocess.Popen(api_command(site.root, out), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not out.exists() or len(read_csv(out)) < 10:
            assert process.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "the run made no progress"
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

        # every page the log calls done has all its rows in the output
        written = {r["url"] for r in read_csv(out)}
        logged = [int(r["page"]) for r in read_csv(sidecar(out, "pages"))]
        assert logged and max(logged) < 12
        for page in logged:
            assert {site.url(q.path) for q in questions[(page - 1) * 4:page * 4]} <= written

        site.page_delay = 0
        rerun = subprocess.run(api_command(site.root, out), cwd=ROOT, env=env, capture_output=True, text=True,
                               timeout=120)
        assert rerun.returncode == 0, rerun.stderr
        assert read_csv(out) == expected                                  # same rows, same order, each once
