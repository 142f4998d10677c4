"""Accuracy benchmark: our fine-tuned model (and its blend with TF-IDF) against the TF-IDF + one-vs-rest
logistic-regression baseline, on the same deduplicated, stratified split, in one run.

    python -m bench.accuracy                                   # both ../shared data sets, 25 min budget each
    python -m bench.accuracy --data ../shared/data/cmu_book_summaries.jsonl.gz --time-budget 10m
    python -m bench.accuracy --data data/sample/books.csv --time-budget 5m --out bench/results/acc_sample.json

Each data set goes through `training.prepare` (min label frequency 1%, 80/10/10) and `training.train`
with a time budget sized for 2 CPU cores. Thresholds and the blend weight are tuned on `valid`; every
number below is on `test`. Prints a table and writes JSON (default bench/results/accuracy.json).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import config
from deployment.cli_types import int_at_least, positive_float
from training import prepare
from training.train import TrainSettings, parse_duration, train

DEFAULTS = {  # per data set: what fits a 2-core budget (titles are short, plot summaries long)
    "cmu_book_summaries": {"max_length": 256, "batch_size": 16, "epochs": 3.0},
    "stackoverflow_titles": {"max_length": 48, "batch_size": 32, "epochs": 5.0},
}
ROWS = (("baseline", "tf-idf + logreg (baseline)"), ("transformer", "transformer alone"),
        ("blend", "ours: transformer + tf-idf blend"), ("most_frequent", "most frequent labels"))


def positive_duration(text: str) -> float:
    """training.train's duration syntax (600, 25m, 1.5h), and more than zero: a budget of 0 trains nothing."""
    seconds = parse_duration(text)
    if not seconds:
        raise argparse.ArgumentTypeError(f"must be a duration above zero (600, 25m, 1.5h), got {text!r}")
    return seconds


def run_one(path: Path, work: Path, budget: float, overrides: dict, log=print) -> dict:
    name = path.name.split(".")[0]
    opts = {**DEFAULTS.get(name, {"max_length": 256, "batch_size": 16, "epochs": 3.0}), **overrides}
    processed = work / "processed" / name
    t0 = time.time()
    args = ["--input", str(path), "--out", str(processed), "--min-label-freq", "0.01"]
    if opts.get("text_col"):
        args += ["--text-col", opts["text_col"]]
    if prepare.main(args) != 0:
        raise SystemExit(f"error: preparing {path} failed")
    prep_s = time.time() - t0
    s = TrainSettings(data=str(processed), out=str(work / "models" / name), time_budget=budget,
                      max_length=opts["max_length"], batch_size=opts["batch_size"], epochs=opts["epochs"],
                      **{k: v for k, v in overrides.items() if k in ("lr", "lr_decay", "pos_weight")})
    m = train(s, command=f"python -m bench.accuracy --data {path}", log=log)
    report = json.loads((processed / "report.json").read_text())
    return {"data": str(path), "name": name, "prepare_seconds": round(prep_s, 1), "settings": s.__dict__,
            "rows": {k: report.get("split_sizes", {}).get(k) for k in ("train", "valid", "test")},
            "n_labels": len(m["labels"]), "train": m["train"], "blend_weight": m["blend_weight"],
            "results": {k: {x: m[k][x] for x in ("micro_f1", "macro_f1", "samples_f1")} for k, _ in ROWS if k in m}}


def table(runs: list[dict]) -> str:
    lines = ["| data set | model | micro-F1 | macro-F1 | samples-F1 |", "|---|---|---|---|---|"]
    for r in runs:
        for key, label in ROWS:
            if key in r["results"]:
                m = r["results"][key]
                lines.append(f"| {r['name']} ({r['n_labels']} labels) | {label} | {m['micro_f1']:.4f} | "
                             f"{m['macro_f1']:.4f} | {m['samples_f1']:.4f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.accuracy", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, action="append",
                    help="JSONL(.gz) or details CSV; repeatable (default: both ../shared data sets)")
    ap.add_argument("--time-budget", type=positive_duration, default=parse_duration("25m"),
                    help="wall-clock budget per data set for training + evaluation (e.g. 25m)")
    ap.add_argument("--max-length", type=int_at_least(8), help="override the per-data-set token length")
    ap.add_argument("--epochs", type=positive_float, help="override the planned epochs")
    ap.add_argument("--lr", type=positive_float, help="override the head learning rate")
    ap.add_argument("--work", type=Path, default=config.ROOT / "bench" / "results" / "work", help="scratch dir")
    ap.add_argument("--out", type=Path, default=config.ROOT / "bench" / "results" / "accuracy.json", help="JSON output")
    args = ap.parse_args(argv)
    paths = args.data or [config.SHARED_DIR / "data" / "cmu_book_summaries.jsonl.gz",
                          config.SHARED_DIR / "data" / "stackoverflow_titles.jsonl.gz"]
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        print(f"error: data file(s) not found: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    overrides = {k: v for k, v in (("max_length", args.max_length), ("epochs", args.epochs), ("lr", args.lr)) if v}
    runs = []
    for p in paths:
        print(f"== {p} (budget {args.time_budget:.0f}s)")
        runs.append(run_one(Path(p), args.work, args.time_budget, overrides))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"runs": runs}, indent=2, default=str))  # keep partial results
    print("\n" + table(runs))
    for r in runs:
        b, o = r["results"]["baseline"], r["results"].get("blend", r["results"]["transformer"])
        verdict = "ahead" if o["micro_f1"] > b["micro_f1"] and o["macro_f1"] > b["macro_f1"] else "NOT ahead"
        print(f"{r['name']}: ours {verdict} of the baseline on both micro- and macro-F1 "
              f"({o['micro_f1'] - b['micro_f1']:+.4f} / {o['macro_f1'] - b['macro_f1']:+.4f}); "
              f"{r['train']['epochs_done']} epochs in {r['train']['train_seconds']:.0f}s")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
