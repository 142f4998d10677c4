"""Latency of reading whole documents: documents/s by text length and cap on windows, batch 1 and 32.

    python -m bench.windows --bundle models/cmu/bundle                 # CMU summaries + StackOverflow titles
    python -m bench.windows --bundle models/books/bundle --docs 32 --caps 1 2 4 8

Short texts are StackOverflow titles, long ones CMU plot summaries (both from ../shared), medium ones the first
~40% of a summary; without ../shared the sample books stand in (medium and long then made by repeating them).
Each cell runs the bundle's own `Predictor` (its transformer: a blended bundle's linear part costs the same at
every cap and is left out) with the bundle's windows replaced by the cap in the column (1 = the first window
only, what the model read before windows existed): the same texts, the same onnxruntime session,
timing rounds interleaved across caps so background load lands on all of them alike. The table also shows how
many windows a text of each kind needs, so the cap can be chosen where the long texts are covered. Prints a
table and writes JSON (default bench/results/windows.json).
"""
from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

import config
from bench import run_and_report
from deployment.cli_types import positive_int
from deployment.encoding import TextEncoder, default_stride
from deployment.predictor import BundleError, Predictor

OUT = config.ROOT / "bench" / "results" / "windows.json"


def _jsonl(path: Path, n: int) -> list[str]:
    texts = []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            text = json.loads(line).get("text") or ""
            if text.strip():
                texts.append(text)
            if len(texts) >= n:
                break
    return texts


def load_texts(n: int) -> tuple[dict[str, list[str]], str]:
    data = config.SHARED_DIR / "data"
    cmu, so = data / "cmu_book_summaries.jsonl.gz", data / "stackoverflow_titles.jsonl.gz"
    if cmu.is_file() and so.is_file():
        long = [t for t in _jsonl(cmu, 4 * n) if len(t.split()) > 350][:n]
        return {"short": _jsonl(so, n), "medium": [" ".join(t.split()[:160]) for t in long], "long": long}, str(data)
    import csv

    with open(config.SAMPLE_DIR / "books.csv", newline="", encoding="utf-8") as fh:
        sample = [r["text"] for r in csv.DictReader(fh) if r.get("text", "").strip()][:n]
    return {"short": [" ".join(t.split()[:12]) for t in sample], "medium": [f"{t} {t}" for t in sample],
            "long": [" ".join([t] * 6) for t in sample]}, str(config.SAMPLE_DIR / "books.csv")


def with_cap(pred: Predictor, cap: int) -> Predictor:
    """The same session, the tokenizer re-configured for `cap` windows, and no linear part: the windows cost
    the transformer, and a bundle whose blend gives the transformer weight 0 would not run it at all."""
    win = pred.encoder.windows
    windows = replace(win, max_windows=cap, stride=(win.stride or default_stride(pred.max_length)) if cap > 1 else 0)
    enc = pred.encoder
    encoder = TextEncoder(type(enc.tokenizer).from_str(enc.tokenizer.to_str()), enc.max_length, enc.input_names,
                          enc.pad_id, windows)
    return Predictor(pred.session, encoder, pred.info, linear=None, batch_size=pred.batch_size,
                     batch_tokens=pred.batch_tokens, source=pred.source)


def run(settings: dict) -> dict:
    result = measure(Path(settings["bundle"]), sorted(set(settings["caps"])), settings["docs"], settings["rounds"],
                     settings["threads"])
    return {**result, "table": table(result)}


def measure(bundle: Path, caps: list[int], n_docs: int, rounds: int, threads: int | None) -> dict:
    pred = Predictor.from_bundle(bundle, num_threads=threads)
    texts, source = load_texts(n_docs)
    variants = {cap: with_cap(pred, cap) for cap in caps}
    full = with_cap(pred, 1000)
    needs = {kind: full.encode(t).n_windows for kind, t in texts.items()}
    timings = {(kind, cap, b): [] for kind in texts for cap in caps for b in (1, 32)}
    for v in variants.values():                              # warm-up: first calls allocate
        v.predict(texts["short"][:2])
    for _ in range(rounds):
        for kind, docs in texts.items():
            for cap, v in variants.items():
                t0 = time.perf_counter()
                for d in docs[:8]:
                    v.predict([d])
                timings[(kind, cap, 1)].append(8 / (time.perf_counter() - t0))
                t0 = time.perf_counter()
                v.predict(docs[:32])
                timings[(kind, cap, 32)].append(min(32, len(docs)) / (time.perf_counter() - t0))
    rows = []
    for kind, docs in texts.items():
        for cap in caps:
            enc = variants[cap].encode(docs)
            rows.append({"texts": kind, "cap": cap, "mean_tokens": float(np.mean(enc.n_tokens)),
                         "mean_windows_read": float(np.mean(enc.n_windows)),
                         "truncated_fraction": float(np.mean(enc.truncated)),
                         "docs_per_s_b1": statistics.median(timings[(kind, cap, 1)]),
                         "docs_per_s_b32": statistics.median(timings[(kind, cap, 32)])})
    return {"bundle": str(bundle), "texts_from": source, "n_docs": n_docs, "rounds": rounds, "threads": threads,
            "max_length": pred.max_length, "bundle_windows": pred.encoder.windows.to_dict(),
            "windows_needed": {k: {"mean": float(np.mean(v)), "p90": float(np.percentile(v, 90)), "max": int(max(v))}
                               for k, v in needs.items()},
            "rows": rows}


def table(result: dict) -> str:
    lines = ["| texts | mean tokens | cap | windows read | truncated | docs/s batch 1 | docs/s batch 32 |",
             "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['texts']} | {r['mean_tokens']:.0f} | {r['cap']} | {r['mean_windows_read']:.2f} | "
                     f"{100 * r['truncated_fraction']:.0f}% | {r['docs_per_s_b1']:.1f} | {r['docs_per_s_b32']:.1f} |")
    need = ", ".join(f"{k} {v['mean']:.1f} (p90 {v['p90']:.0f}, max {v['max']})"
                     for k, v in result["windows_needed"].items())
    return "\n".join(lines) + f"\nwindows needed to read the whole text: {need}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.windows", description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path, default=config.MODELS_DIR / "books" / "bundle", help="model bundle folder")
    ap.add_argument("--caps", type=positive_int, nargs="+", default=[1, 2, 4, 8, 16], help="caps on windows to compare")
    ap.add_argument("--docs", type=positive_int, default=64, help="texts per length class")
    ap.add_argument("--rounds", type=positive_int, default=3, help="timing rounds (median reported)")
    ap.add_argument("--threads", type=positive_int, default=None, help="onnxruntime intra-op threads")
    ap.add_argument("--out", type=Path, default=OUT, help="JSON output")
    a = ap.parse_args(argv)
    try:
        run_and_report("python -m bench.windows", run, vars(a), a.out, argv)
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
