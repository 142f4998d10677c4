"""Memory of one serving process: peak RSS and speed by onnxruntime call size and memory-pattern planning.

    python -m bench.memory                                   # models/books/bundle, every setting below
    python -m bench.memory --bundle /work/exp/cmu_bundle --batch-tokens 0 4096 2048 1024 --requests 60

Every setting runs in a fresh interpreter that imports only the predictor, loads the bundle and then runs, in
order: (1) the issue's probe, one batch of 32 texts of 128 tokens (peak RSS after it); (2) a mixed workload that a
server sees over time, `--requests` calls of 1 to 32 texts of every length from a title to a document eight
windows long, fixed by a seed (peak RSS after it, texts/s); (3) batch-1 latency on 128-token texts. The settings
compared are the cap on padded tokens per onnxruntime call (`Predictor(batch_tokens=...)`, 0 = none: up to 32
windows per call whatever their length, the predictor's behaviour before the cap) and onnxruntime's
memory-pattern planning on or off (`deployment.predictor.MEMORY_PATTERN`). Peak RSS is VmHWM from
/proc/self/status. Prints a table and writes JSON (default bench/results/memory.json).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import config
from bench import run_and_report
from bench.serve import DEFAULT_BUNDLE, read_texts, texts_of_tokens
from deployment.cli_types import non_negative_int, positive_int
from deployment.predictor import DEFAULT_BATCH_TOKENS, MEMORY_PATTERN

OUT = config.ROOT / "bench" / "results" / "memory.json"


@dataclass
class MemorySettings:
    bundle: str = str(DEFAULT_BUNDLE)
    texts: str | None = None            # CSV/JSONL with a text column (default data/sample/books.csv)
    batch_tokens: list[int] = field(default_factory=lambda: [0, 8192, 4096, 2048, 1024, 512])   # 0: no cap
    memory_pattern: list[str] = field(default_factory=lambda: ["on", "off"])
    requests: int = 60                  # calls in the mixed workload
    rounds: int = 3                     # repetitions of the timed 32 x 128 batch
    seed: int = 0
    ort_threads: int | None = None      # onnxruntime intra-op threads (None: its default, all cores)
    out: str = str(OUT)


# Runs in a fresh interpreter so that each setting's peak (VmHWM) is its own.
CHILD = """
import json, sys, time
from bench.serve import proc_memory
import deployment.predictor as P
args = json.load(open(sys.argv[1], encoding="utf-8"))
P.MEMORY_PATTERN = args["memory_pattern"]
imported = proc_memory()
pred = P.Predictor.from_bundle(args["bundle"], num_threads=args["threads"], batch_tokens=args["batch_tokens"] or None)
loaded = proc_memory()
pred.predict(args["probe"])
probe = proc_memory()
t0 = time.perf_counter()
n = 0
for batch in args["mixed"]:
    n += len(pred.predict(batch))
mixed_s = time.perf_counter() - t0
mixed = proc_memory()
best = float("inf")
for _ in range(args["rounds"]):
    t0 = time.perf_counter(); pred.predict(args["probe"]); best = min(best, time.perf_counter() - t0)
one = args["probe"][:8]
pred.predict(one[:1])
t0 = time.perf_counter()
for text in one * 3:
    pred.predict([text])
b1 = (time.perf_counter() - t0) / (3 * len(one))
print(json.dumps({"rss_after_imports_mib": imported["rss_mib"], "rss_after_load_mib": loaded["rss_mib"],
                  "peak_rss_probe_mib": probe["peak_rss_mib"], "peak_rss_mixed_mib": mixed["peak_rss_mib"],
                  "rss_end_mib": mixed["rss_mib"], "mixed_texts_per_s": round(n / mixed_s, 2),
                  "batch32x128_texts_per_s": round(len(args["probe"]) / best, 2), "batch1_ms": round(b1 * 1000, 2)}))
"""


def mixed_workload(texts: list[str], n: int, seed: int) -> list[list[str]]:
    """`n` calls of 1-32 texts: titles (first words), descriptions, and documents made of 2-12 descriptions."""
    rng = random.Random(seed)
    calls = []
    for _ in range(n):
        size = rng.choice([1, 1, 1, 2, 4, 8, 16, 32])
        batch = []
        for _ in range(size):
            kind = rng.random()
            if kind < 0.3:
                batch.append(" ".join(rng.choice(texts).split()[:rng.randint(3, 15)]))
            elif kind < 0.75:
                batch.append(rng.choice(texts))
            else:
                batch.append(" ".join(rng.choice(texts) for _ in range(rng.randint(2, 12))))
        calls.append(batch)
    return calls


def run_setting(s: MemorySettings, batch_tokens: int, pattern: bool, probe: list[str], mixed: list[list[str]]) -> dict:
    args = {"bundle": s.bundle, "threads": s.ort_threads, "batch_tokens": batch_tokens, "memory_pattern": pattern,
            "probe": probe, "mixed": mixed, "rounds": s.rounds}
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="bench-memory-", delete=False,
                                     encoding="utf-8") as fh:
        json.dump(args, fh)
    try:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(config.ROOT), os.environ.get("PYTHONPATH", "")])}
        proc = subprocess.run([sys.executable, "-c", CHILD, fh.name], capture_output=True, text=True,
                              cwd=config.ROOT, env=env, timeout=1800)
    finally:
        os.unlink(fh.name)
    if proc.returncode != 0:
        raise SystemExit(f"error: the process for batch_tokens={batch_tokens}, memory pattern {pattern} failed:\n"
                         f"{proc.stderr[-3000:]}")
    return {"batch_tokens": batch_tokens or None, "memory_pattern": pattern,
            **json.loads(proc.stdout.strip().splitlines()[-1])}


def format_table(rows: list[dict]) -> str:
    head = (f"{'tokens/call':>11} {'mem pattern':>11} {'after load':>10} {'peak 32x128':>11} {'peak mixed':>10} "
            f"{'end':>6} {'mixed texts/s':>13} {'32x128 texts/s':>14} {'batch-1 ms':>10}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['batch_tokens'] or 'no cap':>11} {'on' if r['memory_pattern'] else 'off':>11} "
                     f"{r['rss_after_load_mib']:>10.0f} {r['peak_rss_probe_mib']:>11.0f} {r['peak_rss_mixed_mib']:>10.0f} "
                     f"{r['rss_end_mib']:>6.0f} {r['mixed_texts_per_s']:>13.1f} {r['batch32x128_texts_per_s']:>14.1f} "
                     f"{r['batch1_ms']:>10.2f}")
    return "\n".join(lines) + "\n(MiB; peak = VmHWM of a fresh process that loaded the bundle and ran up to that point)"


def run(s: MemorySettings, log=print) -> dict:
    bundle = Path(s.bundle)
    if not (bundle / "bundle.json").is_file():
        raise SystemExit(f"error: bundle not found: {bundle} (build one with `make run` or "
                         f"`python -m compression.quantize`, or pass --bundle DIR)")
    texts, source = read_texts(Path(s.texts) if s.texts else None, bundle, 10**6)
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise SystemExit(f"error: no texts in {source}")
    probe = texts_of_tokens(bundle, texts, 32, 128)
    mixed = mixed_workload(texts, s.requests, s.seed)
    log(f"bench.memory: {bundle}; {len(texts)} texts from {source}; mixed workload {len(mixed)} calls, "
        f"{sum(map(len, mixed))} texts")
    rows = []
    settings = [(b, p == "on") for p in s.memory_pattern for b in s.batch_tokens]
    try:
        from tqdm import tqdm
        settings_iter = tqdm(settings, desc="settings", unit="process")
    except ImportError:   # tqdm comes with the training stack; the bench runs without it too
        settings_iter = settings
    for batch_tokens, pattern in settings_iter:
        rows.append(run_setting(s, batch_tokens, pattern, probe, mixed))
    return {"settings": asdict(s), "texts_source": source, "n_mixed_texts": sum(map(len, mixed)),
            "rows": rows, "table": format_table(rows)}


def main(argv: list[str] | None = None) -> int:
    d = MemorySettings()
    ap = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default=d.bundle, help=f"model bundle directory (default {DEFAULT_BUNDLE})")
    ap.add_argument("--texts", default=None, help="CSV/JSONL with a text column (default data/sample/books.csv)")
    ap.add_argument("--batch-tokens", type=non_negative_int, nargs="+", default=d.batch_tokens,
                    help="caps on padded tokens per onnxruntime call to compare (0: no cap)")
    ap.add_argument("--memory-pattern", choices=["on", "off"], nargs="+", default=d.memory_pattern,
                    help="onnxruntime memory-pattern planning settings to compare")
    ap.add_argument("--requests", type=positive_int, default=d.requests, help="calls in the mixed workload")
    ap.add_argument("--rounds", type=positive_int, default=d.rounds, help="repetitions of the timed 32 x 128 batch")
    ap.add_argument("--seed", type=non_negative_int, default=d.seed)
    ap.add_argument("--ort-threads", type=non_negative_int, default=0,
                    help="onnxruntime threads, 0 = its default (all cores)")
    ap.add_argument("--out", default=d.out, help="JSON output")
    a = ap.parse_args(argv)
    s = MemorySettings(bundle=a.bundle, texts=a.texts, batch_tokens=a.batch_tokens, memory_pattern=a.memory_pattern,
                       requests=a.requests, rounds=a.rounds, seed=a.seed, ort_threads=a.ort_threads or None,
                       out=a.out)
    result = run_and_report("python -m bench.memory", run, s, s.out, argv)
    best = min(result["rows"], key=lambda r: r["peak_rss_mixed_mib"])
    print(f"\nbench.memory: {len(result['rows'])} settings in {result['wall_seconds']} s; lowest mixed-workload peak "
          f"{best['peak_rss_mixed_mib']:.0f} MiB at {best['batch_tokens'] or 'no cap'} tokens/call, memory pattern "
          f"{'on' if best['memory_pattern'] else 'off'} (the predictor's default: {DEFAULT_BATCH_TOKENS} tokens/call, "
          f"memory pattern {'on' if MEMORY_PATTERN else 'off'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
