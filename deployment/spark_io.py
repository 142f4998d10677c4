"""The files of `deployment.spark_predict` (driver side): which input paths and format, reading them into a
DataFrame with each row's raw record beside it, and writing the output folder so that a reader finds a
complete output or none.

    from deployment.spark_io import resolve_input, read_input, output_folder, write_output
    paths, fmt = resolve_input("corpus/*.jsonl", None)
    with output_folder(spark, "preds/") as staging:        # renamed to preds/ only if the block succeeds
        write_output(df, staging, "parquet")
        write_marker(spark, staging, json_text)

Output folders: a plain path is built under a hidden name beside it and renamed into place when complete
(`deployment.files.replace_dir`, the project's one way to replace a folder); a URI (hdfs://, s3a://, file://) the
same way through Hadoop's FileSystem (`.<name>.partial-<application id>`, then a rename). A failed, interrupted or
killed run therefore leaves nothing at --out, and the next run removes what it left beside it. A folder is
replaced only when it holds MARKER, the file every output of this command ends with.
"""
from __future__ import annotations

import glob
import hashlib
import os
import re
import tarfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from deployment.files import LocationError, OutputError, check_replaceable, replace_dir, write_text

OUTPUT_FORMATS = ("parquet", "csv", "jsonl")
EXTENSIONS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
COMPRESSION = (".gz", ".bz2", ".zst", ".lz4", ".snappy", ".deflate")   # Spark decompresses these CSV/JSON files itself
MARKER = "_spark_predict.json"   # settings + summary in --out; Spark's readers skip names that start with "_"
WHAT = "spark_predict output"
RAW = "__mltc_raw"               # hidden input column: the raw JSON line, or Spark's copy of a malformed CSV record
CSV_OPTIONS = {"header": "true", "escape": '"', "multiLine": "true"}   # RFC 4180 quotes; cells may hold newlines


def is_uri(path: str) -> bool:
    """A location only Spark / Hadoop can look into (hdfs://, s3a://, gs://); file:// is a local path."""
    return "://" in path and not path.startswith("file://")


def has_scheme(path: str) -> bool:
    """A URI (hdfs://, file:/, s3a://): written through Hadoop's FileSystem; a plain path through Python."""
    return re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:/", path) is not None


def local_path(path: str) -> str:
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
    """The paths Spark should read and their format; a clear LocationError when there is nothing readable."""
    if is_uri(path):   # hdfs://, s3a://, gs://: Spark checks existence when it reads
        fmt = input_format or format_of(path)
        if fmt is None:
            raise LocationError(f"{path}: cannot tell the format from the name; pass --input-format csv|jsonl|parquet")
        return [path], fmt
    local = local_path(path)
    if glob.has_magic(local):
        files = [Path(m) for m in sorted(glob.glob(local, recursive=True)) if Path(m).is_file()]
        if not files:
            raise LocationError(f"{path}: no file matches")
        targets = [str(f) for f in files]
    elif Path(local).is_dir():
        files = sorted(p for p in Path(local).rglob("*")
                       if p.is_file() and all(_visible(q) for q in p.relative_to(local).parents if q.name)
                       and _visible(p))
        if not files:
            raise LocationError(f"{path}: folder holds no data files")
        targets = [local]
    elif Path(local).is_file():
        files, targets = [Path(local)], [local]
    else:
        raise LocationError(f"{path}: file not found")
    if input_format:
        return targets, input_format
    formats = {format_of(f.name) for f in files}
    if len(formats) != 1 or None in formats:
        kinds = sorted({f.suffix or f.name for f in files})
        raise LocationError(f"{path}: cannot tell one input format from the file names ({', '.join(kinds)}); "
                         f"pass --input-format csv|jsonl|parquet or a glob such as '{path.rstrip('/')}/*.csv'")
    return targets, formats.pop()


def check_out(out: str, input_paths: list[str]) -> None:
    """Before Spark starts: refuse a local --out that holds the input, is a file or is someone else's folder.
    (A URI is checked through Hadoop when the output is written.)"""
    if is_uri(out):
        return
    out_path = Path(local_path(out)).resolve()
    for src in input_paths:
        if not is_uri(src):
            src_path = Path(local_path(src)).resolve()
            if src_path == out_path or out_path in src_path.parents:
                raise LocationError(f"{out}: the output folder holds the input ({src}); writing there would destroy it")
    if out.startswith("file://"):
        return
    try:
        check_replaceable(out_path, owned_by=MARKER, what=WHAT)
    except OutputError as exc:
        raise LocationError(str(exc)) from None


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


# ---------------------------------------------------------------------------------------------- reading
def csv_line_sep(paths: list[str]) -> str | None:
    """The record separator of the first local CSV file ("\r\n" or "\n"), from its header line; None if unknown."""
    for target in paths:
        if is_uri(target):
            return None
        path = Path(local_path(target))
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


# ---------------------------------------------------------------------------------------------- writing
def _to_csv_safe(df):
    """CSV cells hold strings: arrays, maps and structs become JSON (the batch CLI writes the same)."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import ArrayType, MapType, StructType

    return df.select(*[F.to_json(F.col(f.name)).alias(f.name) if isinstance(f.dataType, (ArrayType, MapType, StructType))
                       else F.col(f.name) for f in df.schema.fields])


def write_output(df, folder: str, fmt: str) -> None:
    """Write `df` into the staging folder (it may exist, empty: `output_folder` made it)."""
    writer = (_to_csv_safe(df) if fmt == "csv" else df).write.mode("overwrite")
    if fmt == "parquet":
        writer.parquet(folder)
    elif fmt == "csv":
        writer.options(**CSV_OPTIONS).csv(folder)
    else:
        writer.option("ignoreNullFields", "false").json(folder)   # every line has every key, `"error": null` included


def read_output(spark, out: str, fmt: str):
    if fmt == "parquet":
        return spark.read.parquet(out)
    if fmt == "csv":
        return spark.read.options(**CSV_OPTIONS).csv(out)
    return spark.read.json(out)


def count_output(spark, out: str, fmt: str) -> tuple[int, int, int]:
    """Rows, rows with an error and truncated rows, counted by reading the output back."""
    from pyspark.sql import functions as F

    agg = read_output(spark, out, fmt).agg(
        F.count(F.lit(1)).alias("rows"), F.count("error").alias("errors"),
        F.sum((F.col("truncated").cast("string") == "true").cast("int")).alias("truncated")).first()
    return agg["rows"], agg["errors"], agg["truncated"] or 0


def _hadoop(spark, path: str):
    """(Hadoop FileSystem, Path) for a URI, through the session's JVM and Hadoop configuration."""
    sc = spark.sparkContext
    hpath = sc._jvm.org.apache.hadoop.fs.Path(path)
    return hpath.getFileSystem(sc._jsc.hadoopConfiguration()), hpath


def write_marker(spark, folder: str, text: str) -> None:
    """MARKER (UTF-8 `text`) into a staging folder of `output_folder`."""
    if not has_scheme(folder):
        write_text(Path(folder) / MARKER, text)
        return
    fs, hpath = _hadoop(spark, folder.rstrip("/") + "/" + MARKER)
    stream = fs.create(hpath, True)
    try:
        stream.write(bytearray(text.encode("utf-8")))
    finally:
        stream.close()


@contextmanager
def output_folder(spark, out: str, log=print) -> Iterator[str]:
    """Yield a staging folder for the output; when the block ends without an error it replaces `out` (an earlier
    output of this command, or nothing), else it is removed and `out` is left as it was."""
    if not has_scheme(out):
        try:
            with replace_dir(out, owned_by=MARKER, what=WHAT) as tmp:
                yield str(tmp)
        except OutputError as exc:
            raise LocationError(str(exc)) from None
        return
    fs, target = _hadoop(spark, out)
    jvm_path = spark.sparkContext._jvm.org.apache.hadoop.fs.Path
    if fs.exists(target):
        if fs.getFileStatus(target).isFile():
            raise LocationError(f"{out}: is a file; --out names a folder")
        if len(fs.listStatus(target)) and not fs.exists(jvm_path(target, MARKER)):
            raise LocationError(f"{out}: folder exists and is not a {WHAT} (no {MARKER}); refusing to replace it: "
                             "pick a new --out or remove it")
    parent, name = target.getParent(), target.getName()
    leftover = re.compile(rf"^\.{re.escape(name)}\.(?:partial|old)-.+$")
    if parent is not None and fs.exists(parent):
        for status in fs.listStatus(parent):   # what killed runs left (one run per --out at a time)
            if leftover.match(status.getPath().getName()):
                fs.delete(status.getPath(), True)
                log(f"spark_predict: removed {status.getPath().toString()}, left by a run that did not finish")
    run_id = spark.sparkContext.applicationId
    staging, old = jvm_path(parent, f".{name}.partial-{run_id}"), jvm_path(parent, f".{name}.old-{run_id}")
    try:
        yield staging.toString()
        if fs.exists(target) and not fs.rename(target, old):
            raise LocationError(f"{out}: cannot move the earlier output aside to {old.toString()}")
        if not fs.rename(staging, target):
            if fs.exists(old):
                fs.rename(old, target)
            raise LocationError(f"{out}: cannot rename {staging.toString()} into place")
        fs.delete(old, True)
    finally:
        if fs.exists(staging):
            fs.delete(staging, True)
