"""Measurements for the compression report: evaluation texts, probabilities per variant, F1, timing, the table.

Every variant is fed the same token ids, produced by the bundle's own tokenizer through the shared predictor, so
differences in the report are differences in the graph, not in tokenisation.
"""
from __future__ import annotations

import csv
import json
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

import config

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


def load_test_split(data_dir: Path | None, labels: Sequence[str], limit: int | None = None):
    """(texts, label sets, source description, warning or None) for the test split of `dataset.csv`."""
    if data_dir is None:
        return None, None, None, "settings.json names no 'data' directory: F1 and label checks on the test split skipped"
    path = data_dir / "dataset.csv"
    if not path.is_file():
        return None, None, None, f"{path} not found: F1 and label checks on the test split skipped"
    csv.field_size_limit(sys.maxsize)
    texts, targets, unknown = [], [], 0
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"text", "labels", "split"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: missing columns {sorted(missing)}")
        known = set(labels)
        for row in reader:
            if row["split"] != "test" or not (row["text"] or "").strip():
                continue
            target = json.loads(row["labels"])
            unknown += sum(1 for t in target if t not in known)
            texts.append(row["text"])
            targets.append([t for t in target if t in known])
    if not texts:
        return None, None, None, f"{path} has no rows with split=test: F1 and label checks skipped"
    if limit and len(texts) > limit:
        texts, targets = texts[:limit], targets[:limit]
    warn = f"{unknown} test labels not in labels.json were ignored" if unknown else None
    return texts, targets, f"{path} (split=test, {len(texts)} texts)", warn


def label_matrix(targets: Sequence[Sequence[str]], labels: Sequence[str]) -> np.ndarray:
    index = {lab: i for i, lab in enumerate(labels)}
    y = np.zeros((len(targets), len(labels)), dtype=bool)
    for row, target in enumerate(targets):
        for lab in target:
            y[row, index[lab]] = True
    return y


def f1_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """micro and macro F1 (a label with no support and no predictions scores 0, as scikit-learn's zero_division=0)."""
    tp = (y_true & y_pred).sum(0).astype(float)
    fp = (~y_true & y_pred).sum(0).astype(float)
    fn = (y_true & ~y_pred).sum(0).astype(float)
    denom = 2 * tp + fp + fn
    per_label = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    micro_denom = 2 * tp.sum() + fp.sum() + fn.sum()
    return {"micro_f1": float(2 * tp.sum() / micro_denom) if micro_denom else 0.0,
            "macro_f1": float(per_label.mean())}


def batched_logits(run: Callable[[dict], np.ndarray], feeds_batches: Sequence[dict]) -> list[np.ndarray]:
    return [np.asarray(run(feeds), dtype=np.float64) for feeds in feeds_batches]


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
