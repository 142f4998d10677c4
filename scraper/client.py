"""The polite HTTP client every scraper command shares.

- one `requests.Session` per thread (pooled connections, honest User-Agent naming the project);
- robots.txt per host, read as RFC 9309 says (`scraper.robots`: the longest matching rule wins, `*`/`$`
  wildcards, product-token groups, fractional `Crawl-delay`s); a robots.txt that cannot be fetched (5xx,
  429, network, a redirect loop) blocks the host, as RFC 9309 says; other 4xx mean no rules;
- credentials are never sent: `user:password@` is removed from every URL before it is requested, redirect
  targets included, so it is never in a request, a row or a log line either (`strip_userinfo`);
- redirects are followed here, one hop at a time, never by `requests`: every hop passes the robots.txt of
  its own host and waits for that host's turn; a disallowed hop ends as `robots_disallowed`, and more than
  `max_redirects` hops (or a loop) as an error, never as content;
- a per-host gap between request starts (`--delay`, or the robots.txt `Crawl-delay` when larger),
  shared by all worker threads, so `--workers 8` is never ruder than `--workers 1`; a Crawl-delay above
  `max_crawl_delay` blocks the host instead of stalling the run (we never go faster than asked);
- every attempt has a total deadline (`--deadline`) on top of the per-read `--timeout`: a watchdog shuts
  the socket of a server that drips its headers or body a byte at a time;
- retries with exponential backoff and jitter on 429, 5xx, connection errors and timeouts, honouring
  `Retry-After` (capped) and slowing the whole host down when told to;
- never raises for a bad page: every call returns a `Fetched` with `ok`, `status` and a short `reason`.

Over 400 lines on purpose: politeness is one state machine per host (robots, gap, backoff, redirects, deadline) and
splitting it would spread one lock's invariants over several files; robots.txt parsing and page decoding, which
are pure, live in `scraper.robots` and `scraper.encoding`.
"""
from __future__ import annotations

import email.utils
import http.client
import random
import re
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import requests
import urllib3

from scraper.encoding import Decoded, decode_html
from scraper.robots import Robots, decode_robots, parse_robots

DEFAULT_USER_AGENT = ("multilabel-text-pipeline/0.1 "
                      "(+https://github.com/multilabel-text-pipeline/multilabel-text-pipeline; research scraper)")
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504, 520, 521, 522, 523, 524})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_BODY_BYTES = 20 * 1024 * 1024        # a "page" bigger than this is not a page we want
ROBOTS_MAX_REDIRECTS = 5                 # RFC 9309: follow at least five; more means "unreachable"

# Failures that may go away by themselves: a rerun tries them again (the others are permanent until
# --retry-errors). Matched as prefixes: "http_5" covers every 5xx.
# encoding_suspect: the page parsed to nothing after a decode that may have been wrong (see scraper.encoding).
TRANSIENT_REASONS = ("timeout", "connection_error", "request_error", "http_429", "http_5", "robots_unreachable",
                     "deadline_exceeded", "encoding_suspect")


def is_transient(reason: str) -> bool:
    """Whether an error reason (from `Fetched.reason`) is worth trying again in a later run."""
    return reason.startswith(TRANSIENT_REASONS)


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
    final_url: str = ""                  # the URL the content came from, after redirects

    @property
    def ok(self) -> bool:
        return not self.reason

    @property
    def content_type(self) -> str:
        return str(self.headers.get("content-type", "")).lower()

    def decoded(self) -> Decoded:
        """The body as text, its encoding sniffed as browsers do (BOM, header, `<meta>`; see scraper.encoding).
        Parsers always get text: handed bytes, lxml trusted a wrong `<meta charset>` and could stop at the
        first byte that charset lacks, leaving an empty document."""
        return decode_html(self.content, self.content_type)

    def html(self) -> str:
        return self.decoded().text


# ---------------------------------------------------------------- the total deadline
_current = threading.local()             # the deadline of the attempt running on this thread


class _Deadline:
    """A watchdog for one attempt: when `seconds` are up it shuts down the attempt's socket, which wakes a
    read blocked on a server that sends one byte per `--timeout` (headers or body) and ends it with an error."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.expired = False
        self._lock = threading.Lock()
        self._watched: list = []
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> "_Deadline":
        _current.deadline = self
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()
        _current.deadline = None

    def watch(self, watched) -> None:
        """Shut `watched` (a connection or a socket) when the time is up, or now if it already is."""
        with self._lock:
            self._watched.append(watched)
            expired = self.expired
        if expired:
            _shut(watched)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            watched = list(self._watched)
        for item in watched:
            _shut(item)


def _shut(watched) -> None:
    """Shut down a socket, or the socket a connection holds now, so that a blocked read returns at once."""
    sock = watched if isinstance(watched, socket.socket) else getattr(watched, "sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:                  # already closed: nothing left to wake
            pass


class _Watched:
    """Mixin for urllib3 connections: each request registers its connection, and then its socket, with the
    thread's deadline. The socket itself is kept because http.client drops `conn.sock` once a response that
    ends with the connection (`Connection: close`) starts: the response still reads from that socket."""

    def request(self, *args, **kwargs):
        deadline = getattr(_current, "deadline", None)
        if deadline is not None:
            deadline.watch(self)         # the socket appears only while the request is sent
        return super().request(*args, **kwargs)

    def getresponse(self, *args, **kwargs):
        deadline = getattr(_current, "deadline", None)
        if deadline is not None and self.sock is not None:
            deadline.watch(self.sock)    # shut at once when the deadline already passed
        return super().getresponse(*args, **kwargs)


class _WatchedHTTPConnection(_Watched, urllib3.connection.HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, urllib3.connection.HTTPSConnection):
    pass


class _WatchedHTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _DeadlineAdapter(requests.adapters.HTTPAdapter):
    """An HTTPAdapter whose direct connections the deadline watchdog can shut (proxied ones fall back on the
    deadline check between body chunks)."""

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class _Session(requests.Session):
    """A Session that never resolves redirects: with allow_redirects=False, requests still runs its redirect
    resolver once (for `Response.next`), and that reads the whole 3xx body into memory, with no size cap
    (a 302 announcing a 100 GB body was a MemoryError). The client follows Location itself, hop by hop."""

    def get_redirect_target(self, resp):
        return None


# ---------------------------------------------------------------- per-host politeness
class _HostState:
    """Politeness state of one host: robots rules, the gap between requests, the next free slot."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.robots: Robots | None = None
        self.robots_lock = threading.Lock()
        self.robots_reason = ""          # set when the host is blocked: robots_unreachable, robots_crawl_delay
        self.robots_error = ""           # ... and why, for the errors file
        self.delay = 0.0
        self.next_slot = 0.0             # clock time the next request may start


class PoliteClient:
    """GET pages politely; thread-safe, so a worker pool can share one client."""

    def __init__(self, *, user_agent: str = DEFAULT_USER_AGENT, delay: float = 1.0, timeout: float = 30.0,
                 retries: int = 3, ignore_robots: bool = False, max_retry_after: float = 120.0,
                 backoff_base: float = 1.0, backoff_cap: float = 60.0, pool_size: int = 10,
                 deadline: float = 120.0, max_redirects: int = 5, max_crawl_delay: float = 60.0,
                 sleep=time.sleep, clock=time.monotonic, log=None):
        self.user_agent = user_agent
        self.delay = max(0.0, delay)
        self.timeout = timeout
        self.retries = max(0, retries)
        self.ignore_robots = ignore_robots
        self.max_retry_after = max_retry_after
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.pool_size = pool_size
        self.deadline = deadline
        self.max_redirects = max_redirects
        self.max_crawl_delay = max_crawl_delay
        self._sleep = sleep
        self._clock = clock              # injectable with `sleep`: tests check the waits asked for, not wall time
        self._log = log or (lambda message: print(message, file=sys.stderr))
        self._hosts: dict[str, _HostState] = {}
        self._hosts_lock = threading.Lock()
        self._local = threading.local()
        self.requests_made = 0           # every HTTP request, retries, redirect hops and robots.txt included
        self._count_lock = threading.Lock()

    # ------------------------------------------------------------ plumbing
    @property
    def session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = _Session()
            session.headers.update({"User-Agent": self.user_agent,
                                    "Accept": "text/html,application/xhtml+xml,application/json;q=0.9,*/*;q=0.8"})
            adapter = _DeadlineAdapter(pool_connections=self.pool_size, pool_maxsize=self.pool_size)
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
            now = self._clock()
            start = max(now, state.next_slot)
            state.next_slot = start + state.delay
        if start > now:
            self._sleep(start - now)

    def _push_back(self, state: _HostState, seconds: float) -> None:
        """The server asked us to slow down: nobody talks to this host for `seconds`."""
        with state.lock:
            state.next_slot = max(state.next_slot, self._clock() + seconds)

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
            # Redirects of robots.txt are followed (RFC 9309), without a robots check of their own.
            result = self._follow(root + "/robots.txt", check_robots=False, params=None,
                                  max_redirects=ROBOTS_MAX_REDIRECTS)
            reason, why = "", ""
            if result.ok:
                parser = parse_robots(decode_robots(result.content))
            elif result.status is not None and 400 <= result.status < 500 and result.status != 429:
                parser = parse_robots("")                 # no robots.txt: no rules
            else:
                parser = parse_robots("User-agent: *\nDisallow: /")
                reason = "robots_unreachable"
                why = f"robots.txt unreachable ({result.reason}): host skipped, as RFC 9309 asks"
            crawl_delay = None if reason else parser.crawl_delay(self.user_agent)
            if crawl_delay is not None and float(crawl_delay) > self.max_crawl_delay:
                reason = "robots_crawl_delay"
                why = (f"robots.txt asks for Crawl-delay {float(crawl_delay):g}s, more than --max-crawl-delay "
                       f"{self.max_crawl_delay:g}: host skipped rather than crawled faster than asked")
            with state.lock:
                state.robots_reason, state.robots_error = reason, why
                if not reason and crawl_delay is not None and float(crawl_delay) > state.delay:
                    state.delay = float(crawl_delay)
            state.robots = parser                         # set last: it is the "done" flag read without the lock
        if reason:
            self._log(f"warning: {root}: {why}")
        elif crawl_delay is not None and float(crawl_delay) > self.delay:
            self._log(f"note: {root}/robots.txt asks for Crawl-delay {float(crawl_delay):g}s; using it instead of "
                      f"--delay {self.delay:g}")

    def robots_verdict(self, url: str) -> tuple[str, str]:
        """("", "") when robots.txt lets us fetch `url`; else (reason, detail): robots_disallowed,
        robots_unreachable or robots_crawl_delay. Fetches and caches the host's robots.txt on first use."""
        if self.ignore_robots:
            return "", ""
        root, state = self._host(url)
        self._ensure_robots(root, state)
        if state.robots_reason:
            return state.robots_reason, state.robots_error
        assert state.robots is not None
        rule = state.robots.deciding_rule(self.user_agent, url)
        if rule is not None and not rule.allow:
            return "robots_disallowed", f"disallowed by robots.txt ({rule})"
        return "", ""

    def allowed(self, url: str) -> tuple[bool, str]:
        """Whether robots.txt lets us fetch `url`, and why not."""
        reason, detail = self.robots_verdict(url)
        return not reason, detail

    def host_delay(self, url: str) -> float:
        return self._host(url)[1].delay

    # ------------------------------------------------------------ GET
    def get(self, url: str, *, check_robots: bool = True, params: dict | None = None) -> Fetched:
        """Fetch `url` politely, following redirects hop by hop. Never raises for network or HTTP trouble:
        look at `.ok` and `.reason`."""
        return self._follow(url, check_robots=check_robots, params=params, max_redirects=self.max_redirects)

    def _follow(self, url: str, *, check_robots: bool, params: dict | None, max_redirects: int) -> Fetched:
        url = strip_userinfo(url)
        current, visited, attempts = url, [], 0

        def failure(reason: str, detail: str, status=None) -> Fetched:
            hops = f" (after {' -> '.join(visited)})" if visited else ""
            return Fetched(url, status=status, reason=reason, detail=(detail + hops)[:500], attempts=attempts,
                           final_url=current)

        while True:
            problem = url_problem(current)
            if problem:
                return failure("bad_url" if not visited else "bad_redirect",
                               f"not an absolute http(s) URL ({problem}): {current[:200]!r}")
            if check_robots:
                reason, why = self.robots_verdict(current)
                if reason:
                    return failure(reason, why + (f": {current}" if visited else ""))
            result = self._get_with_retries(current, self._host(current)[1], params=params if not visited else None)
            attempts += result.attempts
            location = result.headers.get("location") if result.status in REDIRECT_STATUSES else None
            if not location:
                result.url, result.final_url, result.attempts = url, current, attempts
                return result
            try:
                target = strip_userinfo(urljoin(current, location.strip()).partition("#")[0])
            except ValueError as exc:
                return failure("bad_redirect", f"HTTP {result.status} to an unreadable Location {location!r}: {exc}",
                               result.status)
            visited.append(current)
            if target in visited:
                return failure("redirect_loop", f"HTTP {result.status} back to {target}", result.status)
            if len(visited) > max_redirects:
                return failure("too_many_redirects", f"more than {max_redirects} redirects", result.status)
            current = target

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
        """One GET, redirects not followed, the body read under the total deadline."""
        self._count()
        deadline = _Deadline(self.deadline)
        try:
            with deadline, self.session.get(url, params=params, timeout=self.timeout, stream=True,
                                            allow_redirects=False) as response:
                headers = {k.lower(): v for k, v in response.headers.items()}
                status = response.status_code
                if status in REDIRECT_STATUSES and headers.get("location"):
                    return Fetched(url, status=status, headers=headers, final_url=url,
                                   reason=f"http_{status}", detail=f"HTTP {status} redirect")
                chunks, size = [], 0
                for chunk in response.iter_content(64 * 1024):
                    if deadline.expired:
                        break
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > MAX_BODY_BYTES:
                        return Fetched(url, status=status, headers=headers, reason="too_large",
                                       detail=f"body over {MAX_BODY_BYTES} bytes", final_url=url)
                if deadline.expired:
                    return self._deadline_error(url)
                fetched = Fetched(url, status=status, content=b"".join(chunks), headers=headers, final_url=url)
        except requests.exceptions.Timeout as exc:
            return self._deadline_error(url) if deadline.expired else Fetched(url, reason="timeout",
                                                                              detail=_one_line(exc))
        except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ContentDecodingError, urllib3.exceptions.HTTPError,
                http.client.HTTPException, OSError) as exc:
            return self._deadline_error(url) if deadline.expired else Fetched(url, reason="connection_error",
                                                                              detail=_one_line(exc))
        except (requests.exceptions.RequestException, ValueError) as exc:   # InvalidURL, InvalidHeader, ...
            return Fetched(url, reason="request_error", detail=_one_line(exc))
        except Exception as exc:         # a decoder's own error (brotli.error) that urllib3 does not wrap: one
            return Fetched(url, reason="request_error", detail=_one_line(exc))     # bad response, not the run
        if not 200 <= fetched.status < 300:
            fetched.reason = f"http_{fetched.status}"
            fetched.detail = f"HTTP {fetched.status}"
        return fetched

    def _deadline_error(self, url: str) -> Fetched:
        return Fetched(url, reason="deadline_exceeded",
                       detail=f"no complete response within --deadline {self.deadline:g}s (server too slow)")


_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*:)?//[^/?#]*@")


def strip_userinfo(url: str) -> str:
    """`https://user:secret@host/path` → `https://host/path`. Plain text work, so it also cleans a URL too broken
    for `urlsplit` (it still goes into the errors file). The last `@` before the path ends the userinfo."""
    match = _USERINFO.match(url.lstrip())
    if not match:
        return url
    url = url.lstrip()
    return (match.group(1) or "") + "//" + url[match.end():]


_USERINFO_ANYWHERE = re.compile(r"(?i)((?:\b[a-z][a-z0-9+.-]*:)?)//[^/?#\s]*@")


def scrub_userinfo(text: str) -> str:
    """`text` with the userinfo of every URL in it removed (a command line, a log line)."""
    return _USERINFO_ANYWHERE.sub(r"\1//", text)


def url_problem(url: str) -> str:
    """Why `url` cannot be requested, in a few words ("" when it can): not http(s), no host, a bad port, control
    characters (which could split a request line), whitespace in the host."""
    try:
        parts = urlsplit(url)
        parts.port                       # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError as exc:
        return f"unreadable ({exc})"
    if parts.scheme.lower() not in ("http", "https"):
        return "not http(s)"
    if not parts.hostname:
        return "no host"
    if re.search(r"[\x00-\x1f\x7f]", url):
        return "control characters in it"
    if re.search("[\ud800-\udfff]", url):
        return "lone surrogates in it (not encodable as UTF-8)"
    if re.search(r"\s", parts.netloc):
        return "whitespace in the host"
    return ""


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """`Retry-After` as seconds: either delta-seconds or an HTTP date. None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    try:
        stamp = when.timestamp()
    except (OverflowError, ValueError, OSError):
        return None
    return max(0.0, stamp - (time.time() if now is None else now))


def _one_line(exc: Exception) -> str:
    return re.sub(r"\s+", " ", f"{type(exc).__name__}: {exc}")[:300]
