"""One text, one answer: how a bundle's predictions change with the other texts of a call, served as it is now
(one window per onnxruntime call for a dynamic-int8 model) against the padded batches it was served in before.

    python -m bench.consistency --bundle models/cmu/bundle                     # its model's test split, 64 texts
    python -m bench.consistency --bundle models/books/bundle --texts 128 --rounds 5

Both rows run the bundle's own Predictor (tokenizer, windows, blend, thresholds) on the same texts: each text alone,
then all of them in one call in a shuffled order. Reported per row: how many texts got a different label set in
the batch than alone, the largest score difference, the median latency of one text (ms) and the throughput of
calls of 32 texts (texts/s), timing rounds interleaved so background load lands on both alike. A bundle whose
activations are not scaled per call (fp32, static or weight-only int8) gives the same answers either way.
Prints a table and writes JSON (default bench/results/consistency.json).
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import config
from bench import run_and_report
from deployment.cli_types import positive_int
from deployment.predictor import BundleError, Predictor
from deployment.scoring import decide

OUT = config.ROOT / "bench" / "results" / "consistency.json"


@dataclass
class ConsistencySettings:
    bundle: str = str(config.MODELS_DIR / "books" / "bundle")   # bundle to measure
    data: str | None = None       # prepared data dir whose test split is read (default: the bundle's source_dataset)
    texts: int = 64               # test texts scored alone and in one batch
    rounds: int = 3               # timing rounds (interleaved across the two rows)
    seed: int = 0                 # shuffles the batch order
    out: str = str(OUT)


def padded_twin(pred: Predictor) -> Predictor:
    """The same bundle served in padded batches of up to 32 windows a call, as every bundle was before."""
    quant = pred.info.get("quantization") or {}
    info = {**pred.info, "quantization": {**quant, "windows_per_call": None}}
    return Predictor(pred.session, pred.encoder, info, linear=pred.linear, source=pred.source)


def load_test_texts(s: ConsistencySettings, pred: Predictor) -> tuple[list[str], str]:
    from training.dataset import read_split

    data = Path(s.data or pred.info.get("source_dataset") or "")
    if not data.is_absolute():
        data = config.ROOT / data
    if not (data / "dataset.csv").is_file():
        raise SystemExit(f"error: {data / 'dataset.csv'} not found; pass --data with a prepared data set")
    split = read_split(data, "test", pred.labels, s.texts)
    if not split.texts:
        raise SystemExit(f"error: {data / 'dataset.csv'} has no test rows")
    return split.texts, split.source


def measure(pred: Predictor, texts: list[str], order: list[int]) -> dict:
    """Scores alone vs in one shuffled call, and what changed."""
    alone = np.stack([pred.scores([t])[0] for t in texts])
    together = np.empty_like(alone)
    together[order] = pred.scores([texts[i] for i in order])
    thresholds = np.asarray(pred.thresholds)
    changed = (decide(alone, thresholds) != decide(together, thresholds)).any(axis=1)
    return {"label_sets_changed": int(changed.sum()), "texts": len(texts),
            "max_abs_score_diff": float(np.abs(alone - together).max())}


def run(s: ConsistencySettings) -> dict:
    try:
        served = Predictor.from_bundle(s.bundle)
    except BundleError as exc:
        raise SystemExit(f"error: {exc}") from None
    texts, source = load_test_texts(s, served)
    order = random.Random(s.seed).sample(range(len(texts)), len(texts))
    rows = {"one window per call (served)" if served.windows_per_call == 1 else "as served": served,
            "padded batches of 32 (before)": padded_twin(served)}
    results = {name: measure(pred, texts, order) for name, pred in rows.items()}
    latency = {name: [] for name in rows}
    throughput = {name: [] for name in rows}
    for _ in range(s.rounds):
        for name, pred in rows.items():
            for text in texts[:16]:
                t0 = time.perf_counter()
                pred.scores([text])
                latency[name].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            for start in range(0, len(texts), 32):
                pred.scores(texts[start:start + 32])
            throughput[name].append(len(texts) / (time.perf_counter() - t0))
    for name in rows:
        results[name].update(batch1_ms=1000 * statistics.median(latency[name]),
                             batch32_texts_per_s=statistics.median(throughput[name]))
    return {"bundle": s.bundle, "texts_source": source, "windows_per_call": served.windows_per_call,
            "quantization": (served.info.get("quantization") or {}).get("variant"), "rows": results,
            "table": format_table(results, len(texts))}


def format_table(results: dict, n: int) -> str:
    head = f"{'serving':<30} {'label sets changed':>18} {'max |score diff|':>16} {'batch-1 ms':>10} {'b32 texts/s':>11}"
    lines = [head, "-" * len(head)]
    for name, r in results.items():
        lines.append(f"{name:<30} {r['label_sets_changed']:>11} of {n:<4} {r['max_abs_score_diff']:>16.2e} "
                     f"{r['batch1_ms']:>10.2f} {r['batch32_texts_per_s']:>11.1f}")
    return "\n".join(lines) + "\n(label sets and scores: each text alone vs all of them in one call, shuffled)"


def main(argv: list[str] | None = None) -> int:
    d = ConsistencySettings()
    ap = argparse.ArgumentParser(prog="python -m bench.consistency", description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", default=d.bundle, help="bundle folder")
    ap.add_argument("--data", default=None, help="prepared data dir (default: the bundle's source_dataset)")
    ap.add_argument("--texts", type=positive_int, default=d.texts, help="test texts scored alone and together")
    ap.add_argument("--rounds", type=positive_int, default=d.rounds, help="timing rounds")
    ap.add_argument("--seed", type=int, default=d.seed, help="shuffles the batch order")
    ap.add_argument("--out", default=d.out, help="JSON output")
    a = ap.parse_args(argv)
    s = ConsistencySettings(bundle=a.bundle, data=a.data, texts=a.texts, rounds=a.rounds, seed=a.seed, out=a.out)
    result = run_and_report("python -m bench.consistency", run, s, s.out, argv)
    served, before = result["rows"].values()
    print(f"\nbench.consistency: {served['label_sets_changed']} of {served['texts']} label sets changed as "
          f"served vs {before['label_sets_changed']} in padded batches; {result['wall_seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
