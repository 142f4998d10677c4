"""StackOverflow questions from the Stack Exchange API: the sanctioned, stable alternative to HTML scraping.

    python -m scraper.details_scraper --site stackoverflow --source api --tagged python --max-pages 5 \\
        --out data/raw/stackoverflow_details.csv [--api-key KEY]

Calls `GET /2.3/questions?site=stackoverflow&tagged=...&filter=withbody&page=N&pagesize=100` and writes the
same columns as the HTML path (`url,title,text,labels,score,asked,answers`; labels are the tags). It obeys
the API's rules: waits `backoff` seconds when a response carries it (at most `--max-retry-after`, with a
warning when the API asked for more; an unreadable value waits the cap), stops on `has_more: false`,
shows `quota_remaining`, and turns an error object (`error_id`, `error_name`, `error_message`) into one
errors-file row. One malformed question (a text `creation_date`, a numeric `title`, a missing field)
becomes an errors-file row (`api_bad_item`) and the page goes on. robots.txt is not consulted here: it
governs crawlers of web pages, and the API is the interface the site provides for programs.

Each finished page is logged to `<out>.pages.csv` after its rows are on disk (fsync); a rerun continues
after the last logged page, and questions already in the output are not written twice.
"""
from __future__ import annotations

import html
import json
import math
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlencode

from scraper import cli, stackoverflow
from scraper.client import Fetched, PoliteClient, strip_userinfo, url_problem
from scraper.sites import dedupe_key
from scraper.storage import ERROR_COLUMNS, CsvAppender, errors_path, repair_and_read, sidecar
from scraper.text import html_to_text

PAGE_LOG_COLUMNS = ("query", "page", "has_more", "new_rows", "quota_remaining")
PROG = "python -m scraper.details_scraper"


@dataclass
class ApiSettings:
    site: str
    source: str
    out: str
    api_base_url: str
    api_site: str
    tagged: str
    sort: str
    pagesize: int
    max_pages: int
    api_key: str | None
    delay: float
    timeout: float
    deadline: float
    retries: int
    max_retry_after: float
    user_agent: str


class BadItem(ValueError):
    """An API item without the shape of a question; the message names the field."""


# ---------------------------------------------------------------- one question
def _field(item: dict, name: str, kinds: tuple[type, ...], required: bool = True):
    value = item.get(name)
    if value is None:
        if required:
            raise BadItem(f"no `{name}`")
        return None
    if isinstance(value, bool) or not isinstance(value, kinds):   # bool is an int to Python, not to the API
        raise BadItem(f"`{name}` is a JSON {type(value).__name__} ({str(value)[:40]!r}), expected "
                      f"{' or '.join(k.__name__ for k in kinds)}")
    return value


def item_url(item) -> str:
    """The question's URL if the item names a usable one, else ""."""
    if not isinstance(item, dict):
        return ""
    link = item.get("link")
    if isinstance(link, str) and not url_problem(strip_userinfo(link)):
        return strip_userinfo(link)
    qid = item.get("question_id")
    if isinstance(qid, int) and not isinstance(qid, bool) and qid > 0:
        return f"https://stackoverflow.com/questions/{qid}"
    return ""


def question_row(item) -> dict:
    """One API question object (filter=withbody) → a details row. Titles come HTML-escaped from the API.

    Raises BadItem (a ValueError) when the item is not a question as the API documents it.
    """
    if not isinstance(item, dict):
        raise BadItem(f"item is a JSON {type(item).__name__}, not an object")
    url = item_url(item)
    if not url:
        raise BadItem(f"no usable `link` or `question_id` (link {str(item.get('link'))[:80]!r})")
    title = _field(item, "title", (str,))
    body = _field(item, "body", (str,))
    tags = _field(item, "tags", (list,))
    if not all(isinstance(tag, str) for tag in tags):
        raise BadItem(f"`tags` holds something other than strings: {str(tags)[:80]}")
    created = _field(item, "creation_date", (int,), required=False)
    try:
        asked = datetime.fromtimestamp(created, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") if created else ""
    except (OverflowError, OSError, ValueError):
        raise BadItem(f"`creation_date` {created} is not a date") from None
    score = _field(item, "score", (int,), required=False)
    answers = _field(item, "answer_count", (int,), required=False)
    return {"url": url, "title": html.unescape(title), "text": html_to_text(body), "labels": list(tags),
            "score": "" if score is None else score, "asked": asked, "answers": "" if answers is None else answers}


# ---------------------------------------------------------------- the run, step by step
@dataclass
class ApiRun:
    """Everything one `--source api` run reads and writes."""
    args: object
    endpoint: str
    query: dict
    query_key: str
    client: PoliteClient
    summary: cli.Summary
    seen: set[str]
    rows_out: CsvAppender
    pages_out: CsvAppender
    errors_out: CsvAppender
    bar: object
    page: int                            # the next page to ask for
    finished: bool                       # an earlier page said has_more: false
    quota: object = ""
    last: dict = field(default_factory=dict)     # the latest page's JSON (has_more, backoff, ...)

    def wants_more(self) -> bool:
        return not self.finished and (not self.args.max_pages or self.page <= self.args.max_pages)

    def page_url(self) -> str:
        return f"{self.endpoint}?{urlencode(dict(self.query, page=self.page))}"

    def error(self, url: str, status, reason: str, detail: str) -> None:
        self.summary.error(reason)
        self.errors_out.write({"url": url, "status": status or "", "reason": reason, "detail": detail[:300]})

    def close(self) -> None:
        self.bar.close()
        for handle in (self.rows_out, self.pages_out, self.errors_out):
            handle.close()


def _open(args, out: Path) -> ApiRun:
    """Check the options, repair and read the earlier outputs, open the new ones.

    Raises UsageError, ValueError or OSError: bad input, reported as one line and exit code 2."""
    api_base = cli.check_url(args.api_base_url, "--api-base-url").rstrip("/")
    existing = repair_and_read(out, stackoverflow.DETAIL_COLUMNS)
    page_log_path = sidecar(out, "pages")
    page_log = repair_and_read(page_log_path, PAGE_LOG_COLUMNS)
    errors_file = errors_path(out)
    repair_and_read(errors_file, ERROR_COLUMNS)
    query = {"site": args.api_site, "tagged": args.tagged, "sort": args.sort, "order": "desc",
             "filter": "withbody", "pagesize": args.pagesize}
    query_key = urlencode(sorted(query.items()))
    logged = [row for row in page_log if row["query"] == query_key]
    bad = [row["page"] for row in logged if not row["page"].isdigit()]
    if bad:
        raise ValueError(f"{page_log_path} has page numbers that are not numbers ({bad[:3]}); move it away to "
                         f"start this query again")
    settings = ApiSettings(site="stackoverflow", source="api", out=str(out), api_base_url=api_base,
                           api_site=args.api_site, tagged=args.tagged, sort=args.sort, pagesize=args.pagesize,
                           max_pages=args.max_pages, api_key="***" if args.api_key else None, delay=args.delay,
                           timeout=args.timeout, deadline=args.deadline, retries=args.retries,
                           max_retry_after=args.max_retry_after, user_agent=args.user_agent)
    cli.save_settings(settings, sidecar(out, "settings", ".json"), "scraper.details_scraper")
    rows_out = CsvAppender(out, stackoverflow.DETAIL_COLUMNS)
    pages_out = CsvAppender(page_log_path, PAGE_LOG_COLUMNS)
    errors_out = CsvAppender(errors_file, ERROR_COLUMNS)
    bar = cli.progress(args.max_pages or None, "api pages", args.no_progress)
    bar.update(min(len(logged), args.max_pages or len(logged)))
    return ApiRun(args=args, endpoint=f"{api_base}/2.3/questions", query=query, query_key=query_key,
                  client=cli.make_client(args),
                  summary=cli.Summary(stage="details_scraper stackoverflow (api)", rows_before=len(existing),
                                      skipped=len(logged)),
                  seen={dedupe_key(stackoverflow, row["url"]) for row in existing},
                  rows_out=rows_out, pages_out=pages_out, errors_out=errors_out, bar=bar,
                  page=max((int(row["page"]) for row in logged), default=0) + 1,
                  finished=any(row["has_more"] == "False" for row in logged))


def _fetch_page(run: ApiRun) -> list | None:
    """The items of the next page, or None after recording why there are none (the run then stops)."""
    params = dict(run.query, page=run.page)
    if run.args.api_key:
        params["key"] = run.args.api_key
    fetched = run.client.get(run.endpoint, check_robots=False, params=params)
    run.summary.pages += 1
    run.bar.update(1)
    data = _json(fetched.content)
    if not fetched.ok or data is None or "error_id" in data:
        reason, detail = _api_error(fetched, data)
        run.error(run.page_url(), fetched.status, reason, detail)
        return None                      # quota, throttle or outage: later pages would fail too
    items = data.get("items")
    if not isinstance(items, list):
        run.error(run.page_url(), fetched.status, "api_bad_json",
                  f"`items` is a JSON {type(items).__name__}, not a list")
        return None
    run.quota = data.get("quota_remaining", run.quota)
    run.last = data
    return items


def _write_items(run: ApiRun, items: list) -> int:
    """Write the page's questions; a malformed one, or one without text or tags, is an error row. New rows."""
    new = 0
    for index, item in enumerate(items):
        url = item_url(item) or f"{run.page_url()}#item-{index}"
        try:
            row = question_row(item)
        except BadItem as exc:
            run.error(url, 200, "api_bad_item", str(exc))
            continue
        if not row["text"] or not row["labels"]:
            reason = "no_text" if not row["text"] else "no_labels"
            run.error(url, 200, reason, "question has no body text" if reason == "no_text" else "question has no tags")
            continue
        key = dedupe_key(stackoverflow, row["url"])
        if key in run.seen:
            continue                     # already written by this or an earlier run
        run.seen.add(key)
        run.rows_out.write(row)
        run.summary.rows += 1
        new += 1
    return new


def _log_page(run: ApiRun, items: list, new: int) -> None:
    """Mark the page done, after its rows are durably on disk, and decide whether to go on."""
    has_more = run.last.get("has_more")
    if not isinstance(has_more, bool):
        print(f"warning: API page {run.page}: has_more is {has_more!r}, not true/false: stopping here",
              file=sys.stderr)
        has_more = False
    elif has_more and not items:
        print(f"warning: API page {run.page} has no items although has_more is true: stopping here",
              file=sys.stderr)
    run.rows_out.sync()
    run.pages_out.write({"query": run.query_key, "page": run.page, "has_more": has_more, "new_rows": new,
                         "quota_remaining": run.quota})
    run.bar.set_postfix(rows=run.summary.rows, quota_remaining=run.quota, refresh=False)
    run.finished = not has_more or not items
    run.page += 1


def _obey_backoff(run: ApiRun) -> None:
    """The API's own "wait before calling me again", capped by --max-retry-after."""
    backoff = run.last.get("backoff")
    if backoff is None:
        return
    cap = run.args.max_retry_after
    try:
        seconds = float(backoff)
    except (TypeError, ValueError):
        seconds = math.nan
    if math.isnan(seconds) or seconds < 0:
        print(f"warning: API sent an unreadable backoff {str(backoff)[:40]!r}: waiting --max-retry-after "
              f"{cap:g}s to be safe", file=sys.stderr)
        seconds = cap
    elif seconds > cap:
        print(f"warning: API asked for a {seconds:g}s backoff; waiting --max-retry-after {cap:g}s instead",
              file=sys.stderr)
        seconds = cap
    elif seconds:
        print(f"note: API asked for a {seconds:g}s backoff", file=sys.stderr)
    if seconds:
        run.client.pause_host(run.endpoint, seconds)


def run(args, out: Path) -> int:
    """`details_scraper --source api`: page through /2.3/questions, one row per question."""
    try:
        api = _open(args, out)
    except (cli.UsageError, ValueError, OSError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return cli.EXIT_BAD_INPUT
    interrupted = False
    try:
        with cli.sigterm_as_interrupt():
            while api.wants_more():
                items = _fetch_page(api)
                if items is None:
                    break
                new = _write_items(api, items)
                _log_page(api, items, new)
                _obey_backoff(api)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        api.close()
    summary = api.summary
    summary.extra = f"quota_remaining {api.quota}" if api.quota != "" else ""
    print(summary.line(api.client.requests_made), flush=True)
    if interrupted:
        print("interrupted: rerun the same command to continue where it stopped", file=sys.stderr)
        return cli.EXIT_INTERRUPTED
    return 0 if summary.pages == 0 or summary.rows > 0 or not summary.errors else 1


def _json(content: bytes) -> dict | None:
    try:
        data = json.loads(content.decode("utf-8")) if content else None
    except (ValueError, UnicodeDecodeError, RecursionError):    # RecursionError: JSON nested thousands deep
        return None
    return data if isinstance(data, dict) else None


def _api_error(fetched: Fetched, data: dict | None) -> tuple[str, str]:
    if data and "error_id" in data:
        return (f"api_{data.get('error_name', data['error_id'])}"[:60],
                f"{data.get('error_id')}: {data.get('error_message', '')}"[:300])
    if not fetched.ok:
        return fetched.reason, fetched.detail
    return "api_bad_json", f"response is not a JSON object ({len(fetched.content)} bytes)"
