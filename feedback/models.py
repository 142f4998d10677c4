"""The tables of the project's database (SQLAlchemy 2 declarative models; docs/CONTRACTS.md describes them).

The schema itself is created and changed only by the Alembic migrations in feedback/migrations/versions (run by
`python -m feedback db upgrade`); these classes are what the code reads and writes through, and a test checks that
the migrated database and these models agree. Later tables (the model registry, below) join the same
`Base.metadata` with a migration of their own.

Times are naive UTC (`utcnow()`), the same on SQLite (which has no time zones) and PostgreSQL.
"""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite gives an INTEGER PRIMARY KEY its rowid autoincrement only under that exact type name.
BigId = BigInteger().with_variant(Integer, "sqlite")

FACES = ("api", "web", "gradio", "import")            # where a correction came from
CHANGES = ("confirmed", "removed", "added")          # a label's fate relative to what the face showed


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class ApiToken(Base):
    """A bearer token for writes (and, with `operator`, for the operator pages). Only its sha256 is stored; a
    revoked token keeps its row (corrections name it) and its name may be given to a new token."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    operator: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    __table_args__ = (
        Index("ix_api_tokens_active_name", "name", unique=True,
              sqlite_where=revoked_at.is_(None), postgresql_where=revoked_at.is_(None)),
    )


class Correction(Base):
    """One saved correction: the full correct label set for a text, against the model version that was shown."""

    __tablename__ = "corrections"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    text: Mapped[str] = mapped_column(Text)
    text_hash: Mapped[str] = mapped_column(String(64), index=True)     # feedback.checks.text_key
    labels: Mapped[list] = mapped_column(JSON)                         # the full corrected set, model order
    # none_as_null: Python None is SQL NULL (unknown), not the JSON text 'null'
    shown: Mapped[list | None] = mapped_column(JSON(none_as_null=True), nullable=True)   # what the face predicted
    threshold: Mapped[float | None] = mapped_column(Float, nullable=True)   # the face's override, null: tuned
    model_version: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    face: Mapped[str] = mapped_column(String(16))
    token_name: Mapped[str | None] = mapped_column(String(64), nullable=True)
    client_key: Mapped[str] = mapped_column(String(80))                # who, for the rate limit
    client_ref: Mapped[str | None] = mapped_column(String(200), nullable=True)
    __table_args__ = (
        UniqueConstraint("client_key", "client_ref", name="uq_corrections_client_ref"),
        Index("ix_corrections_client_time", "client_key", "created_at"),
    )


class CorrectionLabel(Base):
    """Per label of a correction whose shown set is known: confirmed (shown and kept), removed, or added."""

    __tablename__ = "correction_labels"
    correction_id: Mapped[int] = mapped_column(BigId, ForeignKey("corrections.id", ondelete="CASCADE"),
                                               primary_key=True)
    label: Mapped[str] = mapped_column(Text, primary_key=True)
    change: Mapped[str] = mapped_column(String(9))


class LabelSuggestion(Base):
    """A label the user proposed that the model does not have: kept apart, never part of the label set."""

    __tablename__ = "label_suggestions"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    correction_id: Mapped[int] = mapped_column(BigId, ForeignKey("corrections.id", ondelete="CASCADE"), index=True)
    label: Mapped[str] = mapped_column(Text, index=True)


class SiteSecret(Base):
    """Secrets the site's processes must share (the key that signs its cookies and CSRF tokens): made once, on
    first use, so every gunicorn worker and every restart agrees without a setting."""

    __tablename__ = "site_secrets"
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[str] = mapped_column(String(128))


# ---- the model registry (deployment/registry; migration 0002_registry) --------------------------------------
class ModelVersion(Base):
    """A registered model: its version (the bundle's content hash), where the registry keeps its copy, and the
    record of how it was made (data manifest, settings, metrics, corrections it was trained with)."""

    __tablename__ = "model_versions"
    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    path: Mapped[str] = mapped_column(Text)                   # the registry's own copy of the bundle folder
    source: Mapped[str] = mapped_column(Text)                 # the folder it was registered from
    registered_at: Mapped[datetime] = mapped_column(DateTime)
    registered_by: Mapped[str] = mapped_column(String(64))
    labels: Mapped[list] = mapped_column(JSON)                # the model's labels, in its order
    record: Mapped[dict] = mapped_column(JSON)                # deployment.registry.records.build_record


class RegistryEvent(Base):
    """One promotion or rollback: who, when, from which version to which, forced or not, and the comparison."""

    __tablename__ = "registry_events"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime)
    action: Mapped[str] = mapped_column(String(16))           # promote | rollback
    version: Mapped[str] = mapped_column(String(64), ForeignKey("model_versions.version"))
    previous_version: Mapped[str | None] = mapped_column(String(64), ForeignKey("model_versions.version"),
                                                         nullable=True)
    actor: Mapped[str] = mapped_column(String(64))
    forced: Mapped[bool] = mapped_column(Boolean, default=False)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    comparison: Mapped[dict | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    switch_at: Mapped[datetime] = mapped_column(DateTime)


class RegistryPointer(Base):
    """The one row servers poll: the current version, the one it replaces, and the moment every server switches
    (all of them at once, so a client never sees the versions go back and forth)."""

    __tablename__ = "registry_pointer"
    name: Mapped[str] = mapped_column(String(16), primary_key=True)          # "current"
    version: Mapped[str] = mapped_column(String(64), ForeignKey("model_versions.version"))
    previous_version: Mapped[str | None] = mapped_column(String(64), ForeignKey("model_versions.version"),
                                                         nullable=True)
    switch_at: Mapped[datetime] = mapped_column(DateTime)
    event_id: Mapped[int] = mapped_column(BigId, ForeignKey("registry_events.id"))
