"""The web site: a form, a results page and a JSON API, answered by one bundle's `Predictor` or by whatever
model the registry says is current (swapped live on promote / rollback, without a restart).

    python -m flask_app --bundle models/books/bundle                    # development server on 127.0.0.1:5000
    MLTC_BUNDLE=models/books/bundle gunicorn -w 2 --threads 4 -b 127.0.0.1:8000 'flask_app:create_app()'
    python -m flask_app --registry [--db URL]                           # the registry's current model
    MLTC_REGISTRY=1 gunicorn -w 2 --threads 4 -b 127.0.0.1:8000 'flask_app:create_app()'

$MLTC_BUNDLE names the bundle when none is passed; $MLTC_THREADS sets onnxruntime's threads per process
(with several gunicorn workers, 1 keeps them from oversubscribing the cores). $MLTC_REGISTRY=1 serves the
registry's current model (deployment/registry/live.py: every process polls the pointer every
$MLTC_REGISTRY_POLL seconds, default 1, loads a new model in the background and swaps it in).

This module is the app factory: load the model(s), gather what the pages show about a model (`Site`), register
the routes. Each request takes the Site of the model answering it once (`current_site`) and keeps it to its end.
The routes live in flask_app/routes.py as a Blueprint (`GET /` form, `POST /` results page, `POST /api/predict`
JSON, `GET /healthz`). Bad input gets a message and a 4xx, never a 500; every
response carries a strict Content-Security-Policy.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask, current_app, g
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
SITE_KEY = "mltc_site"           # where a request keeps the Site it is answered with (flask.g)
MODELS_KEY = "mltc_models"       # app.extensions: FixedModel or LiveModel (deployment/registry/live.py) of Sites
TRUE, FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


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

    @property
    def version(self) -> str | None:
        return self.page["model_version"]

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


def current_site() -> Site:
    """The Site of the model answering this request: taken once, at its first use, and kept to the request's end
    (a swap in the middle cannot mix two models in one answer)."""
    site = g.get(SITE_KEY)
    if site is None:
        site = current_app.extensions[MODELS_KEY].current().model
        setattr(g, SITE_KEY, site)
    return site


def flag_from_env(name: str, what: str) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if raw not in TRUE + FALSE:
        raise ConfigError(f"{name} must be 1 or 0 ({what}), got {raw[:20]!r}")
    return raw in TRUE


def _poll_from_env() -> float:
    raw = os.environ.get("MLTC_REGISTRY_POLL", "").strip()
    try:
        value = float(raw) if raw else 1.0
    except ValueError:
        value = -1.0
    if not 0.05 <= value <= 3600:
        raise ConfigError(f"MLTC_REGISTRY_POLL must be seconds between 0.05 and 3600, got {raw[:20]!r}")
    return value


def _registry_models(db_url: str | None, build, num_threads: int | None):
    """A LiveModel of Sites over the registry in `db_url`; ConfigError when it cannot serve (no current model yet,
    an out-of-date schema, an unreachable database)."""
    from sqlalchemy.exc import DBAPIError

    from deployment.registry.live import LiveModel, NoModel
    from feedback.db import StoreError, make_engine, resolve_url
    from feedback.schema import SchemaError, ensure_current

    threads = num_threads if num_threads is not None else _threads_from_env()
    try:
        engine = make_engine(resolve_url(db_url))
        ensure_current(engine)
        return LiveModel(engine, lambda path: build(Predictor.from_bundle(path, num_threads=threads), path),
                         poll_s=_poll_from_env())
    except (StoreError, SchemaError, NoModel, BundleError) as err:
        raise ConfigError(f"model registry: {err}") from None
    except DBAPIError as err:
        raise ConfigError(f"model registry: cannot open the database: {str(err.orig).strip()[:300]}") from None


def create_app(bundle_dir: str | Path | None = None, *, predictor: Any = None, testing: bool = False,
               max_text_chars: int = MAX_TEXT_CHARS, max_body_bytes: int = MAX_BODY_BYTES,
               max_texts: int = MAX_TEXTS, num_threads: int | None = None, feedback: bool | None = None,
               db_url: str | None = None, registry: bool | None = None) -> Flask:
    """Build the site around `predictor`, or a `Predictor` loaded from `bundle_dir` / $MLTC_BUNDLE, or (with
    `registry`; None: $MLTC_REGISTRY) the registry's current model in `db_url`, swapped live.

    A missing or corrupt bundle raises `BundleError` here, at startup, naming the path. `feedback` turns
    corrections on (None: $MLTC_FEEDBACK), stored in `db_url` (None: $MLTC_DB_URL, else data/feedback.db); an
    unusable store or registry (an out-of-date schema, a bad URL, nothing promoted yet) raises ConfigError
    naming what to do.
    """
    from deployment.registry.served import FixedModel
    from flask_app.routes import bp   # the routes import this module's Site: imported when the app is built

    def build(p: Any, where: Path | None) -> Site:
        return Site.build(p, where, max_text_chars, max_body_bytes, max_texts)

    if flag_from_env("MLTC_REGISTRY", "serve the registry's current model") if registry is None else registry:
        if predictor is not None or bundle_dir is not None or os.environ.get("MLTC_BUNDLE"):
            raise ConfigError("the registry's current model is served (--registry / MLTC_REGISTRY=1): "
                              "drop --bundle / MLTC_BUNDLE, or serve that one bundle without the registry")
        models = _registry_models(db_url, build, num_threads)
    else:
        if predictor is None:
            predictor, bundle_dir = _load_predictor(bundle_dir, num_threads)
        elif bundle_dir is not None:
            bundle_dir = Path(bundle_dir).resolve()
        models = FixedModel(build(predictor, bundle_dir))
    app = Flask(__name__)
    app.config.update(
        TESTING=testing,
        MAX_CONTENT_LENGTH=max_body_bytes,       # werkzeug answers 413 for larger bodies
        MAX_FORM_MEMORY_SIZE=max_body_bytes,     # ... and for a larger single form field
    )
    app.json = StrictJSONProvider(app)
    app.extensions[MODELS_KEY] = models
    app.register_blueprint(bp)
    from flask_app.corrections import register_feedback   # corrections: routes, and the store when turned on
    register_feedback(app, lambda: current_site().predictor, models.current().model.predictor, enabled=feedback,
                      db_url=db_url, max_text_chars=max_text_chars)
    return app
