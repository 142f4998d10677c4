"""Memory of one serving process: peak RSS and speed by onnxruntime call size and memory-pattern planning,
and (`--explain`) peak RSS of explanations against plain prediction as the number of long texts grows.

    python -m bench.memory                                   # models/books/bundle, every setting below
    python -m bench.memory --bundle /work/exp/cmu_bundle --batch-tokens 0 4096 2048 1024 --requests 60
    python -m bench.memory --explain --sizes 1 64 256 --chars 20000 --unbounded-up-to 64

Every setting runs in a fresh interpreter that imports only the predictor, loads the bundle and then runs, in
order: (1) the issue's probe, one batch of 32 texts of 128 tokens (peak RSS after it); (2) a mixed workload that a
server sees over time, `--requests` calls of 1 to 32 texts of every length from a title to a document eight
windows long, fixed by a seed (peak RSS after it, texts/s); (3) batch-1 latency on 128-token texts. The settings
compared are the cap on padded tokens per onnxruntime call (`Predictor(batch_tokens=...)`, 0 = none: up to 32
windows per call whatever their length, the predictor's behaviour before the cap) and onnxruntime's
memory-pattern planning on or off (`deployment.predictor.MEMORY_PATTERN`). Peak RSS is VmHWM from
/proc/self/status. Prints a table and writes JSON (default bench/results/memory.json).

`--explain` instead runs, each in a fresh interpreter, one `predict(texts)` call (what one API request or one
batch-CLI chunk of 256 rows is) on 1, 64 and 256 texts of `--chars` characters (default 20,000, the site's
limit), plain and with `explain=True`, and, for sizes up to `--unbounded-up-to`, explained the way it was before
explanations were streamed (every variant of every text tokenised in one call: `explain.CHARS_PER_CALL` set
beyond the input). `--max-windows` reads each text in fewer windows than the bundle says, which keeps the
bench to minutes on a small CPU: tokenising (the memory at stake) is the same, only the model runs less.
Writes bench/results/memory_explain.json by default.
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
OUT_EXPLAIN = config.ROOT / "bench" / "results" / "memory_explain.json"


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
    explain: bool = False               # run the explanation comparison instead of the settings above
    sizes: list[int] = field(default_factory=lambda: [1, 64, 256])   # texts per predict() call (--explain)
    chars: int = 20_000                 # characters per text (--explain; the site's MAX_TEXT_CHARS)
    unbounded_up_to: int = 64           # also explain unbounded (as before streaming) up to this many texts
    max_windows: int | None = None      # windows read per text (None: the bundle's)


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


# One predict() call in a fresh interpreter: peak RSS before and after it (explain comparison).
EXPLAIN_CHILD = """
import json, sys, time
from bench.serve import proc_memory
import deployment.explain as E
import deployment.predictor as P
from deployment.encoding import TextEncoder, Windows
args = json.load(open(sys.argv[1], encoding="utf-8"))
pred = P.Predictor.from_bundle(args["bundle"], num_threads=args["threads"])
if args["max_windows"]:
    e = pred.encoder
    pred.encoder = TextEncoder(e.tokenizer, e.max_length, e.input_names, e.pad_id,
                               Windows(args["max_windows"], e.windows.stride if args["max_windows"] > 1 else 0,
                                       e.windows.pooling))
if args["mode"] == "explain, unbounded":
    E.CHARS_PER_CALL = 10**15   # every variant in one scoring call, as before explanations were streamed
pred.predict(args["texts"][:1])
loaded = proc_memory()
t0 = time.perf_counter()
pred.predict(args["texts"], explain=args["mode"] != "plain")
seconds = time.perf_counter() - t0
print(json.dumps({"rss_after_load_mib": loaded["rss_mib"], "peak_rss_mib": proc_memory()["peak_rss_mib"],
                  "seconds": round(seconds, 2)}))
"""


def long_texts(texts: list[str], n: int, chars: int, seed: int) -> list[str]:
    """`n` texts of `chars` characters (cut at a word boundary), each made of source texts in a seeded order."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        parts, size = [], 0
        while size < chars:
            parts.append(rng.choice(texts))
            size += len(parts[-1]) + 1
        text = " ".join(parts)[:chars]
        out.append(text[:text.rfind(" ")] if " " in text else text)
    return out


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


def run_child(code: str, args: dict, what: str) -> dict:
    """Run `code` in a fresh interpreter with `args` (a JSON file named by argv[1]); its last stdout line as JSON."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="bench-memory-", delete=False,
                                     encoding="utf-8") as fh:
        json.dump(args, fh)
    try:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(config.ROOT), os.environ.get("PYTHONPATH", "")])}
        proc = subprocess.run([sys.executable, "-c", code, fh.name], capture_output=True, text=True,
                              cwd=config.ROOT, env=env, timeout=3600)
    finally:
        os.unlink(fh.name)
    if proc.returncode != 0:
        raise SystemExit(f"error: the process for {what} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_setting(s: MemorySettings, batch_tokens: int, pattern: bool, probe: list[str], mixed: list[list[str]]) -> dict:
    args = {"bundle": s.bundle, "threads": s.ort_threads, "batch_tokens": batch_tokens, "memory_pattern": pattern,
            "probe": probe, "mixed": mixed, "rounds": s.rounds}
    return {"batch_tokens": batch_tokens or None, "memory_pattern": pattern,
            **run_child(CHILD, args, f"batch_tokens={batch_tokens}, memory pattern {pattern}")}


def explain_modes(s: MemorySettings, n: int) -> list[str]:
    return ["plain", "explain"] + (["explain, unbounded"] if n <= s.unbounded_up_to else [])


def run_explain(s: MemorySettings, texts: list[str], source: str, log=print) -> dict:
    """Peak RSS of one predict() call on 1 / 64 / 256 long texts: plain, explained, explained unbounded."""
    settings = [(n, mode) for n in s.sizes for mode in explain_modes(s, n)]
    log(f"bench.memory --explain: {s.bundle}; texts of {s.chars:,} characters from {source}; {len(settings)} "
        "processes")
    pool = long_texts(texts, max(s.sizes), s.chars, s.seed)
    rows = []
    for n, mode in _progress(settings):
        args = {"bundle": s.bundle, "threads": s.ort_threads, "texts": pool[:n], "mode": mode,
                "max_windows": s.max_windows}
        rows.append({"texts": n, "mode": mode, **run_child(EXPLAIN_CHILD, args, f"{n} texts, {mode}")})
    return {"settings": asdict(s), "texts_source": source, "rows": rows,
            "table": format_explain_table(rows, s)}


def format_explain_table(rows: list[dict], s: MemorySettings) -> str:
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    head = f"{'texts':>5} " + " ".join(f"{m + ' peak':>24} {'s':>7}" for m in modes)
    lines = [head, "-" * len(head)]
    for n in s.sizes:
        by_mode = {r["mode"]: r for r in rows if r["texts"] == n}
        lines.append(f"{n:>5} " + " ".join(
            f"{by_mode[m]['peak_rss_mib']:>24.0f} {by_mode[m]['seconds']:>7.1f}" if m in by_mode else f"{'-':>24} {'-':>7}"
            for m in modes))
    windows = f"{s.max_windows} window(s) per text" if s.max_windows else "the bundle's windows"
    return "\n".join(lines) + (f"\n(MiB, VmHWM of a fresh process after one predict() call on texts of {s.chars:,} "
                               f"characters read in {windows}; s: seconds of that call; after load "
                               f"{min(r['rss_after_load_mib'] for r in rows):.0f}-"
                               f"{max(r['rss_after_load_mib'] for r in rows):.0f} MiB)")


def _progress(items: list):
    try:
        from tqdm import tqdm
        return tqdm(items, desc="settings", unit="process")
    except ImportError:   # tqdm comes with the training stack; the bench runs without it too
        return items


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
    if s.explain:
        return run_explain(s, texts, source, log)
    probe = texts_of_tokens(bundle, texts, 32, 128)
    mixed = mixed_workload(texts, s.requests, s.seed)
    log(f"bench.memory: {bundle}; {len(texts)} texts from {source}; mixed workload {len(mixed)} calls, "
        f"{sum(map(len, mixed))} texts")
    rows = []
    settings = [(b, p == "on") for p in s.memory_pattern for b in s.batch_tokens]
    for batch_tokens, pattern in _progress(settings):
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
    ap.add_argument("--explain", action="store_true",
                    help="compare peak RSS of explained and plain predict() calls as the number of texts grows")
    ap.add_argument("--sizes", type=positive_int, nargs="+", default=d.sizes, help="texts per call (--explain)")
    ap.add_argument("--chars", type=positive_int, default=d.chars, help="characters per text (--explain)")
    ap.add_argument("--unbounded-up-to", type=non_negative_int, default=d.unbounded_up_to,
                    help="also explain as before streaming (every variant at once) up to this many texts (--explain)")
    ap.add_argument("--max-windows", type=non_negative_int, default=0,
                    help="windows read per text, 0 = the bundle's (--explain; fewer keeps the bench short)")
    ap.add_argument("--out", default=None, help=f"JSON output (default {OUT}, with --explain {OUT_EXPLAIN})")
    a = ap.parse_args(argv)
    s = MemorySettings(bundle=a.bundle, texts=a.texts, batch_tokens=a.batch_tokens, memory_pattern=a.memory_pattern,
                       requests=a.requests, rounds=a.rounds, seed=a.seed, ort_threads=a.ort_threads or None,
                       out=a.out or str(OUT_EXPLAIN if a.explain else OUT), explain=a.explain, sizes=a.sizes,
                       chars=a.chars, unbounded_up_to=a.unbounded_up_to, max_windows=a.max_windows or None)
    result = run_and_report("python -m bench.memory", run, s, s.out, argv)
    out = Path(s.out)
    if s.explain:
        worst = {m: max(r["peak_rss_mib"] for r in result["rows"] if r["mode"] == m) for m in ("plain", "explain")}
        print(f"\nbench.memory --explain: {len(result['rows'])} processes in {result['wall_seconds']} s; highest peak "
              f"{worst['explain']:.0f} MiB explained vs {worst['plain']:.0f} MiB plain; wrote {out}")
        return 0
    best = min(result["rows"], key=lambda r: r["peak_rss_mixed_mib"])
    print(f"\nbench.memory: {len(result['rows'])} settings in {result['wall_seconds']} s; lowest mixed-workload peak "
          f"{best['peak_rss_mixed_mib']:.0f} MiB at {best['batch_tokens'] or 'no cap'} tokens/call, memory pattern "
          f"{'on' if best['memory_pattern'] else 'off'} (the predictor's default: {DEFAULT_BATCH_TOKENS} tokens/call, "
          f"memory pattern {'on' if MEMORY_PATTERN else 'off'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
