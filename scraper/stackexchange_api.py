"""StackOverflow questions from the Stack Exchange API: the sanctioned, stable alternative to HTML scraping.

    python -m scraper.details_scraper --site stackoverflow --source api --tagged python --max-pages 5 \\
        --out data/raw/stackoverflow_details.csv [--api-key KEY]

Calls `GET /2.3/questions?site=stackoverflow&tagged=...&filter=withbody&page=N&pagesize=100` and writes the
same columns as the HTML path (`url,title,text,labels,score,asked,answers`; labels are the tags). It obeys
the API's rules: waits `backoff` seconds when a response carries it, stops on `has_more: false`, shows
`quota_remaining`, and turns an error object (`error_id`, `error_name`, `error_message`) into one errors-file
row. robots.txt is not consulted here: it governs crawlers of web pages, and the API is the interface the
site provides for programs. Each finished page is logged to `<out>.pages.csv`; a rerun continues after it.
"""
from __future__ import annotations

import html
import json
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlencode

from scraper import cli, stackoverflow
from scraper.sites import dedupe_key
from scraper.storage import ERROR_COLUMNS, CsvAppender, errors_path, repair_and_read, sidecar
from scraper.text import html_to_text

PAGE_LOG_COLUMNS = ("query", "page", "has_more", "new_rows", "quota_remaining")


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
    retries: int
    user_agent: str


def question_row(item: dict) -> dict:
    """One API question object (filter=withbody) → a details row. Titles come HTML-escaped from the API."""
    created = item.get("creation_date")
    return {
        "url": item.get("link") or f"https://stackoverflow.com/questions/{item.get('question_id')}",
        "title": html.unescape(item.get("title") or ""),
        "text": html_to_text(item.get("body") or ""),
        "labels": [str(tag) for tag in item.get("tags") or []],
        "score": item.get("score", ""),
        "asked": datetime.fromtimestamp(created, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") if created else "",
        "answers": item.get("answer_count", ""),
    }


def run(args, out: Path) -> int:
    """`details_scraper --source api`: page through /2.3/questions, one flushed row per question."""
    if not 1 <= args.pagesize <= 100:
        print(f"python -m scraper.details_scraper: error: --pagesize must be 1-100, got {args.pagesize}",
              file=sys.stderr)
        return cli.EXIT_BAD_INPUT
    try:
        api_base = cli.check_url(args.api_base_url, "--api-base-url").rstrip("/")
        existing = repair_and_read(out, stackoverflow.DETAIL_COLUMNS)
        page_log_path = sidecar(out, "pages")
        page_log = repair_and_read(page_log_path, PAGE_LOG_COLUMNS)
        errors_file = errors_path(out)
        repair_and_read(errors_file, ERROR_COLUMNS)
    except (cli.UsageError, ValueError) as exc:
        print(f"python -m scraper.details_scraper: error: {exc}", file=sys.stderr)
        return cli.EXIT_BAD_INPUT

    query = {"site": args.api_site, "tagged": args.tagged, "sort": args.sort, "order": "desc",
             "filter": "withbody", "pagesize": args.pagesize}
    query_key = urlencode(sorted(query.items()))
    settings = ApiSettings(site="stackoverflow", source="api", out=str(out), api_base_url=api_base,
                           api_site=args.api_site, tagged=args.tagged, sort=args.sort, pagesize=args.pagesize,
                           max_pages=args.max_pages, api_key="***" if args.api_key else None, delay=args.delay,
                           timeout=args.timeout, retries=args.retries, user_agent=args.user_agent)
    cli.save_settings(settings, sidecar(out, "settings", ".json"), "scraper.details_scraper")

    logged = [row for row in page_log if row["query"] == query_key]
    page = max((int(row["page"]) for row in logged), default=0) + 1
    finished = any(row["has_more"] == "False" for row in logged)
    seen = {dedupe_key(stackoverflow, row["url"]) for row in existing}
    summary = cli.Summary(stage="details_scraper stackoverflow (api)", rows_before=len(existing),
                          skipped=len(logged))
    client = cli.make_client(args)
    endpoint = f"{api_base}/2.3/questions"
    rows_out = CsvAppender(out, stackoverflow.DETAIL_COLUMNS)
    pages_out = CsvAppender(page_log_path, PAGE_LOG_COLUMNS)
    errors_out = CsvAppender(errors_file, ERROR_COLUMNS)
    bar = cli.progress(args.max_pages or None, "api pages", args.no_progress)
    bar.update(min(len(logged), args.max_pages or len(logged)))
    quota = ""
    interrupted = False
    try:
        with cli.sigterm_as_interrupt():
            while not finished and (not args.max_pages or page <= args.max_pages):
                params = dict(query, page=page)
                if args.api_key:
                    params["key"] = args.api_key
                fetched = client.get(endpoint, check_robots=False, params=params)
                summary.pages += 1
                bar.update(1)
                data = _json(fetched.content)
                if not fetched.ok or data is None or "error_id" in data:
                    reason, detail = _api_error(fetched, data)
                    summary.error(reason)
                    errors_out.write({"url": f"{endpoint}?{urlencode(dict(query, page=page))}",
                                      "status": fetched.status or "", "reason": reason, "detail": detail})
                    break                                    # quota, throttle or outage: later pages would fail too
                new = 0
                for item in data.get("items") or []:
                    row = question_row(item)
                    key = dedupe_key(stackoverflow, row["url"])
                    if key in seen or not row["labels"] or not row["text"]:
                        continue
                    seen.add(key)
                    rows_out.write(row)
                    summary.rows += 1
                    new += 1
                has_more = bool(data.get("has_more"))
                quota = data.get("quota_remaining", quota)
                pages_out.write({"query": query_key, "page": page, "has_more": has_more, "new_rows": new,
                                 "quota_remaining": quota})
                bar.set_postfix(rows=summary.rows, quota_remaining=quota, refresh=False)
                backoff = data.get("backoff")
                if backoff:                                   # the API's own "wait before calling me again"
                    print(f"note: API asked for a {backoff}s backoff", file=sys.stderr)
                    client.pause_host(endpoint, float(backoff))
                finished = not has_more
                page += 1
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
        for handle in (rows_out, pages_out, errors_out):
            handle.close()
    summary.extra = f"quota_remaining {quota}" if quota != "" else ""
    print(summary.line(client.requests_made), flush=True)
    if interrupted:
        print("interrupted: rerun the same command to continue where it stopped", file=sys.stderr)
        return cli.EXIT_INTERRUPTED
    return 0 if summary.pages == 0 or summary.rows > 0 or not summary.errors else 1


def _json(content: bytes) -> dict | None:
    try:
        data = json.loads(content.decode("utf-8")) if content else None
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _api_error(fetched, data: dict | None) -> tuple[str, str]:
    if data and "error_id" in data:
        return (f"api_{data.get('error_name', data['error_id'])}",
                f"{data.get('error_id')}: {data.get('error_message', '')}"[:300])
    if not fetched.ok:
        return fetched.reason, fetched.detail
    return "api_bad_json", f"response is not a JSON object ({len(fetched.content)} bytes)"
