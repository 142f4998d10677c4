"""The corrections store's commands (each takes --db URL; default $MLTC_DB_URL, else data/feedback.db).

    python -m feedback db upgrade                       # create or migrate the schema
    python -m feedback db current                       # the schema revision, and whether it is the newest
    python -m feedback tokens add NAME [--operator]     # prints the new token once
    python -m feedback tokens list
    python -m feedback tokens revoke NAME
    python -m feedback import FILE [--bundle B]         # CSV (text, labels) or JSONL; --bundle checks the labels
    python -m feedback export --out FILE.jsonl          # training.prepare's input + FILE.manifest.json
    python -m feedback stats [--model-version V]        # per-label confirmed / removed / added, as JSON

Exit status: 0 done, 2 refused (the message says why), 1 the database cannot be reached.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Sequence

from sqlalchemy.exc import DBAPIError

from feedback.db import ENV_URL, StoreError, make_engine, resolve_url, safe_url


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--db", metavar="URL", default=None,
                        help=f"database URL (sqlite:///path.db, postgresql+psycopg://user:pass@host/db) or a SQLite "
                             f"file path; default ${ENV_URL}, else data/feedback.db")
    parser = argparse.ArgumentParser(prog="python -m feedback", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    db = sub.add_parser("db", help="the database schema").add_subparsers(dest="action", required=True)
    db.add_parser("upgrade", parents=[common], help="create the schema or migrate it to the newest revision")
    db.add_parser("current", parents=[common], help="print the schema revision")

    tokens = sub.add_parser("tokens", help="bearer tokens for writing").add_subparsers(dest="action", required=True)
    add = tokens.add_parser("add", parents=[common], help="create a token and print it (once)")
    add.add_argument("name", help="who holds it (letters, digits, _ . @ -); corrections record this name")
    add.add_argument("--operator", action="store_true", help="may also read the operator page and /api/feedback/stats")
    tokens.add_parser("list", parents=[common], help="every token: name, role, created, revoked")
    revoke = tokens.add_parser("revoke", parents=[common], help="revoke the active token of NAME (at once)")
    revoke.add_argument("name")

    imp = sub.add_parser("import", parents=[common], help="store corrections made outside the site (all rows or none)")
    imp.add_argument("file", type=Path, help="CSV with text and labels (a JSON list) columns, or JSONL")
    imp.add_argument("--bundle", type=Path, default=None,
                     help="model bundle: refuse labels it does not have and record its version")

    exp = sub.add_parser("export", parents=[common], help="write training.prepare's JSONL input and a manifest")
    exp.add_argument("--out", type=Path, required=True, help="output .jsonl (the manifest goes beside it)")
    exp.add_argument("--quiet", action="store_true", help="no progress bar")

    stats = sub.add_parser("stats", parents=[common], help="per-label counts by model version, as JSON")
    stats.add_argument("--model-version", default=None, help="only corrections of this model version")
    return parser


def run(args: argparse.Namespace, engine) -> int:
    from feedback import schema

    if args.command == "db":
        if args.action == "upgrade":
            before, after = schema.upgrade(engine)
            print(f"{safe_url(str(engine.url))}: schema {before or 'empty'} -> {after}"
                  + (" (already the newest)" if before == after else ""))
            return 0
        from sqlalchemy import inspect

        from feedback.db import reading
        with reading(engine) as conn:
            current = schema.current_revision(conn) if inspect(conn).has_table("alembic_version") else None
        head = schema.head_revision()
        print(f"{safe_url(str(engine.url))}: schema {current or 'empty'}; newest {head}"
              + ("" if current == head else " (run `python -m feedback db upgrade`)"))
        return 0 if current == head else 2
    schema.ensure_current(engine)
    if args.command == "tokens":
        from feedback import tokens

        if args.action == "add":
            token = tokens.add_token(engine, args.name, operator=args.operator)
            role = "operator" if args.operator else "writer"
            print(f"token for {args.name} ({role}); shown once, keep it secret:", file=sys.stderr)
            print(token)
        elif args.action == "list":
            rows = tokens.list_tokens(engine)
            print(f"{'name':<24} {'role':<9} {'created (UTC)':<20} revoked (UTC)")
            for r in rows:
                revoked = r["revoked"].isoformat(" ", "seconds") if r["revoked"] else "-"
                print(f"{r['name']:<24} {'operator' if r['operator'] else 'writer':<9} "
                      f"{r['created'].isoformat(' ', 'seconds'):<20} {revoked}")
            print(f"{len(rows)} token(s), {sum(not r['revoked'] for r in rows)} active", file=sys.stderr)
        else:
            when = tokens.revoke_token(engine, args.name)
            print(f"revoked {args.name} at {when.isoformat(' ', 'seconds')} UTC")
        return 0
    if args.command == "import":
        from feedback.exchange import import_file

        known, version = None, None
        if args.bundle is not None:
            from deployment.predictor import read_bundle_info
            from deployment.version import bundle_version
            known, version = read_bundle_info(args.bundle / "bundle.json")["labels"], bundle_version(args.bundle)
        result = import_file(engine, args.file, known=known, model_version=version)
        print(f"imported {result['stored']} of {result['rows']} rows from {args.file}"
              + (f" ({result['skipped']} already imported)" if result["skipped"] else ""))
        return 0
    if args.command == "export":
        from feedback.exchange import export, manifest_path

        command = "python -m feedback " + shlex.join(sys.argv[1:])
        m = export(engine, args.out, progress=not args.quiet, command=command)
        print(f"exported {m['rows']} texts from {m['corrections']} corrections to {args.out} "
              f"({m['superseded']} superseded, {m['conflicts']['texts']} with conflicting clients, "
              f"{len(m['model_versions'])} model version(s)); manifest {manifest_path(args.out)}")
        return 0
    from feedback.stats import label_stats

    print(json.dumps(label_stats(engine, args.model_version), indent=1, ensure_ascii=False))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from deployment.scoring import BundleError
    from feedback.exchange import ExchangeError
    from feedback.schema import SchemaError
    from feedback.tokens import TokenError

    try:
        engine = make_engine(resolve_url(args.db))
    except StoreError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        return run(args, engine)
    except (SchemaError, TokenError, ExchangeError, BundleError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except DBAPIError as err:
        print(f"error: cannot use the database {safe_url(str(engine.url))}: {str(err.orig).strip()[:300]}",
              file=sys.stderr)
        return 1
    finally:
        engine.dispose()


if __name__ == "__main__":
    sys.exit(main())
