"""Bearer tokens for writing corrections: create (shown once), list, revoke, verify. Only sha256 hashes are stored.

    python -m feedback tokens add alice              # prints the new token once
    python -m feedback tokens add ops --operator     # may also read the operator page and /api/feedback/stats
    python -m feedback tokens list
    python -m feedback tokens revoke alice

A token is `mltc_` + 32 random bytes (urlsafe base64). It is looked up by its sha256 (a token has 256 bits of
entropy, so an unsalted hash is as strong as the token) and the stored hash compared in constant time. A revoked
token stops working at once: every request is checked against the database, nothing is cached.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Engine

from feedback.checks import token_name_problem
from feedback.db import reading, writing
from feedback.models import ApiToken, utcnow

PREFIX = "mltc_"
MAX_TOKEN_CHARS = 200


class TokenError(ValueError):
    """A token command that cannot be done (bad name, name in use, nothing to revoke)."""


@dataclass(frozen=True)
class Principal:
    """Who a verified token belongs to."""

    name: str
    operator: bool


def new_token() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def add_token(engine: Engine, name: str, operator: bool = False) -> str:
    """Create a token named `name` and return it (the only time it exists in clear)."""
    problem = token_name_problem(name)
    if problem:
        raise TokenError(problem)
    token = new_token()
    with writing(engine, lock_key="feedback:tokens") as conn:
        active = conn.execute(select(ApiToken.id).where(ApiToken.name == name, ApiToken.revoked_at.is_(None))).first()
        if active:
            raise TokenError(f"a token named {name!r} is active; revoke it first (`tokens revoke {name}`) or pick another name")
        conn.execute(insert(ApiToken).values(name=name, token_hash=hash_token(token), operator=operator,
                                             created_at=utcnow()))
    return token


def list_tokens(engine: Engine) -> list[dict]:
    """Every token ever made, newest first: name, operator, created, revoked (None when active). No secrets."""
    with reading(engine) as conn:
        rows = conn.execute(select(ApiToken.name, ApiToken.operator, ApiToken.created_at, ApiToken.revoked_at)
                            .order_by(ApiToken.created_at.desc(), ApiToken.id.desc())).all()
    return [{"name": r.name, "operator": bool(r.operator), "created": r.created_at, "revoked": r.revoked_at} for r in rows]


def revoke_token(engine: Engine, name: str) -> datetime:
    """Revoke the active token named `name`; TokenError when there is none."""
    now = utcnow()
    with writing(engine, lock_key="feedback:tokens") as conn:
        done = conn.execute(update(ApiToken).where(ApiToken.name == name, ApiToken.revoked_at.is_(None))
                            .values(revoked_at=now)).rowcount
    if not done:
        raise TokenError(f"no active token named {name!r} (see `tokens list`)")
    return now


def verify(engine: Engine, presented: str | None) -> Principal | None:
    """The owner of an active token, or None (unknown, revoked, malformed)."""
    if not presented or len(presented) > MAX_TOKEN_CHARS or not presented.startswith(PREFIX):
        return None
    return verify_digest(engine, hash_token(presented))


def verify_digest(engine: Engine, digest: str | None) -> Principal | None:
    """`verify` for a token's sha256 (what a signed session cookie keeps instead of the token)."""
    if not isinstance(digest, str) or len(digest) != 64:
        return None
    with reading(engine) as conn:
        row = conn.execute(select(ApiToken.name, ApiToken.operator, ApiToken.token_hash)
                           .where(ApiToken.token_hash == digest, ApiToken.revoked_at.is_(None))).first()
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        return None
    return Principal(row.name, bool(row.operator))


def bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header value, else None."""
    scheme, _, value = (header or "").strip().partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None
