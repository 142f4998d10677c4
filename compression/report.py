"""Measurements for the compression report: evaluation texts, F1, timing, the table.

Every variant is fed the same token ids, produced by the bundle's own tokenizer through the shared
`deployment.encoding.TextEncoder`, so differences in the report are differences in the graph, not in tokenisation.
The test split is read by `training.dataset.read_split` and scored by `training.metrics`: one reader, one F1.
"""
from __future__ import annotations

import random
import statistics
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

import config
from compression.export import CompressionError

if TYPE_CHECKING:
    from training.modeldir import ModelDir

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


CONSISTENCY_TOL = 1e-4      # a text's scores alone and in any batch may differ by this much, its decisions not at all
CONSISTENCY_TEXTS = 32      # evaluation texts the check reads, plus half as many cut short (mixed lengths)
CONSISTENCY_ROUNDS = 2      # random batch compositions of all of them


def consistency_texts(texts: Sequence[str], n: int = CONSISTENCY_TEXTS, seed: int = 0) -> list[str]:
    """What the consistency check reads: the first `n` texts and half as many of them cut to 3-12 words (a short
    text beside long ones is the case padding and per-call activation scales get wrong)."""
    rng = random.Random(seed)
    texts = [t for t in texts if t.strip()][:n]
    cut = [" ".join(t.split()[:rng.randint(3, 12)]) for t in texts[:len(texts) // 2]]
    return texts + [t for t in cut if t.strip()]


def consistency(score: Callable[[list[str]], np.ndarray], texts: Sequence[str],
                decide: Callable[[np.ndarray], np.ndarray], rounds: int = CONSISTENCY_ROUNDS, seed: int = 0) -> dict:
    """One text, one answer: every text scored alone, then in `rounds` random compositions of batches (1-32 texts
    in a random order, the longest text added to every batch), as `score(texts) -> probabilities` serves them.
    `decide(probabilities of all texts, in order) -> bool decisions` applies the served rule (blend, thresholds).
    Reports the largest score difference and the share of texts whose decisions changed in some batch; passes
    when the scores stay within CONSISTENCY_TOL and no decision changes."""
    rng = random.Random(seed)
    texts = list(texts)
    n = len(texts)
    alone = np.concatenate([score([t]) for t in texts])
    alone_decided = decide(alone)
    longest = max(range(n), key=lambda i: len(texts[i]))
    worst, changed, batches = 0.0, np.zeros(n, dtype=bool), 0
    for _ in range(rounds):
        order, got, start = rng.sample(range(n), n), np.empty_like(alone), 0
        while start < n:
            members = order[start:start + rng.randint(1, 32)]
            start += len(members)
            batch = members + ([longest] if longest not in members else [])
            rng.shuffle(batch)
            got[batch] = score([texts[i] for i in batch])
            batches += 1
        worst = max(worst, float(np.abs(got - alone).max()))
        changed |= (decide(got) != alone_decided).any(axis=1)
    return {"texts": n, "batches": batches, "max_abs_score_diff": worst,
            "changed_decisions_share": float(changed.mean()), "tolerance": CONSISTENCY_TOL,
            "passed": bool(worst <= CONSISTENCY_TOL and not changed.any())}


def time_runners(runners: dict[str, Callable], single: Sequence, batch, rounds: int) -> dict[str, dict]:
    """Median latency of one text at a time (ms) and throughput of a 32-text batch (texts/s), per runner:
    `runner(x)` for each `x` of `single`, then `runner(batch)`; `len(batch)` texts.

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
    n = len(batch)
    return {name: {"latency_b1_ms": 1000 * statistics.median(lat[name]),
                   "batch32_ms": 1000 * statistics.median(bt[name]),
                   "throughput_b32": n / statistics.median(bt[name])} for name in runners}


def human_mib(n_bytes: int | None) -> str:
    return "-" if n_bytes is None else f"{n_bytes / 2**20:.1f} MiB"


def format_table(report: dict) -> str:
    """The printed comparison table (one row per variant)."""
    rows = [("variant", "size", "max |dp| vs pt", "agree", "micro-F1", "macro-F1", "alone vs batch", "b1 ms",
             "b32 texts/s")]
    for name, v in report["variants"].items():
        def fmt(key, spec):
            val = v.get(key)
            return "-" if val is None else format(val, spec)
        check = v.get("consistency")
        consistent = "-" if not check else (f"{check['max_abs_score_diff']:.0e}"
                                            + (" ok" if check["passed"] else f" FAIL {check['changed_decisions_share']:.0%}"))
        rows.append((name + (" *" if name == report.get("chosen") else ""), human_mib(v.get("size_bytes")),
                     fmt("max_abs_prob_diff", ".2e"), fmt("label_agreement", ".4f"), fmt("micro_f1", ".4f"),
                     fmt("macro_f1", ".4f"), consistent, fmt("latency_b1_ms", ".2f"), fmt("throughput_b32", ".1f")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def warn(msg: str) -> None:
    warnings.warn(msg, stacklevel=2)


class Progress:
    """Numbered steps of a long command, each line stamped with the seconds since it started (quiet: silent)."""

    def __init__(self, quiet: bool, total: int):
        self.quiet, self.total, self.n, self.t0 = quiet, total, 0, time.perf_counter()

    def step(self, msg: str) -> None:
        self.n += 1
        self.say(f"[{self.n}/{self.total}] {msg}")

    def say(self, msg: str) -> None:
        if not self.quiet:
            print(f"{time.perf_counter() - self.t0:6.1f}s  {msg}", flush=True)


def file_size(path: Path) -> int | None:
    return path.stat().st_size if path.is_file() else None


def split_texts(md: "ModelDir", split: str, limit: int | None) -> "EvalTexts | None":
    """A split of the model's prepared data with its label matrix, or None when the data is not there."""
    from training.data import PrepareError
    from training.dataset import read_split

    data_dir = resolve_data_dir(md.settings.get("data"))
    if data_dir is None or not (data_dir / "dataset.csv").is_file():
        return None
    try:
        part = read_split(data_dir, split, md.labels, limit)
    except PrepareError as exc:
        raise CompressionError(f"the model's {split} data cannot be read: {exc}") from exc
    if not part.texts:
        return None
    return EvalTexts(part.texts, part.y, part.source)


def human_bytes(n: int) -> str:
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 1024:.1f} KiB"
