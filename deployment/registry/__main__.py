"""The model registry's commands (each takes --db URL: default $MLTC_DB_URL, else data/feedback.db).

    python -m deployment.registry list                                  # versions, the current one marked
    python -m deployment.registry history                               # every promote / rollback: who, when, forced
    python -m deployment.registry register BUNDLE [--data DIR]          # copy and record, change nothing served
    python -m deployment.registry compare CANDIDATE [--against current] # both on rows neither trained on
    python -m deployment.registry promote CANDIDATE [--force]           # compare, then make it current
    python -m deployment.registry rollback                              # serve the version before again

CANDIDATE is a bundle folder (registered on the way) or a registered version (a prefix of 6+ hex digits will do).
Running servers (`python -m flask_app --registry`, MLTC_REGISTRY=1 under gunicorn, `python -m deployment.app
--registry`) switch to the new current version a few seconds after promote or rollback, without a restart.

Exit status: 0 done (or nothing to do), 2 refused (the message says why: a corrupt or incomplete bundle, nothing
to roll back to, ...), 3 promote refused because the candidate is worse than the current model beyond the
tolerance, 1 the database cannot be reached.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from sqlalchemy.exc import DBAPIError

from deployment.registry.compare import DEFAULT_BOOTSTRAP, DEFAULT_TOLERANCE, format_report
from deployment.registry.records import STORE_ENV
from deployment.version import short_version
from feedback.db import ENV_URL, safe_url


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--db", metavar="URL", default=None,
                        help=f"database URL or SQLite file path (default ${ENV_URL}, else data/feedback.db)")
    common.add_argument("--store", metavar="DIR", type=Path, default=None,
                        help=f"where the registry keeps its copies of bundles (default ${STORE_ENV}, else models/registry)")
    common.add_argument("--by", metavar="NAME", default=None,
                        help="who does this, for the history (default $MLTC_REGISTRY_USER, else the login name)")
    parser = argparse.ArgumentParser(prog="python -m deployment.registry", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", parents=[common], help="registered versions, the current one marked")
    ls.add_argument("--json", action="store_true", help="print JSON")
    hist = sub.add_parser("history", parents=[common], help="every promotion and rollback")
    hist.add_argument("--json", action="store_true", help="print JSON")
    reg = sub.add_parser("register", parents=[common], help="check, copy and record a bundle (serves nothing new)")
    reg.add_argument("bundle", type=Path, help="bundle folder (compression.quantize output)")
    reg.add_argument("--data", type=Path, default=None,
                     help="the prepared data it was trained on (default: its bundle.json's source_dataset)")
    for name, text in (("compare", "score two versions on the rows neither trained on"),
                       ("promote", "compare with the current version, then make CANDIDATE current")):
        p = sub.add_parser(name, parents=[common], help=text)
        p.add_argument("candidate", help="a bundle folder, or a registered version (6+ hex digits)")
        p.add_argument("--bootstrap", type=int, default=DEFAULT_BOOTSTRAP, metavar="N",
                       help="paired bootstrap resamples for the 95%% intervals (0: none)")
        p.add_argument("--json", action="store_true", help="print the comparison as JSON")
        p.add_argument("--out", type=Path, default=None, help="also write the comparison (JSON) to this file")
        if name == "compare":
            p.add_argument("--against", default="current", help="current (default), previous, a version or a bundle")
        else:
            p.add_argument("--force", action="store_true",
                           help="promote even if worse or not comparable (recorded in the history)")
            p.add_argument("--tolerance", type=_non_negative, default=DEFAULT_TOLERANCE,
                           help="refuse when micro- or macro-F1 on held-out rows drops by more than this")
            p.add_argument("--reason", default=None, help="a note for the history")
            p.add_argument("--switch-in", type=_non_negative, default=None, metavar="S",
                           help="seconds until every server switches (default 3: time to load it first)")
            p.add_argument("--initial", action="store_true",
                           help="only if no version is current yet (make retrain's first step); else do nothing")
    rb = sub.add_parser("rollback", parents=[common], help="serve the version before the current one again")
    rb.add_argument("--reason", default=None, help="a note for the history")
    rb.add_argument("--switch-in", type=_non_negative, default=None, metavar="S", help="seconds until servers switch")
    return parser


def _iso(t) -> str:
    return t.isoformat(" ", "seconds") if t is not None else "-"


def _write_comparison(args, comparison: dict | None) -> None:
    if comparison is None:
        return
    if args.json:
        print(json.dumps(comparison, indent=1, ensure_ascii=False))
    else:
        print(format_report(comparison))
    if args.out:
        from deployment.files import write_text
        write_text(args.out, json.dumps(comparison, indent=1, ensure_ascii=False) + "\n")


def cmd_list(reg, args) -> int:
    from deployment.registry import state
    from feedback.db import reading

    with reading(reg.engine) as conn:
        rows, pointer = state.versions(conn), state.read_pointer(conn)
    if args.json:
        print(json.dumps({"current": pointer and pointer.version, "previous": pointer and pointer.previous,
                          "versions": [{"version": r.version, "path": r.path, "source": r.source,
                                        "registered_at": _iso(r.registered_at), "registered_by": r.registered_by,
                                        "labels": r.labels, "record": r.record} for r in rows]},
                         indent=1, ensure_ascii=False, default=str))
        return 0
    print(f"  {'version':<12} {'registered (UTC)':<19} {'by':<12} {'labels':>6} {'micro':>6} {'macro':>6} "
          f"{'rows tr/va/te/fb':<18} {'corr.':>5}  source")
    for r in rows:
        mark = "*" if pointer and r.version == pointer.version else " "
        metrics = (r.record or {}).get("metrics") or {}
        split = ((r.record or {}).get("data") or {}).get("rows") or {}
        corr = ((r.record or {}).get("corrections") or {}).get("rows")
        cells = [f"{metrics[k]:.3f}" if isinstance(metrics.get(k), (int, float)) else "-" for k in ("micro_f1", "macro_f1")]
        rows_cell = "/".join(str(split.get(s, 0)) for s in ("train", "valid", "test", "feedback")) if split else "-"
        print(f"{mark} {r.version[:12]:<12} {_iso(r.registered_at):<19} {r.registered_by[:12]:<12} {len(r.labels):>6} "
              f"{cells[0]:>6} {cells[1]:>6} {rows_cell:<18} {corr if corr is not None else '-':>5}  {r.source}")
    if pointer is None:
        print("no version is current yet (promote one)", file=sys.stderr)
    else:
        print(f"current: {pointer.version[:12]} (since {_iso(pointer.switch_at)} UTC)"
              + (f", previous {pointer.previous[:12]}" if pointer.previous else ""), file=sys.stderr)
    return 0


def cmd_history(reg, args) -> int:
    from deployment.registry import state
    from feedback.db import reading

    with reading(reg.engine) as conn:
        events = state.events(conn)
    if args.json:
        print(json.dumps([{k: (_iso(v) if k in ("at", "switch_at") else v) for k, v in e._mapping.items()}
                          for e in events], indent=1, ensure_ascii=False, default=str))
        return 0
    for e in events:
        print(f"#{e.id:<4} {_iso(e.at)} UTC  {e.action:<8} {short_version(e.version)} "
              f"(from {short_version(e.previous_version) if e.previous_version else 'none'}) by {e.actor}"
              + (" FORCED" if e.forced else "") + (f": {e.reason}" if e.reason else ""))
    print(f"{len(events)} event(s)", file=sys.stderr)
    return 0


def run(args, reg) -> int:
    from deployment.registry.ops import DEFAULT_SWITCH_S

    if args.command == "list":
        return cmd_list(reg, args)
    if args.command == "history":
        return cmd_history(reg, args)
    if args.command == "register":
        row = reg.register(args.bundle, args.by, args.data)
        print(f"{row.version} registered (copy {row.path})")
        return 0
    if args.command == "compare":
        _write_comparison(args, reg.compare(args.candidate, args.against, rounds=args.bootstrap))
        return 0
    switch = DEFAULT_SWITCH_S if args.switch_in is None else args.switch_in
    if args.command == "rollback":
        event = reg.rollback(args.by, args.reason, switch_in_s=switch)
        print(f"rolled back to {event.version} (from {short_version(event.previous_version)}); "
              f"servers switch at {_iso(event.switch_at)} UTC")
        return 0
    event, comparison = reg.promote(args.candidate, args.by, force=args.force, reason=args.reason,
                                    tolerance=args.tolerance, rounds=args.bootstrap, switch_in_s=switch,
                                    initial=args.initial)
    _write_comparison(args, comparison)
    if event is None:
        print("nothing to do: " + ("a version is current already (--initial)" if args.initial else
                                   "it is the current version"))
        return 0
    print(f"promoted {event.version} (was {short_version(event.previous_version) if event.previous_version else 'none'})"
          + (" FORCED" if event.forced else "") + f": {event.reason}; servers switch at {_iso(event.switch_at)} UTC")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from deployment.registry.ops import Registry, Worse
    from deployment.registry.records import RecordError
    from deployment.registry.state import RegistryError
    from deployment.scoring import BundleError
    from feedback.db import StoreError
    from feedback.schema import SchemaError

    try:
        reg = Registry.open(args.db, args.store, progress=lambda m: print(m, file=sys.stderr))
    except (StoreError, SchemaError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except DBAPIError as err:
        print(f"error: cannot open the database: {str(err.orig).strip()[:300]}", file=sys.stderr)
        return 1
    try:
        return run(args, reg)
    except Worse as err:
        print(f"refused: {err}", file=sys.stderr)
        return 3
    except (RegistryError, RecordError, BundleError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except DBAPIError as err:
        print(f"error: cannot use the database {safe_url(str(reg.engine.url))}: {str(err.orig).strip()[:300]}",
              file=sys.stderr)
        return 1
    finally:
        reg.engine.dispose()


if __name__ == "__main__":
    sys.exit(main())
