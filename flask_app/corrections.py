"""The site's corrections: the results page's "Save correction" form, the JSON API and the operator page.

    python -m flask_app --bundle models/books/bundle --feedback [--db URL]     # development server
    MLTC_FEEDBACK=1 MLTC_DB_URL=... gunicorn -w 2 --threads 4 'flask_app:create_app()'

    POST /feedback                 the results page's form (CSRF token from the page; anonymous, rate-limited)
    POST /api/feedback             JSON {"text", "labels": [full correct set], "model_version"[, "client_ref",
                                   "suggested_labels", "threshold"]} with `Authorization: Bearer TOKEN` -> 201 {"id", ...}
    GET  /api/feedback/stats       per-label confirmed / removed / added by model version (operator token)
    GET  /feedback/operator        recent corrections and the same counts as tables (operator token: a Bearer
                                   header, or the login form, which keeps the token's hash in a signed cookie)

Writes are off unless the site was started with --feedback or MLTC_FEEDBACK=1; then these routes answer 403.
The rules live in feedback.service; this module reads requests and answers: every refused write is a 4xx with
the reason (503 when the database cannot be reached), never a 500. The form's CSRF token is signed with a key
kept in the database (or $MLTC_SECRET_KEY), so every gunicorn worker accepts every other worker's tokens.
$MLTC_FEEDBACK_RATE (default 120/minute, `off` for none) bounds the corrections stored per client (token, or
address for the form) in the database, so it holds across workers and restarts.
"""
from __future__ import annotations

import gc
import hmac
import os
import secrets
from typing import Any

from flask import (Blueprint, Flask, current_app, jsonify, redirect, render_template, request, session,
                   url_for)
from flask.sessions import SecureCookieSessionInterface
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from deployment.predictor import InputError
from deployment.web import MAX_TEXT_CHARS
from deployment.version import short_version
from flask_app.app import ConfigError, flag_from_env, current_site

FEEDBACK_KEY = "mltc_feedback"       # app.extensions key of the feedback.service.Feedback (None: writes off)
CSRF_MAX_AGE_S = 12 * 3600           # a results page older than this must be reloaded before saving
RECENT = 50                          # corrections listed on the operator page
OFF = "corrections are off on this site: start it with --feedback (or MLTC_FEEDBACK=1 under gunicorn)"

NO_SESSION = ("/api/", "/static/", "/healthz")   # routes that never read or write the session cookie

bp = Blueprint("feedback", __name__)


class PageSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, opened only for the pages (the CSRF nonce, the operator's sign-in): opening
    one on every request cost /api/predict 0.5-1 ms at p50 under gunicorn on these cores (bench/feedback.py)."""

    def open_session(self, app, request):
        if request.path.startswith(NO_SESSION):
            return self.make_null_session(app)
        return super().open_session(app, request)


class Denied(Exception):
    """A request refused before it reaches the store (auth, CSRF, writes off)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


# ---- setup -----------------------------------------------------------------------------------------------
def enabled_from_env() -> bool:
    return flag_from_env("MLTC_FEEDBACK", "corrections on or off")


def register_feedback(app: Flask, serving: Any, first: Any, enabled: bool | None = None, db_url: str | None = None,
                      max_text_chars: int | None = None) -> None:
    """Register the routes; with `enabled` (None: $MLTC_FEEDBACK) open the store for the served model: `serving()`
    is the predictor answering the current request (it changes when the registry swaps models), `first` the one
    loaded at start. A store that cannot be used (out-of-date schema, bad URL or rate, unreachable server) is a
    ConfigError."""
    app.register_blueprint(bp)
    app.extensions[FEEDBACK_KEY] = None
    if not (enabled_from_env() if enabled is None else enabled):
        return
    from feedback.db import StoreError
    from feedback.schema import SchemaError
    from feedback.service import DEFAULT_RATE, Feedback

    rate = os.environ.get("MLTC_FEEDBACK_RATE", "").strip() or DEFAULT_RATE
    if getattr(first, "version", None) is None:
        raise ConfigError("corrections need the served model's version (a Predictor loaded with from_bundle)")
    try:
        fb = Feedback.open(serving, db_url=db_url, rate=rate, max_text_chars=max_text_chars or MAX_TEXT_CHARS)
    except ValueError as err:   # the rate
        raise ConfigError(f"MLTC_FEEDBACK_RATE: {err}") from None
    except (SchemaError, StoreError) as err:
        raise ConfigError(f"corrections store: {err}") from None
    app.secret_key = os.environ.get("MLTC_SECRET_KEY") or fb.secret("flask-session")
    app.session_interface = PageSessions()
    app.config.update(SESSION_COOKIE_SAMESITE="Strict", SESSION_COOKIE_HTTPONLY=True,
                      SESSION_COOKIE_NAME="mltc_session")
    app.extensions[FEEDBACK_KEY] = fb
    install_refusal_handler(app)
    # The store's libraries (SQLAlchemy, Alembic, psycopg) more than double the objects the cyclic garbage collector
    # scans in a full collection (43k -> 98k; 17 -> 52 ms on 2 busy cores), which the predictions' 99th
    # percentile paid (bench/feedback.py). They live as long as the process: take them out of the scans.
    gc.freeze()


def service():
    fb = current_app.extensions.get(FEEDBACK_KEY)
    if fb is None:
        raise Denied(403, OFF)
    return fb


# ---- CSRF (a per-session nonce in the signed cookie; the form carries it signed and timed) ----------------
def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.secret_key, salt="mltc-csrf")


def csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(24)
    return _serializer().dumps(session["csrf"])


def check_csrf() -> None:
    token, nonce = request.form.get("csrf_token", ""), session.get("csrf")
    if not token:
        raise Denied(403, "the form has no CSRF token: reload the results page and save again")
    if not nonce:
        raise Denied(403, "this browser sent no session cookie with the form (cookies off, or a new session): "
                          "reload the results page and save again")
    try:
        value = _serializer().loads(token, max_age=CSRF_MAX_AGE_S)
    except SignatureExpired:
        raise Denied(403, "the form is too old: reload the results page and save again") from None
    except BadSignature:
        raise Denied(403, "the form's CSRF token is not valid: reload the results page and save again") from None
    if not (isinstance(value, str) and hmac.compare_digest(value, nonce)):
        raise Denied(403, "the form's CSRF token belongs to another session: reload the results page and save again")


@bp.app_context_processor
def correction_context() -> dict:
    """What templates/_correction.html needs on the results page (nothing when writes are off)."""
    fb = current_app.extensions.get(FEEDBACK_KEY)
    if fb is None:
        return {"correction": None}
    predictor = current_site().predictor   # the model that answered this page
    return {"correction": {"labels": list(predictor.labels), "model_version": predictor.version,
                           "short": short_version(predictor.version)},
            "csrf_token": csrf_token}


# ---- who is asking ---------------------------------------------------------------------------------------
def bearer_principal(required: bool = True):
    from feedback.tokens import bearer

    header = request.headers.get("Authorization")
    token = bearer(header)
    if token is None:
        if not required:
            return None
        raise Denied(401, "a bearer token is needed: send `Authorization: Bearer <token>` "
                          "(an operator makes one with `python -m feedback tokens add NAME`)")
    principal = service().verify_token(token)
    if principal is None:
        raise Denied(401, "the bearer token is not valid (unknown or revoked)")
    return principal


def operator_principal():
    """An operator from the Bearer header or the login cookie; Denied(401 / 403) otherwise."""
    principal = bearer_principal(required=False)
    if principal is None and session.get("operator"):
        principal = service().verify_token(digest=session.get("operator"))
        if principal is None:
            session.pop("operator", None)
    if principal is None:
        raise Denied(401, "an operator token is needed")
    if not principal.operator:
        raise Denied(403, f"the token of {principal.name!r} may write corrections but not read them: "
                          "make an operator token with `python -m feedback tokens add NAME --operator`")
    return principal


# ---- JSON API --------------------------------------------------------------------------------------------
API_FIELDS = {"text", "labels", "model_version", "client_ref", "suggested_labels", "threshold"}


def changes_by_kind(changes: dict[str, str]) -> dict[str, list[str]]:
    out = {"confirmed": [], "removed": [], "added": []}
    for label, change in changes.items():
        out[change].append(label)
    return out


@bp.post("/api/feedback")
def api_feedback():
    from flask_app.routes import read_json_body

    fb = service()
    principal = bearer_principal()
    body = read_json_body()
    if not isinstance(body, dict):
        raise InputError('the body must be a JSON object: {"text": "...", "labels": [...], "model_version": "..."}')
    unknown = sorted(set(body) - API_FIELDS)
    if unknown:
        raise InputError(f"unknown field(s): {', '.join(x[:40] for x in unknown[:10])}")
    missing = [k for k in ("text", "labels", "model_version") if k not in body]
    if missing:
        raise InputError(f"missing field(s): {', '.join(missing)} (labels is the full correct set, [] for none)")
    cid, created, changes = fb.submit(
        text=body["text"], labels=body["labels"], model_version=body["model_version"], face="api",
        client_key=f"token:{principal.name}", token_name=principal.name, client_ref=body.get("client_ref"),
        suggested=body.get("suggested_labels"), threshold=body.get("threshold"))
    return jsonify({"id": cid, "created": created, "model_version": body["model_version"],
                    "labels": [x for x in fb.labels_for(body["model_version"]) if x in set(body["labels"])],
                    "changes": changes_by_kind(changes)}), (201 if created else 200)


@bp.get("/api/feedback/stats")
def api_stats():
    fb = service()
    operator_principal()
    version = request.args.get("model_version") or None
    return jsonify({"served_model_version": fb.version, **fb.stats(version)})


# ---- the results page's form -----------------------------------------------------------------------------
def form_threshold(raw: str) -> float | None:
    raw = raw.strip()
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        raise InputError(f"threshold must be a number between 0 and 1, got {raw[:20]!r}") from None


def wants_json() -> bool:
    return request.accept_mimetypes.best_match(["text/html", "application/json"]) == "application/json"


@bp.post("/feedback")
def form_save():
    fb = service()
    check_csrf()
    labels = request.form.getlist("labels")
    suggested = [line.strip() for line in request.form.get("suggested", "").splitlines() if line.strip()]
    cid, _, changes = fb.submit(
        text=request.form.get("text", ""), labels=labels, model_version=request.form.get("model_version", ""),
        face="web", client_key=fb.client_key_for_address(request.remote_addr), suggested=suggested,
        threshold=form_threshold(request.form.get("threshold", "")))
    kinds = changes_by_kind(changes)
    parts = [f"{len(kinds['confirmed'])} confirmed", f"{len(kinds['removed'])} removed", f"{len(kinds['added'])} added"]
    message = f"Correction saved (#{cid}): {', '.join(parts)}. Thank you."
    if wants_json():
        return jsonify({"id": cid, "message": message, "changes": kinds}), 201
    return render_template("feedback_saved.html", site=current_site().page, ok=True,
                           title="Correction saved", message=message, changes=kinds, suggested=suggested), 201


# ---- operator page ---------------------------------------------------------------------------------------
@bp.get("/feedback/operator")
def operator_page():
    fb = service()
    try:
        principal = operator_principal()
    except Denied as err:
        return render_template("operator_login.html", site=current_site().page,
                               error=None if err.status == 401 and not request.headers.get("Authorization")
                               else str(err)), err.status
    return render_template("operator.html", site=current_site().page, operator=principal.name,
                           stats=fb.stats(), recent=fb.recent(RECENT), served=fb.version, short=short_version)


@bp.post("/feedback/operator/login")
def operator_login():
    from feedback.tokens import hash_token

    fb = service()
    check_csrf()
    token = request.form.get("token", "").strip()
    principal = fb.verify_token(token)
    if principal is None or not principal.operator:
        message = "that is not a valid operator token" if principal is None else \
            f"the token of {principal.name!r} is not an operator token"
        return render_template("operator_login.html", site=current_site().page,
                               error=message), 401 if principal is None else 403
    session["operator"] = hash_token(token)
    return redirect(url_for("feedback.operator_page"), code=303)


@bp.post("/feedback/operator/logout")
def operator_logout():
    service()
    check_csrf()
    session.pop("operator", None)
    return redirect(url_for("feedback.operator_page"), code=303)


# ---- refusals --------------------------------------------------------------------------------------------
def _refusal(status: int, message: str, retry_after: int | None = None):
    if request.path.startswith("/api/") or wants_json():
        response = jsonify({"error": message, "status": status})
    else:
        title = "Not signed in" if request.path.startswith("/feedback/operator") else "Correction not saved"
        response = current_app.make_response((render_template(
            "feedback_saved.html", site=current_site().page, ok=False, title=title,
            message=message, changes=None, suggested=[]), status))
    response.status_code = status
    if status == 401 and request.path.startswith("/api/"):
        response.headers["WWW-Authenticate"] = 'Bearer realm="corrections"'
    if retry_after:
        response.headers["Retry-After"] = str(retry_after)
    return response


@bp.errorhandler(Denied)
def denied(err: Denied):
    return _refusal(err.status, str(err))


@bp.errorhandler(InputError)
def bad_input(err: InputError):
    return _refusal(400, str(err))


def _refused(err):
    return _refusal(err.status, str(err), err.retry_after)


def install_refusal_handler(app: Flask) -> None:
    """feedback.store.Refused is imported only when writes are on; its handler is registered then."""
    from feedback.store import Refused

    app.register_error_handler(Refused, _refused)
