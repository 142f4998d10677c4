"""A throwaway PostgreSQL server in a temporary folder, for the tests and bench/feedback.py (never for users' data).

    from feedback.pgserver import LocalPostgres, postgres_available
    with LocalPostgres() as pg:                    # initdb + pg_ctl start on a free 127.0.0.1 port
        url = pg.new_database("t1")                # postgresql+psycopg://postgres@127.0.0.1:PORT/t1

Debian's `postgresql` package (scripts/install-system.sh installs it) provides `initdb` and `pg_ctl`; they refuse
to run as root, so as root they run as the `postgres` system user (`runuser -u postgres`), in a folder made for
that user. Trust authentication on loopback only; the folder is removed when the server stops.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)   # Debian keeps them off PATH


def find_tool(name: str) -> str | None:
    return shutil.which(name) or next((str(d / name) for d in PG_BIN_DIRS if (d / name).exists()), None)


def postgres_available() -> str | None:
    """None when a server can be started here, else why not (for a skip or a failure message)."""
    if not (find_tool("initdb") and find_tool("pg_ctl")):
        return "PostgreSQL's initdb / pg_ctl not found: install Debian's postgresql (scripts/install-system.sh)"
    if os.geteuid() == 0 and not (shutil.which("runuser") and _user_exists("postgres")):
        return "running as root, and no `postgres` user or `runuser` to start PostgreSQL as (it refuses root)"
    return None


def _user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalPostgres:
    """initdb + pg_ctl start on enter, pg_ctl stop (and the folder removed) on exit."""

    def __init__(self, max_connections: int = 100):
        self.max_connections = max_connections
        self.port = _free_port()
        self.root: Path | None = None

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = list(args)
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd="/")

    def __enter__(self) -> "LocalPostgres":
        reason = postgres_available()
        if reason:
            raise RuntimeError(reason)
        self.root = Path(tempfile.mkdtemp(prefix="mltc-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        data = self.root / "data"
        steps = [
            (find_tool("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--encoding=UTF8",
             "--locale=C", "--no-sync"),
            (find_tool("pg_ctl"), "-D", str(data), "-l", str(self.root / "server.log"), "-w", "-t", "60", "start",
             "-o", f"-h 127.0.0.1 -p {self.port} -k {self.root} -c max_connections={self.max_connections} "
                   "-c fsync=on"),
        ]
        for step in steps:
            proc = self._run(*step)
            if proc.returncode != 0:
                log = (self.root / "server.log").read_text(errors="replace")[-2000:] \
                    if (self.root / "server.log").exists() else ""
                self.__exit__(None, None, None)
                raise RuntimeError(f"{Path(step[0]).name} failed ({proc.returncode}): {proc.stderr[-2000:]}\n{log}")
        return self

    @property
    def admin_url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def new_database(self, name: str) -> str:
        """CREATE DATABASE `name` (a plain identifier) and return its URL."""
        import psycopg

        if not name.replace("_", "").isalnum():
            raise ValueError(f"not a plain database name: {name!r}")
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def __exit__(self, *exc) -> None:
        if self.root is None:
            return
        data = self.root / "data"
        if (data / "postmaster.pid").exists():   # immediate: no shutdown checkpoint, the folder is deleted anyway
            self._run(find_tool("pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop", timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None
