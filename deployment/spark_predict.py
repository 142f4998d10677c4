"""Batch prediction on Apache Spark: the batch CLI's rows and columns, for corpora that outgrow one machine.

    python -m deployment.spark_predict --bundle models/books/bundle --input books.csv --out preds/
    python -m deployment.spark_predict --bundle models/books/bundle --input 'dump/*.jsonl' --out preds/ --master 'local[4]'
    spark-submit --master yarn deployment/spark_predict.py --bundle models/books/bundle --ship-bundle \\
        --input hdfs:///corpus/ --input-format parquet --out hdfs:///preds/

Input: CSV (with a header row), JSONL or Parquet; a file, a folder or a glob, read by Spark (format from the
extension, or --input-format). Output: a folder (Parquet by default, CSV or JSONL with --format) with every input
column plus the batch CLI's (deployment.predict): `predicted_labels` (array of labels), `scores` (map label ->
score), `truncated`, `n_tokens` and `error`. Every input row comes out exactly once: a row whose text is missing,
empty, not a string or not valid Unicode (a lone surrogate, bytes that are not UTF-8), or a malformed CSV record or
JSON line, gets an `error` and no prediction. The run ends with one line (rows in, rows out, rows with errors,
texts/s), counted by reading the output back, and writes it with the settings to `<out>/_spark_predict.json`.

How: a scalar pandas UDF (what `pyspark.ml.functions.predict_batch_udf` is built on) receives only the text column
(plus the raw record where the text's JSON type or bytes must be checked), so every other input column stays in the
JVM untouched. Each Python worker process loads the one `Predictor` once (a module-level cache keyed by bundle path)
and reuses it for every batch of every task it runs; onnxruntime gets `--num-threads` threads per worker, by default
the cores of this machine divided by the local[N] task slots, or `spark.task.cpus` on a cluster, so executors x
threads never exceeds the cores. The bundle reaches the executors as a path they can all read (default), or packed
into a tgz and shipped with `SparkContext.addArchive` (--ship-bundle, as `spark-submit --archives bundle.tgz#bundle`).
"""
from __future__ import annotations

import argparse
import atexit
import glob
import hashlib
import json
import math
import os
import re
import shutil
import socket
import sys
import tarfile
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

from pyspark import AccumulatorParam

if __package__ in (None, ""):  # run as a file (`spark-submit deployment/spark_predict.py`): make `deployment` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deployment.predict import CHUNK, OUT_FIELDS, check_text, output_columns  # noqa: E402
from deployment.predictor import DEFAULT_BATCH_SIZE, BundleError, Predictor  # noqa: E402

# pyspark 4.3 warns on every import that it does not fully support pandas >= 3; the paths used here (string, binary
# and struct/array/map columns through a scalar pandas UDF) are exercised by tests/test_spark_predict.py on pandas 3.1.
warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)

OUTPUT_FORMATS = ("parquet", "csv", "jsonl")
EXTENSIONS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
COMPRESSION = (".gz", ".bz2", ".zst", ".lz4", ".snappy", ".deflate")   # Spark decompresses these CSV/JSON files itself
MARKER = "_spark_predict.json"   # settings + summary in --out; Spark's readers skip names that start with "_"
RAW = "__mltc_raw"               # hidden input column: the raw JSON line, or Spark's copy of a malformed CSV record
PRED = "__mltc_pred"             # hidden struct column the UDF fills, expanded into OUT_FIELDS
ARROW_BATCH = CHUNK * 40         # rows per Arrow batch: a multiple of the batch CLI's chunk, so rows meet the same
                                 # batch companions (dynamic int8 scores depend slightly on them)
SECRET = re.compile(r"secret|password|token|credential|key", re.IGNORECASE)
OUT_TYPE = ("predicted_labels array<string>, scores map<string,double>, truncated boolean, n_tokens int, "
            "error string")


class InputError(ValueError):
    """An input or output location that cannot be used at all (the message names it)."""


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
    conf: dict[str, str] = field(default_factory=dict)   # extra Spark settings for a session this command starts
    quiet: bool = False                  # no Spark progress bar


# ---------------------------------------------------------------------------------------------- worker side
_PREDICTORS: dict[tuple, Predictor] = {}   # one per Python worker process (per bundle, threads and batch size)


def shipped_bundle_dir(name: str) -> Path:
    """Where a bundle shipped with addArchive(`tgz#name`) was unpacked on this executor."""
    from pyspark import SparkFiles

    # Spark unpacks archives into the SparkFiles root (local, standalone, Kubernetes) and YARN also links them
    # into the container's working directory; both are documented places, the first one holding it wins.
    candidates = [Path(SparkFiles.getRootDirectory()) / name, Path.cwd() / name]
    for path in candidates:
        if (path / "bundle.json").is_file():
            return path
    raise BundleError(f"shipped bundle {name!r} not found on {socket.gethostname()} (looked in "
                      f"{', '.join(map(str, candidates))})")


def worker_predictor(bundle: str, shipped: str | None, num_threads: int | None, batch_size: int,
                     loads=None) -> Predictor:
    """This process's Predictor for the bundle, loaded on first use and kept for every later batch and task."""
    path = shipped_bundle_dir(shipped) if shipped else Path(bundle)
    key = (str(path), num_threads, batch_size)
    pred = _PREDICTORS.get(key)
    if pred is None:
        pred = _PREDICTORS[key] = Predictor.from_bundle(path, num_threads=num_threads, batch_size=batch_size)
        if loads is not None:  # lets the driver report (and the tests check) one load per worker process
            loads.add([f"{socket.gethostname()}:{os.getpid()}:{path}"])
    return pred


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))   # pandas gives NaN for SQL NULL


def row_text(value, raw, raw_kind: str, text_column: str = "text") -> tuple[object, str | None]:
    """(text, error) for one row; `error` is None when the text can be predicted.

    `raw_kind` says what `raw` holds: "json" the line's bytes (the text's JSON type and exact characters come from
    it: Spark's JSON reader turns 5 into "5" and a lone surrogate into "?"), "csv" Spark's copy of the record when
    it was malformed (else None), "none" nothing.
    """
    if raw_kind == "json":
        try:
            line = bytes(raw).decode("utf-8").removeprefix("\ufeff")   # a file's byte-order mark
        except UnicodeDecodeError as exc:
            return None, f"line is not UTF-8 text (byte {exc.start}: {exc.reason})"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            return None, f"invalid JSON ({exc.msg} at column {exc.colno}): {line}"
        if not isinstance(obj, dict):
            return None, f"line is not a JSON object: {line}"
        if text_column not in obj:
            return None, f"line has no {text_column!r} field"
        value = obj[text_column]
        if value is None:
            return None, "text is missing (null)"
    elif raw_kind == "csv":
        if not _missing(raw):
            return None, f"malformed CSV record (its number of fields differs from the header's): {raw}"
        if _missing(value):   # a well-formed CSV row always has the cell; Spark reads an empty one as NULL
            return None, "empty text"
        if "\ufffd" in value:  # Spark's CSV reader decodes bytes that are not UTF-8 to U+FFFD without a word
            return None, "text holds U+FFFD: the file has bytes that are not UTF-8 there"
    elif _missing(value):
        return None, "text is missing (null)"
    error = check_text(value)
    if error is None:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:   # a lone surrogate: the tokenizer cannot take it
            error = f"text is not valid Unicode ({exc.reason}, character {exc.start})"
    return (value if error is None else None), error


def predict_rows(pred: Predictor, items: list[tuple[object, str | None]], threshold: float | None = None,
                 top_k: int | None = None) -> list[dict]:
    """`output_columns` for each (text, error), predicted in chunks of the batch CLI's size, in order."""
    out: list[dict] = []
    for start in range(0, len(items), CHUNK):
        chunk = items[start:start + CHUNK]
        ok = [i for i, (_, err) in enumerate(chunk) if err is None]
        results = pred.predict([chunk[i][0] for i in ok], threshold=threshold, top_k=top_k) if ok else []
        by_row = dict(zip(ok, results))
        out.extend(output_columns(by_row.get(i), err) for i, (_, err) in enumerate(chunk))
    return out


def predict_series(text, raw, *, bundle, shipped, raw_kind, text_column, threshold, top_k, num_threads, batch_size,
                   counters=None):
    """The pandas UDF: a batch of texts (and raw records) in, a DataFrame of OUT_FIELDS out, row for row.

    Settings as in `SparkPredictSettings`; `shipped` is the archive name of a shipped bundle (else None), `raw_kind`
    as in `row_text`, `counters` the driver's accumulators. No type hints on purpose: pyspark takes a function
    without them for a scalar pandas UDF, but would look them up on the `functools.partial` wrapping it, and fail.
    """
    import pandas as pd

    pred = worker_predictor(bundle, shipped, num_threads, batch_size, counters and counters["loads"])
    items = [row_text(v, r, raw_kind, text_column) for v, r in zip(text.tolist(), raw.tolist())]
    rows = predict_rows(pred, items, threshold=threshold, top_k=top_k)
    if counters is not None:
        counters["batches"].add([f"{socket.gethostname()}:{os.getpid()}:{pred.source}"])
        counters["texts"].add(sum(err is None for _, err in items))
    return pd.DataFrame({
        "predicted_labels": pd.Series([r["predicted_labels"] for r in rows], dtype=object),
        "scores": pd.Series([r["scores"] for r in rows], dtype=object),
        "truncated": pd.Series([r["truncated"] for r in rows], dtype="boolean"),
        "n_tokens": pd.Series([r["n_tokens"] for r in rows], dtype="Int32"),
        "error": pd.Series([r["error"] for r in rows], dtype=object),
    })


# ---------------------------------------------------------------------------------------------- driver side
def _is_uri(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def _local(path: str) -> str:
    return path[len("file://"):] if path.startswith("file://") else path


def format_of(name: str) -> str | None:
    """csv / jsonl / parquet from a file name (compression suffixes ignored), None when unknown."""
    lower = name.lower()
    for suffix in COMPRESSION:
        if lower.endswith(suffix) and not lower.endswith(".parquet"):
            lower = lower[: -len(suffix)]
            break
    return EXTENSIONS.get(os.path.splitext(lower)[1])


def _visible(path: Path) -> bool:
    return not path.name.startswith((".", "_"))   # Spark skips these too (_SUCCESS, .crc files)


def resolve_input(path: str, input_format: str | None) -> tuple[list[str], str]:
    """The paths Spark should read and their format; a clear InputError when there is nothing readable."""
    if _is_uri(path):   # hdfs://, s3a://, gs://: Spark checks existence when it reads
        fmt = input_format or format_of(path)
        if fmt is None:
            raise InputError(f"{path}: cannot tell the format from the name; pass --input-format csv|jsonl|parquet")
        return [path], fmt
    local = _local(path)
    if glob.has_magic(local):
        files = [Path(m) for m in sorted(glob.glob(local, recursive=True)) if Path(m).is_file()]
        if not files:
            raise InputError(f"{path}: no file matches")
        targets = [str(f) for f in files]
    elif Path(local).is_dir():
        files = sorted(p for p in Path(local).rglob("*")
                       if p.is_file() and all(_visible(q) for q in p.relative_to(local).parents if q.name)
                       and _visible(p))
        if not files:
            raise InputError(f"{path}: folder holds no data files")
        targets = [local]
    elif Path(local).is_file():
        files, targets = [Path(local)], [local]
    else:
        raise InputError(f"{path}: file not found")
    if input_format:
        return targets, input_format
    formats = {format_of(f.name) for f in files}
    if len(formats) != 1 or None in formats:
        kinds = sorted({f.suffix or f.name for f in files})
        raise InputError(f"{path}: cannot tell one input format from the file names ({', '.join(kinds)}); "
                         f"pass --input-format csv|jsonl|parquet or a glob such as '{path.rstrip('/')}/*.csv'")
    return targets, formats.pop()


def check_out(out: str, input_paths: list[str]) -> str:
    """'overwrite' when `out` is a previous output of this command, else 'errorifexists'; refuses other folders."""
    if _is_uri(out):
        return "errorifexists"   # cannot look inside: Spark refuses an existing folder
    out_path = Path(_local(out)).resolve()
    for src in input_paths:
        if not _is_uri(src):
            src_path = Path(_local(src)).resolve()
            if src_path == out_path or out_path in src_path.parents:
                raise InputError(f"{out}: the output folder holds the input ({src}); writing there would destroy it")
    if out_path.is_file():
        raise InputError(f"{out}: is a file; --out names a folder")
    if out_path.is_dir() and any(out_path.iterdir()):
        if not (out_path / MARKER).is_file():
            raise InputError(f"{out}: folder exists and is not an output of this command (no {MARKER}); "
                             f"refusing to replace it: pick a new --out or remove it")
        return "overwrite"
    return "errorifexists" if not out_path.exists() else "overwrite"


def pack_bundle(bundle: Path, work_dir: Path) -> tuple[Path, str]:
    """bundle/ -> work_dir/bundle-<hash>.tgz with the files at its root; the name also tells bundles apart."""
    digest = hashlib.sha256()
    files = sorted(p for p in bundle.rglob("*") if p.is_file())
    for f in files:
        digest.update(str(f.relative_to(bundle)).encode())
        digest.update(f.read_bytes())
    name = f"bundle-{digest.hexdigest()[:12]}"
    tgz = work_dir / f"{name}.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        for f in files:
            tar.add(f, arcname=str(f.relative_to(bundle)))
    return tgz, name


def local_slots(master: str) -> int | None:
    """Concurrent tasks of a local[N] master (None for a cluster master)."""
    m = re.fullmatch(r"local(?:\[(\*|\d+)(?:,\s*\d+)?\])?", master.strip())
    if not m:
        return None
    if m.group(1) == "*":
        return _cores()
    return int(m.group(1) or 1)   # plain "local" runs one task at a time


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def default_threads(master: str, task_cpus: int) -> int:
    """onnxruntime threads per Python worker so that task slots x threads = cores (never more)."""
    slots = local_slots(master)
    if slots is not None:
        return max(1, _cores() // max(slots, 1))
    return max(1, task_cpus)   # a cluster runs executor-cores / spark.task.cpus tasks per executor


class ListParam(AccumulatorParam):
    """An accumulator of lists, concatenated (which worker loaded which bundle from where)."""

    def zero(self, value):
        return []

    def addInPlace(self, a, b):
        return a + b


_SHIPPED: dict[str, str] = {}   # "application id:bundle folder" -> archive name added to that SparkContext
_ARCHIVES: list[Path] = []


def _archive_dir() -> Path:
    """A folder for packed bundles that lives as long as this process: executors that join the session later
    still fetch the archive from the driver."""
    if not _ARCHIVES:
        _ARCHIVES.append(Path(tempfile.mkdtemp(prefix="spark_predict-")))
        atexit.register(shutil.rmtree, _ARCHIVES[0], ignore_errors=True)
    return _ARCHIVES[0]


def start_session(master: str | None = None, conf: dict[str, str] | None = None, quiet: bool = False):
    """The active SparkSession (a test's, spark-submit's) or a new one; returns (session, created_here).

    A session this starts runs its local Python workers on this interpreter (whose environment has onnxruntime)
    with this checkout importable, and keeps them between tasks (so each keeps its Predictor).
    """
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        if master and active.sparkContext.master != master:
            raise InputError(f"--master {master}: this process already runs a Spark session on "
                             f"{active.sparkContext.master}")
        return active, False
    launching = not os.environ.get("PYSPARK_GATEWAY_PORT")   # set when spark-submit started the JVM first
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
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark, True


def csv_line_sep(paths: list[str]) -> str | None:
    """The record separator of the first local CSV file ("\r\n" or "\n"), from its header line; None if unknown."""
    for target in paths:
        if _is_uri(target):
            return None
        path = Path(_local(target))
        first = path if path.is_file() else next(
            (f for f in sorted(path.rglob("*")) if f.is_file() and _visible(f) and format_of(f.name) == "csv"), None)
        if first is None or first.name.lower().endswith(COMPRESSION):
            return None
        with open(first, "rb") as fh:
            head = fh.read(1 << 16)
        end = head.find(b"\n")
        return None if end < 0 else ("\r\n" if head[:end].endswith(b"\r") else "\n")
    return None


def read_input(spark, paths: list[str], fmt: str, text_column: str):
    """(DataFrame with the input columns + RAW, raw_kind); AnalysisException (missing remote path...) passes up."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType, StructType

    if fmt == "parquet":
        df = spark.read.parquet(*paths)
        return df.withColumn(RAW, F.lit(None).cast("string")), "none"
    if fmt == "csv":
        options = {"header": "true", "multiLine": "true", "escape": '"', "encoding": "UTF-8"}
        sep = csv_line_sep(paths)
        if sep:   # else Spark guesses, and a guessed "\r\n" turns a quoted "\r\n" into "\n"
            options["lineSep"] = sep
        header = spark.read.options(**options).csv(paths).schema   # every column a string: no inferSchema
        schema = header.add(RAW, StringType())
        df = (spark.read.options(**options, mode="PERMISSIVE", columnNameOfCorruptRecord=RAW)
              .schema(schema).csv(paths))
        return df, "csv"
    # JSONL: Spark infers the columns; each line's bytes also go to the UDF, which judges the text from them.
    inferred = spark.read.json(paths).schema
    schema = StructType([f for f in inferred.fields if f.name != "_corrupt_record"])
    lines = spark.read.text(paths).where(F.trim(F.col("value")) != "")   # blank lines are skipped, as the CLI does
    line = F.regexp_replace(F.col("value"), "^\ufeff", "")   # a file's byte-order mark is not part of its first line
    parsed = lines.select(F.from_json(line, schema).alias("_row"), F.col("value").cast("binary").alias(RAW))
    return parsed.select(*[F.col("_row").getField(f.name).alias(f.name) for f in schema.fields], RAW), "json"


def _to_csv_safe(df):
    """CSV cells hold strings: arrays, maps and structs become JSON (the batch CLI writes the same)."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import ArrayType, MapType, StructType

    return df.select(*[F.to_json(F.col(f.name)).alias(f.name) if isinstance(f.dataType, (ArrayType, MapType, StructType))
                       else F.col(f.name) for f in df.schema.fields])


CSV_OPTIONS = {"header": "true", "escape": '"', "multiLine": "true"}   # RFC 4180 quotes; cells may hold newlines


def write_output(df, out: str, fmt: str, mode: str) -> None:
    writer = (_to_csv_safe(df) if fmt == "csv" else df).write.mode(mode)
    if fmt == "parquet":
        writer.parquet(out)
    elif fmt == "csv":
        writer.options(**CSV_OPTIONS).csv(out)
    else:
        writer.option("ignoreNullFields", "false").json(out)   # every line has every key, `"error": null` included


def read_output(spark, out: str, fmt: str):
    if fmt == "parquet":
        return spark.read.parquet(out)
    if fmt == "csv":
        return spark.read.options(**CSV_OPTIONS).csv(out)
    return spark.read.json(out)


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
    """The input as a DataFrame with a string text column, or InputError; returns (df, raw_kind, columns)."""
    from pyspark.errors import AnalysisException
    from pyspark.sql.types import StringType

    try:
        df, raw_kind = read_input(spark, paths, in_fmt, s.text_column)
    except AnalysisException as exc:
        raise InputError(f"{s.input}: Spark cannot read it ({str(exc).splitlines()[0]})") from None
    columns = [c for c in df.columns if c != RAW]
    if s.text_column not in columns:
        raise InputError(f"{s.input}: no {s.text_column!r} column (columns: {columns}); pick one with --text-column")
    text_type = df.schema[s.text_column].dataType
    if not isinstance(text_type, StringType):
        raise InputError(f"{s.input}: column {s.text_column!r} is {text_type.simpleString()}, not a string; "
                         f"pick the text column with --text-column")
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


def count_output(spark, out: str, fmt: str) -> tuple[int, int, int]:
    """Rows, rows with an error and truncated rows, counted by reading the output back."""
    from pyspark.sql import functions as F

    agg = read_output(spark, out, fmt).agg(
        F.count(F.lit(1)).alias("rows"), F.count("error").alias("errors"),
        F.sum((F.col("truncated").cast("string") == "true").cast("int")).alias("truncated")).first()
    return agg["rows"], agg["errors"], agg["truncated"] or 0


def run(s: SparkPredictSettings, log=print) -> dict:
    """Predict every row of `s.input` into `s.out`; returns the summary (also written to `<out>/_spark_predict.json`)."""
    from pyspark.errors import AnalysisException
    from pyspark.sql import functions as F

    if s.format not in OUTPUT_FORMATS:
        raise InputError(f"--format {s.format!r}: use one of {', '.join(OUTPUT_FORMATS)}")
    paths, in_fmt = resolve_input(s.input, s.input_format)
    mode = check_out(s.out, paths)
    bundle = Path(s.bundle)
    t0 = time.perf_counter()
    driver_pred = Predictor.from_bundle(bundle)   # fails fast, before Spark starts, on a missing or corrupt bundle
    log(f"spark_predict: {driver_pred!r}; input {s.input} ({in_fmt}) -> {s.out} ({s.format})")

    t_session = time.perf_counter()
    spark, created = start_session(s.master, s.conf, s.quiet)
    session_s = time.perf_counter() - t_session
    sc = spark.sparkContext
    threads = s.num_threads or default_threads(sc.master, int(sc.getConf().get("spark.task.cpus", "1")))
    # Spark settings can carry credentials (spark.hadoop.fs.s3a.secret.key): printed and saved without their values.
    settings = {**asdict(s), "num_threads": threads,
                "conf": {k: ("***" if SECRET.search(k) else v) for k, v in s.conf.items()}}
    log(f"spark_predict: Spark {spark.version} on {sc.master} (session {session_s:.1f} s); onnxruntime threads "
        f"per Python worker: {threads}" + ("" if s.num_threads else " (cores / task slots)"))
    log("spark_predict: settings " + json.dumps(settings))
    try:
        shipped = ship_bundle(sc, bundle, log) if s.ship_bundle else None
        # Runtime SQL setting, so it also applies to a session this command did not start.
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(ARROW_BATCH))
        df, raw_kind, columns = read_checked(spark, s, paths, in_fmt, log)

        counters = {"loads": sc.accumulator([], ListParam()), "batches": sc.accumulator([], ListParam()),
                    "texts": sc.accumulator(0)}
        udf = F.pandas_udf(partial(predict_series, bundle=str(bundle), shipped=shipped, raw_kind=raw_kind,
                                   text_column=s.text_column, threshold=s.threshold, top_k=s.top_k,
                                   num_threads=threads, batch_size=s.batch_size, counters=counters),
                           returnType=OUT_TYPE)
        # Non-deterministic: the optimizer may then never copy the call into each of the five field reads.
        udf = udf.asNondeterministic()
        t_count = time.perf_counter()
        rows_in = df.count()
        count_s = time.perf_counter() - t_count
        df, n_parts, n_read = spread(df, sc, s.partitions)
        log(f"spark_predict: {rows_in} input rows (counted in {count_s:.1f} s) in {n_parts} partitions"
            + (f" (read as {n_read})" if n_parts != n_read else "") + "; predicting ...")
        t_predict = time.perf_counter()
        try:
            write_output(with_predictions(df, columns, udf, s.text_column), s.out, s.format, mode)
        except AnalysisException as exc:
            raise InputError(f"{s.out}: Spark cannot write there ({str(exc).splitlines()[0]})") from None
        predict_s = time.perf_counter() - t_predict

        rows_out, errors, truncated = count_output(spark, s.out, s.format)
        # Entries are "host:pid:bundle path", one per predictor load and one per batch; a worker that an earlier
        # run in this session already gave the predictor runs batches without a load.
        loads, batches = counters["loads"].value, counters["batches"].value
        workers = {":".join(entry.split(":")[:2]) for entry in batches}
        summary = {
            "rows_in": rows_in, "rows_out": rows_out, "predicted": rows_out - errors, "errors": errors,
            "truncated": truncated, "texts_per_s": round((rows_out - errors) / predict_s, 2) if predict_s else 0.0,
            "predictor_loads": len(loads), "python_workers": len(workers), "batches": len(batches),
            "texts_sent": counters["texts"].value, "bundle_paths": sorted({e.split(":", 2)[2] for e in batches}),
            "seconds": {"bundle_check": round(t_session - t0, 3), "session_start": round(session_s, 3),
                        "count_input": round(count_s, 3), "predict_write": round(predict_s, 3),
                        "total": round(time.perf_counter() - t0, 3)},
            "spark": {"version": spark.version, "master": sc.master, "default_parallelism": sc.defaultParallelism,
                      "partitions": n_parts, "partitions_read": n_read},
            "input_format": in_fmt, "output_format": s.format,
        }
        if not _is_uri(s.out):
            Path(_local(s.out), MARKER).write_text(json.dumps({"settings": settings, "summary": summary}, indent=2))
    finally:
        if created:
            spark.stop()
    return summary


def parse_conf(items: list[str]) -> dict[str, str]:
    conf = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise argparse.ArgumentTypeError(f"--conf {item!r}: expected KEY=VALUE")
        conf[key.strip()] = value
    return conf


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m deployment.spark_predict", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--bundle", required=True, help="bundle folder written by compression.quantize; by default the "
                   "executors read the same path (shared storage), see --ship-bundle")
    p.add_argument("--input", required=True, help="a .csv (header row), .jsonl or .parquet file, a folder of them, "
                   "or a glob (quote it); local path or a URI Spark reads (hdfs://, s3a://)")
    p.add_argument("--out", required=True, help="output folder (replaced only when it is an earlier output of this command)")
    p.add_argument("--master", default=None, help="Spark master URL (default: spark-submit's, else local[*])")
    p.add_argument("--text-column", default="text", help="column / field holding the text")
    p.add_argument("--format", default="parquet", choices=OUTPUT_FORMATS, help="output format")
    p.add_argument("--input-format", default=None, choices=("csv", "jsonl", "parquet"),
                   help="input format (default: from the file extensions)")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="texts per onnxruntime call")
    p.add_argument("--threshold", type=float, default=None, help="one threshold for every label (default: the bundle's tuned ones)")
    p.add_argument("--top-k", type=int, default=None, help="keep only the k best scores per row in `scores`")
    p.add_argument("--num-threads", "--threads", dest="num_threads", type=int, default=None,
                   help="onnxruntime threads per Python worker (default: cores / local task slots, or spark.task.cpus "
                        "on a cluster, so that tasks x threads never oversubscribes the cores)")
    p.add_argument("--ship-bundle", action="store_true", help="pack the bundle into a tgz and ship it to the executors "
                   "with SparkContext.addArchive (like spark-submit --archives bundle.tgz#bundle) instead of reading "
                   "--bundle on shared storage")
    p.add_argument("--partitions", type=int, default=None, help="spread the rows over this many tasks (default: "
                   "as read, raised to Spark's default parallelism so that every core works)")
    p.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE",
                   help="extra Spark setting for the session this command starts (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no Spark progress bar")
    a = p.parse_args(argv)
    for name in ("batch_size", "top_k", "num_threads", "partitions"):
        value = getattr(a, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be an integer >= 1, got {value}")
    if a.threshold is not None and not 0.0 <= a.threshold <= 1.0:
        p.error(f"--threshold must be a number between 0 and 1, got {a.threshold}")
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
    except (BundleError, InputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"spark_predict: {summary['rows_in']} rows in, {summary['rows_out']} rows out ({summary['predicted']} "
          f"predicted, {summary['errors']} with errors, {summary['truncated']} truncated) in "
          f"{summary['seconds']['predict_write']:.1f} s = {summary['texts_per_s']:.1f} texts/s; "
          f"{summary['batches']} batches on {summary['python_workers']} Python workers, {summary['predictor_loads']} "
          f"predictor loads; -> {s.out}")
    if summary["rows_out"] != summary["rows_in"]:
        print(f"error: {summary['rows_in']} rows in but {summary['rows_out']} rows out", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    # Run the package's copy of this module, not `__main__`: Spark pickles the UDF by reference to its module,
    # so each Python worker imports `deployment.spark_predict` once and its Predictor cache lives as long as the
    # worker. Pickled from `__main__`, the function would travel by value with a fresh cache for every task.
    from deployment import spark_predict

    sys.exit(spark_predict.main())
