"""The site's routes, as a Blueprint registered by `flask_app.app.create_app` (the factory keeps a `Site`,
the predictor and what the pages show, in `app.extensions`).

    GET  /              the form, with sample texts one click away
    POST /              the results page: the predicted labels as chips with confidence bars, and (the form's
                        "explain" box, ticked by default) the text with each predicted label's evidence highlighted
    POST /api/predict   JSON: {"text": "..."} or {"texts": [...]}, optional "threshold", "top_k" and "explain"
    GET  /healthz       JSON: the loaded bundle

Text, threshold and top_k are judged by the predictor's own rules (`Predictor.*_problem`); these routes add
only what is the web's: the request's shape, the length limit, parsing form fields. A request the client can
fix gets a 400 with the message (JSON on the API, the form again on pages), never a 500. Every response
carries a strict Content-Security-Policy (no inline scripts or styles: bars and colour swatches are SVG
attributes, the sample buttons use static/app.js).
"""
from __future__ import annotations

import json
import logging
import math
from typing import Any

from flask import Blueprint, current_app, jsonify, make_response, render_template, request
from werkzeug.exceptions import HTTPException

from deployment.predictor import InputError, Predictor
from deployment.web import highlights, length_problem, segments, truncation_notice
from flask_app.app import MODELS_KEY, Site, current_site

log = logging.getLogger("flask_app.app")   # the name operators filter on; unchanged by the move to a Blueprint

N_CANDIDATES = 5                 # labels below their threshold listed under the chips
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}

bp = Blueprint("site", __name__)


def site() -> Site:
    """The Site of the model answering this request (the same one for the whole request)."""
    return current_site()


# ---- reading a request ------------------------------------------------------------------------------------
def read_json_body() -> Any:
    """The request body parsed as JSON, whatever the content type; InputError when it is not JSON.

    Not `request.get_json(silent=True)`: that swallows ValueError but lets RecursionError (a body nested a
    few thousand levels deep) escape as a 500. The size limit (413) applies before this reads anything.
    """
    raw = request.get_data(cache=True)
    example = 'the body must be a JSON object: {"text": "..."} or {"texts": ["...", ...]}'
    try:
        return json.loads(raw)          # bytes: UTF-8/16/32 detected as the JSON RFC says
    except RecursionError:
        raise InputError(f"{example}; this one is nested too deeply to read") from None
    except UnicodeDecodeError as err:
        raise InputError(f"{example}; this one is not UTF-8 text (byte {err.start}: {err.reason})") from None
    except json.JSONDecodeError as err:
        raise InputError(f"{example}; this one is not valid JSON ({err.msg} at line {err.lineno} column {err.colno})") from None
    except ValueError:                  # an integer literal beyond Python's 4300-digit limit
        raise InputError(f"{example}; this one holds a number too long to read") from None


def sample_index(value: str | None, n_examples: int) -> int | None:
    """The form's `sample` field (the no-JavaScript sample buttons) as an index; None when absent.

    Only ASCII digits count: "²".isdigit() is true but int("²") fails, and "٣" is a digit int() reads.
    """
    if value is None or value == "":
        return None
    if not (value.isascii() and value.isdigit() and int(value) < n_examples):
        raise InputError(f"there is no sample {value[:20]!r}; pick one of the {n_examples} examples or type a text")
    return int(value)


def check_text(text: Any, where: str = "text") -> str:
    """The predictor's rule, run here to name the field in the message, plus the web's length limit."""
    problem = Predictor.text_problem(text) or length_problem(text, site().max_text_chars)
    if problem:
        raise InputError(f"{where} {problem}")
    return text


def check_threshold(value: Any, from_form: bool = False) -> float | None:
    if from_form:   # a form field is a string: "" means the tuned thresholds
        if value == "":
            return None
        try:
            value = float(value)
        except ValueError:
            pass        # left a string: threshold_problem says what is wrong with it
    problem = Predictor.threshold_problem(value)
    if problem:
        raise InputError(problem)
    return None if value is None else float(value)


def check_explain(value: Any) -> bool:
    """true or false; null (like an absent field, and like null for threshold and top_k) is the default, false."""
    if value is None:
        return False
    problem = Predictor.explain_problem(value)
    if problem:
        raise InputError(problem)
    return bool(value)


def check_top_k(value: Any) -> int | None:
    problem = Predictor.top_k_problem(value)
    if problem:
        raise InputError(problem)
    return None if value is None else min(int(value), len(site().predictor.labels))


def notice(pred: dict) -> str | None:
    predictor = site().predictor
    return truncation_notice(pred, predictor.max_length, predictor.info.get("windows"))


def wants_json() -> bool:
    return request.path.startswith("/api/") or request.path == "/healthz"


# ---- pages ------------------------------------------------------------------------------------------------
@bp.get("/")
def index():
    return render_template("index.html", site=site().page, text="", threshold="", explain=True, error=None)


def evidence_view(text: str, pred: dict) -> dict:
    """The results page's highlighted text: the legend's labels and the text's segments (templates/result.html)."""
    marked = highlights(pred)
    return {"labels": marked, "segments": segments(text, marked),
            "unmarked": [x["label"] for x in pred["labels"] if x["predicted"]][len(marked):]}


@bp.post("/")
def predict_page():
    s = site()
    text = request.form.get("text", "")
    threshold_raw = request.form.get("threshold", "").strip()
    explain = "explain" in request.form   # a ticked checkbox is sent, an unticked one is not
    try:
        if not text.strip():   # the sample buttons submit their index when JavaScript is off
            sample = sample_index(request.form.get("sample"), len(s.examples.items))
            if sample is not None:
                text = s.examples.items[sample].text
        text = check_text(text)
        threshold = check_threshold(threshold_raw, from_form=True)
    except InputError as err:
        return render_template("index.html", site=s.page, text=text, threshold=threshold_raw, explain=explain,
                               error=str(err)), 400
    pred = s.predictor.predict([text], threshold=threshold, explain=explain)[0]
    scored = pred["labels"]
    chosen = [x for x in scored if x["predicted"]]
    candidates = [x for x in scored if not x["predicted"]][:N_CANDIDATES]
    # A bundle's test texts know their true labels: show them beside the prediction.
    known = next((ex.labels for ex in s.examples.items if ex.labels and ex.text == text.strip()), None)
    return render_template("result.html", site=s.page, text=text, threshold=threshold,
                           threshold_raw=threshold_raw, chosen=chosen, candidates=candidates,
                           notice=notice(pred), n_tokens=pred.get("n_tokens"), known=known, explain=explain,
                           evidence=evidence_view(text, pred) if explain else None)


# ---- JSON API ---------------------------------------------------------------------------------------------
def api_texts(body: Any) -> list[str]:
    """The texts of an API request, after checking its shape: exactly one of "text" or "texts"."""
    if not isinstance(body, dict):
        raise InputError('the body must be a JSON object: {"text": "..."} or {"texts": ["...", ...]}')
    unknown = set(body) - {"text", "texts", "threshold", "top_k", "explain"}
    if unknown:
        raise InputError(f"unknown field(s): {', '.join(sorted(unknown))}")
    if ("text" in body) == ("texts" in body):
        raise InputError('give exactly one of "text" (a string) or "texts" (a list of strings)')
    if "text" in body:
        return [check_text(body["text"])]
    texts, limit = body["texts"], site().max_texts
    if not isinstance(texts, list) or not texts:
        raise InputError('"texts" must be a non-empty list of strings')
    if len(texts) > limit:
        raise InputError(f'"texts" has {len(texts)} items; the limit is {limit} per request')
    return [check_text(t, f"texts[{i}]") for i, t in enumerate(texts)]


@bp.post("/api/predict")
def api_predict():
    s = site()
    body = read_json_body()
    texts = api_texts(body)
    threshold = check_threshold(body.get("threshold"))
    top_k = check_top_k(body.get("top_k"))
    explain = check_explain(body.get("explain"))
    preds = s.predictor.predict(texts, threshold=threshold, top_k=top_k, explain=explain)
    warnings = [f"texts[{i}]: {msg}" for i, p in enumerate(preds) if (msg := notice(p))]
    return jsonify({
        "predictions": preds,
        "threshold": threshold,   # null: each label's tuned threshold (also in every label's "threshold")
        "threshold_mode": "tuned per label" if threshold is None else "one for every label",
        "top_k": top_k,
        "warnings": warnings,
        "model": {"format_version": s.info.get("format_version"), "created": s.info.get("created"),
                  "backbone": s.info.get("backbone")},
        "model_version": s.page["model_version"],   # what a correction of these predictions names (POST /api/feedback)
    })


@bp.get("/healthz")
def healthz():
    s = site()
    return jsonify({
        "status": "ok",
        "model_loaded": True,
        "labels": len(s.predictor.labels),
        "bundle_version": s.info.get("format_version"),
        "bundle_created": s.info.get("created"),
        "backbone": s.info.get("backbone"),
        "max_length": s.predictor.max_length,
        "model_version": s.page["model_version"],
        "serving": current_app.extensions[MODELS_KEY].status(),   # {"mode": "bundle" | "registry", ...}
    })


# ---- errors and headers (app-wide: unknown routes are not the Blueprint's) --------------------------------
@bp.app_errorhandler(InputError)
def input_error(err: InputError):
    """A request the client can fix: a 400 with the message, as JSON (API) or on the form (pages)."""
    if wants_json():
        return jsonify({"error": str(err)}), 400
    return render_template("index.html", site=site().page, text=request.form.get("text", ""),
                           threshold=request.form.get("threshold", ""), explain="explain" in request.form,
                           error=str(err)), 400


@bp.app_errorhandler(HTTPException)
def http_error(err: HTTPException):
    """The site's own page (or JSON) for an HTTP error, with the exception's headers kept: a 405's `Allow`
    (RFC 9110 §15.5.6), a `Retry-After`, a `WWW-Authenticate`; only its Content-Type is ours."""
    message = {413: f"The request is too large (the limit is {site().max_body_bytes:,} bytes).",
               404: "There is no page at this address.",
               405: "This address does not accept that method."}.get(err.code, err.description)
    if wants_json():
        response = jsonify({"error": message, "status": err.code})
    else:
        response = make_response(render_template("error.html", site=site().page, code=err.code, title=err.name,
                                                 message=message))
    response.status_code = err.code
    for key, value in err.get_response().headers.items():   # get_headers() plus what a subclass adds
        if key.lower() not in ("content-type", "content-length"):
            response.headers.add(key, value)
    return response


@bp.app_errorhandler(Exception)
def server_error(err: Exception):   # a bug, not bad input: log it, show nothing internal
    log.exception("unhandled error on %s %s", request.method, request.path)
    if wants_json():
        return jsonify({"error": "internal error", "status": 500}), 500
    return render_template("error.html", site=site().page, code=500, title="Internal error",
                           message="Something went wrong on our side."), 500


@bp.after_app_request
def security_headers(response):
    for key, value in SECURITY_HEADERS.items():
        response.headers.setdefault(key, value)
    return response


@bp.app_template_filter("pct")
def pct(x: float) -> str:
    return f"{100 * x:.1f}%" if math.isfinite(x) else "–"
