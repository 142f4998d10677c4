"""The corrections service every face shares (Flask site, JSON API, Gradio app): check a correction against the
served model, work out what the face showed, store it. The faces only read their request and answer.

    from feedback.service import Feedback
    fb = Feedback.open(predictor, db_url=None, rate="120/minute")   # creates a new database, refuses an old one
    cid, created, changes = fb.submit(text=..., labels=[...], model_version=predictor.version, face="web",
                                      client_key=fb.client_key_for_address("203.0.113.9"))

What the face showed is recomputed here, not taken from the client: the served model's prediction for the text
at the threshold the face used (the tuned ones unless overridden), so the confirmed / removed / added counts
cannot be skewed by a client that lies about it. A correction names the model version it corrects: the served
one, or any version in the model registry (a page rendered just before a promote is saved just after it; its
labels are checked against that version's, and what it showed is unknown, so no per-label changes are counted).
Any other version is refused (409) rather than counted against the wrong model. `predictor` may be a function
returning the predictor that answers now (the registry swaps models while the site runs).
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from deployment.web import MAX_TEXT_CHARS, length_problem
from feedback.checks import (Rate, client_ref_problem, label_changes, labels_problem, model_order, parse_rate,
                             storable_text_problem, suggestions_problem)
from feedback.db import StoreError, make_engine, reading, resolve_url, safe_url, writing
from feedback.models import SiteSecret
from feedback.schema import ensure_current
from feedback.stats import label_stats, recent
from feedback.store import NewCorrection, Refused, record
from feedback.tokens import Principal, hash_token, verify_digest

DEFAULT_RATE = "120/minute"


class Feedback:
    """The store opened for one served model (`predictor`: its labels, version and predictions)."""

    def __init__(self, engine: Engine, predictor: Any, rate: Rate | None, max_text_chars: int = MAX_TEXT_CHARS):
        self.engine = engine
        # a Predictor, or a zero-argument function returning the one serving now
        self._serving = predictor if callable(predictor) and not hasattr(predictor, "predict") else (lambda: predictor)
        self.rate = rate
        self.max_text_chars = max_text_chars
        self._ip_key = self.secret("client-key").encode("ascii")

    @classmethod
    def open(cls, predictor: Any, db_url: str | None = None, rate: str | Rate | None = DEFAULT_RATE,
             max_text_chars: int = MAX_TEXT_CHARS) -> "Feedback":
        """Open (and on first use create) the database; SchemaError for an out-of-date one, StoreError for one that
        cannot be reached or used, ValueError for a bad rate."""
        rate = parse_rate(rate) if isinstance(rate, str) else rate
        engine = make_engine(resolve_url(db_url))
        try:
            ensure_current(engine)
            return cls(engine, predictor, rate, max_text_chars)
        except DBAPIError as err:
            engine.dispose()
            raise StoreError(f"cannot open the database {safe_url(str(engine.url))}: "
                             f"{str(err.orig).strip()[:300]}") from None

    @property
    def predictor(self) -> Any:
        return self._serving()

    @property
    def labels(self) -> list[str]:
        return list(self.predictor.labels)

    def registered_labels(self, model_version: str) -> list[str] | None:
        """The labels of a version in the model registry (same database), or None when it is not registered."""
        from feedback.models import ModelVersion

        with reading(self.engine) as conn:
            labels = conn.execute(select(ModelVersion.labels).where(ModelVersion.version == model_version)).scalar()
        return None if labels is None else list(labels)

    def labels_for(self, model_version: str) -> list[str]:
        """The label set of a correctable version (the served one's, else the registry's)."""
        served = self.predictor
        if model_version == served.version:
            return list(served.labels)
        return self.registered_labels(model_version) or []

    @property
    def version(self) -> str | None:
        return getattr(self.predictor, "version", None)

    # ---- who is writing --------------------------------------------------------------------------------
    def verify_token(self, presented: str | None = None, digest: str | None = None) -> Principal | None:
        """The owner of an active token (given in clear, or as its sha256 from a session), or None."""
        from feedback.tokens import MAX_TOKEN_CHARS, PREFIX

        if presented is not None:
            ok = len(presented) <= MAX_TOKEN_CHARS and presented.startswith(PREFIX)
            digest = hash_token(presented) if ok else None
        try:
            return verify_digest(self.engine, digest)
        except DBAPIError as err:
            raise Refused(503, f"the corrections store is unavailable ({type(err.orig).__name__}); try again later",
                          retry_after=5) from None

    def client_key_for_address(self, address: str | None) -> str:
        """A rate-limit key for an anonymous client: a keyed hash of its address, so the database holds no IPs."""
        digest = hmac.new(self._ip_key, (address or "unknown").encode("utf-8", "replace"), hashlib.sha256)
        return "ip:" + digest.hexdigest()[:32]

    def secret(self, name: str) -> str:
        """A random secret shared by every process on this database (made on first use, then read)."""
        with reading(self.engine) as conn:
            value = conn.execute(select(SiteSecret.value).where(SiteSecret.name == name)).scalar()
        if value is not None:
            return value
        with writing(self.engine, lock_key="feedback:secrets") as conn:
            value = conn.execute(select(SiteSecret.value).where(SiteSecret.name == name)).scalar()
            if value is None:
                value = secrets.token_hex(32)
                conn.execute(insert(SiteSecret).values(name=name, value=value))
        return value

    # ---- writing -------------------------------------------------------------------------------------------
    def check(self, text: Any, labels: Any, model_version: Any, suggested: Any = None, client_ref: Any = None,
              threshold: Any = None) -> tuple[Any, list[str]]:
        """Refused(400 / 409) with the reason for the first rule the correction breaks. When it may be stored:
        (the served predictor if it is the version corrected, else None; that version's labels)."""
        served = self.predictor
        problem = served.text_problem(text)
        if problem is None:
            problem = length_problem(text, self.max_text_chars) or storable_text_problem(text)
        if problem:
            raise Refused(400, f'"text" {problem}')
        if not isinstance(model_version, str) or not model_version:
            raise Refused(400, '"model_version" must be the version string a prediction answered with')
        model, known = served, list(served.labels)
        if model_version != served.version:
            model, known = None, self.registered_labels(model_version)
            if known is None:
                raise Refused(409, f'"model_version" {model_version[:64]!r} is not the model this site serves '
                                   f'({served.version}), nor a version in the model registry: predict again and '
                                   'correct what this model says')
        for problem in (labels_problem(labels, known),
                        suggestions_problem([] if suggested is None else suggested, known),
                        client_ref_problem(client_ref), served.threshold_problem(threshold)):
            if problem:
                raise Refused(400, problem)
        return model, known

    def submit(self, *, text: Any, labels: Any, model_version: Any, face: str, client_key: str,
               token_name: str | None = None, client_ref: Any = None, suggested: Any = None,
               threshold: Any = None) -> tuple[int, bool, dict[str, str]]:
        """Check and store one correction: (id, created, {label: confirmed|removed|added}). Refused otherwise."""
        model, known = self.check(text, labels, model_version, suggested, client_ref, threshold)
        shown = None if model is None else model.predict([text], threshold=threshold)[0]["predicted"]
        labels = model_order(labels, known)
        cid, created = record(self.engine, NewCorrection(
            text=text, labels=labels, shown=shown, model_version=model_version, face=face, client_key=client_key,
            token_name=token_name, client_ref=client_ref, threshold=None if threshold is None else float(threshold),
            suggested=[x.strip() for x in suggested or []]), rate=self.rate)
        return cid, created, {} if shown is None else label_changes(shown, labels)

    # ---- reading -------------------------------------------------------------------------------------------
    def stats(self, model_version: str | None = None) -> dict:
        return label_stats(self.engine, model_version)

    def recent(self, limit: int = 50) -> list[dict]:
        return recent(self.engine, limit)
