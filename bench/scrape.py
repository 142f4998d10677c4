"""Scraping benchmark: pages per second of our two stages against a naive loop, same pages, one run.

    python -m bench.scrape                              # 200 books + 200 questions, 20 per listing page
    python -m bench.scrape --items 500 --workers 8 --out bench/results/scrape_500.json

A synthetic copy of both sites (tests/scraper_site) is served from a separate process on 127.0.0.1 so the
server does not share the benchmark's interpreter. Ours: `scraper.url_scraper` then
`scraper.details_scraper --workers N` with `--delay 0` (politeness off: this measures our overhead,
never do it to a real site). Naive: the seeds' way, one `requests.get` per page (no session), BeautifulSoup
with `html.parser`, and the whole CSV rewritten after every row. Prints a table, writes JSON
(default bench/results/scrape.json).
"""
from __future__ import annotations

import argparse
import csv
import multiprocessing
import sys
import tempfile
import time
from contextlib import redirect_stderr, redirect_stdout
from io import StringIO
from pathlib import Path

import requests
from bs4 import BeautifulSoup

import config
from bench import run_and_report
from deployment.cli_types import positive_int
from scraper import details_scraper, url_scraper

if str(config.ROOT) not in sys.path:
    sys.path.insert(0, str(config.ROOT))

START_PATHS = {"smashwords": "/books/category/1", "stackoverflow": "/questions/tagged/python"}


# ---------------------------------------------------------------- the naive loop (the seeds' approach)
def _rewrite_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def naive_urls(start: str, site: str, out: Path) -> int:
    rows, url, pages = [], start, 0
    while url:
        soup = BeautifulSoup(requests.get(url, timeout=30).text, "html.parser")
        pages += 1
        links = soup.select("a.library-title") if site == "smashwords" else soup.select(".s-post-summary h3 a")
        for link in links:
            rows.append({"url": requests.compat.urljoin(url, link["href"]), "title": link.get_text(strip=True)})
            _rewrite_csv(out, rows)
        nxt = soup.find("a", rel="next")
        url = requests.compat.urljoin(url, nxt["href"]) if nxt else None
    return pages


def naive_details(urls: list[str], site: str, out: Path) -> int:
    rows = []
    for url in urls:
        soup = BeautifulSoup(requests.get(url, timeout=30).text, "html.parser")
        title = soup.find("h1").get_text(strip=True)
        if site == "smashwords":
            body = soup.select_one("[itemprop=description], .book-description") or soup.body
            labels = [a.get_text(strip=True) for a in soup.select('a[href*="/books/category/"]')]
        else:
            body = soup.select_one(".s-prose.js-post-body")
            labels = [a.get_text(strip=True) for a in soup.select(".post-taglist a.post-tag")]
        rows.append({"url": url, "title": title, "text": body.get_text(" ", strip=True), "labels": str(labels)})
        _rewrite_csv(out, rows)
    return len(urls)


# ---------------------------------------------------------------- ours
def ours_urls(start: str, site: str, out: Path) -> int:
    with redirect_stdout(StringIO()), redirect_stderr(StringIO()):     # settings and summary lines
        code = url_scraper.run(["--site", site, "--start-url", start, "--out", str(out), "--delay", "0",
                                "--no-progress"])
    assert code == 0, f"url_scraper exited {code}"
    with open(out.with_name(out.stem + ".pages.csv"), encoding="utf-8") as handle:
        return sum(1 for _ in csv.DictReader(handle))


def ours_details(urls_csv: Path, site: str, out: Path, workers: int) -> int:
    with redirect_stdout(StringIO()), redirect_stderr(StringIO()):
        code = details_scraper.run(["--site", site, "--urls", str(urls_csv), "--out", str(out), "--delay", "0",
                                    "--workers", str(workers), "--no-progress"])
    assert code == 0, f"details_scraper exited {code}"
    with open(out, encoding="utf-8") as handle:
        return sum(1 for _ in csv.DictReader(handle))


# ---------------------------------------------------------------- the run
def _serve(items: int, per_page: int, port_file: str) -> None:
    sys.path.insert(0, str(config.ROOT))
    from tests.scraper_site.site import serve_forever
    serve_forever(books=items, questions=items, per_page=per_page, port_file=port_file)


def timed(fn, *args) -> tuple[int, float]:
    t0 = time.perf_counter()
    pages = fn(*args)
    return pages, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.scrape", description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=positive_int, default=200, help="books and questions on the local site (default 200)")
    ap.add_argument("--per-page", type=positive_int, default=20, help="items per listing page (default 20)")
    ap.add_argument("--workers", type=positive_int, default=1,
                    help="details_scraper --workers (default 1: against a zero-latency local server on 2 cores the "
                         "work is CPU-bound and extra threads only contend; workers pay off on real network latency)")
    ap.add_argument("--out", type=Path, default=config.ROOT / "bench" / "results" / "scrape.json",
                    help="JSON output (default bench/results/scrape.json)")
    args = ap.parse_args(argv)
    run_and_report("python -m bench.scrape", measure, vars(args), args.out, argv)
    return 0


def measure(settings: dict) -> dict:
    """Both stages of both sites, ours and naive, on one local server: pages, seconds and the ratio per stage."""
    items, per_page, workers = settings["items"], settings["per_page"], settings["workers"]
    work = Path(tempfile.mkdtemp(prefix="bench_scrape_"))
    port_file = work / "root.txt"
    server = multiprocessing.get_context("spawn").Process(target=_serve, args=(items, per_page,
                                                                                str(port_file)), daemon=True)
    server.start()
    try:
        deadline = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text():
            if time.monotonic() > deadline or not server.is_alive():
                raise SystemExit("bench.scrape: the local site did not start")
            time.sleep(0.05)
        root = port_file.read_text().strip()
        results = []
        for site in ("smashwords", "stackoverflow"):
            start = root + START_PATHS[site]
            urls_csv = work / f"{site}_urls.csv"
            p1, t1 = timed(ours_urls, start, site, urls_csv)
            n1, u1 = timed(naive_urls, start, site, work / f"naive_{site}_urls.csv")
            with open(urls_csv, encoding="utf-8") as handle:
                urls = [row["url"] for row in csv.DictReader(handle)]
            p2, t2 = timed(ours_details, urls_csv, site, work / f"{site}_details.csv", workers)
            n2, u2 = timed(naive_details, urls, site, work / f"naive_{site}_details.csv")
            assert p1 == n1 and p2 == n2 == len(urls), (p1, n1, p2, n2, len(urls))
            results += [{"site": site, "stage": "urls (listings)", "pages": p1, "ours_s": t1, "naive_s": u1},
                        {"site": site, "stage": "details", "pages": p2, "ours_s": t2, "naive_s": u2}]
    finally:
        server.terminate()
        server.join(5)

    for r in results:
        r["ours_pages_per_s"] = r["pages"] / r["ours_s"]
        r["naive_pages_per_s"] = r["pages"] / r["naive_s"]
        r["ratio"] = r["ours_pages_per_s"] / r["naive_pages_per_s"]
    lines = [f"Scraping throughput, local server, --delay 0, details --workers {workers}", "",
             "| site | stage | pages | ours pages/s | naive pages/s | ours / naive |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['site']} | {r['stage']} | {r['pages']} | {r['ours_pages_per_s']:.1f} | "
              f"{r['naive_pages_per_s']:.1f} | {r['ratio']:.2f}x |" for r in results]
    return {"items": items, "per_page": per_page, "workers": workers, "results": results, "table": "\n".join(lines)}


if __name__ == "__main__":
    sys.exit(main())
