"""Shared by the corrections tests: a fresh database of either kind, tokens, and reading rows back.

    url = fresh_db("postgresql", tmp_path, request)     # a new database on the session's PostgreSQL server
"""
from __future__ import annotations

import itertools
import json
from pathlib import Path

from sqlalchemy import create_engine, func, select, text

from feedback.db import make_engine
from feedback.models import Correction
from feedback.schema import upgrade
from feedback.tokens import add_token

_names = itertools.count()


def fresh_db(kind: str, tmp_path: Path, request) -> str:
    """An empty database URL: a new SQLite file, or a new database on the session's PostgreSQL server."""
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / f'feedback-{next(_names)}.db'}"
    server = request.getfixturevalue("postgres_server")
    return server.new_database(f"t{next(_names)}_{abs(hash(str(tmp_path))) % 10**8}")


def migrated(url: str, tokens: dict[str, bool] = ()) -> dict[str, str]:
    """Upgrade the schema of `url` and create tokens {name: operator}; returns {name: token}."""
    engine = make_engine(url)
    try:
        upgrade(engine)
        return {name: add_token(engine, name, operator=op) for name, op in dict(tokens).items()}
    finally:
        engine.dispose()


def rows(url: str) -> list[dict]:
    """Every stored correction (id order) as plain dicts, read with a plain engine (not the store's code)."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            out = [dict(r._mapping) for r in conn.execute(select(Correction.__table__).order_by(Correction.id))]
    finally:
        engine.dispose()
    for r in out:   # JSON columns come back as lists on PostgreSQL, as text on a plain SQLite engine
        for key in ("labels", "shown"):
            if isinstance(r[key], str):
                r[key] = json.loads(r[key])
    return out


def count(url: str, table: str = "corrections") -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(text(table))).scalar_one()
    finally:
        engine.dispose()


def newer_migrations(tmp_path: Path) -> Path:
    """A copy of the migrations with one more revision after the newest (what a later version of the project
    ships): point feedback.schema.MIGRATIONS at it to make an up-to-date database out of date."""
    import shutil

    import feedback.schema as schema

    newer = tmp_path / "migrations"
    shutil.copytree(schema.MIGRATIONS, newer, ignore=shutil.ignore_patterns("__pycache__"))
    (newer / "versions" / "0002_test.py").write_text(
        '"""a later migration"""\nimport sqlalchemy as sa\nfrom alembic import op\n'
        f'revision = "0002_test"\ndown_revision = "{schema.head_revision()}"\nbranch_labels = None\ndepends_on = None\n\n'
        'def upgrade():\n    op.create_table("later", sa.Column("id", sa.Integer(), primary_key=True))\n\n'
        'def downgrade():\n    op.drop_table("later")\n')
    return newer
