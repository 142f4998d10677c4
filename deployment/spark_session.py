"""The Spark session `deployment.spark_predict` runs on, and the check of its executors before the job.

    spark, created = start_session("spark://head:7077", {"spark.pyspark.python": "./env/bin/python"})
    check_executors(spark.sparkContext, created)   # ClusterError, one paragraph, when the executors can't run it

Every --conf is honoured or refused: a session this starts gets them all (pyspark reads the executors' Python
only from PYSPARK_PYTHON, so `spark.pyspark.python` is copied there); on a session that was already running (a
test's, a notebook's) runtime settings are set for the run and restored after it, and one that only takes effect
when a session starts is refused unless it already has that value. The executors' check runs one tiny task per
core: their Python must import the project and its packages and run the same project code as the driver.
"""
from __future__ import annotations

import os
import re
import sys
import threading
from pathlib import Path

from deployment import spark_worker
from deployment.files import LocationError

ENV_HINT = ("build the executors' environment with `make spark-env` and pass `--archives build/spark-env.tar.gz#env "
            "--conf spark.pyspark.python=./env/bin/python` (to spark-submit; `--conf spark.archives=build/spark-env"
            ".tar.gz#env` to this command), or point spark.pyspark.python at a Python 3.11 on every worker that has "
            "the project installed (docs/SPARK.md)")
PROBE_PATIENCE_S = 60.0   # seconds before the executors' check says it is still waiting for an executor


class ClusterError(RuntimeError):
    """The cluster cannot run the job as set up (the executors' Python, or a failed Spark job): one paragraph."""


def cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def local_slots(master: str) -> int | None:
    """Concurrent tasks of a local[N] master (None for a cluster master)."""
    m = re.fullmatch(r"local(?:\[(\*|\d+)(?:,\s*\d+)?\])?", master.strip())
    if not m:
        return None
    if m.group(1) == "*":
        return cores()
    return int(m.group(1) or 1)   # plain "local" runs one task at a time


def default_threads(master: str, task_cpus: int) -> tuple[int, str]:
    """(onnxruntime threads per Python worker, where the number comes from): task slots x threads = cores."""
    slots = local_slots(master)
    if slots is not None:
        return max(1, cores() // max(slots, 1)), f"{cores()} cores / {slots} task slots of {master}"
    # A cluster runs executor cores / spark.task.cpus tasks per executor: each task may use spark.task.cpus cores.
    return max(1, task_cpus), f"spark.task.cpus = {task_cpus}"


def _same_python(path: str) -> bool:
    return any(f(path) == f(sys.executable) for f in (os.path.abspath, os.path.realpath))


def apply_conf(spark, conf: dict[str, str]) -> dict[str, str | None]:
    """Set each --conf on a session that was already running; returns the previous values, to restore.

    A setting Spark reads only when a session starts is refused (LocationError) unless it already has that value:
    a --conf is honoured or refused, never dropped."""
    from pyspark.errors import AnalysisException

    previous: dict[str, str | None] = {}
    for key, value in conf.items():
        try:
            before = spark.conf.get(key, None)
            spark.conf.set(key, value)
            previous[key] = before
        except AnalysisException:
            current = spark.sparkContext.getConf().get(key)
            if current != value:
                restore_conf(spark, previous)
                raise LocationError(f"--conf {key}={value}: this process already runs a Spark session, and {key} takes "
                                 f"effect only when a session starts (it is {current!r} here)") from None
    return previous


def restore_conf(spark, previous: dict[str, str | None]) -> None:
    for key, value in previous.items():
        spark.conf.unset(key) if value is None else spark.conf.set(key, value)


def start_session(master: str | None = None, conf: dict[str, str] | None = None, quiet: bool = False):
    """The active SparkSession (a test's, a notebook's) or a new one; returns (session, created_here).

    A session this starts gets every --conf. pyspark takes the executors' Python only from the PYSPARK_PYTHON
    variable, so `spark.pyspark.python` is copied there; a local session without it runs its Python workers on
    this interpreter (whose environment has onnxruntime) with this checkout importable. Python workers are kept
    between tasks (so each keeps its Predictor).
    """
    from pyspark.sql import SparkSession

    conf = dict(conf or {})
    driver_python = conf.get("spark.pyspark.driver.python")
    if driver_python and not _same_python(driver_python):
        raise LocationError(f"--conf spark.pyspark.driver.python={driver_python}: this command is the driver and runs "
                         f"on {sys.executable}; run it with that Python instead (spark-submit reads this setting)")
    active = SparkSession.getActiveSession()
    if active is not None:
        if master and active.sparkContext.master != master:
            raise LocationError(f"--master {master}: this process already runs a Spark session on "
                             f"{active.sparkContext.master}")
        return active, False
    launching = not os.environ.get("PYSPARK_GATEWAY_PORT")   # set when spark-submit started the JVM first
    if "spark.pyspark.python" in conf:
        os.environ["PYSPARK_PYTHON"] = conf["spark.pyspark.python"]
    if launching and (master is None or master.startswith("local")):
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        root = str(Path(__file__).resolve().parents[1])
        paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        os.environ["PYTHONPATH"] = os.pathsep.join([root] + [p for p in paths if p != root])
    builder = SparkSession.builder.appName("deployment.spark_predict")
    if master:
        builder = builder.master(master)
    builder = (builder.config("spark.python.worker.reuse", "true")
               .config("spark.ui.showConsoleProgress", "false" if quiet else "true"))
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark, True


def failure_reason(exc: BaseException) -> str:
    """The one line that says why a Spark job failed, from a Java or Python exception's long text."""
    text = str(exc)
    for pattern in (r'Cannot run program "[^"]*"[^\n]*', r"(?:\w+\.)*\w+(?:Error|Exception): [^\n]+(?=\n?\s*$)"):
        found = re.findall(pattern, text.strip())
        if found:
            return found[-1].strip()
    causes = re.findall(r"Caused by: ([^\n]+)", text)
    return (causes[-1] if causes else text.strip().splitlines()[0] if text.strip() else type(exc).__name__).strip()


def executor_problem(reports: list[dict], driver_sources: dict[str, str]) -> str | None:
    """Why the executors that answered the check cannot run the job (one paragraph), or None.

    `reports` are the check's answers (a missing module, else `spark_worker.environment_report()`);
    `driver_sources` the driver's digests of the same module files."""
    for r in reports:
        if "missing" in r:
            return (f"the executors' Python cannot run the predictor: {r['python']} (Python {r['version']} on "
                    f"{r['host']}) cannot import {r['missing']} ({r['error']}). The executors need the project's "
                    f"serving packages: {ENV_HINT}.")
    for r in reports:
        stale = sorted(name for name, digest in r["sources"].items() if driver_sources.get(name) != digest)
        if stale:
            return (f"the executors run other code than this driver: {', '.join('deployment/' + n for n in stale)} "
                    f"differ on {r['host']} ({r['python']}); rebuild the executors' environment from this checkout "
                    "(`make spark-env`) and ship the new archive.")
    return None


def check_executors(sc, created: bool, log=print) -> dict:
    """One tiny task per core before the job: the executors' Python must import the project and its packages and
    run the same project code as this driver; else ClusterError, one paragraph naming the Python and the module."""
    def probe(_):
        # Defined in a function so that cloudpickle sends its code by value: the executor needs nothing of this
        # project to run it, which is the point.
        import socket
        import sys

        info = {"python": sys.executable, "version": sys.version.split()[0], "host": socket.gethostname()}
        try:
            from deployment import spark_worker as worker

            info.update(worker.environment_report())
        except ImportError as exc:
            info["missing"], info["error"] = exc.name or str(exc), f"{type(exc).__name__}: {exc}"
        return info

    python = os.environ.get("PYSPARK_PYTHON", "python3")
    n = max(1, sc.defaultParallelism)
    log(f"spark_predict: checking the executors' Python ({python}) with {n} tiny task(s) ...")
    # A Python that cannot start fails each try of the task with a Java stack trace (spark.task.maxFailures of
    # them on a cluster); the paragraph below says it once. Quiet meanwhile, with our own word if nothing runs.
    waiting = threading.Timer(PROBE_PATIENCE_S, log, [
        f"spark_predict: still waiting after {PROBE_PATIENCE_S:.0f} s for an executor to run the check: is the master "
        "reachable, and do its workers have the cores and memory this job asks for (spark.executor.cores, "
        "spark.executor.memory)? The master's web UI lists both."])
    waiting.daemon = True
    if created:
        sc.setLogLevel("FATAL")
    waiting.start()
    try:
        reports = sc.parallelize(range(n), n).map(probe).collect()
    except Exception as exc:   # py4j's Py4JJavaError: the Python worker did not start, or died importing pyspark
        raise ClusterError(f"the executors cannot start their Python ({python}): {failure_reason(exc)}. "
                           f"spark.pyspark.python (or PYSPARK_PYTHON) must name a Python 3.11 that exists on every "
                           f"executor: {ENV_HINT}.") from None
    finally:
        waiting.cancel()
        if created:
            sc.setLogLevel("WARN")
    problem = executor_problem(reports, spark_worker.source_digests(
        sorted({name for r in reports for name in r.get("sources", {})})))
    if problem:
        raise ClusterError(problem)
    pythons = sorted({f"{r['python']} (Python {r['version']})" for r in reports})
    log(f"spark_predict: executors' Python ok on {len({r['host'] for r in reports})} host(s): {', '.join(pythons)}")
    return {"pythons": pythons, "hosts": sorted({r["host"] for r in reports})}
