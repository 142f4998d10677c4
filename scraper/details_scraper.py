"""Stage 2 of the scraper: fetch each item page and write its text and labels.

    python -m scraper.details_scraper --site smashwords --urls data/raw/smashwords_urls.csv \\
        --out data/raw/smashwords_details.csv --workers 4
    python -m scraper.details_scraper --site stackoverflow --urls data/raw/stackoverflow_urls.csv \\
        --out data/raw/stackoverflow_details.csv
    python -m scraper.details_scraper --site stackoverflow --source api --tagged python --max-pages 5 \\
        --out data/raw/stackoverflow_details.csv          # the Stack Exchange API, no HTML scraping

Writes `url,title,text,labels,<site extras>` (labels a JSON list), one flushed row per page, from one
writer thread while `--workers` threads fetch (politeness is per host, so more workers never means a
faster hammering of one site). A page that is missing, blocked, empty, unlabelled or unparseable goes to
`<out>.errors.csv` (url, status, reason, detail) and the run goes on.

Rerunning the same command resumes: URLs already in the output, or in the errors file with a permanent
reason (404, no labels, robots...), are skipped; transient failures (timeouts, 5xx, 429) are tried again,
and `--retry-errors` retries every error. A torn last row left by `kill -9` is cut off first. A second run on
the same `--out` while one is running stops at once with exit code 2 (`<out stem>.lock`).

A page is decoded as browsers do (scraper.encoding); one that yields nothing after a decode that may have been
wrong is `encoding_suspect`, a transient reason, never a permanent one. URLs are read, fetched and written
without `user:password@`.
"""
from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import config
from scraper import cli
from scraper.client import PoliteClient, is_transient
from scraper.sites import SITES, dedupe_key, rebase, strip_row_urls
from scraper.storage import (ERROR_COLUMNS, CsvAppender, errors_path, lock_path, read_csv_dicts, read_text,
                             repair_and_read, sidecar)

HTML_TYPES = ("html", "xml")


@dataclass
class DetailsScraperSettings:
    site: str
    source: str
    urls: str | None
    out: str
    workers: int
    base_url: str | None
    retry_errors: bool
    delay: float
    timeout: float
    deadline: float
    retries: int
    max_redirects: int
    user_agent: str
    ignore_robots: bool


@dataclass
class Outcome:
    """What happened to one URL: a row to write, or an error for the errors file."""
    url: str
    row: dict | None = None
    status: int | str = ""
    reason: str = ""
    detail: str = ""
    warning: str = ""                    # the row came from a generic fallback layer: worth a look


def build_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(prog="python -m scraper.details_scraper",
                                description="Fetch item pages and write text + labels (stage 2 of 2).")
    parser.add_argument("--site", required=True, choices=sorted(SITES), help="which site adapter parses the pages")
    parser.add_argument("--source", choices=("html", "api"), default="html",
                        help="html: scrape the pages listed in --urls (default); api: StackOverflow only, read "
                             "questions from the Stack Exchange API instead (no --urls needed)")
    parser.add_argument("--urls", type=Path,
                        help="CSV with a `url` column (stage 1 output) or a plain list of URLs, one a line; "
                             "any host (default: data/raw/<site>_urls.csv)")
    parser.add_argument("--out", type=Path, help="output CSV (default: data/raw/<site>_details.csv)")
    cli.add_workers_option(parser, "fetching")
    parser.add_argument("--base-url", help="replace the site's scheme://host in --urls with this one (mirror, "
                                           "local server); rows keep the URL as listed")
    parser.add_argument("--retry-errors", action="store_true",
                        help="also retry URLs whose earlier error was permanent (404, no labels, ...)")
    api = parser.add_argument_group("Stack Exchange API (--source api)")
    api.add_argument("--tagged", default="python", help="tags, ';'-separated, all required (default python)")
    api.add_argument("--max-pages", type=cli.number(int, minimum=0), default=10,
                     help="API pages to read, 0 = until has_more is false (default 10)")
    api.add_argument("--pagesize", type=cli.number(int, minimum=1, maximum=100), default=100,
                     help="questions per API page, 1-100 (default 100)")
    api.add_argument("--sort", default="votes", choices=("activity", "votes", "creation", "hot", "week", "month"),
                     help="API sort order (default votes)")
    api.add_argument("--api-key", default=os.environ.get("STACKEXCHANGE_KEY"),
                     help="Stack Exchange app key: raises the daily quota (default $STACKEXCHANGE_KEY)")
    api.add_argument("--api-base-url", default="https://api.stackexchange.com",
                     help="API root (default https://api.stackexchange.com)")
    api.add_argument("--api-site", default="stackoverflow", help="Stack Exchange site parameter (default stackoverflow)")
    cli.add_client_options(parser)
    return parser


# ---------------------------------------------------------------- reading the URL list
def read_url_list(path: Path) -> list[dict]:
    """Rows with at least `url` from a stage-1 CSV (extra columns kept as hints) or a plain list of URLs, every URL
    without `user:password@` (a note on stderr says how many had one)."""
    rows = _read_url_rows(path)
    stripped = sum(strip_row_urls(row) for row in rows)
    if stripped:
        print(f"note: --urls {path}: removed user:password@ from {stripped} URL(s); credentials in URLs are never "
              f"sent or stored", file=sys.stderr, flush=True)
    return rows


def _read_url_rows(path: Path) -> list[dict]:
    if not path.exists():
        raise cli.UsageError(f"--urls {path} does not exist (run python -m scraper.url_scraper first)")
    if path.is_dir():
        raise cli.UsageError(f"--urls {path} is a folder, not a file")
    lines = [line.strip() for line in read_text(path, "--urls").split("\n")]
    first = next((line for line in lines if line and not line.startswith("#")), "")
    if first.lower().startswith(("http://", "https://")):
        return [{"url": line} for line in lines if line and not line.startswith("#")]
    columns, rows = read_csv_dicts(path, "--urls")
    if "url" not in columns:
        raise cli.UsageError(f"--urls {path} has no `url` column (columns: {columns})")
    # A row with fewer cells than the header has None for the missing ones; more cells land under None.
    return [{k: v for k, v in row.items() if isinstance(k, str) and isinstance(v, str)}
            for row in rows if (row.get("url") or "").strip()]


# ---------------------------------------------------------------- one page
def scrape_one(client: PoliteClient, adapter: ModuleType, url: str, fetch_url: str, hint: dict) -> Outcome:
    """Fetch and parse one item page. Pure of side effects apart from the HTTP request; never raises."""
    fetched = client.get(fetch_url)
    if not fetched.ok:
        return Outcome(url, status=fetched.status or "", reason=fetched.reason, detail=fetched.detail)
    if fetched.content_type and not any(t in fetched.content_type for t in HTML_TYPES):
        return Outcome(url, status=fetched.status, reason="not_html", detail=f"Content-Type {fetched.content_type}")
    decoded = fetched.decoded()
    try:
        record = adapter.parse_details(decoded.text, url)
    except Exception as exc:   # one odd page must not end a long run; the errors file keeps the trace
        return Outcome(url, status=fetched.status, reason="unparseable", detail=f"{type(exc).__name__}: {exc}"[:300])
    warning = getattr(record, "warning", "")
    strip_row_urls(record)               # a cover_url on the page may carry credentials too
    record["url"] = url
    if not record.get("title") and hint.get("title"):
        record["title"] = hint["title"]             # the listing knew the title even if this layout hides it
    if "cover_url" in record and not record["cover_url"] and hint.get("cover_url"):
        record["cover_url"] = hint["cover_url"]
    if not (record.get("title") or record.get("text") or record.get("labels")):
        if decoded.questionable:         # maybe the wrong charset, not an empty page: the next run tries again
            return Outcome(url, status=fetched.status, reason="encoding_suspect",
                           detail=f"no title, text or labels after decoding as {decoded.encoding} ({decoded.source})")
        return Outcome(url, status=fetched.status, reason="unrecognised_page",
                       detail=f"no title, text or labels found ({len(fetched.content)} bytes)")
    if not record.get("text"):
        return Outcome(url, status=fetched.status, reason="no_text", detail="page has no description/body text")
    if not record.get("labels"):
        return Outcome(url, status=fetched.status, reason="no_labels", detail="page has no categories/tags")
    return Outcome(url, row=record, status=fetched.status, warning=warning)


# ---------------------------------------------------------------- the command
def run(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    out = Path(args.out or config.RAW_DIR / f"{args.site}_details.csv")
    return cli.run_locked(parser.prog, lock_path(out), out, lambda: _run(parser, args, out))


def _run(parser: cli.ArgumentParser, args, out: Path) -> int:
    adapter = SITES[args.site]
    if args.source == "api":
        if args.site != "stackoverflow":
            print(f"{parser.prog}: error: --source api is only available for --site stackoverflow", file=sys.stderr)
            return cli.EXIT_BAD_INPUT
        from scraper import stackexchange_api
        return stackexchange_api.run(args, out)
    try:
        base_url = cli.check_url(args.base_url, "--base-url") if args.base_url else None
        urls_path = Path(args.urls or config.RAW_DIR / f"{args.site}_urls.csv")
        listed = read_url_list(urls_path)
        existing = repair_and_read(out, adapter.DETAIL_COLUMNS)
        errors_file = errors_path(out)
        earlier_errors = repair_and_read(errors_file, ERROR_COLUMNS)
        settings = DetailsScraperSettings(site=args.site, source="html", urls=str(urls_path), out=str(out),
                                          workers=args.workers, base_url=base_url, retry_errors=args.retry_errors,
                                          delay=args.delay, timeout=args.timeout, deadline=args.deadline,
                                          retries=args.retries, max_redirects=args.max_redirects,
                                          user_agent=args.user_agent, ignore_robots=args.ignore_robots)
        cli.save_settings(settings, sidecar(out, "settings", ".json"), "scraper.details_scraper")
        rows_out = CsvAppender(out, adapter.DETAIL_COLUMNS)
        errors_out = CsvAppender(errors_file, ERROR_COLUMNS)
    except (cli.UsageError, ValueError, OSError) as exc:            # UnicodeDecodeError is a ValueError
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return cli.EXIT_BAD_INPUT

    done = {dedupe_key(adapter, row["url"]) for row in existing}
    failed_before = {dedupe_key(adapter, row["url"]) for row in earlier_errors
                     if args.retry_errors is False and not is_transient(row["reason"])}
    summary = cli.Summary(stage=f"details_scraper {args.site}", rows_before=len(existing))
    todo: list[dict] = []
    queued: set[str] = set()
    for row in listed:
        url = row["url"].strip()
        key = dedupe_key(adapter, url)
        if key in queued:
            continue                                   # listed twice (e.g. http and https)
        queued.add(key)
        if key in done or key in failed_before:
            summary.skipped += 1
            continue
        todo.append(dict(row, url=url))

    client = cli.make_client(args, pool_size=max(10, args.workers))
    bar = cli.progress(len(todo), f"details {args.site}", args.no_progress)
    stop = threading.Event()

    def work(item: dict) -> Outcome:
        if stop.is_set():
            return Outcome(item["url"], reason="cancelled")
        try:
            cli.check_url(item["url"], "url")
        except cli.UsageError as exc:
            return Outcome(item["url"], reason="bad_url", detail=str(exc))
        return scrape_one(client, adapter, item["url"], rebase(item["url"], base_url, adapter.HOSTS), item)

    def record(outcome: Outcome) -> None:
        if outcome.reason == "cancelled":
            return
        summary.pages += 1
        if outcome.row is not None:
            rows_out.write(outcome.row)
            summary.rows += 1
            if outcome.warning:
                summary.warn("generic_layout", f"{outcome.url}: {outcome.warning}")
        else:
            summary.error(outcome.reason)
            errors_out.write({"url": outcome.url, "status": outcome.status, "reason": outcome.reason,
                              "detail": outcome.detail})
        bar.update(1)
        bar.set_postfix(rows=summary.rows, errors=sum(summary.errors.values()), refresh=False)

    return cli.pool_and_report(todo, work, record, args.workers, stop, bar, (rows_out, errors_out), summary, client)


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
