"""Spark on a real standalone cluster: the cluster guide's commands (docs/SPARK.md), run as written, on loopback.

A master and two workers (1 core, 1 GB each) start from the pip package's own `bin/spark-class` on 127.0.0.1, with
nothing of the project on their PATH (their `python3` is the system's, without numpy or the project). The
executors' Python is the packed environment `scripts/build_spark_env.sh` builds (what `make spark-env` runs; no
torch), shipped with the job. Checked: every row out exactly once, bad rows flagged, decisions equal to the batch
CLI's (`deployment.predict`) on every row, tasks on both workers; a worker killed mid-job still leaves every row
exactly once; executors without the environment fail in seconds with one paragraph. Every process started here
(in its own process group) is killed when the module ends, whatever happened.
"""
from __future__ import annotations

import csv
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pyspark
import pytest

import config
from deployment import predict
from tests.tiny_bundle import TINY_LABELS, sample_texts

pytestmark = pytest.mark.slow

SPARK_HOME = Path(pyspark.__file__).resolve().parent
# The guide's placeholders, replaced by this cluster's values; docs/SPARK.md must still hold each of them.
PLACEHOLDERS = ("spark://head:7077", "build/spark-env.tar.gz", "models/books/bundle", "/shared/corpus.csv",
                "/shared/preds/books/")
DAEMON_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_HOME": str(SPARK_HOME),
              "SPARK_DAEMON_MEMORY": "256m"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_group(proc: subprocess.Popen, sig=signal.SIGTERM, wait: float = 15.0) -> None:
    """Stop a process started with start_new_session=True and everything it started (executors, Python workers)."""
    for s in (sig, signal.SIGKILL):
        try:
            os.killpg(proc.pid, s)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def tail(path: Path, n: int = 3000) -> str:
    return path.read_text(errors="replace")[-n:] if path.is_file() else f"({path} missing)"


class Cluster:
    """A standalone master and workers on 127.0.0.1, each in its own process group."""

    def __init__(self, root: Path):
        self.root, self.procs = root, {}
        self.port, self.webui = free_port(), free_port()
        self.url = f"spark://127.0.0.1:{self.port}"

    def _start(self, name: str, args: list[str]) -> None:
        log = self.root / f"{name}.log"
        with open(log, "wb") as fh:
            self.procs[name] = subprocess.Popen([str(SPARK_HOME / "bin" / "spark-class"), *args], cwd=self.root,
                                                env={**DAEMON_ENV, "HOME": str(self.root)}, stdout=fh,
                                                stderr=subprocess.STDOUT, start_new_session=True)

    def start(self, workers: int = 2) -> None:
        """Start the master and the workers; `wait_ready` waits for them (JVMs take a while: do other work first)."""
        self.n_workers = workers
        self._start("master", ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                               "--port", str(self.port), "--webui-port", str(self.webui)])
        for i in range(workers):
            work = self.root / f"worker{i}"
            work.mkdir()
            self._start(f"worker{i}", ["org.apache.spark.deploy.worker.Worker", self.url, "--host", "127.0.0.1",
                                       "--cores", "1", "--memory", "1g", "--work-dir", str(work),
                                       "--webui-port", str(free_port())])

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            assert not dead, f"{dead} exited:\n" + "\n".join(tail(self.root / f"{n}.log") for n in dead)
            try:
                state = self.state()
                if state.get("status") == "ALIVE" and state.get("aliveworkers") == self.n_workers:
                    return
            except OSError:   # the master's web UI is not up yet
                pass
            time.sleep(0.5)
        raise AssertionError(f"the cluster did not come up in {timeout:.0f} s:\n" + tail(self.root / "master.log"))

    def state(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.webui}/json", timeout=5) as resp:
            return json.load(resp)

    def tasks_by_worker(self, app_id: str) -> dict[str, int]:
        """Tasks each worker's executors ran for the application, counted from the executors' own logs."""
        return {f"worker{i}": sum(f.read_text(errors="replace").count("Running task")
                                  for f in (self.root / f"worker{i}" / app_id).glob("*/stderr"))
                for i in range(2)}

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            kill_group(proc)


def build_env(archive: Path) -> Path:
    """The executors' environment, built by the script `make spark-env` runs (gzip -1: the tests' time matters)."""
    proc = subprocess.run(["bash", str(config.ROOT / "scripts" / "build_spark_env.sh"), str(archive)],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "GZIP_LEVEL": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    summary = proc.stdout.strip().splitlines()[-1]
    print(summary)
    assert re.search(r"spark-env: .*spark-env\.tar\.gz: \d+ MiB \(\d+ MiB unpacked; Python 3\.11\.\d+, no torch\)",
                     summary), summary
    return archive


@pytest.fixture(scope="module")
def setup(tmp_path_factory, request) -> tuple[Cluster, Path]:
    """(the running cluster, the packed environment): the cluster's JVMs boot while the environment is built."""
    cluster = Cluster(tmp_path_factory.mktemp("cluster"))
    request.addfinalizer(cluster.stop)   # registered before starting: a failed start still stops what did start
    cluster.start()
    archive = build_env(tmp_path_factory.mktemp("spark-env") / "spark-env.tar.gz")
    cluster.wait_ready()
    return cluster, archive


@pytest.fixture(scope="module")
def cluster(setup) -> Cluster:
    return setup[0]


@pytest.fixture(scope="module")
def spark_env(setup) -> Path:
    return setup[1]


def readme_command(start: str) -> str:
    """docs/SPARK.md's shell lines from the one starting with `start` to the end of its command (backslash lines)."""
    lines = (config.ROOT / "docs" / "SPARK.md").read_text(encoding="utf-8").splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith(start))
    block = [lines[i]]
    while block[-1].rstrip().endswith("\\"):
        i += 1
        block.append(lines[i])
    return "\n".join(block)


def as_run_here(command: str, values: dict[str, str]) -> str:
    for placeholder in PLACEHOLDERS:
        if placeholder in command:
            command = command.replace(placeholder, values[placeholder])
    return command


def run_shell(script: str, log: Path, timeout: float = 300, on_start=None) -> subprocess.CompletedProcess:
    """bash -c `script` from the repository root, its output in `log`, its process group killed on any way out.
    `on_start(proc)` runs while it does (the worker-kill test watches the job from there)."""
    # As a user's shell has it: no PYSPARK_* variables (a local session earlier in this process sets them).
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PYSPARK_")}, "SPARK_LOCAL_IP": "127.0.0.1",
           "PYTHONPATH": ""}
    with open(log, "w") as fh:
        proc = subprocess.Popen(["bash", "-euo", "pipefail", "-c", script], cwd=config.ROOT, env=env, stdout=fh,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            if on_start is not None:
                on_start(proc)
            proc.wait(timeout=timeout)
        finally:
            kill_group(proc, signal.SIGKILL, wait=5)
    return subprocess.CompletedProcess(script, proc.returncode, log.read_text(errors="replace"), "")


def write_input(path: Path, n: int, seed: int) -> list[dict]:
    texts, _ = sample_texts(TINY_LABELS, n, seed=seed)
    rows = [{"id": f"r{i}", "text": t} for i, t in enumerate(texts)]
    rows[3]["text"], rows[7]["text"] = "", "   \n "   # flagged, not predicted
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["id", "text"])
        writer.writeheader()
        writer.writerows(rows)
        fh.write("r-bad,a record,with a field too many\r\n")
    return rows + [{"id": "r-bad", "text": None}]


def check_output(out: Path, rows: list[dict]) -> dict[str, dict]:
    """Every input row exactly once, bad ones flagged; returns the rows by id."""
    got = pq.read_table(out).to_pylist()
    ids = [r["id"] for r in got]
    assert sorted(ids) == sorted(r["id"] for r in rows) and len(set(ids)) == len(ids), "rows lost or duplicated"
    by_id = {r["id"]: r for r in got}
    assert by_id["r3"]["error"] == by_id["r7"]["error"] == "empty text"
    assert by_id["r-bad"]["error"].startswith("malformed CSV record")
    assert sum(r["error"] is None for r in got) == len(rows) - 3
    return by_id


def test_the_packed_environment_runs_from_any_folder_without_torch(spark_env, tmp_path):
    unpacked = tmp_path / "somewhere" / "env"
    unpacked.mkdir(parents=True)
    subprocess.run(["tar", "-xzf", str(spark_env), "-C", str(unpacked)], check=True)
    probe = ("import importlib.util, sys; import deployment.spark_worker as w; [__import__(m) for m in "
             "w.EXECUTOR_MODULES]; print(sys.prefix, importlib.util.find_spec('torch'))")
    proc = subprocess.run(["./env/bin/python", "-I", "-c", probe], cwd=unpacked.parent, capture_output=True,
                          text=True, env={"PATH": "/usr/bin:/bin"}, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == [str(unpacked), "None"]   # its own prefix, and no torch


def test_the_documented_spark_submit_runs_on_two_workers(cluster, spark_env, tiny_bundle, tmp_path):
    src, out = tmp_path / "corpus.csv", tmp_path / "preds"
    rows = write_input(src, 400, seed=11)
    values = {"spark://head:7077": cluster.url, "build/spark-env.tar.gz": str(spark_env),
              "models/books/bundle": str(tiny_bundle), "/shared/corpus.csv": str(src), "/shared/preds/books/": str(out)}
    command = readme_command("spark-submit --master spark://head:7077")
    assert all(p in command for p in PLACEHOLDERS), command
    script = "\n".join([readme_command("export SPARK_HOME="), readme_command("export PATH="),
                        as_run_here(command, values)])
    t0 = time.monotonic()
    proc = run_shell(script, tmp_path / "submit.log")
    assert proc.returncode == 0, proc.stdout[-5000:]
    print(f"spark-submit on the cluster: {time.monotonic() - t0:.1f} s")

    got = check_output(out, rows)
    summary = json.loads((out / "_spark_predict.json").read_text())["summary"]
    print(f"spark-submit: {summary['seconds']}")
    assert summary["spark"]["master"] == cluster.url
    tasks = cluster.tasks_by_worker(summary["spark"]["application_id"])
    assert all(n > 0 for n in tasks.values()), tasks   # both workers ran tasks
    pythons = summary["executors"]["pythons"]   # the packed environment, unpacked in the executors' folders
    assert pythons and all(re.fullmatch(rf"{re.escape(str(cluster.root))}/worker\d/app-[\w-]+/\d+/env/bin/python \(Python 3\.11\.\d+\)",
                                        p) for p in pythons), pythons
    assert all("/worker" in p and Path(p, "bundle.json").is_file() for p in summary["bundle_paths"])   # shipped

    reference = tmp_path / "reference.jsonl"
    assert predict.main(["--bundle", str(tiny_bundle), "--input", str(src), "--out", str(reference), "--quiet"]) == 0
    expected = {r["id"]: r for r in map(json.loads, reference.read_text().splitlines()) if "id" in r}
    predicted = [key for key, exp in expected.items() if exp["error"] is None]
    labels_differ = [key for key in predicted if got[key]["predicted_labels"] != expected[key]["predicted_labels"]]
    score_gap = max(abs(dict(got[key]["scores"])[label] - score)
                    for key in predicted for label, score in expected[key]["scores"].items())
    assert not labels_differ and score_gap <= 1e-4, (
        f"decisions differ from the batch CLI's on {len(labels_differ)} of {len(predicted)} rows (e.g. "
        f"{[(k, got[k]['predicted_labels'], expected[k]['predicted_labels']) for k in labels_differ[:2]]}), scores "
        f"by up to {score_gap:.4f}: a text's scores must not depend on the texts it is batched with")


def test_without_the_environment_the_executors_fail_fast_with_one_paragraph(cluster, tiny_bundle, tmp_path):
    src, out = tmp_path / "corpus.csv", tmp_path / "preds"
    write_input(src, 20, seed=12)
    command = readme_command(".venv/bin/python -m deployment.spark_predict --master spark://head:7077")
    # The same command without the two settings that give the executors their Python.
    command = re.sub(r"--conf spark\.(archives|pyspark\.python)=\S+ ?", "", command)
    values = {"spark://head:7077": cluster.url, "models/books/bundle": str(tiny_bundle),
              "/shared/corpus.csv": str(src), "/shared/preds/books/": str(out)}
    t0 = time.monotonic()
    proc = run_shell(as_run_here(command, values), tmp_path / "cli.log", timeout=180)
    seconds = time.monotonic() - t0
    assert proc.returncode == 2, proc.stdout[-3000:]
    errors = [line for line in proc.stdout.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stdout[-3000:]
    assert re.search(r"the executors' Python cannot run the predictor: /usr/bin/python3 \(Python 3\.11\.\d+ on \S+\) "
                     r"cannot import deployment \(ModuleNotFoundError: No module named 'deployment'\)", errors[0])
    assert "make spark-env" in errors[0]
    assert "Traceback" not in proc.stdout and not out.exists()
    print(f"failed in {seconds:.1f} s, JVM start included")


def test_a_worker_killed_mid_job_still_leaves_every_row_once(cluster, spark_env, tiny_bundle, tmp_path):
    """The CLI form of the guide's command; worker 1 (its executor and Python workers) is killed with SIGKILL
    once the job has committed its first tasks. Spark reruns the lost work on worker 0."""
    src, out = tmp_path / "corpus.csv", tmp_path / "preds"
    rows = write_input(src, 2000, seed=13)
    values = {"spark://head:7077": cluster.url, "build/spark-env.tar.gz": str(spark_env),
              "models/books/bundle": str(tiny_bundle), "/shared/corpus.csv": str(src), "/shared/preds/books/": str(out)}
    command = as_run_here(readme_command(".venv/bin/python -m deployment.spark_predict --master spark://head:7077"),
                          values)
    killed = {}

    def kill_worker_once_tasks_commit(proc):
        deadline = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < deadline:
            committed = list(tmp_path.glob(".preds.partial-*/_temporary/0/task_*"))
            if len(committed) >= 2:
                kill_group(cluster.procs["worker1"], signal.SIGKILL)
                killed["after_tasks"] = len(committed)
                return
            time.sleep(0.05)

    proc = run_shell(command + " --partitions 16 --quiet", tmp_path / "cli.log", on_start=kill_worker_once_tasks_commit)
    assert killed, "the job ended before any worker was killed: give it more rows"
    assert proc.returncode == 0, proc.stdout[-5000:]
    assert re.search(r"Lost executor|ExecutorLostFailure|worker lost", proc.stdout, re.IGNORECASE), proc.stdout[-3000:]
    check_output(out, rows)
    summary = json.loads((out / "_spark_predict.json").read_text())["summary"]
    assert summary["rows_in"] == summary["rows_out"] == len(rows)
    print(f"worker killed after {killed['after_tasks']} committed tasks; run {summary['seconds']}")
