"""Command-line plumbing shared by the scraper commands: options, validation, progress, the summary line.

Bad input (unknown site, missing file, malformed URL) ends with one clear line on stderr and exit code 2, and
so does a second run on an output another run is writing (`run_locked`).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import re
import shlex
import signal
import sys
import threading
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from deployment.files import write_text
from scraper.client import DEFAULT_USER_AGENT, PoliteClient, scrub_userinfo, strip_userinfo, url_problem
from scraper.storage import OutputLock, OutputLocked

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """Bad command-line input: reported as one line, exit code 2."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad option as one line (`prog: error: ...`) instead of the usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see --help)\n")


def number(kind: type, *, minimum: float | None = None, above: float | None = None,
           maximum: float | None = None):
    """An argparse `type` for a bounded int or finite float: a bad value is an argparse error (exit code 2)
    naming the option, before any file is touched."""
    what = "an integer" if kind is int else "a number"
    bounds = " and ".join(b for b in (f">= {minimum:g}" if minimum is not None else "",
                                      f"> {above:g}" if above is not None else "",
                                      f"<= {maximum:g}" if maximum is not None else "") if b)

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what} {bounds}, got {text!r}".replace("  ", " ")) from None
        if (not math.isfinite(value) or (minimum is not None and value < minimum)
                or (above is not None and value <= above) or (maximum is not None and value > maximum)):
            raise argparse.ArgumentTypeError(f"must be {what} {bounds}, got {text!r}")
        return value

    parse.__name__ = kind.__name__
    return parse


def header_value(text: str) -> str:
    """An HTTP header value given on the command line: not empty, no control characters (no header injection)."""
    if not text.strip() or re.search(r"[\x00-\x1f\x7f]", text):
        raise argparse.ArgumentTypeError(f"must be a non-empty line without control characters, got {text!r}")
    return text.strip()


MAX_WORKERS = 64                 # politeness is per host: more threads only queue up (and each holds a socket)


def add_workers_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--workers", type=number(int, minimum=1, maximum=MAX_WORKERS), default=4,
                        help=f"{what} threads, 1-{MAX_WORKERS} (default 4); one writer")


def add_client_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("politeness and network")
    group.add_argument("--delay", type=number(float, minimum=0), default=1.0,
                       help="seconds between requests to one host, across all workers (default 1; a larger "
                            "robots.txt Crawl-delay wins)")
    group.add_argument("--timeout", type=number(float, above=0), default=30.0,
                       help="seconds to wait for a connection or for the next bytes of a response (default 30)")
    group.add_argument("--deadline", type=number(float, above=0), default=120.0,
                       help="seconds one request may take in all, however steadily the server drips bytes "
                            "(default 120); a slower response is an error row (deadline_exceeded)")
    group.add_argument("--retries", type=number(int, minimum=0, maximum=20), default=3,
                       help="retries on 429/5xx/timeouts/connection errors, with exponential backoff, 0-20 "
                            "(default 3)")
    group.add_argument("--max-retry-after", type=number(float, minimum=0), default=120.0,
                       help="longest wait a server can impose, in seconds: caps Retry-After and the Stack Exchange "
                            "API's backoff (default 120)")
    group.add_argument("--max-redirects", type=number(int, minimum=0, maximum=20), default=5,
                       help="redirect hops followed per URL, each checked against its host's robots.txt, 0-20 "
                            "(default 5); more is an error row (too_many_redirects)")
    group.add_argument("--max-crawl-delay", type=number(float, minimum=0), default=60.0,
                       help="largest robots.txt Crawl-delay accepted, in seconds (default 60); a host asking for "
                            "more is skipped (robots_crawl_delay), never crawled faster than it asks")
    group.add_argument("--user-agent", type=header_value, default=DEFAULT_USER_AGENT,
                       help="User-Agent header (default names the project)")
    group.add_argument("--ignore-robots", action="store_true",
                       help="do not read robots.txt (off by default; only for sites you own or have permission for)")
    group.add_argument("--no-progress", action="store_true", help="no progress bar (the summary line still prints)")


def make_client(args: argparse.Namespace, pool_size: int = 10) -> PoliteClient:
    if args.ignore_robots:
        print("WARNING: --ignore-robots is set: robots.txt rules and Crawl-delay are NOT being honoured. "
              "Only do this for sites you own or have permission to crawl.", file=sys.stderr, flush=True)
    return PoliteClient(user_agent=args.user_agent, delay=args.delay, timeout=args.timeout, retries=args.retries,
                        ignore_robots=args.ignore_robots, max_retry_after=args.max_retry_after,
                        backoff_base=min(1.0, max(0.05, args.timeout / 2)), pool_size=pool_size,
                        deadline=args.deadline, max_redirects=args.max_redirects,
                        max_crawl_delay=args.max_crawl_delay)


def check_url(url: str, what: str) -> str:
    """An absolute http(s) URL with a host, without `user:password@` (never sent, never stored: a note says so),
    or a UsageError naming the option."""
    clean = strip_userinfo(url.strip())
    if clean != url.strip():
        print(f"note: {what}: removed the user:password@ part of the URL; credentials in URLs are never sent or "
              f"stored", file=sys.stderr, flush=True)
    problem = url_problem(clean)
    if problem:
        raise UsageError(f"{what} {clean!r} is not an absolute http(s) URL ({problem})")
    return clean


def run_locked(prog: str, lock_file: Path, output: Path, body: Callable[[], int]) -> int:
    """`body()` while this process holds the output's lock (scraper.storage.OutputLock); when another run holds
    it: one line and exit code 2, before anything is read, repaired or requested."""
    try:
        lock = OutputLock(lock_file, output)
    except (OutputLocked, OSError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    with lock:
        return body()


@dataclass
class Summary:
    """Counters for the one-line summary every command ends with."""
    stage: str
    pages: int = 0                       # pages (or API calls) attempted, robots.txt not counted
    rows: int = 0                        # rows appended this run
    rows_before: int = 0                 # rows already in the output when the run started
    skipped: int = 0                     # URLs already done in an earlier run
    errors: Counter = field(default_factory=Counter)
    warnings: Counter = field(default_factory=Counter)   # rows written, but worth a look (generic_layout, ...)
    started: float = field(default_factory=time.monotonic)
    extra: str = ""

    def error(self, reason: str) -> None:
        self.errors[reason] += 1

    def warn(self, kind: str, message: str) -> None:
        """Count a warning; print the first of each kind (the summary line gives the count)."""
        self.warnings[kind] += 1
        if self.warnings[kind] == 1:
            print(f"warning: {message} (further ones are counted in the summary)", file=sys.stderr, flush=True)

    def line(self, requests_made: int | None = None) -> str:
        elapsed = time.monotonic() - self.started
        errors = sum(self.errors.values())
        by_reason = ", ".join(f"{reason} {n}" for reason, n in sorted(self.errors.items()))
        parts = [f"{self.stage}: {self.pages} pages fetched",
                 f"{self.rows} rows written" + (f" ({self.rows_before} already there)" if self.rows_before else ""),
                 f"{errors} errors" + (f" ({by_reason})" if by_reason else "")]
        if self.warnings:
            parts.append("warnings (" + ", ".join(f"{kind} {n}" for kind, n in sorted(self.warnings.items())) + ")")
        if self.skipped:
            parts.append(f"{self.skipped} skipped as done")
        if requests_made is not None:
            parts.append(f"{requests_made} HTTP requests")
        parts.append(f"{elapsed:.1f} s, {self.pages / elapsed if elapsed > 0 else 0.0:.2f} pages/s")
        if self.extra:
            parts.append(self.extra)
        return ", ".join(parts)


def progress(total: int | None, desc: str, disable: bool):
    """A tqdm bar on stderr (imported lazily: the pure parsers never need it)."""
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="page", disable=disable, dynamic_ncols=True, file=sys.stderr)


def save_settings(settings, path: Path, module: str) -> None:
    """Print the run's settings and keep them, with the command, beside the output: a CSV says how it was made."""
    data = asdict(settings)
    print(f"settings: {json.dumps(data, default=str)}", file=sys.stderr, flush=True)
    data["command"] = " ".join(["python", "-m", module] + [shlex.quote(scrub_userinfo(a)) for a in sys.argv[1:]])
    write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def run_pool(items: Iterable, work: Callable, record: Callable, workers: int, stop: threading.Event) -> bool:
    """`work(item)` on `workers` threads, `record(result)` on this thread only (the one writer).

    At most `2 * workers` items are in flight, so memory stays flat and Ctrl-C or SIGTERM stops within one
    request. Returns False when interrupted (`stop` is set so queued work returns at once), True otherwise.
    """
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fetch")
    in_flight: set[Future] = set()
    pending = iter(items)
    interrupted = False
    try:
        with sigterm_as_interrupt():
            while True:
                while len(in_flight) < workers * 2:
                    item = next(pending, None)
                    if item is None:
                        break
                    in_flight.add(pool.submit(work, item))
                if not in_flight:
                    break
                finished, in_flight = wait(in_flight, timeout=0.5, return_when=FIRST_COMPLETED)
                for future in finished:
                    record(future.result())
    except KeyboardInterrupt:
        interrupted = True
        stop.set()
        for future in in_flight:
            future.cancel()
    finally:
        pool.shutdown(wait=not interrupted, cancel_futures=True)
    return not interrupted


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Inside the block, `kill <pid>` (SIGTERM) and Ctrl-C (SIGINT) stop the run the same way: rows so far are
    kept, the summary prints. SIGINT gets an explicit handler because a process started in the background
    inherits it ignored, and Python then never raises KeyboardInterrupt."""
    def handler(signum, frame):
        raise KeyboardInterrupt
    try:
        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    except ValueError:                   # not the main thread (a test calling run() from a worker): no handler
        yield
        return
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def pool_and_report(todo, work, record, workers: int, stop, bar, outputs, summary, client) -> int:
    """Run the worker pool, close the progress bar and output files, print the summary; the exit code:
    interrupted, 1 when pages were tried and nothing was written, else 0."""
    try:
        interrupted = not run_pool(todo, work, record, workers, stop)
    finally:
        bar.close()
        for out in outputs:
            out.close()
    print(summary.line(client.requests_made), flush=True)
    if interrupted:
        print("interrupted: rerun the same command to continue where it stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0 if summary.pages == 0 or summary.rows > 0 else 1
