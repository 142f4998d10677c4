"""The database's schema version: upgrade it (Alembic, programmatically), read it, and refuse an old one.

    python -m feedback db upgrade [--db URL]     # what an operator runs after installing a new version
    from feedback.schema import upgrade, ensure_current
    ensure_current(engine)    # the site at start: creates an empty database, refuses an out-of-date one

"First use": a database with none of the project's tables and no Alembic version (a new SQLite file, an empty
PostgreSQL database) is brought to the newest schema where it is first opened. A database at an older revision
is never changed behind the operator's back: `SchemaError` names the command that upgrades it. Migrating and the
check before it run in one write transaction under a lock (SQLite: BEGIN IMMEDIATE; PostgreSQL: an advisory
lock), so several gunicorn workers starting on a new database create it once.
"""
from __future__ import annotations

from pathlib import Path

from sqlalchemy import inspect
from sqlalchemy.engine import Connection, Engine

from feedback.db import safe_url, writing
from feedback.models import Base

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
MIGRATION_LOCK = "feedback:schema"   # the advisory lock every migration takes on PostgreSQL


class SchemaError(RuntimeError):
    """The database's schema is not the one this code needs; the message says what to run."""


def _config(connection: Connection | None = None):
    from alembic.config import Config   # imported here: only migrations need Alembic

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config()).get_current_head()


def known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    return {s.revision for s in ScriptDirectory.from_config(_config()).walk_revisions()}


def current_revision(conn: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


def _is_empty(conn: Connection) -> bool:
    names = set(inspect(conn).get_table_names())
    return not names & (set(Base.metadata.tables) | {"alembic_version"})


def _upgrade_in(conn: Connection) -> None:
    from alembic import command

    command.upgrade(_config(conn), "head")


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Bring the database to the newest revision; returns (revision before, revision after)."""
    with writing(engine, lock_key=MIGRATION_LOCK) as conn:
        before = current_revision(conn)
        if before is not None and before not in known_revisions():
            raise SchemaError(f"{safe_url(str(engine.url))} is at schema revision {before!r}, which this code does "
                              "not know (a newer version of the project wrote it): upgrade the project")
        if before is None and not _is_empty(conn):
            raise SchemaError(f"{safe_url(str(engine.url))} holds tables but no schema revision of ours: it is not "
                              "a corrections database; point --db / MLTC_DB_URL at an empty database or a new file")
        _upgrade_in(conn)
        return before, current_revision(conn)


def ensure_current(engine: Engine) -> str:
    """Create the schema in an empty database; raise SchemaError for an older (or unknown) one. Returns the head."""
    head = head_revision()
    with writing(engine, lock_key=MIGRATION_LOCK) as conn:
        current = current_revision(conn)
        if current == head:
            return head
        if current is None and _is_empty(conn):
            _upgrade_in(conn)
            return head
    where = safe_url(str(engine.url))
    if current is None:
        raise SchemaError(f"{where} holds tables but no schema revision of ours: it is not a corrections database")
    if current not in known_revisions():
        raise SchemaError(f"{where} is at schema revision {current!r}, newer than this code ({head!r}): upgrade the project")
    raise SchemaError(f"the corrections database {where} is at schema revision {current!r}, this code needs {head!r}: "
                      f"run `python -m feedback db upgrade --db {where}` first")
