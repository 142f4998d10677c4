"""The registry's state in the project's database: registered versions, the history, the one pointer servers poll.

    from deployment.registry.state import read_pointer, flip, serving_stack
    with reading(engine) as conn:
        pointer = read_pointer(conn)          # Pointer(version, previous, switch_at, event_id) or None

Tables (feedback/models.py, migration 0002_registry): `model_versions`, `registry_events` (every promotion and
rollback: who, when, forced, the comparison), `registry_pointer` (one row, "current"). A promotion or a
rollback is one write transaction that appends its event and moves the pointer; it checks first that the pointer
is still where the caller saw it (a concurrent promote makes the second one start over, not overwrite).

The pointer carries `switch_at`: the moment every server switches to the new version, a few seconds after the
commit. Servers poll the pointer, load the new model before that moment and swap at it, all at once, so a
client whose requests reach different gunicorn workers never sees the versions go back and forth.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Sequence

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection, Engine, Row

from feedback.db import writing
from feedback.models import ModelVersion, RegistryEvent, RegistryPointer, utcnow

POINTER = "current"
LOCK = "registry"                    # the advisory lock (PostgreSQL) every registry write takes
MIN_PREFIX = 6                       # hex digits a version may be abbreviated to


class RegistryError(RuntimeError):
    """A registry command that cannot be done (the message says why); nothing was changed."""


@dataclass(frozen=True)
class Pointer:
    version: str
    previous: str | None
    switch_at: datetime
    event_id: int

    def serving(self, now: datetime) -> str:
        """The version that answers at `now` (the previous one until the switch)."""
        return self.version if now >= self.switch_at or self.previous is None else self.previous


def read_pointer(conn: Connection) -> Pointer | None:
    row = conn.execute(select(RegistryPointer).where(RegistryPointer.name == POINTER)).first()
    if row is None:
        return None
    return Pointer(row.version, row.previous_version, row.switch_at, int(row.event_id))


def version_row(conn: Connection, version: str) -> Row | None:
    """The model_versions row of `version` (attributes named like the columns), or None."""
    return conn.execute(select(ModelVersion).where(ModelVersion.version == version)).first()


def resolve_version(conn: Connection, text: str) -> Row:
    """A registered version named in full or by a unique prefix of at least MIN_PREFIX hex digits."""
    text = text.strip().lower()
    if len(text) < MIN_PREFIX or any(c not in "0123456789abcdef" for c in text):
        raise RegistryError(f"{text!r} is neither a bundle folder nor a version (at least {MIN_PREFIX} hex digits)")
    rows = conn.execute(select(ModelVersion).where(ModelVersion.version.startswith(text, autoescape=True))
                        .limit(2)).all()
    if not rows:
        raise RegistryError(f"no registered version starts with {text!r} (see `python -m deployment.registry list`)")
    if len(rows) > 1:
        raise RegistryError(f"{text!r} names more than one version; give more digits")
    return rows[0]


def add_version(engine: Engine, *, version: str, path: str, source: str, by: str, labels: list[str],
                record: dict) -> Row:
    """Record a stored copy (once: a second registration of the same version returns the first row)."""
    with writing(engine, lock_key=LOCK) as conn:
        row = version_row(conn, version)
        if row is None:
            conn.execute(insert(ModelVersion).values(version=version, path=path, source=source, registered_at=utcnow(),
                                                     registered_by=by[:64], labels=labels, record=record))
            row = version_row(conn, version)
        return row


def versions(conn: Connection) -> list[Row]:
    return conn.execute(select(ModelVersion).order_by(ModelVersion.registered_at, ModelVersion.version)).all()


def events(conn: Connection) -> list[Row]:
    return conn.execute(select(RegistryEvent).order_by(RegistryEvent.id)).all()


def serving_stack(history: Sequence[tuple[str, str]]) -> list[str]:
    """The versions a rollback walks back through: each promote pushes its version, each rollback pops one.
    `history` is (action, version) in order; the last item is the current version."""
    stack: list[str] = []
    for action, version in history:
        if action == "promote":
            stack.append(version)
        elif action == "rollback":
            if len(stack) < 2 or stack[-2] != version:
                raise RegistryError(f"the history is inconsistent: a rollback to {version[:12]} that is not the "
                                    "version before the current one")
            stack.pop()
        else:
            raise RegistryError(f"unknown registry event {action!r}")
    return stack


def rollback_target(conn: Connection) -> tuple[str, str]:
    """(current, the version a rollback returns to); RegistryError when there is nothing to go back to."""
    stack = serving_stack([(e.action, e.version) for e in events(conn)])
    if not stack:
        raise RegistryError("nothing is served from the registry yet: promote a bundle first")
    if len(stack) < 2:
        raise RegistryError(f"nothing to roll back to: {stack[-1][:12]} is the first version promoted")
    return stack[-1], stack[-2]


def flip(engine: Engine, *, action: str, version: str, expected: str | None, actor: str, forced: bool = False,
         reason: str | None = None, comparison: dict | None = None, switch_in_s: float = 3.0) -> Row:
    """Append a promote / rollback event and move the pointer to `version`, in one transaction, if the current
    version is still `expected` (None: no model yet). The servers switch `switch_in_s` seconds after the commit."""
    with writing(engine, lock_key=LOCK) as conn:
        pointer = read_pointer(conn)
        current = pointer.version if pointer else None
        if current != expected:
            raise RegistryError(f"the current version changed while this command ran (now "
                                f"{(current or 'none')[:12]}, it saw {(expected or 'none')[:12]}): run it again")
        now = utcnow()
        switch_at = now + timedelta(seconds=switch_in_s)
        event_id = conn.execute(insert(RegistryEvent).values(
            at=now, action=action, version=version, previous_version=current, actor=actor[:64], forced=forced,
            reason=reason, comparison=comparison, switch_at=switch_at).returning(RegistryEvent.id)).scalar_one()
        values = {"version": version, "previous_version": current, "switch_at": switch_at, "event_id": event_id}
        if pointer is None:
            conn.execute(insert(RegistryPointer).values(name=POINTER, **values))
        else:
            conn.execute(update(RegistryPointer).where(RegistryPointer.name == POINTER).values(**values))
        return conn.execute(select(RegistryEvent).where(RegistryEvent.id == event_id)).one()
