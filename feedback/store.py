"""Writing corrections: one checked correction in, one row (plus its label changes and suggestions) out.

    from feedback.store import NewCorrection, record
    cid, created = record(engine, NewCorrection(text=..., labels=[...], shown=[...], ...), rate=Rate(120, 60))

`record` runs in one write transaction: the client's earlier correction with the same `client_ref` (a retry
returns it instead of storing twice), the rate limit (the client's corrections stored in the last window, counted
in the database, so the limit holds across gunicorn workers and restarts), then the inserts. The transaction holds
the write lock (SQLite) or the client's advisory lock (PostgreSQL), so the count and the insert are one step.
A refused correction raises `Refused` with the HTTP status and the reason; nothing is stored.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, insert, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError

from feedback.checks import Rate, label_changes, text_key
from feedback.db import writing
from feedback.models import Correction, CorrectionLabel, LabelSuggestion, utcnow


class Refused(Exception):
    """A correction that is not stored: `status` is the HTTP status a face answers with, str() the reason."""

    def __init__(self, status: int, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


@dataclass(frozen=True)
class NewCorrection:
    """A correction that passed every check (feedback.checks, the predictor's text rules)."""

    text: str
    labels: list[str]                  # the full correct set
    face: str                          # api | web | gradio | import
    client_key: str                    # who, for the rate limit and client_ref ("token:alice", "ip:3f2a...")
    shown: list[str] | None = None     # what the face showed as predicted; None: unknown (import)
    model_version: str | None = None
    token_name: str | None = None
    client_ref: str | None = None
    threshold: float | None = None
    suggested: list[str] = field(default_factory=list)
    created_at: datetime | None = None   # None: now


def _existing(conn: Connection, c: NewCorrection) -> int | None:
    """The id already stored under this client's `client_ref`; Refused(409) if it holds something else."""
    if c.client_ref is None:
        return None
    row = conn.execute(select(Correction.id, Correction.text_hash, Correction.labels)
                       .where(Correction.client_key == c.client_key, Correction.client_ref == c.client_ref)).first()
    if row is None:
        return None
    if row.text_hash != text_key(c.text) or list(row.labels) != list(c.labels):
        raise Refused(409, f"client_ref {c.client_ref!r} already names correction {row.id}, with another text or "
                           "labels; use a new client_ref for a new correction")
    return int(row.id)


def _check_rate(conn: Connection, c: NewCorrection, rate: Rate, now: datetime) -> None:
    since = now - timedelta(seconds=rate.seconds)
    stored = conn.execute(select(func.count()).select_from(Correction)
                          .where(Correction.client_key == c.client_key, Correction.created_at > since)).scalar_one()
    if stored >= rate.limit:
        oldest = conn.execute(select(func.min(Correction.created_at))
                              .where(Correction.client_key == c.client_key, Correction.created_at > since)).scalar_one()
        wait = max(1, int((oldest + timedelta(seconds=rate.seconds) - now).total_seconds()) + 1)
        raise Refused(429, f"over the rate limit of {rate} corrections for this client; try again in {wait} s",
                      retry_after=wait)


def _insert(conn: Connection, c: NewCorrection, now: datetime) -> int:
    cid = conn.execute(insert(Correction).values(
        created_at=c.created_at or now, text=c.text, text_hash=text_key(c.text), labels=list(c.labels),
        shown=None if c.shown is None else list(c.shown), threshold=c.threshold, model_version=c.model_version,
        face=c.face, token_name=c.token_name, client_key=c.client_key, client_ref=c.client_ref,
    ).returning(Correction.id)).scalar_one()
    if c.shown is not None:
        changes = label_changes(c.shown, c.labels)
        if changes:
            conn.execute(insert(CorrectionLabel), [{"correction_id": cid, "label": label, "change": change}
                                                   for label, change in changes.items()])
    if c.suggested:
        conn.execute(insert(LabelSuggestion), [{"correction_id": cid, "label": x.strip()}
                                               for x in dict.fromkeys(c.suggested)])
    return int(cid)


def record(engine: Engine, c: NewCorrection, rate: Rate | None = None) -> tuple[int, bool]:
    """Store `c`; returns (id, True), or (id, False) for a retry of a stored client_ref. Refused(409 / 429 / 503)."""
    try:
        with writing(engine, lock_key=c.client_key) as conn:
            existing = _existing(conn, c)
            if existing is not None:
                return existing, False
            now = utcnow()
            if rate is not None:
                _check_rate(conn, c, rate, now)
            return _insert(conn, c, now), True
    except IntegrityError:   # only a race this module's locks rule out; say so rather than answer 500
        raise Refused(409, "this correction conflicts with one stored at the same moment; send it again") from None
    except DBAPIError as err:   # locked past the busy timeout, server gone, disk full
        raise Refused(503, f"the corrections store is unavailable ({type(err.orig).__name__}); try again later",
                      retry_after=5) from None


def record_many(conn: Connection, corrections: list[NewCorrection]) -> tuple[list[int], int]:
    """Store several corrections in the caller's write transaction (imports); client_refs already stored are
    skipped. Returns (new ids, skipped)."""
    ids, skipped = [], 0
    now = utcnow()
    for c in corrections:
        if _existing(conn, c) is not None:
            skipped += 1
            continue
        ids.append(_insert(conn, c, now))
    return ids, skipped
