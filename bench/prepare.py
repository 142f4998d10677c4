"""Data-preparation speed: `training.prepare` on the real data sets and the stratified split on a large matrix.

    python -m bench.prepare                                  # both ../shared data sets + a 30,000 x 100 split
    python -m bench.prepare --data data/sample/books.csv --split-rows 5000 --out bench/results/prepare_sample.json

Timing lives here, not in the tests: a wall-clock limit inside a test fails on a busy shared machine for
reasons that have nothing to do with the code. Each data set is prepared once (min label frequency 1%,
80/10/10) into a scratch folder; the split is timed on a random label matrix of --split-rows rows and
--split-labels labels (2% density). Prints a table and writes JSON (default bench/results/prepare.json).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import config
from bench import run_and_report
from deployment.cli_types import positive_int
from training import prepare
from training.split import iterative_stratification, label_proportion_error

FRACTIONS = (0.8, 0.1, 0.1)


def time_prepare(path: Path, work: Path) -> dict:
    out = work / path.name.split(".")[0]
    t0 = time.perf_counter()
    code = prepare.main(["--input", str(path), "--out", str(out), "--min-label-freq", "0.01", "--quiet"])
    seconds = time.perf_counter() - t0
    if code != 0:
        raise SystemExit(f"error: training.prepare failed on {path}")
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    return {"data": str(path), "rows_in": report["rows_in"], "rows_out": report["rows_out"],
            "labels_out": report["labels_out"], "seconds": round(seconds, 2),
            "rows_per_s": round(report["rows_in"] / seconds, 1)}


def time_split(rows: int, labels: int) -> dict:
    y = np.random.default_rng(0).random((rows, labels)) < 0.02
    t0 = time.perf_counter()
    folds = iterative_stratification(y, FRACTIONS, seed=0)
    seconds = time.perf_counter() - t0
    return {"rows": rows, "labels": labels, "seconds": round(seconds, 2),
            "label_proportion_error": round(float(label_proportion_error(y, folds, FRACTIONS)), 5)}


def table(result: dict) -> str:
    lines = ["| step | rows | labels | seconds | rows/s |", "|---|---:|---:|---:|---:|"]
    for r in result["prepare"]:
        lines.append(f"| prepare {Path(r['data']).name} | {r['rows_in']} | {r['labels_out']} | {r['seconds']:.2f} | "
                     f"{r['rows_per_s']:.0f} |")
    s = result["split"]
    lines.append(f"| iterative stratification | {s['rows']} | {s['labels']} | {s['seconds']:.2f} | "
                 f"{s['rows'] / s['seconds'] if s['seconds'] else 0:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.prepare", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, action="append",
                    help="CSV or JSONL(.gz) to prepare; repeatable (default: both ../shared data sets)")
    ap.add_argument("--split-rows", type=positive_int, default=30_000, help="rows of the timed split (default 30000)")
    ap.add_argument("--split-labels", type=positive_int, default=100, help="labels of the timed split (default 100)")
    ap.add_argument("--out", type=Path, default=config.ROOT / "bench" / "results" / "prepare.json", help="JSON output")
    args = ap.parse_args(argv)
    paths = args.data or [config.SHARED_DIR / "data" / "cmu_book_summaries.jsonl.gz",
                          config.SHARED_DIR / "data" / "stackoverflow_titles.jsonl.gz"]
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        print(f"error: data file(s) not found: {', '.join(missing)}", file=sys.stderr)
        return 2

    def measure(settings: dict) -> dict:
        with tempfile.TemporaryDirectory(prefix="bench_prepare_") as work:
            result = {"prepare": [time_prepare(Path(p), Path(work)) for p in settings["data"]],
                      "split": time_split(settings["split_rows"], settings["split_labels"])}
        return {**result, "table": table(result)}

    run_and_report("python -m bench.prepare", measure, {**vars(args), "data": paths}, args.out, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
