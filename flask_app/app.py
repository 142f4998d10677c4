"""The web site: a form, a results page and a JSON API, all answered by one bundle's `Predictor`.

    python -m flask_app --bundle models/books/bundle                    # development server on 127.0.0.1:5000
    MLTC_BUNDLE=models/books/bundle gunicorn -w 2 --threads 4 -b 127.0.0.1:8000 'flask_app:create_app()'

$MLTC_BUNDLE names the bundle when none is passed; $MLTC_THREADS sets onnxruntime's threads per process
(with several gunicorn workers, 1 keeps them from oversubscribing the cores).

This module is the app factory: load the predictor, gather what the pages show about the model (`Site`),
register the routes. The routes live in flask_app/routes.py as a Blueprint (`GET /` form, `POST /` results
page, `POST /api/predict` JSON, `GET /healthz`). Bad input gets a message and a 4xx, never a 500; every
response carries a strict Content-Security-Policy.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask
from flask.json.provider import DefaultJSONProvider

import config
from deployment.examples import Examples, load_examples
from deployment.formats import finite
from deployment.predictor import BundleError, Predictor
from deployment.web import MAX_TEXT_CHARS, label_colors, reading

DEFAULT_BUNDLE = config.MODELS_DIR / "books" / "bundle"   # what `make run` builds; override with MLTC_BUNDLE
MAX_BODY_BYTES = 2 * 1024 * 1024  # bodies over this get 413 before anything is parsed
MAX_TEXTS = 64                   # texts per API call
N_EXAMPLES = 4                   # sample texts one click away on the form
SITE_KEY = "mltc_site"           # where create_app keeps the Site in app.extensions


class StrictJSONProvider(DefaultJSONProvider):
    """Every JSON answer (and the templates' `tojson`) is RFC 8259 JSON: a NaN or infinity anywhere (a hostile
    bundle.json's `created`, say) is written as null, never as a bare `NaN` (deployment/formats.py)."""

    sort_keys = False   # keep predictions' keys in the documented order

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return super().dumps(finite(obj), allow_nan=False, **kwargs)


class ConfigError(ValueError):
    """A bad server setting (an environment variable): the server does not start, the message names it."""


@dataclass(frozen=True)
class Site:
    """What the routes need, built once per app: the predictor, the limits, and `page`, what every template
    shows about the model (its `site` variable)."""

    predictor: Any
    examples: Examples
    page: dict
    max_text_chars: int
    max_body_bytes: int
    max_texts: int

    @property
    def info(self) -> dict:
        return self.page["info"]

    @classmethod
    def build(cls, predictor: Any, bundle_dir: Path | None, max_text_chars: int, max_body_bytes: int,
              max_texts: int) -> "Site":
        info = dict(getattr(predictor, "info", None) or {})
        thresholds = [float(t) for t in predictor.thresholds]
        examples = load_examples(bundle_dir, N_EXAMPLES)
        dataset = info.get("source_dataset")
        if isinstance(dataset, dict):   # the contract leaves its shape open: a name or a small description
            dataset = dataset.get("name") or dataset.get("path")
        page = {
            "info": info,
            "dataset": Path(str(dataset)).name if dataset else None,
            "n_labels": len(predictor.labels),
            "max_length": predictor.max_length,
            "reads": reading(predictor.max_length, info.get("windows")),
            "max_text_chars": max_text_chars,
            "global_threshold": info.get("global_threshold"),
            "threshold_range": (min(thresholds), max(thresholds)) if thresholds else None,
            "examples": examples,
            "colors": label_colors(info),
            "model_version": getattr(predictor, "version", None),   # the bundle's content hash (deployment/version.py)
        }
        return cls(predictor, examples, page, max_text_chars, max_body_bytes, max_texts)


def _threads_from_env() -> int | None:
    """$MLTC_THREADS as a positive integer (None when unset); a bad value stops the start with a message."""
    raw = os.environ.get("MLTC_THREADS", "").strip()
    if not raw:
        return None
    if not (raw.isascii() and raw.isdigit() and int(raw) >= 1):
        raise ConfigError(f"MLTC_THREADS must be an integer >= 1 (onnxruntime threads per process), got {raw!r}")
    return int(raw)


def _load_predictor(bundle_dir: str | Path | None, num_threads: int | None) -> tuple[Predictor, Path]:
    """The bundle named by the argument, else $MLTC_BUNDLE, else the default; BundleError names a missing one."""
    bundle_dir = Path(bundle_dir or os.environ.get("MLTC_BUNDLE") or DEFAULT_BUNDLE).resolve()
    if not bundle_dir.is_dir():
        raise BundleError(f"bundle directory not found: {bundle_dir} (pass --bundle DIR or set MLTC_BUNDLE; "
                          f"`make run` builds {DEFAULT_BUNDLE})")
    threads = num_threads if num_threads is not None else _threads_from_env()
    return Predictor.from_bundle(bundle_dir, num_threads=threads), bundle_dir


def create_app(bundle_dir: str | Path | None = None, *, predictor: Any = None, testing: bool = False,
               max_text_chars: int = MAX_TEXT_CHARS, max_body_bytes: int = MAX_BODY_BYTES,
               max_texts: int = MAX_TEXTS, num_threads: int | None = None, feedback: bool | None = None,
               db_url: str | None = None) -> Flask:
    """Build the site around `predictor`, or a `Predictor` loaded from `bundle_dir` / $MLTC_BUNDLE.

    A missing or corrupt bundle raises `BundleError` here, at startup, naming the path. `feedback` turns
    corrections on (None: $MLTC_FEEDBACK), stored in `db_url` (None: $MLTC_DB_URL, else data/feedback.db); an
    unusable store (an out-of-date schema, a bad URL) raises ConfigError naming what to do.
    """
    from flask_app.routes import bp   # the routes import this module's Site: imported when the app is built

    if predictor is None:
        predictor, bundle_dir = _load_predictor(bundle_dir, num_threads)
    elif bundle_dir is not None:
        bundle_dir = Path(bundle_dir).resolve()
    app = Flask(__name__)
    app.config.update(
        TESTING=testing,
        MAX_CONTENT_LENGTH=max_body_bytes,       # werkzeug answers 413 for larger bodies
        MAX_FORM_MEMORY_SIZE=max_body_bytes,     # ... and for a larger single form field
    )
    app.json = StrictJSONProvider(app)
    app.extensions[SITE_KEY] = Site.build(predictor, bundle_dir, max_text_chars, max_body_bytes, max_texts)
    app.register_blueprint(bp)
    from flask_app.corrections import register_feedback   # corrections: routes, and the store when turned on
    register_feedback(app, predictor, enabled=feedback, db_url=db_url, max_text_chars=max_text_chars)
    return app
