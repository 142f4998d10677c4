"""Serving benchmark: the Flask site under gunicorn on loopback vs the predictor called in-process.

    python -m bench.serve                                        # models/books/bundle, 1/8/32 clients
    python -m bench.serve --bundle models/books/bundle --seconds 10 --requests 500 --clients 1 8 32
    python -m bench.serve --bundle /tmp/tiny/bundle --workers 2 --threads 4 --ort-threads 1

For each number of concurrent clients, the same texts are sent one per request to `POST /api/predict` by a
thread pool of `requests` sessions, and passed one per call to `Predictor.predict` from a thread pool in this
process. Each level stops at `--seconds` or `--requests`, whichever comes first. Client, server and
in-process runs share this machine's cores, so the ratio is the price of HTTP + JSON + gunicorn here, not a
property of the model. Prints a table and writes JSON (default bench/results/serve.json).

Memory, beside throughput: a fresh process loads the bundle and predicts one batch of 32 texts of 128 tokens
(what one serving process costs, measured from its own /proc/self/status VmHWM and getrusage), and each
gunicorn worker's peak RSS is read from /proc after every concurrency level. The bundle's size by file is
reported too.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import config
from bench import run_and_report
from deployment.cli_types import non_negative_int, positive_float, positive_int

DEFAULT_BUNDLE = config.MODELS_DIR / "books" / "bundle"
DEFAULT_TEXTS = config.SAMPLE_DIR / "books.csv"   # realistic descriptions; falls back to the bundle's examples
OUT = config.ROOT / "bench" / "results" / "serve.json"


@dataclass
class ServeSettings:
    bundle: str = str(DEFAULT_BUNDLE)   # model bundle served and loaded in-process
    texts: str | None = None            # CSV/JSONL with a text column (default data/sample/books.csv)
    n_texts: int = 200                  # distinct texts cycled through
    clients: list[int] = field(default_factory=lambda: [1, 8, 32])   # concurrency levels
    seconds: float = 10.0               # time cap per level and mode
    requests: int = 2000                # request cap per level and mode
    warmup: int = 20                    # untimed requests before each mode
    workers: int = 2                    # gunicorn worker processes
    threads: int = 4                    # gunicorn threads per worker
    ort_threads: int | None = 1         # onnxruntime intra-op threads per predictor (server workers and in-process)
    rss_batch: int = 32                 # texts the fresh-process memory probe predicts in one batch
    rss_tokens: int = 128               # tokens per probe text (special tokens included)
    out: str = str(OUT)


def read_texts(path: Path | None, bundle: Path, n: int) -> tuple[list[str], str]:
    """Up to `n` texts from a CSV/JSONL `text` column, else the bundle's example texts."""
    if path is None and DEFAULT_TEXTS.is_file():
        path = DEFAULT_TEXTS
    texts: list[str] = []
    if path is not None:
        if not path.is_file():
            raise SystemExit(f"error: texts file not found: {path}")
        with open(path, newline="", encoding="utf-8") as fh:
            if path.suffix == ".jsonl":
                texts = [json.loads(line).get("text", "") for line in fh if line.strip()]
            else:
                reader = csv.DictReader(fh)
                if "text" not in (reader.fieldnames or []):
                    raise SystemExit(f"error: {path} has no 'text' column (columns: {reader.fieldnames})")
                texts = [row["text"] for row in reader]
        source = str(path)
    else:
        from deployment.examples import load_examples

        texts = [ex.text for ex in load_examples(bundle, n=n).items]
        source = f"examples of {bundle}"
    texts = [t for t in texts if t and t.strip()][:n]
    if not texts:
        raise SystemExit(f"error: no texts to send (from {source})")
    return texts, source


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def run_load(call, texts: list[str], clients: int, seconds: float, max_requests: int, make_state=lambda: None) -> dict:
    """`clients` threads each calling `call(state, text)` until the time or request cap; latencies in ms."""
    lock = threading.Lock()
    issued = 0
    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.perf_counter() + seconds

    def worker(_):
        nonlocal issued
        state = make_state()
        try:
            while time.perf_counter() < deadline:
                with lock:
                    if issued >= max_requests:
                        return
                    i = issued
                    issued += 1
                t0 = time.perf_counter()
                try:
                    call(state, texts[i % len(texts)])
                except Exception as exc:  # counted and reported, the run goes on
                    with lock:
                        errors.append(f"{type(exc).__name__}: {exc}"[:200])
                    continue
                ms = (time.perf_counter() - t0) * 1000
                with lock:
                    latencies.append(ms)
        finally:
            if hasattr(state, "close"):
                state.close()

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(worker, range(clients)))
    wall = time.perf_counter() - start
    return {"clients": clients, "requests": len(latencies), "errors": len(errors), "error_examples": errors[:3],
            "seconds": round(wall, 3), "throughput_rps": round(len(latencies) / wall, 2) if wall else 0.0,
            "p50_ms": round(percentile(latencies, 50), 3), "p99_ms": round(percentile(latencies, 99), 3),
            "mean_ms": round(statistics.fmean(latencies), 3) if latencies else float("nan")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))   # port 0: the OS picks a free one
        return s.getsockname()[1]


class Gunicorn:
    """gunicorn serving `flask_app:create_app()` on 127.0.0.1 for the duration of a `with` block."""

    def __init__(self, s: ServeSettings):
        self.s = s
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile("w+", prefix="bench-serve-gunicorn-", suffix=".log", delete=False)

    def __enter__(self) -> "Gunicorn":
        import requests

        gunicorn = Path(sys.executable).with_name("gunicorn")
        if not gunicorn.exists():
            raise SystemExit(f"error: gunicorn not found beside {sys.executable} (pip install gunicorn)")
        env = {**os.environ, "MLTC_BUNDLE": self.s.bundle}
        if self.s.ort_threads:
            env["MLTC_THREADS"] = str(self.s.ort_threads)
        cmd = [str(gunicorn), "-w", str(self.s.workers), "--threads", str(self.s.threads),
               "-b", f"127.0.0.1:{self.port}", "--log-level", "warning", "flask_app:create_app()"]
        self.cmd = " ".join(cmd[1:])
        self.proc = subprocess.Popen(cmd, cwd=config.ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(self.url + "/healthz", timeout=2).ok:
                    return self
            except (requests.ConnectionError, requests.Timeout):
                pass   # not listening yet, or a worker still loading the bundle on a busy machine: ask again
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__(None, None, None)
                self.log.seek(0)
                raise SystemExit(f"error: gunicorn did not come up on {self.url}:\n{self.log.read()[-3000:]}")
            time.sleep(0.3)

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()
        os.unlink(self.log.name)


MIB = 2**20


def proc_memory(pid: int | str = "self") -> dict:
    """Current and peak resident memory of a process (MiB) from /proc/<pid>/status (VmRSS, VmHWM)."""
    fields = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) * 1024 / MIB   # the kernel reports kB
    return {"rss_mib": round(fields["VmRSS"], 1), "peak_rss_mib": round(fields["VmHWM"], 1)}


def texts_of_tokens(bundle: Path, texts: list[str], n: int, tokens: int) -> list[str]:
    """`n` texts that the bundle's tokenizer reads as exactly `tokens` tokens (special tokens included): each
    source text repeated until long enough, then cut where the last token that fits between the special tokens ends."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(bundle / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    specials = len(tok.encode("x").ids) - len(tok.encode("x", add_special_tokens=False).ids)
    out = []
    for i in range(n):
        text = texts[i % len(texts)]
        long = " ".join([text] * (tokens // max(1, len(text.split())) + 2))
        enc = tok.encode(long, add_special_tokens=False)
        if len(enc.ids) < tokens - specials:
            raise SystemExit(f"error: cannot make a {tokens}-token text from {text[:60]!r}")
        out.append(long[:enc.offsets[tokens - specials - 1][1]])
    return out


# Runs in a fresh interpreter: only what a serving process imports (the predictor), then one batch. Its peak is
# VmHWM, which starts afresh at exec; getrusage's ru_maxrss is reported beside it, but Linux folds the pre-exec
# image (here the forking benchmark's own ~100 MiB) into it, so it can overstate a small process.
RSS_CHILD = """
import json, resource, sys, time
from bench.serve import proc_memory
before = proc_memory()
from deployment.predictor import Predictor
bundle, threads, texts = sys.argv[1], int(sys.argv[2]) or None, json.load(open(sys.argv[3], encoding="utf-8"))
imported = proc_memory()
t0 = time.perf_counter()
pred = Predictor.from_bundle(bundle, num_threads=threads)
load_s = time.perf_counter() - t0
loaded = proc_memory()
t0 = time.perf_counter()
out = pred.predict(texts)
predict_s = time.perf_counter() - t0
after = proc_memory()
print(json.dumps({"rss_start_mib": before["rss_mib"], "rss_after_imports_mib": imported["rss_mib"],
                  "rss_after_load_mib": loaded["rss_mib"], "peak_rss_after_load_mib": loaded["peak_rss_mib"],
                  "rss_after_predict_mib": after["rss_mib"], "peak_rss_mib": after["peak_rss_mib"],
                  "ru_maxrss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                  "load_s": round(load_s, 3), "predict_s": round(predict_s, 3),
                  "n_tokens": sorted({r["n_tokens"] for r in out}), "linear": pred.linear is not None}))
"""


def process_memory(bundle: Path, texts: list[str], ort_threads: int | None, batch: int, tokens: int) -> dict:
    """Peak RSS of a fresh process that loads `bundle` and predicts one batch of `batch` texts of `tokens` tokens."""
    probe = texts_of_tokens(bundle, texts, batch, tokens)
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="bench-serve-texts-", delete=False,
                                     encoding="utf-8") as fh:
        json.dump(probe, fh)
    try:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(config.ROOT), os.environ.get("PYTHONPATH", "")])}
        proc = subprocess.run([sys.executable, "-c", RSS_CHILD, str(bundle), str(ort_threads or 0), fh.name],
                              capture_output=True, text=True, cwd=config.ROOT, env=env, timeout=600)
    finally:
        os.unlink(fh.name)
    if proc.returncode != 0:
        raise SystemExit(f"error: the memory probe failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"batch": batch, "tokens": tokens, "ort_threads": ort_threads, **result}


def bundle_sizes(bundle: Path) -> dict:
    """The bundle folder's bytes, in total and by file (the transformer, the linear part, the rest)."""
    files = {p.name: p.stat().st_size for p in sorted(bundle.iterdir()) if p.is_file()}
    return {"total_bytes": sum(files.values()), "files_bytes": files}


def gunicorn_workers(master_pid: int) -> list[int]:
    """The worker pids of a gunicorn master (its child processes, from /proc)."""
    children: list[int] = []
    for task in Path(f"/proc/{master_pid}/task").iterdir():
        text = (task / "children").read_text().split()
        children += [int(pid) for pid in text]
    return sorted(children)


def format_table(rows: list[dict]) -> str:
    header = (f"{'mode':<11} {'clients':>7} {'requests':>8} {'errors':>6} {'req/s':>8} {'p50 ms':>8} "
              f"{'p99 ms':>8} {'peak RSS/worker':>15}  {'web vs in-process':<40}")
    lines = [header, "-" * len(header)]
    for r in rows:
        ratio = ""
        if r["mode"] == "gunicorn" and r.get("ratio"):
            ratio = (f"p50 x{r['ratio']['p50']:.2f} (+{r['ratio']['p50_added_ms']:.1f} ms), "
                     f"req/s x{r['ratio']['throughput']:.2f}")
        workers = r.get("workers_memory") or []
        rss = "/".join(f"{w['peak_rss_mib']:.0f}" for w in workers) + " MiB" if workers else "-"
        lines.append(f"{r['mode']:<11} {r['clients']:>7} {r['requests']:>8} {r['errors']:>6} "
                     f"{r['throughput_rps']:>8.1f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {rss:>15}  {ratio}")
    return "\n".join(lines)


def run(s: ServeSettings, log=print) -> dict:
    import requests

    from deployment.predictor import BundleError, Predictor

    bundle = Path(s.bundle)
    if not bundle.is_dir():
        raise SystemExit(f"error: bundle not found: {bundle} (build one with `make run` or "
                         f"`python -m compression.quantize`, or pass --bundle DIR)")
    try:
        predictor = Predictor.from_bundle(bundle, num_threads=s.ort_threads)
    except BundleError as err:
        raise SystemExit(f"error: {err}") from None
    texts, source = read_texts(Path(s.texts) if s.texts else None, bundle, s.n_texts)
    log(f"bench.serve: {bundle} ({len(predictor.labels)} labels, max_length {predictor.max_length}); "
        f"{len(texts)} texts from {source}; clients {s.clients}; cap {s.seconds:g} s / {s.requests} requests per run")

    def in_process(_, text):
        predictor.predict([text])

    def over_http(session, text):
        r = session.post(url + "/api/predict", json={"text": text}, timeout=60)
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {r.text[:120]}")

    memory = process_memory(bundle, texts, s.ort_threads, s.rss_batch, s.rss_tokens)
    log(f"  one serving process (fresh, load + {s.rss_batch} texts x {s.rss_tokens} tokens): peak RSS "
        f"{memory['peak_rss_mib']:.1f} MiB (after load {memory['rss_after_load_mib']:.1f} MiB, "
        f"imports {memory['rss_after_imports_mib']:.1f} MiB)")
    sizes = bundle_sizes(bundle)
    rows = []
    run_load(in_process, texts, 1, 30, s.warmup)
    for clients in s.clients:
        row = {"mode": "in-process", **run_load(in_process, texts, clients, s.seconds, s.requests)}
        rows.append(row)
        log(f"  in-process  {clients:>2} clients: {row['throughput_rps']:.1f} req/s, p50 {row['p50_ms']:.2f} ms")
    with Gunicorn(s) as server:
        url = server.url
        run_load(over_http, texts, 1, 30, s.warmup, make_state=requests.Session)
        for clients in s.clients:
            row = {"mode": "gunicorn", **run_load(over_http, texts, clients, s.seconds, s.requests,
                                                  make_state=requests.Session)}
            row["workers_memory"] = [{"pid": pid, **proc_memory(pid)} for pid in gunicorn_workers(server.proc.pid)]
            base = next(r for r in rows if r["mode"] == "in-process" and r["clients"] == clients)
            if row["requests"] and base["requests"]:
                row["ratio"] = {"p50": round(row["p50_ms"] / base["p50_ms"], 3),
                                "p50_added_ms": round(row["p50_ms"] - base["p50_ms"], 3),
                                "throughput": round(row["throughput_rps"] / base["throughput_rps"], 3)}
            rows.append(row)
            log(f"  gunicorn    {clients:>2} clients: {row['throughput_rps']:.1f} req/s, p50 {row['p50_ms']:.2f} ms"
                + (f", {row['errors']} errors" if row["errors"] else ""))
        server_cmd = server.cmd
    rows.sort(key=lambda r: (r["clients"], r["mode"] != "in-process"))
    return {"settings": asdict(s), "bundle_info": {k: predictor.info.get(k) for k in ("backbone", "created", "max_length")},
            "n_labels": len(predictor.labels), "texts_source": source, "n_texts": len(texts),
            "process_memory": memory, "bundle_size": sizes,
            "server": server_cmd, "rows": rows, "table": format_table(rows)}


def main(argv: list[str] | None = None) -> int:
    d = ServeSettings()
    ap = argparse.ArgumentParser(prog="python -m bench.serve", description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default=d.bundle, help=f"model bundle directory (default {DEFAULT_BUNDLE})")
    ap.add_argument("--texts", default=None, help=f"CSV/JSONL with a text column (default {DEFAULT_TEXTS} if present)")
    ap.add_argument("--n-texts", type=positive_int, default=d.n_texts, help="distinct texts to cycle through")
    ap.add_argument("--clients", type=positive_int, nargs="+", default=d.clients, help="concurrency levels (default 1 8 32)")
    ap.add_argument("--seconds", type=positive_float, default=d.seconds, help="time cap per level and mode")
    ap.add_argument("--requests", type=positive_int, default=d.requests, help="request cap per level and mode")
    ap.add_argument("--warmup", type=non_negative_int, default=d.warmup, help="untimed requests before each mode")
    ap.add_argument("--workers", type=positive_int, default=d.workers, help="gunicorn workers")
    ap.add_argument("--threads", type=positive_int, default=d.threads, help="gunicorn threads per worker")
    ap.add_argument("--ort-threads", type=non_negative_int, default=d.ort_threads,
                    help="onnxruntime threads per predictor, 0 = its default (all cores)")
    ap.add_argument("--rss-batch", type=int, default=d.rss_batch,
                    help="texts the fresh-process memory probe predicts in one batch")
    ap.add_argument("--rss-tokens", type=int, default=d.rss_tokens,
                    help="tokens per memory-probe text (special tokens included)")
    ap.add_argument("--out", default=d.out, help="JSON output")
    a = ap.parse_args(argv)
    s = ServeSettings(bundle=a.bundle, texts=a.texts, n_texts=a.n_texts, clients=a.clients, seconds=a.seconds,
                      requests=a.requests, warmup=a.warmup, workers=a.workers, threads=a.threads,
                      ort_threads=a.ort_threads or None, rss_batch=a.rss_batch, rss_tokens=a.rss_tokens, out=a.out)
    result = run_and_report("python -m bench.serve", run, s, s.out, argv)
    web = [r for r in result["rows"] if r["mode"] == "gunicorn"]
    best = max(web, key=lambda r: r["throughput_rps"])
    print(f"\nbench.serve: {sum(r['requests'] for r in result['rows'])} requests in {result['wall_seconds']} s; "
          f"best web throughput {best['throughput_rps']:.1f} req/s at {best['clients']} clients; "
          f"one serving process peaks at {result['process_memory']['peak_rss_mib']:.0f} MiB, the workers at "
          f"{max(w['peak_rss_mib'] for r in web for w in r['workers_memory']):.0f} MiB; "
          f"bundle {result['bundle_size']['total_bytes'] / MIB:.1f} MiB; "
          f"{sum(r['errors'] for r in web)} errors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
