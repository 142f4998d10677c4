"""Accuracy benchmark: our fine-tuned model (and its blend with TF-IDF) against the TF-IDF + one-vs-rest
logistic-regression baseline, on the same deduplicated, stratified split, in one run.

    python -m bench.accuracy                                   # both ../shared data sets, 25 min budget each
    python -m bench.accuracy --data ../shared/data/cmu_book_summaries.jsonl.gz --time-budget 10m
    python -m bench.accuracy --data data/sample/books.csv --time-budget 5m --out bench/results/acc_sample.json
    python -m bench.accuracy --data blurbs.jsonl.gz --min-label-freq 4     # keep every label with 4+ rows

Each data set goes through `training.prepare` (min label frequency 1% unless `--min-label-freq` says otherwise,
80/10/10) and `training.train` with its default settings (the same for every data set: windows of 256 tokens,
whole documents read at evaluation) and the time budget. Thresholds, the window pooling and the blend weight are
tuned on `valid`; every number below is on `test`. Rows: the TF-IDF baseline with per-label and with one global
threshold (the strongest of the two on each metric is the bar), the transformer alone reading the first window
and the whole document (the latter with both threshold variants too: it is held to the same rule), and the
shipped model. Prints a table and the margins over the strongest baseline, writes JSON (default
bench/results/accuracy.json).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import config
from bench import run_and_report, write_json
from deployment.cli_types import int_at_least, non_negative_float, positive_float
from deployment.commands import command_line
from training import prepare
from training.settings import TrainSettings
from training.train import parse_duration, positive_duration, train, train_layers_arg

ROWS = (("baseline", "tf-idf + logreg, per-label thresholds"),
        ("baseline_global", "tf-idf + logreg, one global threshold"),
        ("transformer_first_window", "transformer alone, first window"),
        ("transformer", "transformer alone, whole document"),
        ("transformer_global", "transformer alone, whole document, one global threshold"),
        ("final", "ours: the shipped model"), ("most_frequent", "most frequent labels"))
GOAL = 0.02   # the shipped model should beat the strongest baseline by 2 points on both metrics
OVERRIDABLE = ("backbone", "max_length", "epochs", "lr", "head_lr", "pos_weight", "train_layers", "seed")


def run_one(path: Path, work: Path, budget: float, overrides: dict, command: str, log=print) -> dict:
    name = path.name.split(".")[0]
    opts = dict(overrides)
    processed = work / "processed" / name
    t0 = time.time()
    min_freq = f"{opts.get('min_label_freq', 0.01):g}"
    args = ["--input", str(path), "--out", str(processed), "--min-label-freq", min_freq]
    if opts.get("text_col"):
        args += ["--text-col", opts["text_col"]]
    if prepare.main(args) != 0:
        raise SystemExit(f"error: preparing {path} failed")
    prep_s = time.time() - t0
    s = TrainSettings(data=str(processed), out=str(work / "models" / name), time_budget=budget,
                      **{k: v for k, v in opts.items() if k in OVERRIDABLE})
    m = train(s, command=command, log=log)
    report = json.loads((processed / "report.json").read_text())
    keep = ("micro_f1", "macro_f1", "samples_f1")
    results = {k: {x: m[k][x] for x in keep} for k, _ in ROWS if k in m and k != "final"}   # m["final"] names it
    results["baseline_global"] = dict(m["baseline"]["global_threshold"])
    results["transformer_global"] = dict(m["transformer"]["global_threshold"])
    results["final"] = {x: m["model"][x] for x in keep} | {"which": m["final"]}
    return {"data": str(path), "name": name, "prepare_seconds": round(prep_s, 1), "settings": s.__dict__,
            "rows": {k: report.get("split_sizes", {}).get(k) for k in ("train", "valid", "test")},
            "n_labels": len(m["labels"]), "train": m["train"], "blend_weight": m["blend_weight"],
            "blend_space": m.get("blend_space"), "blend_label_weights": m.get("blend_label_weights"),
            "windows": m.get("windows"), "results": results}


def margins(r: dict) -> dict:
    """The shipped model and the transformer alone against the strongest baseline, metric by metric. The
    transformer alone is held to the baseline's rule: the better of its per-label and global thresholds on each
    metric (a run written before the global row had only the per-label one)."""
    res = r["results"]
    best = {k: max(res["baseline"][k], res["baseline_global"][k]) for k in ("micro_f1", "macro_f1")}
    alone = {k: max(res["transformer"][k], res.get("transformer_global", res["transformer"])[k])
             for k in ("micro_f1", "macro_f1")}
    out = {f"strongest_baseline_{k}": v for k, v in best.items()}
    for k in ("micro_f1", "macro_f1"):
        out[f"final_minus_baseline_{k}"] = res["final"][k] - best[k]
        out[f"transformer_minus_baseline_{k}"] = alone[k] - best[k]
    out["goal_met"] = all(out[f"final_minus_baseline_{k}"] >= GOAL for k in ("micro_f1", "macro_f1")) and \
        out["transformer_minus_baseline_micro_f1"] >= 0
    return out


def table(runs: list[dict]) -> str:
    lines = ["| data set | model | micro-F1 | macro-F1 | samples-F1 |", "|---|---|---|---|---|"]
    for r in runs:
        for key, label in ROWS:
            if key in r["results"]:
                m = r["results"][key]
                if key == "final":
                    label += f" ({m['which']}, {r['train']['train_seconds'] / 60:.1f} min of training)"
                lines.append(f"| {r['name']} ({r['n_labels']} labels) | {label} | {m['micro_f1']:.4f} | "
                             f"{m['macro_f1']:.4f} | {m['samples_f1']:.4f} |")
    return "\n".join(lines)


def _layers(train_info: dict) -> str:
    layers = train_info.get("layers") or {}
    if layers.get("trained", "all") == "all":
        return f"all ({layers.get('why', '')})"
    cache = layers.get("cache") or {}
    return (f"top {layers['trained']} over {layers['frozen']} cached ({layers.get('why', '')}; {cache.get('windows')} "
            f"windows cached in {cache.get('seconds')} s)")


def curve_table(runs: list[dict]) -> str:
    """Time to accuracy: valid micro-F1 (first window of a fixed valid sample, best global threshold) at each
    point training measured, for the transformer alone and the blend."""
    lines = ["| data set | minutes | step | epoch | transformer | blend | tf-idf alone |", "|---|---|---|---|---|---|---|"]
    for r in runs:
        for p in r["train"].get("valid_curve", []):
            lines.append(f"| {r['name']} | {p['minutes']:.1f} | {p['step']} | {p['epoch']:.2f} | "
                         f"{p['transformer_micro_f1']:.4f} | {p.get('blend_micro_f1', float('nan')):.4f} | "
                         f"{p.get('linear_micro_f1', float('nan')):.4f} |")
    return "\n".join(lines)


def plot_curves(runs: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure

    from training.plots import draw_valid_curve

    fig = Figure(figsize=(6.5 * len(runs), 4.5))
    axes = fig.subplots(1, len(runs), squeeze=False)[0]
    for ax, r in zip(axes, runs):
        draw_valid_curve(ax, r["train"].get("valid_curve", []), title=f"{r['name']} ({r['n_labels']} labels)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.accuracy", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, action="append",
                    help="JSONL(.gz) or details CSV; repeatable (default: both ../shared data sets)")
    ap.add_argument("--time-budget", type=positive_duration, default=parse_duration("25m"),
                    help="wall-clock budget per data set for training + evaluation (e.g. 25m)")
    ap.add_argument("--backbone", help="override the backbone (a name or a local Hugging Face folder)")
    ap.add_argument("--max-length", type=int_at_least(8), help="override the default tokens per window")
    ap.add_argument("--epochs", type=positive_float, help="override the planned epochs")
    ap.add_argument("--lr", type=positive_float, help="override the peak learning rate of the top transformer layer")
    ap.add_argument("--head-lr", type=positive_float, help="override the peak learning rate of the classifier head")
    ap.add_argument("--pos-weight", type=positive_float, help="override the cap of the per-label BCE pos_weight")
    ap.add_argument("--train-layers", type=train_layers_arg, help="override the layers fine-tuned (all, auto, N)")
    ap.add_argument("--seed", type=int_at_least(0, 2**32 - 1), help="override the random seed (runs of one setting "
                    "under several seeds show how much of a difference is noise)")
    ap.add_argument("--min-label-freq", type=non_negative_float, default=0.01,
                    help="labels kept by training.prepare: < 1 a share of the rows, >= 1 a row count (default 0.01)")
    ap.add_argument("--work", type=Path, default=config.ROOT / "bench" / "results" / "work", help="scratch dir")
    ap.add_argument("--out", type=Path, default=config.ROOT / "bench" / "results" / "accuracy.json", help="JSON output")
    args = ap.parse_args(argv)
    paths = args.data or [config.SHARED_DIR / "data" / "cmu_book_summaries.jsonl.gz",
                          config.SHARED_DIR / "data" / "stackoverflow_titles.jsonl.gz"]
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        print(f"error: data file(s) not found: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    overrides = {k: v for k, v in (("backbone", args.backbone), ("max_length", args.max_length),
                                   ("epochs", args.epochs), ("lr", args.lr),
                                   ("head_lr", args.head_lr), ("pos_weight", args.pos_weight),
                                   ("train_layers", args.train_layers), ("seed", args.seed)) if v is not None}
    overrides["min_label_freq"] = args.min_label_freq

    def measure(settings: dict) -> dict:
        runs = []
        for p in settings["data"]:
            print(f"== {p} (budget {args.time_budget:.0f}s)")
            runs.append(run_one(Path(p), args.work, args.time_budget, overrides, command_line("python -m bench.accuracy",
                                                                                               argv)))
            write_json(args.out, {"runs": runs})  # keep partial results
        lines = []
        for r in runs:
            g = r["margins"] = margins(r)
            lines.append(f"{r['name']}: shipped model {g['final_minus_baseline_micro_f1']:+.4f} micro / "
                         f"{g['final_minus_baseline_macro_f1']:+.4f} macro against the strongest baseline, transformer "
                         f"alone {g['transformer_minus_baseline_micro_f1']:+.4f} micro; goal (+{GOAL:.2f} on both, "
                         f"transformer ties on micro) {'met' if g['goal_met'] else 'NOT met'}; "
                         f"{r['train']['epochs_done']} epochs in {r['train']['train_seconds']:.0f}s, layers trained: "
                         f"{_layers(r['train'])}")
        plot = args.out.with_name(args.out.stem + "_time_to_accuracy.png")
        plot_curves(runs, plot)
        return {"runs": runs, "plot": str(plot),
                "table": "\n\n".join([table(runs), "\n".join(lines), curve_table(runs), f"plot: {plot}"])}

    run_and_report("python -m bench.accuracy", measure, {**vars(args), "data": [str(p) for p in paths]}, args.out,
                   argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
