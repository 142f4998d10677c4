"""The web site: a form, a results page and a JSON API, all answered by one bundle's `Predictor`.

    python -m flask_app --bundle models/books/bundle                    # development server on 127.0.0.1:5000
    MLTC_BUNDLE=models/books/bundle gunicorn -w 2 --threads 4 -b 127.0.0.1:8000 'flask_app:create_app()'

$MLTC_BUNDLE names the bundle when none is passed; $MLTC_THREADS sets onnxruntime's threads per process
(with several gunicorn workers, 1 keeps them from oversubscribing the cores).

Routes: `GET /` form, `POST /` results page, `POST /api/predict` JSON, `GET /healthz`. Bad input gets a
message and a 4xx, never a 500; every response carries a strict Content-Security-Policy (no inline scripts
or styles: bars and colour swatches are SVG attributes, the sample buttons use static/app.js).
"""
from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from flask import Flask, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

import config
from deployment.examples import load_examples
from deployment.predictor import InputError, Predictor
from deployment.web import MAX_TEXT_CHARS, label_colors, length_problem

log = logging.getLogger(__name__)

DEFAULT_BUNDLE = config.MODELS_DIR / "books" / "bundle"   # what `make run` builds; override with MLTC_BUNDLE
MAX_BODY_BYTES = 2 * 1024 * 1024  # bodies over this get 413 before anything is parsed
MAX_TEXTS = 64                   # texts per API call
N_CANDIDATES = 5                 # labels below their threshold listed under the chips
N_EXAMPLES = 4                   # sample texts one click away on the form

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


class ConfigError(ValueError):
    """A bad server setting (an environment variable): the server does not start, the message names it."""


def _load_predictor(bundle_dir: Path, num_threads: int | None):
    from deployment.predictor import BundleError, Predictor   # imported here so the factory can run on a fake

    if not bundle_dir.is_dir():
        raise BundleError(f"bundle directory not found: {bundle_dir} (pass --bundle DIR or set MLTC_BUNDLE; "
                          f"`make run` builds {DEFAULT_BUNDLE})")
    return Predictor.from_bundle(bundle_dir, num_threads=num_threads)


def _threads_from_env() -> int | None:
    """$MLTC_THREADS as a positive integer (None when unset); a bad value stops the start with a message."""
    raw = os.environ.get("MLTC_THREADS", "").strip()
    if not raw:
        return None
    if not (raw.isascii() and raw.isdigit() and int(raw) >= 1):
        raise ConfigError(f"MLTC_THREADS must be an integer >= 1 (onnxruntime threads per process), got {raw!r}")
    return int(raw)


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


def create_app(bundle_dir: str | Path | None = None, *, predictor: Any = None, testing: bool = False,
               max_text_chars: int = MAX_TEXT_CHARS, max_body_bytes: int = MAX_BODY_BYTES,
               max_texts: int = MAX_TEXTS, num_threads: int | None = None) -> Flask:
    """Build the site around `predictor`, or a `Predictor` loaded from `bundle_dir` / $MLTC_BUNDLE.

    A missing or corrupt bundle raises `BundleError` here, at startup, naming the path.
    """
    if predictor is None:
        bundle_dir = Path(bundle_dir or os.environ.get("MLTC_BUNDLE") or DEFAULT_BUNDLE).resolve()
        if num_threads is None:
            num_threads = _threads_from_env()
        predictor = _load_predictor(bundle_dir, num_threads)
    elif bundle_dir is not None:
        bundle_dir = Path(bundle_dir).resolve()

    app = Flask(__name__)
    app.config.update(
        TESTING=testing,
        MAX_CONTENT_LENGTH=max_body_bytes,       # werkzeug answers 413 for larger bodies
        MAX_FORM_MEMORY_SIZE=max_body_bytes,     # ... and for a larger single form field
    )
    app.json.sort_keys = False   # keep predictions' keys in the documented order
    info = dict(getattr(predictor, "info", None) or {})
    labels = list(predictor.labels)
    thresholds = [float(t) for t in predictor.thresholds]
    examples = load_examples(bundle_dir, N_EXAMPLES)
    colors = label_colors(info)
    dataset = info.get("source_dataset")
    if isinstance(dataset, dict):   # the contract leaves its shape open: a name or a small description
        dataset = dataset.get("name") or dataset.get("path")
    site = {
        "info": info,
        "dataset": Path(str(dataset)).name if dataset else None,
        "n_labels": len(labels),
        "max_length": predictor.max_length,
        "max_text_chars": max_text_chars,
        "global_threshold": info.get("global_threshold"),
        "threshold_range": (min(thresholds), max(thresholds)) if thresholds else None,
        "examples": examples,
        "colors": colors,
    }

    # ---- input checks shared by the form and the API: the predictor's own rules (Predictor.*_problem), ----
    # run here only to name the field in the message; the web adds its length limit and parses form strings.
    def check_text(text: Any, where: str = "text") -> str:
        problem = Predictor.text_problem(text) or length_problem(text, max_text_chars)
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

    def check_top_k(value: Any) -> int | None:
        problem = Predictor.top_k_problem(value)
        if problem:
            raise InputError(problem)
        return None if value is None else min(int(value), len(labels))

    def notice(pred: dict) -> str | None:
        if not pred.get("truncated"):
            return None
        return (f"The text is longer than the model reads ({pred.get('n_tokens', '?')} tokens; it reads "
                f"{predictor.max_length}), so the prediction is based on the part that fits.")

    # ---- pages ------------------------------------------------------------------------------------------
    @app.get("/")
    def index():
        return render_template("index.html", site=site, text="", threshold="", error=None)

    @app.post("/")
    def predict_page():
        text = request.form.get("text", "")
        threshold_raw = request.form.get("threshold", "").strip()
        try:
            if not text.strip():   # the sample buttons submit their index when JavaScript is off
                sample = sample_index(request.form.get("sample"), len(examples.items))
                if sample is not None:
                    text = examples.items[sample].text
            text = check_text(text)
            threshold = check_threshold(threshold_raw, from_form=True)
        except InputError as err:
            return render_template("index.html", site=site, text=text, threshold=threshold_raw,
                                   error=str(err)), 400
        pred = predictor.predict([text], threshold=threshold)[0]
        scored = pred["labels"]
        chosen = [x for x in scored if x["predicted"]]
        candidates = [x for x in scored if not x["predicted"]][:N_CANDIDATES]
        # A bundle's test texts know their true labels: show them beside the prediction.
        known = next((ex.labels for ex in examples.items if ex.labels and ex.text == text.strip()), None)
        return render_template("result.html", site=site, text=text, threshold=threshold,
                               threshold_raw=threshold_raw, chosen=chosen, candidates=candidates,
                               notice=notice(pred), n_tokens=pred.get("n_tokens"), known=known)

    # ---- JSON API ---------------------------------------------------------------------------------------
    @app.post("/api/predict")
    def api_predict():
        body = read_json_body()
        if not isinstance(body, dict):
            raise InputError('the body must be a JSON object: {"text": "..."} or {"texts": ["...", ...]}')
        unknown = set(body) - {"text", "texts", "threshold", "top_k"}
        if unknown:
            raise InputError(f"unknown field(s): {', '.join(sorted(unknown))}")
        if ("text" in body) == ("texts" in body):
            raise InputError('give exactly one of "text" (a string) or "texts" (a list of strings)')
        if "text" in body:
            texts = [check_text(body["text"])]
        else:
            texts = body["texts"]
            if not isinstance(texts, list) or not texts:
                raise InputError('"texts" must be a non-empty list of strings')
            if len(texts) > max_texts:
                raise InputError(f'"texts" has {len(texts)} items; the limit is {max_texts} per request')
            texts = [check_text(t, f"texts[{i}]") for i, t in enumerate(texts)]
        threshold = check_threshold(body.get("threshold"))
        top_k = check_top_k(body.get("top_k"))
        preds = predictor.predict(texts, threshold=threshold, top_k=top_k)
        warnings = [f"texts[{i}]: {msg}" for i, p in enumerate(preds) if (msg := notice(p))]
        return jsonify({
            "predictions": preds,
            "threshold": threshold,   # null: each label's tuned threshold (also in every label's "threshold")
            "threshold_mode": "tuned per label" if threshold is None else "one for every label",
            "top_k": top_k,
            "warnings": warnings,
            "model": {"format_version": info.get("format_version"), "created": info.get("created"),
                      "backbone": info.get("backbone")},
        })

    @app.get("/healthz")
    def healthz():
        return jsonify({
            "status": "ok",
            "model_loaded": True,
            "labels": len(labels),
            "bundle_version": info.get("format_version"),
            "bundle_created": info.get("created"),
            "backbone": info.get("backbone"),
            "max_length": predictor.max_length,
        })

    # ---- errors and headers -----------------------------------------------------------------------------
    def wants_json() -> bool:
        return request.path.startswith("/api/") or request.path == "/healthz"

    @app.errorhandler(InputError)
    def input_error(err: InputError):
        """A request the client can fix: a 400 with the message, as JSON (API) or on the form (pages)."""
        if wants_json():
            return jsonify({"error": str(err)}), 400
        return render_template("index.html", site=site, text=request.form.get("text", ""),
                               threshold=request.form.get("threshold", ""), error=str(err)), 400

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException):
        message = {413: f"The request is too large (the limit is {max_body_bytes:,} bytes).",
                   404: "There is no page at this address.",
                   405: "This address does not accept that method."}.get(err.code, err.description)
        if wants_json():
            return jsonify({"error": message, "status": err.code}), err.code
        return render_template("error.html", site=site, code=err.code, title=err.name, message=message), err.code

    @app.errorhandler(Exception)
    def server_error(err: Exception):   # a bug, not bad input: log it, show nothing internal
        log.exception("unhandled error on %s %s", request.method, request.path)
        if wants_json():
            return jsonify({"error": "internal error", "status": 500}), 500
        return render_template("error.html", site=site, code=500, title="Internal error",
                               message="Something went wrong on our side."), 500

    @app.after_request
    def security_headers(response):
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        return response

    @app.template_filter("pct")
    def pct(x: float) -> str:
        return f"{100 * x:.1f}%" if math.isfinite(x) else "–"

    return app
