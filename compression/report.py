"""Measurements for the compression report: evaluation texts, F1, timing, the table.

Every variant is fed the same token ids, produced by the bundle's own tokenizer through the shared
`deployment.encoding.TextEncoder`, so differences in the report are differences in the graph, not in tokenisation.
The test split is read by `training.dataset.read_split` and scored by `training.metrics`: one reader, one F1.
"""
from __future__ import annotations

import statistics
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

import config
from compression.export import CompressionError

# Used only when the processed data set is gone; eval.json then says so and the F1 part is skipped.
PROBE_TEXTS = [
    "A young wizard discovers a hidden kingdom and must stop an ancient dragon before the prophecy comes true.",
    "Two strangers meet on a rainy summer evening in Paris and slowly fall in love despite their families.",
    "Detective Inspector Kaur investigates a murder in a quiet village where every neighbour has an alibi.",
    "The colony ship drifts between galaxies while its android crew uncovers what happened to the humans.",
    "Something scratches at the cellar door of the old haunted house every night at three o'clock.",
    "A memoir of growing up on a farm, told through recipes, letters and the seasons of one family.",
    "An economist explains why cities grow, how markets fail and what policy can do about housing.",
    "Short stories about grief, friendship and the small kindnesses that get people through hard years.",
]


def resolve_data_dir(value) -> Path | None:
    if not value:
        return None
    path = Path(value)
    return path if path.is_absolute() else config.ROOT / path


@dataclass
class EvalTexts:
    """The texts every variant is measured on: the test split (with its label matrix) or the probe texts."""
    texts: list[str]
    y_true: np.ndarray | None          # bool [n, labels]; None for the probe texts (no F1 then)
    source: str
    warning: str | None = None
    examples: list = field(default_factory=list)


def load_eval_texts(data_dir: Path | None, labels: Sequence[str], limit: int | None = None) -> EvalTexts:
    """The test split of the model's prepared data, read and checked by `training.dataset.read_split`.

    A missing data folder is a warning (a model dir copied without its data can still be compressed; the report
    then measures parity on probe texts); a corrupt one is an error. Test labels the model does not have (the
    data was re-prepared since training) are ignored with a warning."""
    from training.data import PrepareError
    from training.dataset import read_split

    def probe(reason: str) -> EvalTexts:
        return EvalTexts(list(PROBE_TEXTS), None, "built-in probe texts (no test split available)",
                         f"{reason}: F1 and label checks on the test split skipped",
                         [{"text": t, "labels": []} for t in PROBE_TEXTS[:5]])

    if data_dir is None:
        return probe("settings.json names no 'data' directory")
    if not (data_dir / "dataset.csv").is_file():
        return probe(f"{data_dir / 'dataset.csv'} not found")
    try:
        test = read_split(data_dir, "test", labels, limit)
    except PrepareError as exc:
        raise CompressionError(f"the model's test data cannot be read: {exc}") from exc
    if not test.texts:
        return probe(f"{data_dir / 'dataset.csv'} has no rows with split=test")
    return EvalTexts(test.texts, test.y, test.source,
                     f"{test.unknown} test labels not in labels.json were ignored" if test.unknown else None,
                     [{"text": t, "labels": y} for t, y in zip(test.texts[:5], test.label_lists[:5])])


def f1_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """micro and macro F1, by training.metrics' definitions (scikit-learn's, zero_division=0)."""
    from training.metrics import multilabel_report

    report = multilabel_report(y_true, y_pred, [str(i) for i in range(y_true.shape[1])])
    return {"micro_f1": report["micro_f1"], "macro_f1": report["macro_f1"]}


def time_runners(runners: dict[str, Callable[[dict], np.ndarray]], single: Sequence[dict], batch: dict,
                 rounds: int) -> dict[str, dict]:
    """Median latency of one text at a time (ms) and throughput of a 32-text batch (texts/s), per runner.

    Rounds are interleaved (every runner once per round) so a burst of load from other processes on a shared
    machine lands on all variants alike instead of on whichever happened to run at that moment.
    """
    for run in runners.values():  # warm-up: first calls allocate
        run(single[0])
        run(batch)
    lat = {name: [] for name in runners}
    bt = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            for feeds in single:
                t0 = time.perf_counter()
                run(feeds)
                lat[name].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            run(batch)
            bt[name].append(time.perf_counter() - t0)
    n = len(next(iter(batch.values())))
    return {name: {"latency_b1_ms": 1000 * statistics.median(lat[name]),
                   "batch32_ms": 1000 * statistics.median(bt[name]),
                   "throughput_b32": n / statistics.median(bt[name])} for name in runners}


def human_mib(n_bytes: int | None) -> str:
    return "-" if n_bytes is None else f"{n_bytes / 2**20:.1f} MiB"


def format_table(report: dict) -> str:
    """The printed comparison table (one row per variant)."""
    rows = [("variant", "size", "max |dp| vs pt", "agree", "micro-F1", "macro-F1", "b1 ms", "b32 texts/s")]
    for name, v in report["variants"].items():
        def fmt(key, spec):
            val = v.get(key)
            return "-" if val is None else format(val, spec)
        rows.append((name + (" *" if name == report.get("chosen") else ""), human_mib(v.get("size_bytes")),
                     fmt("max_abs_prob_diff", ".2e"), fmt("label_agreement", ".4f"), fmt("micro_f1", ".4f"),
                     fmt("macro_f1", ".4f"), fmt("latency_b1_ms", ".2f"), fmt("throughput_b32", ".1f")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def warn(msg: str) -> None:
    warnings.warn(msg, stacklevel=2)
