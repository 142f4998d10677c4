"""Data preparation stage: raw labelled text -> a clean, deduplicated, stratified train/valid/test data set.

    python -m training.prepare --input data/sample/books.csv
    python -m training.prepare --input ../shared/data/cmu_book_summaries.jsonl.gz --out data/processed/cmu
    python -m training.prepare --input data/raw/stackoverflow_details.csv --text-col title,text --min-label-freq 20
    python -m training.prepare --help

Reads the scraper's details CSV (`url,title,text,labels`, labels a JSON list) or JSONL(.gz) with `text` and
`labels`, then, in this order and counting each step in report.json:

  1. normalise the text (HTML entities, unicode NFC, invisible characters, whitespace) and drop rows left
     without text;
  2. drop exact and near-exact duplicates (same text up to case, punctuation and spacing), merging their labels
     into the first copy - before splitting, so no text lands in two splits;
  3. rename / merge / drop labels with --label-map;
  4. keep, cut to the leaf or expand hierarchical labels ("Fiction » Fantasy") with --hierarchy;
  5. prune labels rarer than --min-label-freq and drop rows left without labels;
  6. split train/valid/test by iterative stratification (training/split.py), then make sure every label
     appears in train.

With --corrections FILE (`python -m feedback export`) a corrected text's labels replace its own and new texts join,
before step 2 (training/corrections.py). When --out already holds a prepared data set (or --previous names one),
its texts keep their split and only new texts are assigned, a share of the new corrected ones to a `feedback`
test slice no model trains on (training/stable_split.py); --resplit splits everything anew.

Writes into --out (default data/processed/<input name>): dataset.csv (text, labels, split + passthrough
columns such as url/title/id), labels.json ({"label": index}, most frequent label first, ties by name),
report.json (settings and every count) and label_frequencies.png. The folder is built beside --out and renamed
into place, so a failed run leaves nothing behind. Bad input exits with code 2 and one line on stderr.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import shlex
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

import config
from deployment.cli_types import non_negative_float, non_negative_int, positive_int, probability
from deployment.console import unbreakable_output
from deployment.files import OutputError, replace_dir
from deployment.formats import dumps
from training import corrections, data, rawfiles, stable_split
from training.data import SPLITS, PrepareError
from training.dataset import write_dataset
from training.split import ensure_labels_in_fold, iterative_stratification

OUTPUT_FILES = ("dataset.csv", "labels.json", "report.json", "label_frequencies.png")
MAX_PLOTTED_LABELS = 400   # beyond this a bar chart stops being readable; the report still lists every label


@dataclass
class PrepareSettings:
    """Everything that decides the output; printed at start and saved in report.json."""

    input: Path                                         # details CSV or JSONL(.gz)
    out: Path | None = None                             # output folder; None: config.PROCESSED_DIR / name
    name: str | None = None                             # data set name; None: the input file's stem
    text_cols: tuple[str, ...] = ("text",)              # joined by a blank line when several
    labels_col: str = "labels"                          # JSON list per row
    format: str = "auto"                                # csv | jsonl | auto (from the file name)
    min_label_freq: float = 0.01                        # < 1: share of rows; >= 1: row count (the seeds: 0.01)
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)  # train, valid, test
    seed: int = 42                                      # decides the split and nothing else
    label_map: Path | None = None                       # JSON {old: new | null}
    hierarchy: str = "keep"                             # keep | leaf | expand
    dedup: str = "near"                                 # near | exact | none
    min_words: int = 1                                  # drop texts shorter than this (placeholders), before dedup
    corrections: Path | None = None                     # `python -m feedback export` JSONL (training/corrections.py)
    feedback_share: float = stable_split.DEFAULT_FEEDBACK_SHARE   # of new corrected texts held out as `feedback`
    previous: Path | None = None                        # keep this prepared folder's splits; None: --out's, if any
    resplit: bool = False                               # ignore any previous splits (training/stable_split.py)

    def __post_init__(self) -> None:
        self.input = Path(self.input)
        if not self.name:
            self.name = _stem(self.input)
        self.out = Path(self.out) if self.out else config.PROCESSED_DIR / self.name
        self.label_map = Path(self.label_map) if self.label_map else None
        self.text_cols = tuple(self.text_cols)
        self.split = tuple(float(x) for x in self.split)
        self.validate()

    def validate(self) -> None:
        if len(self.split) != 3:
            raise PrepareError(f"--split needs 3 fractions (train valid test), got {len(self.split)}; e.g. --split 0.8 0.1 0.1")
        if any(x < 0 for x in self.split) or not abs(sum(self.split) - 1) < 1e-6 or self.split[0] <= 0:
            raise PrepareError(
                f"--split {' '.join(f'{x:g}' for x in self.split)}: fractions must be >= 0, give train a share "
                "and sum to 1; e.g. --split 0.8 0.1 0.1"
            )
        data.min_count_for(self.min_label_freq, 1)   # raises on negative or fractional counts
        if not self.text_cols or any(not c for c in self.text_cols):
            raise PrepareError("--text-col: give at least one column name, e.g. --text-col text or --text-col title,text")
        if self.hierarchy not in ("keep", "leaf", "expand"):
            raise PrepareError(f"--hierarchy {self.hierarchy}: choose keep, leaf or expand")
        if self.min_words < 1:
            raise PrepareError(f"--min-words {self.min_words}: give a word count of at least 1")
        if self.dedup not in ("near", "exact", "none"):
            raise PrepareError(f"--dedup {self.dedup}: choose near, exact or none")
        if not 0 <= self.feedback_share < 1:
            raise PrepareError(f"--feedback-share {self.feedback_share:g}: give a share in [0, 1)")

    def as_dict(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
                for k, v in dataclasses.asdict(self).items()}


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".jsonl", ".ndjson", ".json", ".csv"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return name or "dataset"


def _count(df: pd.DataFrame) -> dict:
    return {"rows": int(len(df)), "labels": len(data.label_counts(df["labels"]))}


# --------------------------------------------------------------------------------------------------------
# the pipeline (in memory; nothing touches the disk until write_outputs)
# --------------------------------------------------------------------------------------------------------
def prepare(
    settings: PrepareSettings, progress: bool = True, log=print, command: str | None = None
) -> tuple[pd.DataFrame, list[str], dict]:
    """read → clean (each step counted) → stratified split → report. Returns (frame with a `split` column,
    labels in index order, report)."""
    started = time.perf_counter()
    label_map = rawfiles.load_label_map(settings.label_map) if settings.label_map else None   # fail before the long read
    raw = rawfiles.read_records(settings.input, settings.text_cols, settings.labels_col, settings.format, progress)
    steps: list[dict] = []
    fixes = corrections.read(settings.corrections, progress) if settings.corrections else None
    df = _clean(raw.frame, settings, label_map, steps, log, fixes)
    labels = data.label_vocabulary(df["labels"])
    y = data.encode_labels(df["labels"], labels)
    previous = stable_split.previous_dir(settings.out, settings.previous, settings.resplit)
    if previous is not None or fixes is not None:   # old texts keep their split; a feedback slice of corrections
        df, folds = stable_split.split(df, y, labels, settings, steps, previous, log)
    else:
        df, folds = _split(df, y, labels, settings, steps, progress, log)
    report = _report(settings, raw, df, labels, y, folds, steps, command)
    report["elapsed_s"] = round(time.perf_counter() - started, 2)   # run() adds the writing time
    return df, labels, report


def _clean(df: pd.DataFrame, settings: PrepareSettings, label_map, steps: list[dict], log,
           fixes: corrections.Corrections | None = None) -> pd.DataFrame:
    """The cleaning steps in order, each recorded in `steps` with its counts; PrepareError when no row is left."""
    def step(name: str, fn, *args):
        nonlocal df
        before = _count(df)
        t0 = time.perf_counter()
        df, facts = fn(df, *args)
        after = _count(df)
        steps.append({"step": name, "rows_before": before["rows"], "rows_after": after["rows"],
                      "labels_before": before["labels"], "labels_after": after["labels"], **facts,
                      "seconds": round(time.perf_counter() - t0, 3)})
        log(f"  {name:<18} rows {before['rows']:>7} -> {after['rows']:<7} labels {before['labels']:>5} -> {after['labels']}")

    step("normalise_text", data.normalise_texts)
    step("drop_empty_text", data.drop_empty_text)
    if fixes is not None:
        step("corrections", corrections.merge, fixes, settings.dedup)
    if settings.min_words > 1:
        step("drop_short_text", data.drop_short_text, settings.min_words)
    step("deduplicate", data.deduplicate, settings.dedup)
    if label_map is not None:
        step("label_map", data.apply_label_map, label_map)
    step("hierarchy", data.apply_hierarchy, settings.hierarchy)
    step("prune_rare_labels", data.prune_rare_labels, settings.min_label_freq)
    step("drop_unlabelled", data.drop_unlabelled)
    if df.empty:
        prune = next(s for s in steps if s["step"] == "prune_rare_labels")
        raise PrepareError(
            f"{settings.input}: no rows keep a label after pruning labels on fewer than {prune['min_count']} rows "
            f"(all {len(prune['dropped_labels'])} labels are rarer; --min-label-freq {settings.min_label_freq:g}, "
            f"{prune['rows_before']} rows after deduplication); "
            "lower --min-label-freq or check --labels-col"
        )
    return df


def _split(df: pd.DataFrame, y: np.ndarray, labels: list[str], settings: PrepareSettings, steps: list[dict],
           progress: bool, log) -> tuple[pd.DataFrame, np.ndarray]:
    """Multilabel-stratified train/valid/test (train gets every label); the frame gains `split`."""
    t0 = time.perf_counter()
    folds = iterative_stratification(y, settings.split, seed=settings.seed, progress=progress)
    folds, moved = ensure_labels_in_fold(y, folds, fold=0)
    df = df.assign(split=np.asarray(SPLITS)[folds])
    sizes = {s: int((df["split"] == s).sum()) for s in SPLITS}
    for s, fraction in zip(SPLITS, settings.split):
        if fraction > 0 and sizes[s] == 0:
            raise PrepareError(_empty_split_reason(settings, s, fraction, y))
    steps.append({"step": "split", "rows_before": len(df), "rows_after": len(df), "labels_before": len(labels),
                  "labels_after": len(labels), "sizes": sizes, "moved_to_train": len(moved),
                  "seconds": round(time.perf_counter() - t0, 3)})
    log(f"  {'split':<18} " + " / ".join(f"{s} {n}" for s, n in sizes.items())
        + (f" ({len(moved)} rows moved to train so it has every label)" if moved else ""))
    return df, folds


def _empty_split_reason(settings: PrepareSettings, split: str, fraction: float, y: np.ndarray) -> str:
    """Why `split` got no rows: too few rows for its fraction or, with rows enough, labels too rare to share.

    Stratification deals each label's rows in proportion to the fractions and train must hold every label, so
    a label on one row (or a few) keeps its rows in train: when every label is that rare, a split stays empty
    however many rows there are, and "too few rows" would send the user after the wrong cause."""
    if len(y) * fraction < 1:
        return (f"{settings.input}: only {len(y)} rows left, too few for a {split} split of {fraction:g}; "
                f"use more data or --split with {split} 0")
    per_label = y.sum(axis=0)
    return (f"{settings.input}: the {split} split got no rows of {len(y)} (it asks for {fraction:g}) because the labels "
            f"are too rare to share between splits: {int((per_label == 1).sum())} of {len(per_label)} labels are on "
            f"a single row, the median on {np.median(per_label):g}, and train must hold every label; raise "
            f"--min-label-freq (now {settings.min_label_freq:g}), merge labels with --label-map, or use --split "
            f"with {split} 0")


def _report(settings: PrepareSettings, raw, df: pd.DataFrame, labels: list[str], y: np.ndarray, folds: np.ndarray,
            steps: list[dict], command: str | None) -> dict:
    """report.json: the settings, the input's identity, every step's counts, the split and label frequencies."""
    first = steps[0]
    sizes = next(s["sizes"] for s in steps if s["step"] == "split")
    per_split = {s: y[folds == i].sum(axis=0) for i, s in enumerate(SPLITS)}
    return {
        "name": settings.name,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "settings": settings.as_dict(),
        "input": {
            "path": str(settings.input),
            "format": raw.format,
            "sha256": hashlib.sha256(raw.raw_bytes).hexdigest(),
            "columns": raw.columns,
            "passthrough_columns": raw.passthrough,
            "dropped_columns": raw.dropped_columns,
        },
        "rows_in": first["rows_before"],
        "rows_out": int(len(df)),
        "labels_in": first["labels_before"],
        "labels_out": len(labels),
        "duplicates_merged": next(s["duplicates_merged"] for s in steps if s["step"] == "deduplicate"),
        "steps": steps,
        "split_sizes": sizes,
        "split_fractions": {s: round(n / len(df), 4) for s, n in sizes.items()},
        "label_cardinality": round(float(y.sum(axis=1).mean()), 4),   # mean labels per row
        "label_frequencies": {
            "all": dict(zip(labels, map(int, y.sum(axis=0)))),
            **{s: dict(zip(labels, map(int, per_split[s]))) for s in SPLITS},
        },
    }


# --------------------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------------------
def plot_label_frequencies(frequencies: dict, title: str, path: Path) -> None:
    """Horizontal bars, one per label, stacked by split, commonest at the top; tall enough for 200+ labels."""
    from matplotlib.figure import Figure  # no pyplot: never switches a caller's (a notebook's) backend

    labels = list(frequencies["all"])[:MAX_PLOTTED_LABELS]
    if len(frequencies["all"]) > MAX_PLOTTED_LABELS:
        title += f" (commonest {MAX_PLOTTED_LABELS} of {len(frequencies['all'])})"
    height = max(3.0, 0.2 * len(labels) + 1.2)           # ~0.2 in per bar keeps 7-pt names apart
    width = 10 if max(map(len, labels)) < 40 else 13
    fig = Figure(figsize=(width, height))
    ax = fig.subplots()
    pos = np.arange(len(labels))
    left = np.zeros(len(labels))
    for split, colour in zip(SPLITS, ("#4c72b0", "#dd8452", "#55a868")):
        counts = np.array([frequencies[split][x] for x in labels], dtype=float)
        ax.barh(pos, counts, left=left, color=colour, label=split, height=0.8)
        left += counts
    for y_pos, total in zip(pos, left):
        ax.text(total, y_pos, f" {int(total)}", va="center", fontsize=7)
    ax.set_yticks(pos, labels, fontsize=7 if len(labels) > 40 else 9)
    ax.set_ylim(len(labels) - 0.5, -0.5)                 # commonest label on top
    ax.set_xlim(0, left.max() * 1.12)
    ax.margins(y=0)
    ax.set_xlabel("rows")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def write_outputs(
    df: pd.DataFrame, labels: list[str], report: dict, out: Path, passthrough: Sequence[str],
    started: float | None = None,
) -> None:
    """Write the four files into a staging folder beside `out`, then swap it into place (`deployment.files.replace_dir`).

    report.json goes last so its `elapsed_s` (from `started`, a perf_counter value) covers the writing too.
    An existing `out` is replaced only when it is empty or an earlier prepare output (has report.json), so a
    mistyped --out cannot wipe someone's folder.
    """
    try:
        with replace_dir(out, owned_by="report.json", what="training.prepare output") as tmp:
            write_dataset(tmp, df, labels, passthrough)
            plot_label_frequencies(
                report["label_frequencies"],
                f"{report['name']}: {len(labels)} labels on {report['rows_out']} rows",
                tmp / "label_frequencies.png",
            )
            if started is not None:
                report["elapsed_s"] = round(time.perf_counter() - started, 2)
            (tmp / "report.json").write_text(dumps(report, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    except OutputError as exc:
        raise PrepareError(str(exc)) from exc


def run(settings: PrepareSettings, progress: bool = True, log=print, command: str | None = None) -> dict:
    """Prepare and write; returns the report. `command` is recorded in report.json (the CLI passes its own)."""
    started = time.perf_counter()
    df, labels, report = prepare(settings, progress=progress, log=log, command=command)
    write_outputs(df, labels, report, settings.out, report["input"]["passthrough_columns"], started=started)
    return report


# --------------------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------------------
class _OneLineParser(argparse.ArgumentParser):
    """Usage errors as one `error: ...` line with exit code 2, like every other bad input of this stage."""

    def error(self, message: str):  # noqa: D102
        sys.stderr.write(f"error: {message}; see python -m training.prepare --help\n")
        sys.exit(2)


def _columns(values: list[str] | None) -> tuple[str, ...]:
    if not values:
        return ("text",)
    return tuple(c.strip() for v in values for c in v.split(",") if c.strip())


def build_parser() -> argparse.ArgumentParser:
    d = {f.name: f.default for f in dataclasses.fields(PrepareSettings)}   # one place for every default
    p = _OneLineParser(
        prog="python -m training.prepare",
        description="Clean, deduplicate and split labelled text into data/processed/<name>/ "
                    "(dataset.csv, labels.json, report.json, label_frequencies.png).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--input", required=True, type=Path,
                   help="details CSV (url,title,text,labels; labels a JSON list) or JSONL/JSONL.gz with text and labels")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: data/processed/<name>); replaced atomically if it holds an earlier output")
    p.add_argument("--name", default=None, help="data set name for the report and the default --out (default: the input file's stem)")
    p.add_argument("--text-col", action="append", metavar="COL",
                   help="text column(s); repeat or comma-separate to join several with a blank line, e.g. title,text (default: text)")
    p.add_argument("--labels-col", default=d["labels_col"], metavar="COL", help="column holding each row's labels as a JSON list")
    p.add_argument("--format", choices=("auto", "csv", "jsonl"), default=d["format"],
                   help="input format; auto decides from the file name (.csv, .jsonl, .jsonl.gz)")
    p.add_argument("--min-label-freq", type=non_negative_float, default=d["min_label_freq"], metavar="F",
                   help="drop labels on fewer rows than this: below 1 a share of the rows left after deduplication "
                        "(0.01 = 1%%), 1 or more a row count")
    p.add_argument("--split", nargs=3, type=probability, default=list(d["split"]), metavar=("TRAIN", "VALID", "TEST"),
                   help="train/valid/test fractions, summing to 1 (valid or test may be 0)")
    p.add_argument("--seed", type=non_negative_int, default=d["seed"], help="random seed of the stratified split")
    p.add_argument("--label-map", type=Path, default=None, metavar="FILE",
                   help='JSON object renaming or merging labels {"Sci-Fi": "Science Fiction"} or dropping them {"Misc": null}; '
                        "applied before --hierarchy")
    p.add_argument("--hierarchy", choices=("keep", "leaf", "expand"), default=d["hierarchy"],
                   help="hierarchical labels 'A » B » C' (or 'A > B > C'): keep as they are, keep the leaf 'C', "
                        "or expand to every prefix path 'A', 'A » B', 'A » B » C'")
    p.add_argument("--dedup", choices=("near", "exact", "none"), default=d["dedup"],
                   help="merge duplicate texts: near = same up to case, punctuation and spacing; exact = identical "
                        "after normalisation; none = keep all")
    p.add_argument("--min-words", type=positive_int, default=d["min_words"], metavar="N",
                   help="drop texts with fewer than N words before deduplication (e.g. 5 drops 'To be added.' placeholders)")
    p.add_argument("--corrections", type=Path, default=None, metavar="FILE",
                   help="corrections exported by `python -m feedback export` (JSONL): each replaces its text's "
                        "labels, new texts join; a share of the new ones is held out as the `feedback` split")
    p.add_argument("--feedback-share", type=probability, default=d["feedback_share"], metavar="F",
                   help="share of newly corrected texts held out as the `feedback` test slice (no model trains on it)")
    p.add_argument("--previous", type=Path, default=None, metavar="DIR",
                   help="an earlier prepared folder whose texts keep their split (default: --out, when it holds one)")
    p.add_argument("--resplit", action="store_true",
                   help="split every text anew, ignoring the previous splits (old and new models can no longer be "
                        "compared fairly)")
    p.add_argument("--quiet", action="store_true", help="print only the final summary line")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    with unbreakable_output():   # a closed stdout/stderr (`... | head`) stops the messages, never the output
        return _run(args, argv)


def _run(args: argparse.Namespace, argv: list[str]) -> int:
    log = (lambda *a, **k: None) if args.quiet else print
    try:
        settings = PrepareSettings(
            input=args.input, out=args.out, name=args.name, text_cols=_columns(args.text_col),
            labels_col=args.labels_col, format=args.format, min_label_freq=args.min_label_freq,
            split=tuple(args.split), seed=args.seed, label_map=args.label_map, hierarchy=args.hierarchy,
            dedup=args.dedup, min_words=args.min_words, corrections=args.corrections,
            feedback_share=args.feedback_share, previous=args.previous, resplit=args.resplit,
        )
        log("training.prepare settings:")
        for key, value in settings.as_dict().items():
            log(f"  {key:<15} {value}")
        started = time.perf_counter()
        report = run(settings, progress=not args.quiet, log=log,
                     command=" ".join(["python -m training.prepare", *map(shlex.quote, argv)]))
    except PrepareError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)   # always one line
        return 2
    sizes = report["split_sizes"]
    print(
        f"prepared {report['name']}: {report['rows_in']} rows in -> {report['rows_out']} out "
        f"({report['duplicates_merged']} duplicates merged), {report['labels_in']} labels -> {report['labels_out']}, "
        f"train/valid/test {sizes['train']}/{sizes['valid']}/{sizes['test']}"
        + (f" + feedback {sizes['feedback']}" if sizes.get("feedback") else "") + ", "
        f"{time.perf_counter() - started:.1f}s -> {settings.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
