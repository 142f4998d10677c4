"""Development server: `python -m flask_app --bundle models/books/bundle [--host 127.0.0.1] [--port 5000] [--debug]`.

`--feedback [--db URL]` turns on corrections (the results page's form, POST /api/feedback, the operator page).
`--registry [--db URL]` serves the model registry's current model instead of one bundle, and switches to a new
one within seconds of `python -m deployment.registry promote` / `rollback`, without a restart.

For production use gunicorn (see `flask_app/wsgi.py`); this server is for one person on one machine.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from deployment.cli_types import port, positive_int
from flask_app.app import DEFAULT_BUNDLE, MODELS_KEY, ConfigError, create_app
from flask_app.corrections import FEEDBACK_KEY


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flask_app", description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=None,
                        help=f"model bundle directory (default: $MLTC_BUNDLE or {DEFAULT_BUNDLE})")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=port, default=5000, help="port to listen on (default 5000)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="onnxruntime threads (default: $MLTC_THREADS, else all cores)")
    parser.add_argument("--debug", action="store_true", help="Flask debug mode with reloader: never on a public host")
    parser.add_argument("--feedback", action="store_true", default=None,
                        help="accept corrections (default: $MLTC_FEEDBACK=1 turns them on; off otherwise)")
    parser.add_argument("--registry", action="store_true", default=None,
                        help="serve the model registry's current model, swapped live on promote / rollback "
                             "(default: $MLTC_REGISTRY=1 turns it on)")
    parser.add_argument("--db", metavar="URL", default=None,
                        help="corrections and registry database (default: $MLTC_DB_URL, else the SQLite file "
                             "data/feedback.db)")
    args = parser.parse_args(argv)

    from deployment.predictor import BundleError
    try:
        app = create_app(args.bundle, num_threads=args.threads, feedback=args.feedback, db_url=args.db,
                         registry=args.registry)
    except (BundleError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    served = app.extensions[MODELS_KEY].status()
    what = (f"the registry's current model {served['version'][:12]}" if served["mode"] == "registry"
            else args.bundle or os.environ.get("MLTC_BUNDLE") or DEFAULT_BUNDLE)
    print(f"serving {what} at http://{args.host}:{args.port}/  (JSON API: POST /api/predict, health: /healthz)")
    store = app.extensions.get(FEEDBACK_KEY)
    if store is not None:
        from feedback.db import safe_url
        print(f"corrections on, stored in {safe_url(str(store.engine.url))} "
              "(POST /api/feedback, operator page /feedback/operator)")
    app.run(host=args.host, port=args.port, debug=args.debug, use_reloader=args.debug)
    return 0


if __name__ == "__main__":
    sys.exit(main())
