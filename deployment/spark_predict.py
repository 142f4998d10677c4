"""Batch prediction on Apache Spark: the batch CLI's rows and columns, for corpora that outgrow one machine.

    python -m deployment.spark_predict --bundle models/books/bundle --input books.csv --out preds/
    python -m deployment.spark_predict --bundle models/books/bundle --input 'dump/*.jsonl' --out preds/ --master 'local[4]'
    python -m deployment.spark_predict --master spark://head:7077 --conf spark.archives=build/spark-env.tar.gz#env \\
        --conf spark.pyspark.python=./env/bin/python --bundle models/books/bundle --ship-bundle --input ... --out ...
    spark-submit --master spark://head:7077 --archives build/spark-env.tar.gz#env \\
        --conf spark.pyspark.driver.python=.venv/bin/python --conf spark.pyspark.python=./env/bin/python \\
        deployment/spark_predict.py --bundle models/books/bundle --ship-bundle --input ... --out ...

Input: CSV (with a header row), JSONL or Parquet; a file, a folder or a glob, read by Spark (format from the
extension, or --input-format). Output: a folder (Parquet by default, CSV or JSONL with --format) with every input
column plus the batch CLI's (deployment.predict): `predicted_labels` (array of labels), `scores` (map label ->
score), `truncated`, `n_tokens` and `error`. Every input row comes out exactly once: a row whose text is missing,
empty, not a string or not valid Unicode, or a malformed CSV record or JSON line, gets an `error` and no
prediction. The folder appears only when the run succeeded (deployment/spark_io.py); the run ends with one line
(rows in, rows out, rows with errors, texts/s), counted by reading the output back, and writes it with the
settings to `<out>/_spark_predict.json`.

How: before the job, one tiny task per core checks that the executors' Python can import the project and runs the
same code as this driver, so a wrong environment fails in seconds with one paragraph. Then a scalar pandas UDF
(deployment/spark_worker.py) receives only the text column; each Python worker loads the one `Predictor` once and
reuses it. onnxruntime gets `--num-threads` threads per worker: by default the cores of this machine divided by the
local[N] task slots, or `spark.task.cpus` on a cluster, so tasks x threads never exceeds the cores. The bundle
reaches the executors as a path they can all read (default), or packed into a tgz and shipped with
`SparkContext.addArchive` (--ship-bundle).
"""
from __future__ import annotations

import argparse
import atexit
import json
import re
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

if __package__ in (None, ""):  # run as a file (`spark-submit deployment/spark_predict.py`): make `deployment` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deployment import spark_worker  # noqa: E402
from deployment.cli_types import positive_int, probability  # noqa: E402
from deployment.formats import dumps  # noqa: E402
from deployment.predict import CHUNK, OUT_FIELDS  # noqa: E402
from deployment.predictor import DEFAULT_BATCH_SIZE, BundleError, Predictor  # noqa: E402
from deployment.spark_io import (OUTPUT_FORMATS, RAW, LocationError, check_out, count_output,  # noqa: E402
                                 output_folder, pack_bundle, read_input, resolve_input, write_marker,
                                 write_output)
from deployment.spark_session import (ClusterError, apply_conf, check_executors, default_threads,  # noqa: E402
                                      failure_reason, restore_conf, start_session)

# pyspark 4.3 warns on every import that it does not fully support pandas >= 3; the paths used here (string, binary
# and struct/array/map columns through a scalar pandas UDF) are exercised by tests/test_spark_predict.py on pandas 3.1.
warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)

ARROW_BATCH = CHUNK * 40         # rows per Arrow batch handed to one UDF call (a text's answer does not depend on it)
PRED = "__mltc_pred"             # hidden struct column the UDF fills, expanded into OUT_FIELDS
SECRET = re.compile(r"secret|password|token|credential|key", re.IGNORECASE)


@dataclass
class SparkPredictSettings:
    bundle: str                          # bundle folder written by compression.quantize (readable by the driver)
    input: str                           # file, folder or glob (local path or a URI Spark can read)
    out: str                             # output folder
    master: str | None = None            # None: spark-submit's --master, else Spark's default local[*]
    text_column: str = "text"            # column / field holding the text
    format: str = "parquet"              # output format: parquet, csv or jsonl
    input_format: str | None = None      # None: from the file extensions
    batch_size: int = DEFAULT_BATCH_SIZE  # texts per onnxruntime call
    threshold: float | None = None       # one threshold for every label (None: the bundle's tuned ones)
    top_k: int | None = None             # keep only the k best scores per row in `scores`
    num_threads: int | None = None       # onnxruntime threads per Python worker (None: cores / task slots)
    ship_bundle: bool = False            # pack the bundle and ship it with SparkContext.addArchive
    partitions: int | None = None        # tasks to spread the rows over (None: as read, raised to Spark's parallelism)
    conf: dict[str, str] = field(default_factory=dict)   # Spark settings (--conf), every one honoured or refused
    quiet: bool = False                  # no Spark progress bar


# ---------------------------------------------------------------------------------------------- the job
_SHIPPED: dict[str, str] = {}   # "application id:bundle folder" -> archive name added to that SparkContext
_ARCHIVES: list[Path] = []


def _archive_dir() -> Path:
    """A folder for packed bundles that lives as long as this process: executors that join the session later
    still fetch the archive from the driver."""
    if not _ARCHIVES:
        _ARCHIVES.append(Path(tempfile.mkdtemp(prefix="spark_predict-")))
        atexit.register(shutil.rmtree, _ARCHIVES[0], ignore_errors=True)
    return _ARCHIVES[0]


def ship_bundle(sc, bundle: Path, log=print) -> str:
    """Ship the bundle folder to the executors (SparkContext.addArchive, as `--archives bundle.tgz#name` does);
    a session keeps its archives, so each bundle is added once per session. Returns the archive's name."""
    key = f"{sc.applicationId}:{bundle.resolve()}"
    if key not in _SHIPPED:
        tgz, name = pack_bundle(bundle, _archive_dir())
        sc.addArchive(f"{tgz}#{name}")
        _SHIPPED[key] = name
        log(f"spark_predict: shipping the bundle as {tgz.name} ({tgz.stat().st_size / 2**20:.1f} MiB, "
            f"addArchive #{name})")
    return _SHIPPED[key]


def read_checked(spark, s: SparkPredictSettings, paths: list[str], in_fmt: str, log=print):
    """The input as a DataFrame with a string text column, or LocationError; returns (df, raw_kind, columns)."""
    from pyspark.errors import AnalysisException
    from pyspark.sql.types import StringType

    try:
        df, raw_kind = read_input(spark, paths, in_fmt, s.text_column)
    except AnalysisException as exc:
        raise LocationError(f"{s.input}: Spark cannot read it ({str(exc).splitlines()[0]})") from None
    columns = [c for c in df.columns if c != RAW]
    if s.text_column not in columns:
        raise LocationError(f"{s.input}: no {s.text_column!r} column (columns: {columns}); pick one with --text-col")
    text_type = df.schema[s.text_column].dataType
    if not isinstance(text_type, StringType):
        raise LocationError(f"{s.input}: column {s.text_column!r} is {text_type.simpleString()}, not a string; "
                         f"pick the text column with --text-col")
    replaced = [c for c in columns if c in OUT_FIELDS]
    if replaced:
        log(f"spark_predict: input columns {replaced} are replaced by this run's")
    return df, raw_kind, columns


def spread(df, sc, partitions: int | None):
    """Repartition a small input over Spark's default parallelism (or `partitions`): one file under the split
    size is one task, which would keep all but one core idle. Returns (df, partitions, partitions as read)."""
    n_read = df.rdd.getNumPartitions()
    n_parts = partitions or max(n_read, sc.defaultParallelism)
    if n_parts != n_read:
        df = df.repartition(n_parts)   # round-robin: rows meet other batch companions than in the file
    return df, n_parts, n_read


def with_predictions(df, columns: list[str], udf, text_column: str):
    """Every input column (those the output replaces left out) plus the prediction fields, one UDF call per row."""
    from pyspark.sql import functions as F

    return (df.withColumn(PRED, udf(F.col(f"`{text_column}`"), F.col(RAW)))
            .select(*[F.col(f"`{c}`") for c in columns if c not in OUT_FIELDS],
                    *[F.col(PRED).getField(name).alias(name) for name in OUT_FIELDS]))


def run(s: SparkPredictSettings, log=print) -> dict:
    """Predict every row of `s.input` into `s.out`; returns the summary (also written to `<out>/_spark_predict.json`)."""
    if s.format not in OUTPUT_FORMATS:
        raise LocationError(f"--format {s.format!r}: use one of {', '.join(OUTPUT_FORMATS)}")
    paths, in_fmt = resolve_input(s.input, s.input_format)
    check_out(s.out, paths)
    bundle = Path(s.bundle)
    t0 = time.perf_counter()
    driver_pred = Predictor.from_bundle(bundle)   # fails fast, before Spark starts, on a missing or corrupt bundle
    log(f"spark_predict: {driver_pred!r}; input {s.input} ({in_fmt}) -> {s.out} ({s.format})")

    t_session = time.perf_counter()
    spark, created = start_session(s.master, s.conf, s.quiet)
    session_s = time.perf_counter() - t_session
    previous_conf = {} if created else apply_conf(spark, s.conf)
    try:
        return _run_job(spark, created, s, paths, in_fmt, bundle, {"t0": t0, "t_session": t_session,
                                                                   "session_s": session_s}, log)
    finally:
        if created:
            spark.stop()
        else:
            restore_conf(spark, previous_conf)


def _run_job(spark, created: bool, s: SparkPredictSettings, paths: list[str], in_fmt: str, bundle: Path,
             clock: dict, log) -> dict:
    from pyspark.errors import AnalysisException
    from pyspark.sql import functions as F

    sc = spark.sparkContext
    task_cpus = int(sc.getConf().get("spark.task.cpus", "1"))
    threads, why = (s.num_threads, "--num-threads") if s.num_threads else default_threads(sc.master, task_cpus)
    # Spark settings can carry credentials (spark.hadoop.fs.s3a.secret.key): printed and saved without their values.
    settings = {**asdict(s), "num_threads": threads,
                "conf": {k: ("***" if SECRET.search(k) else v) for k, v in s.conf.items()}}
    log(f"spark_predict: Spark {spark.version} on {sc.master} (session {clock['session_s']:.1f} s); onnxruntime "
        f"threads per Python worker: {threads} ({why})")
    log("spark_predict: settings " + json.dumps(settings))
    executors = check_executors(sc, created, log)
    shipped = ship_bundle(sc, bundle, log) if s.ship_bundle else None
    # Runtime SQL setting, so it also applies to a session this command did not start.
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(ARROW_BATCH))
    df, raw_kind, columns = read_checked(spark, s, paths, in_fmt, log)

    counters = {"loads": sc.accumulator([], spark_worker.ListParam()),
                "batches": sc.accumulator([], spark_worker.ListParam()), "texts": sc.accumulator(0)}
    udf = F.pandas_udf(partial(spark_worker.predict_series, bundle=str(bundle), shipped=shipped, raw_kind=raw_kind,
                               text_column=s.text_column, threshold=s.threshold, top_k=s.top_k,
                               num_threads=threads, batch_size=s.batch_size, counters=counters),
                       returnType=spark_worker.OUT_TYPE)
    # Non-deterministic: the optimizer may then never copy the call into each of the five field reads.
    udf = udf.asNondeterministic()
    t_count = time.perf_counter()
    rows_in = df.count()
    count_s = time.perf_counter() - t_count
    df, n_parts, n_read = spread(df, sc, s.partitions)
    log(f"spark_predict: {rows_in} input rows (counted in {count_s:.1f} s) in {n_parts} partitions"
        + (f" (read as {n_read})" if n_parts != n_read else "") + "; predicting ...")
    with output_folder(spark, s.out, log) as staging:
        t_predict = time.perf_counter()
        try:
            write_output(with_predictions(df, columns, udf, s.text_column), staging, s.format)
        except AnalysisException as exc:
            raise LocationError(f"{s.out}: Spark cannot write there ({str(exc).splitlines()[0]})") from None
        predict_s = time.perf_counter() - t_predict
        rows_out, errors, truncated = count_output(spark, staging, s.format)
        if rows_out != rows_in:
            raise ClusterError(f"{rows_in} rows in but {rows_out} rows out; nothing written to {s.out}")
        # Entries are "host:pid:bundle path", one per predictor load and one per batch; a worker that an earlier
        # run in this session already gave the predictor runs batches without a load.
        loads, batches = counters["loads"].value, counters["batches"].value
        workers = {":".join(entry.split(":")[:2]) for entry in batches}
        summary = {
            "rows_in": rows_in, "rows_out": rows_out, "predicted": rows_out - errors, "errors": errors,
            "truncated": truncated, "texts_per_s": round((rows_out - errors) / predict_s, 2) if predict_s else 0.0,
            "predictor_loads": len(loads), "python_workers": len(workers), "batches": len(batches),
            "texts_sent": counters["texts"].value, "bundle_paths": sorted({e.split(":", 2)[2] for e in batches}),
            "executors": executors,
            "seconds": {"bundle_check": round(clock["t_session"] - clock["t0"], 3),
                        "session_start": round(clock["session_s"], 3), "count_input": round(count_s, 3),
                        "predict_write": round(predict_s, 3), "total": round(time.perf_counter() - clock["t0"], 3)},
            "spark": {"version": spark.version, "master": sc.master, "application_id": sc.applicationId,
                      "default_parallelism": sc.defaultParallelism,
                      "partitions": n_parts, "partitions_read": n_read},
            "input_format": in_fmt, "output_format": s.format,
        }
        write_marker(spark, staging, dumps({"settings": settings, "summary": summary}, indent=2))
    return summary


# ---------------------------------------------------------------------------------------------- command line
def parse_conf(items: list[str]) -> dict[str, str]:
    conf = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise argparse.ArgumentTypeError(f"--conf {item!r}: expected KEY=VALUE")
        conf[key.strip()] = value
    return conf


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m deployment.spark_predict", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--bundle", required=True, help="bundle folder written by compression.quantize; by default the "
                   "executors read the same path (shared storage), see --ship-bundle")
    p.add_argument("--input", required=True, help="a .csv (header row), .jsonl or .parquet file, a folder of them, "
                   "or a glob (quote it); local path or a URI Spark reads (hdfs://, s3a://)")
    p.add_argument("--out", required=True, help="output folder: appears only when the run succeeds; an earlier "
                   "output of this command there is replaced, any other folder refused")
    p.add_argument("--master", default=None, help="Spark master URL (default: spark-submit's, else local[*])")
    p.add_argument("--text-col", "--text-column", dest="text_column", default="text",
                   help="column / field holding the text")
    p.add_argument("--format", default="parquet", choices=OUTPUT_FORMATS, help="output format")
    p.add_argument("--input-format", default=None, choices=("csv", "jsonl", "parquet"),
                   help="input format (default: from the file extensions)")
    p.add_argument("--batch-size", type=positive_int, default=DEFAULT_BATCH_SIZE, help="texts per onnxruntime call")
    p.add_argument("--threshold", type=probability, default=None,
                   help="one threshold in [0, 1] for every label (default: the bundle's tuned ones)")
    p.add_argument("--top-k", type=positive_int, default=None, help="keep only the k best scores per row in `scores`")
    p.add_argument("--num-threads", "--threads", dest="num_threads", type=positive_int, default=None,
                   help="onnxruntime threads per Python worker (default: cores / local task slots, or spark.task.cpus "
                        "on a cluster, so that tasks x threads never oversubscribes the cores)")
    p.add_argument("--ship-bundle", action="store_true", help="pack the bundle into a tgz and ship it to the executors "
                   "with SparkContext.addArchive (like spark-submit --archives bundle.tgz#bundle) instead of reading "
                   "--bundle on shared storage")
    p.add_argument("--partitions", type=positive_int, default=None, help="spread the rows over this many tasks "
                   "(default: as read, raised to Spark's default parallelism so that every core works)")
    p.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE",
                   help="Spark setting (repeatable), e.g. spark.archives=build/spark-env.tar.gz#env and "
                        "spark.pyspark.python=./env/bin/python for a cluster; refused when it cannot take effect")
    p.add_argument("--quiet", action="store_true", help="no Spark progress bar")
    return p


def main(argv=None) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    try:
        conf = parse_conf(a.conf)
    except argparse.ArgumentTypeError as exc:
        p.error(str(exc))
    s = SparkPredictSettings(bundle=a.bundle, input=a.input, out=a.out, master=a.master, text_column=a.text_column,
                             format=a.format, input_format=a.input_format, batch_size=a.batch_size,
                             threshold=a.threshold, top_k=a.top_k, num_threads=a.num_threads,
                             ship_bundle=a.ship_bundle, partitions=a.partitions, conf=conf, quiet=a.quiet)
    try:
        summary = run(s)
    except (BundleError, LocationError, ClusterError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from py4j.protocol import Py4JError
        from pyspark.errors import PySparkException

        if not isinstance(exc, (Py4JError, PySparkException)):
            raise
        print(f"error: the Spark job failed: {failure_reason(exc)}; nothing written to {s.out} (rerun when fixed)",
              file=sys.stderr)
        return 1
    print(f"spark_predict: {summary['rows_in']} rows in, {summary['rows_out']} rows out ({summary['predicted']} "
          f"predicted, {summary['errors']} with errors, {summary['truncated']} truncated) in "
          f"{summary['seconds']['predict_write']:.1f} s = {summary['texts_per_s']:.1f} texts/s; "
          f"{summary['batches']} batches on {summary['python_workers']} Python workers, {summary['predictor_loads']} "
          f"predictor loads; -> {s.out}")
    return 0


if __name__ == "__main__":
    # Run the package's copy of this module, not `__main__`, so that this file's functions and settings are the
    # ones `deployment.spark_worker` and the tests see (one module object, one set of caches).
    from deployment import spark_predict

    sys.exit(spark_predict.main())
