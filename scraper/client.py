"""The polite HTTP client every scraper command shares.

- one `requests.Session` per thread (pooled connections, honest User-Agent naming the project);
- robots.txt per host via `urllib.robotparser` (plus `*`/`$` wildcards, which the stdlib ignores and
  StackOverflow's robots.txt uses); a robots.txt that cannot be fetched (5xx, network) blocks the host,
  as RFC 9309 says; 4xx means no rules;
- a per-host gap between request starts (`--delay`, or the robots.txt `Crawl-delay` when larger),
  shared by all worker threads, so `--workers 8` is never ruder than `--workers 1`;
- retries with exponential backoff and jitter on 429, 5xx, connection errors and timeouts, honouring
  `Retry-After` (capped) and slowing the whole host down when told to;
- never raises for a bad page: every call returns a `Fetched` with `ok`, `status` and a short `reason`.
"""
from __future__ import annotations

import email.utils
import random
import re
import sys
import threading
import time
import urllib.robotparser
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

import requests

DEFAULT_USER_AGENT = ("multilabel-text-pipeline/0.1 "
                      "(+https://github.com/multilabel-text-pipeline/multilabel-text-pipeline; research scraper)")
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504, 520, 521, 522, 523, 524})
MAX_BODY_BYTES = 20 * 1024 * 1024        # a "page" bigger than this is not a page we want


@dataclass
class Fetched:
    """The outcome of one polite GET: a body, or a status and a short machine-readable reason."""
    url: str
    status: int | None = None            # HTTP status of the last attempt (None: no response at all)
    content: bytes = b""
    headers: dict = field(default_factory=dict)
    reason: str = ""                     # "" when ok; else http_404, timeout, connection_error, robots_disallowed…
    detail: str = ""                     # human-readable detail for the errors file
    attempts: int = 0
    final_url: str = ""

    @property
    def ok(self) -> bool:
        return not self.reason

    @property
    def content_type(self) -> str:
        return str(self.headers.get("content-type", "")).lower()

    def html(self) -> str | bytes:
        """Decoded text when the server named a charset; raw bytes otherwise, so the parser reads `<meta charset>`
        instead of requests' ISO-8859-1 guess for text/html."""
        match = re.search(r"charset=([\w.:-]+)", self.content_type)
        if match:
            try:
                return self.content.decode(match.group(1), errors="replace")
            except LookupError:
                pass
        return self.content


class _WildcardRule(urllib.robotparser.RuleLine):
    """A robots.txt rule with Google-style `*` (any run) and trailing `$` (end of URL)."""

    def __init__(self, rule: urllib.robotparser.RuleLine):
        self.path, self.allowance = rule.path, rule.allowance
        pattern = unquote(rule.path)
        anchored = pattern.endswith("$")
        body = re.escape(pattern.rstrip("$")).replace(r"\*", ".*")
        self._regex = re.compile(body + ("$" if anchored else ""))

    def applies_to(self, filename: str) -> bool:
        return self.path == "*" or bool(self._regex.match(unquote(filename)))


def parse_robots(text: str) -> urllib.robotparser.RobotFileParser:
    """A `RobotFileParser` for robots.txt text, with wildcard support and first-match order as in the stdlib."""
    parser = urllib.robotparser.RobotFileParser()
    parser.parse(text.splitlines())
    entries = list(parser.entries) + ([parser.default_entry] if parser.default_entry else [])
    for entry in entries:
        entry.rulelines = [_WildcardRule(r) if ("*" in unquote(r.path) or "$" in r.path) else r
                           for r in entry.rulelines]
    return parser


class _HostState:
    """Politeness state of one host: robots rules, the gap between requests, the next free slot."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.robots: urllib.robotparser.RobotFileParser | None = None
        self.robots_lock = threading.Lock()
        self.robots_error = ""           # set when robots.txt could not be read: the host is blocked
        self.delay = 0.0
        self.next_slot = 0.0             # monotonic time the next request may start


class PoliteClient:
    """GET pages politely; thread-safe, so a worker pool can share one client."""

    def __init__(self, *, user_agent: str = DEFAULT_USER_AGENT, delay: float = 1.0, timeout: float = 30.0,
                 retries: int = 3, ignore_robots: bool = False, max_retry_after: float = 120.0,
                 backoff_base: float = 1.0, backoff_cap: float = 60.0, pool_size: int = 10,
                 sleep=time.sleep, log=None):
        self.user_agent = user_agent
        self.delay = max(0.0, delay)
        self.timeout = timeout
        self.retries = max(0, retries)
        self.ignore_robots = ignore_robots
        self.max_retry_after = max_retry_after
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.pool_size = pool_size
        self._sleep = sleep
        self._log = log or (lambda message: print(message, file=sys.stderr))
        self._hosts: dict[str, _HostState] = {}
        self._hosts_lock = threading.Lock()
        self._local = threading.local()
        self.requests_made = 0           # every HTTP request, retries and robots.txt included
        self._count_lock = threading.Lock()

    # ------------------------------------------------------------ plumbing
    @property
    def session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers.update({"User-Agent": self.user_agent,
                                    "Accept": "text/html,application/xhtml+xml,application/json;q=0.9,*/*;q=0.8"})
            adapter = requests.adapters.HTTPAdapter(pool_connections=self.pool_size, pool_maxsize=self.pool_size)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            self._local.session = session
        return session

    def _host(self, url: str) -> tuple[str, _HostState]:
        parts = urlsplit(url)
        key = f"{parts.scheme}://{parts.netloc}".lower()
        with self._hosts_lock:
            state = self._hosts.get(key)
            if state is None:
                state = self._hosts[key] = _HostState()
                state.delay = self.delay
        return key, state

    def _wait_turn(self, state: _HostState) -> None:
        """Reserve the host's next slot under the lock, sleep outside it: workers queue up `delay` apart."""
        with state.lock:
            now = time.monotonic()
            start = max(now, state.next_slot)
            state.next_slot = start + state.delay
        if start > now:
            self._sleep(start - now)

    def _push_back(self, state: _HostState, seconds: float) -> None:
        """The server asked us to slow down: nobody talks to this host for `seconds`."""
        with state.lock:
            state.next_slot = max(state.next_slot, time.monotonic() + seconds)

    def pause_host(self, url: str, seconds: float) -> None:
        """Hold every request to `url`'s host for `seconds` (an API's `backoff`, a 429)."""
        self._push_back(self._host(url)[1], seconds)

    def _count(self) -> None:
        with self._count_lock:
            self.requests_made += 1

    # ------------------------------------------------------------ robots.txt
    def _ensure_robots(self, root: str, state: _HostState) -> None:
        if state.robots is not None:
            return
        with state.robots_lock:                           # one robots.txt fetch per host, however many workers
            if state.robots is not None:
                return
            result = self._get_with_retries(root + "/robots.txt", state)
            robots_error = ""
            if result.ok:
                parser = parse_robots(result.content.decode("utf-8", errors="replace"))
            elif result.status is not None and 400 <= result.status < 500:
                parser = parse_robots("")                 # no robots.txt: no rules
            else:
                parser = parse_robots("User-agent: *\nDisallow: /")
                robots_error = f"robots.txt unreachable ({result.reason}): host skipped, as RFC 9309 asks"
            crawl_delay = None if robots_error else parser.crawl_delay(self.user_agent)
            with state.lock:
                state.robots_error = robots_error
                if crawl_delay is not None and float(crawl_delay) > state.delay:
                    state.delay = float(crawl_delay)
            state.robots = parser                         # set last: it is the "done" flag read without the lock
        if robots_error:
            self._log(f"warning: {root}: {robots_error}")
        elif crawl_delay is not None and float(crawl_delay) > self.delay:
            self._log(f"note: {root}/robots.txt asks for Crawl-delay {crawl_delay:g}s; using it instead of "
                      f"--delay {self.delay:g}")

    def allowed(self, url: str) -> tuple[bool, str]:
        """Whether robots.txt lets us fetch `url` (fetching and caching the host's robots.txt on first use)."""
        if self.ignore_robots:
            return True, ""
        root, state = self._host(url)
        self._ensure_robots(root, state)
        if state.robots_error:
            return False, state.robots_error
        assert state.robots is not None
        if not state.robots.can_fetch(self.user_agent, url):
            return False, "disallowed by robots.txt"
        return True, ""

    def host_delay(self, url: str) -> float:
        return self._host(url)[1].delay

    # ------------------------------------------------------------ GET
    def get(self, url: str, *, check_robots: bool = True, params: dict | None = None) -> Fetched:
        """Fetch `url` politely. Never raises for network or HTTP trouble: look at `.ok` and `.reason`."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return Fetched(url, reason="bad_url", detail=f"not an http(s) URL: {url!r}")
        if check_robots:
            ok, why = self.allowed(url)
            if not ok:
                reason = "robots_disallowed" if why == "disallowed by robots.txt" else "robots_unreachable"
                return Fetched(url, reason=reason, detail=why)
        _, state = self._host(url)
        return self._get_with_retries(url, state, params=params)

    def _get_with_retries(self, url: str, state: _HostState, params: dict | None = None) -> Fetched:
        result = Fetched(url)
        for attempt in range(self.retries + 1):
            self._wait_turn(state)
            result = self._attempt(url, params)
            result.attempts = attempt + 1
            retryable = result.reason in ("timeout", "connection_error") or result.status in RETRY_STATUSES
            if result.ok or not retryable or attempt == self.retries:
                return result
            wait = self._backoff(attempt)
            retry_after = parse_retry_after(result.headers.get("retry-after"))
            if retry_after is not None:
                wait = max(wait, min(retry_after, self.max_retry_after))
            if result.status == 429 or retry_after is not None:
                self._push_back(state, wait)
            self._sleep(wait)
        return result

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with "equal jitter": half fixed, half random, so retries never synchronise."""
        ceiling = min(self.backoff_cap, self.backoff_base * (2 ** attempt))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def _attempt(self, url: str, params: dict | None) -> Fetched:
        self._count()
        try:
            with self.session.get(url, params=params, timeout=self.timeout, stream=True,
                                  allow_redirects=True) as response:
                headers = {k.lower(): v for k, v in response.headers.items()}
                chunks, size = [], 0
                for chunk in response.iter_content(64 * 1024):
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > MAX_BODY_BYTES:
                        return Fetched(url, status=response.status_code, headers=headers, reason="too_large",
                                       detail=f"body over {MAX_BODY_BYTES} bytes", final_url=response.url)
                fetched = Fetched(url, status=response.status_code, content=b"".join(chunks), headers=headers,
                                  final_url=response.url)
        except requests.exceptions.Timeout as exc:
            return Fetched(url, reason="timeout", detail=_one_line(exc))
        except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ContentDecodingError) as exc:
            return Fetched(url, reason="connection_error", detail=_one_line(exc))
        except requests.exceptions.RequestException as exc:
            return Fetched(url, reason="request_error", detail=_one_line(exc))
        if not 200 <= fetched.status < 300:
            fetched.reason = f"http_{fetched.status}"
            fetched.detail = f"HTTP {fetched.status}"
        return fetched


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After` as seconds: either delta-seconds or an HTTP date. None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def _one_line(exc: Exception) -> str:
    return re.sub(r"\s+", " ", f"{type(exc).__name__}: {exc}")[:300]
