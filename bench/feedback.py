"""Corrections benchmark: how fast the site stores corrections in SQLite vs PostgreSQL, and whether having the
store on slows prediction down.

    python -m bench.feedback                                  # models/books/bundle (else a tiny random one)
    python -m bench.feedback --bundle models/books/bundle --corrections 2000 --predicts 1500 --clients 8

Everything runs through the real site: gunicorn (2 workers x 4 threads, `flask_app:create_app()`) on loopback.
1. Corrections: `--clients` threads, each with its own bearer token, POST `/api/feedback` (a text, a label set,
   the served model's version) until `--corrections` are stored, against the embedded SQLite file and against a
   throwaway PostgreSQL server started here (feedback/pgserver.py). Every stored row is counted afterwards.
2. Prediction: two sites run side by side, one with corrections off, one with them on (SQLite), and the clients
   POST `/api/predict` to them in turn, request by request, so both see the same moments of a shared machine's
   load (runs one after the other on these cores differed by 2x). Each round measures them once with the store
   idle and once while one more client stores corrections on the store-on site as fast as it can, sending the
   other site one prediction of the same text for each (so both sites serve the same extra requests, and the
   difference is the storing); the p99 compared is the median over `--rounds`. The goal: the store-on site
   within 10% of the other.
Prints a table and writes JSON (default bench/results/feedback.json).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import config
from bench import run_and_report
from bench.serve import Gunicorn, ServeSettings, read_texts, run_load
from deployment.cli_types import positive_int

DEFAULT_BUNDLE = config.MODELS_DIR / "books" / "bundle"
OUT = config.ROOT / "bench" / "results" / "feedback.json"


@dataclass
class FeedbackBenchSettings:
    bundle: str | None = None     # trained bundle (None: models/books/bundle, else a tiny random one)
    clients: int = 8              # concurrent clients
    corrections: int = 2000       # corrections stored per backend
    predicts: int = 1500          # predictions per mode and round
    rounds: int = 2               # off / on alternations for the prediction comparison
    workers: int = 2              # gunicorn workers
    threads: int = 4              # gunicorn threads per worker
    postgres: bool = True         # also measure PostgreSQL (needs initdb / pg_ctl)
    out: str = str(OUT)


@contextmanager
def environ(**values: str):
    """Set environment variables for the block (the gunicorn it starts inherits them)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def resolve_bundle(bundle: str | None, work: Path, log) -> tuple[Path, bool]:
    if bundle:
        return Path(bundle), False
    if (DEFAULT_BUNDLE / "bundle.json").is_file():
        return DEFAULT_BUNDLE, False
    sys.path.insert(0, str(config.ROOT))
    from tests.tiny_bundle import TINY_LABELS, make_tiny_bundle

    log(f"bench.feedback: no trained bundle at {DEFAULT_BUNDLE}: building a TINY RANDOM bundle (tests/tiny_bundle.py); "
        "prediction is then cheap, so the store's share of the time is larger than with MiniLM")
    return make_tiny_bundle(work / "tiny", TINY_LABELS, bench_rounds=0), True


def serve_settings(s: FeedbackBenchSettings, bundle: Path) -> ServeSettings:
    return ServeSettings(bundle=str(bundle), workers=s.workers, threads=s.threads, ort_threads=1)


def correction_caller(url: str, tokens: list[str], version: str, labels: list[str]):
    """(call, make_state) for bench.serve.run_load: each client a session with its own token."""
    import random

    import requests

    counter = iter(range(10**9))
    lock = threading.Lock()

    def make_state():
        with lock:
            c = next(counter)
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {tokens[c % len(tokens)]}"
        session.rng = random.Random(c)
        return session

    def call(session, text):
        body = {"text": text, "labels": session.rng.sample(labels, session.rng.randint(0, min(3, len(labels)))),
                "model_version": version}
        r = session.post(url + "/api/feedback", json=body, timeout=60)
        if r.status_code != 201:
            raise RuntimeError(f"{r.status_code}: {r.text[:200]}")

    return call, make_state


def predict_caller(url: str):
    import requests

    def call(session, text):
        r = session.post(url + "/api/predict", json={"text": text}, timeout=60)
        if r.status_code != 200:
            raise RuntimeError(f"{r.status_code}: {r.text[:200]}")

    return call, requests.Session


def prepared_db(url: str, n_tokens: int) -> list[str]:
    from feedback.db import make_engine
    from feedback.schema import upgrade
    from feedback.tokens import add_token

    engine = make_engine(url)
    try:
        upgrade(engine)
        return [add_token(engine, f"bench{i}") for i in range(n_tokens)]
    finally:
        engine.dispose()


def stored_rows(url: str) -> int:
    from sqlalchemy import text

    from feedback.db import make_engine, reading

    engine = make_engine(url)
    try:
        with reading(engine) as conn:
            return conn.execute(text("SELECT count(*) FROM corrections")).scalar_one()
    finally:
        engine.dispose()


def corrections_row(name: str, url: str, s: FeedbackBenchSettings, bundle: Path, texts: list[str], log) -> dict:
    from deployment.predictor import read_bundle_info
    from deployment.version import bundle_version

    tokens = prepared_db(url, s.clients)
    with environ(MLTC_FEEDBACK="1", MLTC_DB_URL=url, MLTC_FEEDBACK_RATE="off"), Gunicorn(serve_settings(s, bundle)) as g:
        call, state = correction_caller(g.url, tokens, bundle_version(bundle),
                                        read_bundle_info(bundle / "bundle.json")["labels"])
        run_load(call, texts, s.clients, 600, 20, state)   # warm-up: connections, first inserts
        log(f"  {name}: storing {s.corrections} corrections with {s.clients} clients ...")
        load = run_load(call, texts, s.clients, 3600, s.corrections, state)
    rows = stored_rows(url)
    return {"mode": f"corrections, {name}", **load, "rows_stored": rows,
            "all_stored": rows == load["requests"] + 20}


def paired_load(urls: dict[str, str], texts: list[str], clients: int, per_target: int) -> dict[str, dict]:
    """`clients` threads predicting, each alternating its requests between the servers in `urls`, so every server
    sees the same moments of this shared machine's load; per server: requests, errors, req/s, p50 and p99 (ms)."""
    import requests

    from bench.serve import percentile

    names = list(urls)
    latencies = {n: [] for n in names}
    errors = {n: 0 for n in names}
    lock = threading.Lock()
    issued = [0]

    def worker(c: int) -> None:
        sessions = {n: requests.Session() for n in names}
        i = 0
        while True:
            with lock:
                if issued[0] >= per_target * len(names):
                    break
                k = issued[0]
                issued[0] += 1
            name = names[(i + c) % len(names)]
            i += 1
            t0 = time.perf_counter()
            try:
                ok = sessions[name].post(urls[name] + "/api/predict", json={"text": texts[k % len(texts)]},
                                         timeout=60).status_code == 200
            except requests.RequestException:
                ok = False
            ms = (time.perf_counter() - t0) * 1000
            with lock:
                if ok:
                    latencies[name].append(ms)
                else:
                    errors[name] += 1
        for session in sessions.values():
            session.close()

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(worker, range(clients)))
    wall = time.perf_counter() - t0
    return {n: {"clients": clients, "requests": len(latencies[n]), "errors": errors[n], "seconds": round(wall, 3),
                "throughput_rps": round(len(latencies[n]) / wall, 2), "p50_ms": round(percentile(latencies[n], 50), 3),
                "p99_ms": round(percentile(latencies[n], 99), 3)} for n in names}


def predict_rows(s: FeedbackBenchSettings, bundle: Path, texts: list[str], work: Path, log) -> list[dict]:
    """Two sites side by side, store off and store on (SQLite), the clients alternating between them; per round
    once with the store idle and once while one more client stores corrections on the store-on site."""
    import requests

    from deployment.predictor import read_bundle_info
    from deployment.version import bundle_version

    sqlite_url = f"sqlite:///{work / 'predict.db'}"
    token = prepared_db(sqlite_url, 1)
    labels = read_bundle_info(bundle / "bundle.json")["labels"]
    out = []
    with ExitStack() as stack:
        with environ(MLTC_FEEDBACK="0"):
            off = stack.enter_context(Gunicorn(serve_settings(s, bundle)))
        with environ(MLTC_FEEDBACK="1", MLTC_DB_URL=sqlite_url, MLTC_FEEDBACK_RATE="off"):
            on = stack.enter_context(Gunicorn(serve_settings(s, bundle)))
        urls = {"store off": off.url, "store on": on.url}
        paired_load(urls, texts, s.clients, 20)   # warm-up
        wcall, wstate = correction_caller(on.url, token, bundle_version(bundle), labels)
        for r in range(s.rounds):
            for phase in ("idle", "while storing"):
                stop, written = threading.Event(), [0]

                def write_until_stopped():
                    # Each correction stored on the store-on site is matched by one prediction of the same text on
                    # the other: both sites get the same extra requests, one of which stores, the other not.
                    session, shadow = wstate(), requests.Session()
                    while not stop.is_set():
                        text = texts[written[0] % len(texts)]
                        wcall(session, text)
                        shadow.post(off.url + "/api/predict", json={"text": text}, timeout=60)
                        written[0] += 1

                writer = threading.Thread(target=write_until_stopped, daemon=True)
                if phase == "while storing":
                    writer.start()
                log(f"  round {r + 1}: predict, store off vs on, {phase} ...")
                result = paired_load(urls, texts, s.clients, s.predicts)
                stop.set()
                if writer.is_alive():
                    writer.join(timeout=60)
                for name, load in result.items():
                    out.append({"mode": f"predict, {name}, {phase}", "round": r + 1, **load,
                                "corrections_during": written[0] if name == "store on" else 0,
                                "extra_predictions_during": written[0] if name == "store off" else 0})
    return out


def summarise(rows: list[dict]) -> dict:
    p99 = {m: statistics.median(r["p99_ms"] for r in rows if r["mode"] == m)
           for m in dict.fromkeys(r["mode"] for r in rows if r["mode"].startswith("predict"))}

    def slowdown(phase: str) -> float:
        return round(p99[f"predict, store on, {phase}"] / p99[f"predict, store off, {phase}"] - 1, 4)

    return {"predict_p99_median_ms": p99, "slowdown_idle": slowdown("idle"),
            "slowdown_writing": slowdown("while storing")}


def format_table(rows: list[dict], summary: dict) -> str:
    lines = ["| mode | round | clients | requests | errors | req/s | p50 ms | p99 ms | rows stored / corrections during |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        stored = r.get("rows_stored", r.get("corrections_during") or
                       (f"({r['extra_predictions_during']} predictions)" if r.get("extra_predictions_during") else ""))
        lines.append(f"| {r['mode']} | {r.get('round', '')} | {r['clients']} | {r['requests']} | {r['errors']} | "
                     f"{r['throughput_rps']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {stored} |")
    p99 = summary["predict_p99_median_ms"]
    lines.append("")
    lines.append("predict p99, median of the rounds: " + ", ".join(f"{m.split(', ', 1)[1]} {v:.1f} ms" for m, v in p99.items())
                 + f"; store on vs off: {100 * summary['slowdown_idle']:+.1f}% idle, "
                   f"{100 * summary['slowdown_writing']:+.1f}% while one client stores corrections "
                   "(and the store-off site gets as many extra predictions)")
    return "\n".join(lines)


def run(s: FeedbackBenchSettings, log=print) -> dict:
    from feedback.pgserver import LocalPostgres, postgres_available

    work = Path(tempfile.mkdtemp(prefix="bench-feedback-"))
    try:
        bundle, tiny = resolve_bundle(s.bundle, work, log)
        texts, source = read_texts(None, bundle, 200)
        rows = [corrections_row("SQLite", f"sqlite:///{work / 'bench.db'}", s, bundle, texts, log)]
        if s.postgres:
            reason = postgres_available()
            if reason:
                raise SystemExit(f"error: {reason} (or pass --no-postgres)")
            with LocalPostgres() as pg:
                rows.append(corrections_row("PostgreSQL", pg.new_database("bench"), s, bundle, texts, log))
        rows += predict_rows(s, bundle, texts, work, log)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = summarise(rows)
    return {"settings": asdict(s), "bundle": str(bundle), "tiny_bundle": tiny, "texts": source,
            "rows": rows, "summary": summary, "table": format_table(rows, summary)}


def main(argv: list[str] | None = None) -> int:
    d = FeedbackBenchSettings()
    ap = argparse.ArgumentParser(prog="python -m bench.feedback", description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default=None, help=f"model bundle (default {DEFAULT_BUNDLE}, else a tiny random one)")
    ap.add_argument("--clients", type=positive_int, default=d.clients, help="concurrent clients")
    ap.add_argument("--corrections", type=positive_int, default=d.corrections, help="corrections stored per backend")
    ap.add_argument("--predicts", type=positive_int, default=d.predicts, help="predictions per mode and round")
    ap.add_argument("--rounds", type=positive_int, default=d.rounds, help="off / on alternations")
    ap.add_argument("--workers", type=positive_int, default=d.workers, help="gunicorn workers")
    ap.add_argument("--threads", type=positive_int, default=d.threads, help="gunicorn threads per worker")
    ap.add_argument("--no-postgres", dest="postgres", action="store_false", help="SQLite only")
    ap.add_argument("--out", default=d.out, help="JSON output")
    a = ap.parse_args(argv)
    s = FeedbackBenchSettings(bundle=a.bundle, clients=a.clients, corrections=a.corrections, predicts=a.predicts,
                              rounds=a.rounds, workers=a.workers, threads=a.threads, postgres=a.postgres, out=a.out)
    result = run_and_report("python -m bench.feedback", run, s, s.out, argv)
    summary = result["summary"]
    stored = [r for r in result["rows"] if r["mode"].startswith("corrections")]
    print("\nbench.feedback: " + "; ".join(f"{r['mode'].split(', ')[1]} {r['throughput_rps']:.0f} corrections/s, "
                                           f"p99 {r['p99_ms']:.0f} ms, all stored: {r['all_stored']}" for r in stored)
          + f"; predict p99 with the store on: {100 * summary['slowdown_idle']:+.1f}% idle, "
            f"{100 * summary['slowdown_writing']:+.1f}% while storing; {result['wall_seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
