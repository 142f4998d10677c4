"""Alembic's environment for the project's database, run only through feedback.schema (no alembic.ini needed):
the caller hands over an open connection inside its own transaction, so a migration and the check before it
are one atomic step under that transaction's lock (see feedback.schema.upgrade)."""
from alembic import context

from feedback.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run the migrations with `python -m feedback db upgrade [--db URL]`")
# render_as_batch: SQLite cannot ALTER most things; batch mode rebuilds the table, so later migrations work on both.
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True, compare_type=True)
with context.begin_transaction():
    context.run_migrations()
