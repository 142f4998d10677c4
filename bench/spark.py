"""Spark benchmark: the same texts through `deployment.predict` (one process) and `deployment.spark_predict`.

    python -m bench.spark                                   # 20,000 real texts, models/books/bundle (or a tiny one)
    python -m bench.spark --n 5000 --masters 'local[1]' 'local[2]'
    python -m bench.spark --bundle models/books/bundle --texts stackoverflow --out bench/results/spark_so.json

Texts are real: StackOverflow titles and CMU book summaries from ../shared/data (`--texts mixed` takes half of
each), written once to a JSONL file that every mode reads. The batch CLI runs in this process (bundle load timed
apart); each Spark master runs the real command in a fresh process, so the JVM and SparkSession start-up is
measured apart from the prediction job (input read, Python workers, predictor loads, inference, Parquet write).
texts/s = predicted texts / prediction seconds. When no trained bundle exists, a tiny random one is built
(tests/tiny_bundle.py) and the output says so: it times the pipeline around the model, not MiniLM. Prints a
table and a projection for 10 million texts, writes JSON (default bench/results/spark.json).
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import config
from bench import run_and_report
from deployment.cli_types import int_at_least, positive_int
from deployment.spark_session import cores, local_slots

DEFAULT_BUNDLE = config.MODELS_DIR / "books" / "bundle"
SOURCES = {"stackoverflow": "stackoverflow_titles.jsonl.gz", "cmu": "cmu_book_summaries.jsonl.gz"}
OUT = config.ROOT / "bench" / "results" / "spark.json"
TARGET = 10_000_000   # texts in the projection
# The CMU MiniLM int8 bundle on this kind of 2-core machine (docs/RESULTS.md, Spark): 91 texts/s at batch 32,
# texts of up to 256 tokens, onnxruntime on both cores.
MINILM_TEXTS_PER_CORE_S = 91 / 2   # texts/s per core


@dataclass
class SparkBenchSettings:
    bundle: str | None = None          # trained bundle (None: models/books/bundle, else a tiny random one)
    n: int = 20_000                    # texts through every mode
    texts: str = "mixed"               # stackoverflow, cmu or mixed (half each)
    masters: list[str] = field(default_factory=lambda: ["local[1]", "local[2]"])   # Spark masters to time
    batch_size: int = 32               # texts per onnxruntime call, every mode
    timeout: int = 1800                # seconds per Spark run
    out: str = str(OUT)


def load_texts(source: str, n: int) -> list[dict]:
    """`n` rows {id, text, source} from ../shared/data, in file order."""
    names = ["stackoverflow", "cmu"] if source == "mixed" else [source]
    per = [n // len(names) + (1 if i < n % len(names) else 0) for i in range(len(names))]
    rows = []
    for name, want in zip(names, per):
        path = config.SHARED_DIR / "data" / SOURCES[name]
        if not path.is_file():
            raise SystemExit(f"error: {path} not found (the real texts live in ../shared/data)")
        got = 0
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            for line in fh:
                obj = json.loads(line)
                if isinstance(obj.get("text"), str) and obj["text"].strip():
                    rows.append({"id": f"{name}-{obj.get('id', got)}", "text": obj["text"], "source": name})
                    got += 1
                    if got == want:
                        break
        if got < want:
            raise SystemExit(f"error: {path} has only {got} texts, {want} wanted; lower --n")
    return rows


def resolve_bundle(s: SparkBenchSettings, work: Path, log=print) -> tuple[Path, bool]:
    """(bundle, is_tiny): the given or default trained bundle, else a tiny random one built here."""
    if s.bundle:
        if not Path(s.bundle).is_dir():
            raise SystemExit(f"error: bundle not found: {s.bundle}")
        return Path(s.bundle), False
    if DEFAULT_BUNDLE.is_dir():
        return DEFAULT_BUNDLE, False
    from tests.tiny_bundle import TINY_LABELS, make_tiny_bundle

    log(f"bench.spark: no trained bundle at {DEFAULT_BUNDLE}: building a TINY RANDOM bundle (tests/tiny_bundle.py, "
        f"2 layers, hidden 32): these numbers time the pipeline around the model, not MiniLM")
    return make_tiny_bundle(work / "tiny", TINY_LABELS), True


def run_batch_cli(bundle: Path, src: Path, work: Path, batch_size: int) -> dict:
    from deployment.predict import predict_file
    from deployment.predictor import Predictor

    t0 = time.perf_counter()
    pred = Predictor.from_bundle(bundle, batch_size=batch_size)
    load_s = time.perf_counter() - t0
    stats = predict_file(pred, src, work / "batch_cli.jsonl", progress=False)
    return {"mode": "deployment.predict", "texts": stats["rows"], "predicted": stats["predicted"],
            "errors": stats["errors"], "startup_s": round(load_s, 3), "startup_what": "bundle load",
            "predict_s": round(stats["seconds"], 3), "texts_per_s": round(stats["docs_per_s"], 2),
            "wall_s": round(time.perf_counter() - t0, 3), "threads": "onnxruntime default (all cores)",
            "cores_used": cores()}


def run_spark(bundle: Path, src: Path, work: Path, master: str, s: SparkBenchSettings) -> dict:
    out = work / f"spark_{master.replace('[', '_').replace(']', '').replace('*', 'all')}"
    cmd = [sys.executable, "-m", "deployment.spark_predict", "--bundle", str(bundle), "--input", str(src),
           "--out", str(out), "--master", master, "--batch-size", str(s.batch_size), "--quiet",
           "--conf", "spark.ui.enabled=false"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in [str(config.ROOT), os.environ.get("PYTHONPATH")] if p)}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=config.ROOT, env=env, timeout=s.timeout)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    report = json.loads((out / "_spark_predict.json").read_text())
    summary, secs = report["summary"], report["summary"]["seconds"]
    return {"mode": f"spark {master}", "texts": summary["rows_out"], "predicted": summary["predicted"],
            "errors": summary["errors"], "startup_s": secs["session_start"], "startup_what": "JVM + SparkSession",
            "predict_s": secs["predict_write"], "texts_per_s": summary["texts_per_s"], "wall_s": round(wall, 3),
            "count_input_s": secs["count_input"], "partitions": summary["spark"]["partitions"],
            "python_workers": summary["python_workers"], "predictor_loads": summary["predictor_loads"],
            "threads": f"{report['settings']['num_threads']} per worker", "command": " ".join(cmd[1:]),
            "cores_used": min(cores(), (local_slots(master) or cores()) * report["settings"]["num_threads"])}



def format_table(rows: list[dict]) -> str:
    header = (f"{'mode':<20} {'texts':>6} {'start-up s':>10} {'predict s':>9} {'texts/s':>8} {'wall s':>7}  "
              f"{'start-up is':<19} threads")
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r['mode']:<20} {r['texts']:>6} {r['startup_s']:>10.1f} {r['predict_s']:>9.1f} "
                     f"{r['texts_per_s']:>8.1f} {r['wall_s']:>7.1f}  {r['startup_what']:<19} {r['threads']}")
    return "\n".join(lines)


def projection(rows: list[dict], is_tiny: bool) -> dict:
    """Hours for TARGET texts on E executors of 4 cores, from core-seconds per text.

    Spark's cost per text = the best Spark run's core-seconds per text; its overhead over the one-process CLI (read,
    Arrow transfer, write, worker start-up) = that minus the CLI's. With a tiny bundle the model costs almost
    nothing, so the MiniLM line adds that overhead to the int8 MiniLM rate docs/RESULTS.md reports (91 texts/s on
    2 cores, texts of up to 256 tokens).
    """
    cli = rows[0]
    cli_core_s = cli["cores_used"] / cli["texts_per_s"]
    best = min((r for r in rows[1:]), key=lambda r: r["cores_used"] / r["texts_per_s"])
    spark_core_s = best["cores_used"] / best["texts_per_s"]
    overhead = max(spark_core_s - cli_core_s, 0.0)
    per_text = {("measured on Spark" + (" (tiny bundle)" if is_tiny else "")): spark_core_s}
    if is_tiny:
        per_text["MiniLM int8 + measured Spark overhead"] = 1 / MINILM_TEXTS_PER_CORE_S + overhead
    cores = 4
    hours = {name: {str(e): round(TARGET * c / (e * cores) / 3600, 2) for e in (1, 10, 50)} for name, c in per_text.items()}
    return {"target_texts": TARGET, "cores_per_executor": cores, "from": best["mode"],
            "core_ms_per_text": {"batch_cli": round(cli_core_s * 1000, 2), "spark": round(spark_core_s * 1000, 2),
                                 "spark_overhead": round(overhead * 1000, 2),
                                 **{name: round(c * 1000, 2) for name, c in per_text.items()}},
            "hours_by_executors": hours,
            "formula": "hours = texts x core-seconds per text / (executors x cores per executor) / 3600 "
                       "(+ about a minute of JVM and executor start-up)"}


def run(s: SparkBenchSettings, log=print) -> dict:
    work = Path(tempfile.mkdtemp(prefix="bench-spark-"))
    try:
        return _run(s, work, log)
    finally:
        shutil.rmtree(work, ignore_errors=True)   # texts, outputs and any tiny bundle: nothing worth keeping


def _run(s: SparkBenchSettings, work: Path, log) -> dict:
    bundle, is_tiny = resolve_bundle(s, work, log)
    rows_in = load_texts(s.texts, s.n)
    src = work / "texts.jsonl"
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows_in), encoding="utf-8")
    log(f"bench.spark: {len(rows_in)} texts ({s.texts}) -> {src}; bundle {bundle}")
    rows = [run_batch_cli(bundle, src, work, s.batch_size)]
    log(f"  {rows[-1]['mode']:<20} {rows[-1]['texts_per_s']:.1f} texts/s")
    for master in s.masters:
        rows.append(run_spark(bundle, src, work, master, s))
        log(f"  {rows[-1]['mode']:<20} {rows[-1]['texts_per_s']:.1f} texts/s (start-up {rows[-1]['startup_s']:.1f} s)")
    bad = [r["mode"] for r in rows if r["texts"] != len(rows_in)]
    if bad:
        raise SystemExit(f"error: {bad} did not return every text ({len(rows_in)} in)")
    info = json.loads((bundle / "bundle.json").read_text())
    return {"settings": asdict(s), "bundle": str(bundle), "tiny_bundle": is_tiny,
            "bundle_info": {k: info.get(k) for k in ("backbone", "max_length", "created")},
            "n_texts": len(rows_in), "sources": dict(Counter(r["source"] for r in rows_in)),
            "rows": rows, "table": report_text(rows, is_tiny), "projection": projection(rows, is_tiny)}


def report_text(rows: list[dict], is_tiny: bool) -> str:
    """The printed report: the table, then the projection for TARGET texts (a note first with a tiny bundle)."""
    proj, lines = projection(rows, is_tiny), []
    if is_tiny:
        lines += ["NOTE: tiny random bundle (no trained bundle given): model time is a small share here; with MiniLM "
                  "inference dominates and Spark's fixed costs matter less."]
    lines += [format_table(rows), "", f"{proj['target_texts']:,} texts on executors of {proj['cores_per_executor']} "
              f"cores ({proj['formula']}):"]
    ms = proj["core_ms_per_text"]
    lines.append(f"  core-ms per text: batch CLI {ms['batch_cli']}, Spark {ms['spark']} ({proj['from']}), "
                 f"Spark overhead {ms['spark_overhead']}")
    for name, hours in proj["hours_by_executors"].items():
        lines.append(f"  {name} ({ms[name]} core-ms/text): "
                     + ", ".join(f"{e} executors {h:g} h" for e, h in hours.items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    d = SparkBenchSettings()
    ap = argparse.ArgumentParser(prog="python -m bench.spark", description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default=None, help=f"trained bundle (default {DEFAULT_BUNDLE}, else a tiny random one)")
    ap.add_argument("--n", type=int_at_least(2), default=d.n, help="texts through every mode")
    ap.add_argument("--texts", choices=("mixed", *SOURCES), default=d.texts,
                    help="StackOverflow titles, CMU book summaries, or half of each")
    ap.add_argument("--masters", nargs="+", default=d.masters, help="Spark masters to time")
    ap.add_argument("--batch-size", type=positive_int, default=d.batch_size, help="texts per onnxruntime call")
    ap.add_argument("--timeout", type=positive_int, default=d.timeout, help="seconds allowed per Spark run")
    ap.add_argument("--out", default=d.out, help="JSON output")
    a = ap.parse_args(argv)
    s = SparkBenchSettings(bundle=a.bundle, n=a.n, texts=a.texts, masters=a.masters, batch_size=a.batch_size,
                           timeout=a.timeout, out=a.out)
    result = run_and_report("python -m bench.spark", run, s, s.out, argv)
    print(f"\nbench.spark: {result['n_texts']} texts x {len(result['rows'])} modes in {result['wall_seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
