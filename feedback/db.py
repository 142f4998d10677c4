"""Where the corrections live and how to open it: the database URL, the engine, write transactions.

    from feedback.db import resolve_url, make_engine, writing
    engine = make_engine(resolve_url(None))          # --db, else $MLTC_DB_URL, else data/feedback.db
    with writing(engine, lock_key="token:alice") as conn:
        conn.execute(...)

One SQLAlchemy engine per process. The embedded default is one SQLite file (created with its folder on first
use) in WAL mode, so readers never wait for the writer, with a busy timeout, so writers from several gunicorn
workers queue instead of failing, and `synchronous=FULL`, so an acknowledged write survives a crash of the
machine, not only of the process. A write transaction starts with `BEGIN IMMEDIATE` (the write lock is taken
first, so a read-then-write such as the rate limit's count and the insert is one atomic step across processes).
PostgreSQL (`postgresql+psycopg://user:pass@host/db`, psycopg 3) gets the same code; there a write transaction
that names a `lock_key` takes a transaction-scoped advisory lock on it, which gives the same atomicity per key.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import threading
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Iterator

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError

import config

ENV_URL = "MLTC_DB_URL"
DEFAULT_DB_PATH = config.DATA_DIR / "feedback.db"   # the embedded default (git-ignored)
BUSY_TIMEOUT_S = 30          # how long a SQLite writer waits for the lock before the request is refused (503)
PG_CONNECT_TIMEOUT_S = 10


class StoreError(RuntimeError):
    """The store cannot be used as configured (bad URL, unsupported database, unreachable server)."""


def resolve_url(url: str | None) -> str:
    """The database URL: `url` (a URL, or a plain path meaning a SQLite file), else $MLTC_DB_URL, else the
    embedded SQLite file data/feedback.db. A plain `postgresql://` URL is given the psycopg 3 driver."""
    url = (url or os.environ.get(ENV_URL, "").strip() or str(DEFAULT_DB_PATH))
    if "://" not in url:
        url = f"sqlite:///{Path(url).expanduser().resolve()}"
    try:
        parsed = make_url(url)
    except ArgumentError as err:
        raise StoreError(f"not a database URL: {url!r} ({err})") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def safe_url(url: str) -> str:
    """The URL with its password masked, for messages and manifests."""
    return make_url(url).render_as_string(hide_password=True)


def make_engine(url: str) -> Engine:
    """An engine for `url` (resolved already) with the settings above; StoreError for what cannot work."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or database.startswith("file::memory"):
            raise StoreError("an in-memory SQLite database is private to one connection; give a file path")
        Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"timeout": BUSY_TIMEOUT_S})
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if backend == "postgresql":
        if parsed.get_driver_name() != "psycopg":
            raise StoreError(f"PostgreSQL is used through psycopg 3: write postgresql+psycopg://... (got {parsed.drivername})")
        return create_engine(parsed, pool_pre_ping=True, pool_size=8, max_overflow=8,
                             connect_args={"connect_timeout": PG_CONNECT_TIMEOUT_S})
    raise StoreError(f"unsupported database {backend!r}: use a SQLite file or postgresql+psycopg://")


class WriteGate:
    """One SQLite writer at a time across this machine's processes, queued in the kernel (flock on `<db>.lock`)
    and, within a process, on a lock: a writer that waits is woken the moment the last one commits. SQLite's own
    busy handler would do the same by sleeping and retrying, with sleeps of up to 100 ms: that is what made the
    99th percentile of concurrent writes 5-10x the median. The busy timeout stays as the backstop (another
    program writing the same file). The lock file is opened per process (a forked worker gets its own)."""

    def __init__(self, database: str):
        self.path = database + ".lock"
        self.thread_lock = threading.Lock()
        self.fd: int | None = None
        self.pid = -1

    @contextmanager
    def held(self):
        with self.thread_lock:
            if self.pid != os.getpid():
                self.fd, self.pid = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644), os.getpid()
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self.fd, fcntl.LOCK_UN)


_GATES: dict[str, WriteGate] = {}
_GATES_LOCK = threading.Lock()


def write_gate(engine: Engine) -> WriteGate | None:
    """The gate of a SQLite file engine (None for PostgreSQL, whose row and advisory locks wake waiters at once)."""
    if engine.dialect.name != "sqlite":
        return None
    database = str(Path(engine.url.database).resolve())
    with _GATES_LOCK:
        return _GATES.setdefault(database, WriteGate(database))


def _sqlite_connect(dbapi_connection, _record) -> None:
    # pysqlite would otherwise open transactions itself, lazily and without IMMEDIATE; `begin` below does it.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_S * 1000}")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = FULL")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("write") else "BEGIN")


def advisory_key(name: str) -> int:
    """A signed 64-bit key for pg_advisory_xact_lock, stable across processes (Python's hash() is salted)."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big", signed=True)


@contextmanager
def writing(engine: Engine, lock_key: str | None = None) -> Iterator[Connection]:
    """A write transaction, committed on exit, rolled back on an exception. SQLite: BEGIN IMMEDIATE (one writer at
    a time, whole database); PostgreSQL: an advisory lock on `lock_key` when given (one writer per key)."""
    gate = write_gate(engine)
    with gate.held() if gate else nullcontext(), engine.connect() as conn:
        conn.execution_options(write=True)
        with conn.begin():
            if lock_key is not None and conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": advisory_key(lock_key)})
            yield conn


@contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """A read transaction (a consistent snapshot on both backends)."""
    with engine.connect() as conn:
        with conn.begin():
            yield conn
