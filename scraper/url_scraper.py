"""Stage 1 of the scraper: follow listing pages ("next" links) and collect item URLs into a CSV.

    python -m scraper.url_scraper --site smashwords --out data/raw/smashwords_urls.csv \\
        --start-url https://www.smashwords.com/books/category/1 --max-pages 50
    python -m scraper.url_scraper --site stackoverflow --out data/raw/stackoverflow_urls.csv \\
        --start-url "https://stackoverflow.com/questions/tagged/python?tab=votes" --max-pages 20

Writes `url,title` (+ `cover_url` for Smashwords), one row per item, deduplicated by canonical URL
(a book listed under several categories is one row). Every finished listing page is logged to
`<out>.pages.csv`, so rerunning the same command after Ctrl-C or `kill -9` continues at the first
unfinished page without losing or repeating a row. Failed pages go to `<out>.errors.csv`. A second run on the
same `--out` while one is running stops at once with exit code 2 (`<out stem>.lock`). Links that carry
`user:password@` are stored and followed without it.
`--base-url http://127.0.0.1:8000` runs the same command against a mirror or a local test server.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import config
from scraper import cli
from scraper.client import PoliteClient, strip_userinfo
from scraper.sites import SITES, dedupe_key, rebase, strip_row_urls
from scraper.storage import ERROR_COLUMNS, CsvAppender, errors_path, lock_path, repair_and_read, sidecar

PAGE_LOG_COLUMNS = ("page_url", "next_url", "new_rows")


@dataclass
class UrlScraperSettings:
    site: str
    out: str
    start_urls: list[str]
    max_pages: int              # per start URL; 0 = follow "next" links to the end
    base_url: str | None
    delay: float
    timeout: float
    deadline: float
    retries: int
    max_redirects: int
    user_agent: str
    ignore_robots: bool


def build_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(prog="python -m scraper.url_scraper",
                                description="Collect item URLs from listing pages (stage 1 of 2).")
    parser.add_argument("--site", required=True, choices=sorted(SITES), help="which site adapter parses the pages")
    parser.add_argument("--out", type=Path, help="output CSV (default: data/raw/<site>_urls.csv)")
    parser.add_argument("--start-url", action="append", default=[], metavar="URL",
                        help="a listing to start from (repeatable): a Smashwords category, a StackOverflow tag "
                             "or search listing; default: the adapter's DEFAULT_START_URLS")
    parser.add_argument("--max-pages", type=cli.number(int, minimum=0), default=0,
                        help="listing pages to read per start URL (default 0 = until there is no next page)")
    parser.add_argument("--base-url", help="replace the site's scheme://host with this one (mirror, local server)")
    cli.add_client_options(parser)
    return parser


def run(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    out = Path(args.out or config.RAW_DIR / f"{args.site}_urls.csv")
    return cli.run_locked(parser.prog, lock_path(out), out, lambda: _run(parser, args, out))


def _run(parser: cli.ArgumentParser, args, out: Path) -> int:
    try:
        adapter = SITES[args.site]
        base_url = cli.check_url(args.base_url, "--base-url") if args.base_url else None
        starts = [cli.check_url(u, "--start-url") for u in (args.start_url or adapter.DEFAULT_START_URLS)]
        existing = repair_and_read(out, adapter.URL_COLUMNS)
        page_log_path = sidecar(out, "pages")
        page_log = repair_and_read(page_log_path, PAGE_LOG_COLUMNS)
        errors_file = errors_path(out)
        repair_and_read(errors_file, ERROR_COLUMNS)
        settings = UrlScraperSettings(site=args.site, out=str(out), start_urls=starts, max_pages=args.max_pages,
                                      base_url=base_url, delay=args.delay, timeout=args.timeout,
                                      deadline=args.deadline, retries=args.retries, max_redirects=args.max_redirects,
                                      user_agent=args.user_agent, ignore_robots=args.ignore_robots)
        cli.save_settings(settings, sidecar(out, "settings", ".json"), "scraper.url_scraper")
        outputs = (CsvAppender(out, adapter.URL_COLUMNS), CsvAppender(page_log_path, PAGE_LOG_COLUMNS),
                   CsvAppender(errors_file, ERROR_COLUMNS))
    except (cli.UsageError, ValueError, OSError) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return cli.EXIT_BAD_INPUT

    client = cli.make_client(args)
    crawl = ListingCrawl(client=client, adapter=adapter, base_url=base_url, max_pages=args.max_pages,
                         summary=cli.Summary(stage=f"url_scraper {args.site}", rows_before=len(existing)),
                         seen={dedupe_key(adapter, row["url"]) for row in existing},
                         finished={row["page_url"]: row["next_url"] for row in page_log},
                         rows_out=outputs[0], pages_out=outputs[1], errors_out=outputs[2],
                         bar=cli.progress(args.max_pages * len(starts) or None, f"listings {args.site}",
                                          args.no_progress))
    interrupted = False
    try:
        with cli.sigterm_as_interrupt():
            for start in starts:
                crawl.follow(rebase(start, base_url, adapter.HOSTS))
    except KeyboardInterrupt:
        interrupted = True
    finally:
        crawl.close()
    summary = crawl.summary
    print(summary.line(client.requests_made), flush=True)
    if interrupted:
        print("interrupted: rerun the same command to continue where it stopped", file=sys.stderr)
        return cli.EXIT_INTERRUPTED
    return 0 if summary.pages == 0 or summary.pages > sum(summary.errors.values()) else 1


@dataclass
class ListingCrawl:
    """Follows one chain of listing pages after another, sharing the dedupe set and the outputs."""
    client: PoliteClient
    adapter: ModuleType
    base_url: str | None
    max_pages: int
    summary: cli.Summary
    seen: set[str]                       # dedupe keys of rows already written
    finished: dict[str, str]             # listing page → its next page, from this and earlier runs
    rows_out: CsvAppender
    pages_out: CsvAppender
    errors_out: CsvAppender
    bar: object

    def follow(self, url: str | None) -> None:
        done, visited = 0, set()
        while (url and url in self.finished and url not in visited
               and (not self.max_pages or done < self.max_pages)):
            visited.add(url)             # finished in an earlier run: jump along the logged chain (a loop ends it)
            url, done = self.finished[url] or None, done + 1
            self.summary.skipped += 1
            self.bar.update(1)
        while url and url not in visited and (not self.max_pages or done < self.max_pages):
            visited.add(url)
            done += 1
            url = self.page(url)

    def page(self, url: str) -> str | None:
        """Fetch one listing page, write its new rows, log it; return the next page's URL (None: stop here)."""
        fetched = self.client.get(url)
        self.summary.pages += 1
        self.bar.update(1)
        if not fetched.ok:               # without this page there is no next link to follow
            return self.error(url, fetched.status, fetched.reason, fetched.detail)
        if fetched.content_type and not any(t in fetched.content_type for t in ("html", "xml")):
            return self.error(url, fetched.status, "not_html", f"Content-Type {fetched.content_type}")
        decoded = fetched.decoded()
        try:
            listing = self.adapter.parse_listing(decoded.text, fetched.final_url or url)
        except Exception as exc:         # a parser bug on one odd page must not end the run
            return self.error(url, fetched.status, "unparseable", f"{type(exc).__name__}: {exc}"[:300])
        rows, next_url = listing
        if getattr(listing, "warning", ""):
            self.summary.warn("generic_layout", f"{url}: {listing.warning}")
        if not rows and decoded.questionable:    # not logged as done: the next run reads the page again
            return self.error(url, fetched.status, "encoding_suspect",
                              f"no item links after decoding as {decoded.encoding} ({decoded.source})")
        if not rows:
            self.error(url, fetched.status, "no_rows", "no item links found on the listing page")
        new = 0
        for row in rows:
            if strip_row_urls(row):
                self.summary.warn("credentials_removed", f"{url}: a link carried user:password@; it is stored "
                                                         f"and fetched without it")
            row["url"] = rebase(row["url"], self.base_url, self.adapter.HOSTS)
            key = dedupe_key(self.adapter, row["url"])
            if key not in self.seen:
                self.seen.add(key)
                self.rows_out.write(row)
                new += 1
        self.summary.rows += new
        next_url = rebase(strip_userinfo(next_url), self.base_url, self.adapter.HOSTS) if next_url else None
        self.rows_out.sync()             # the page is logged as done only once its rows are on disk
        self.pages_out.write({"page_url": url, "next_url": next_url or "", "new_rows": new})
        self.finished[url] = next_url or ""
        self.bar.set_postfix(rows=self.summary.rows_before + self.summary.rows,
                             errors=sum(self.summary.errors.values()), refresh=False)
        return next_url

    def error(self, url: str, status, reason: str, detail: str) -> None:
        self.summary.error(reason)
        self.errors_out.write({"url": url, "status": status or "", "reason": reason, "detail": detail})
        return None

    def close(self) -> None:
        self.bar.close()
        for handle in (self.rows_out, self.pages_out, self.errors_out):
            handle.close()


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
