"""The executor side of `deployment.spark_predict`: what runs in Spark's Python workers, on every machine.

Spark pickles the pandas UDF (`predict_series`) by reference to this module, so each Python worker imports it
once, loads the bundle's `Predictor` once (`worker_predictor`, a module-level cache) and reuses it for every
batch of every task it runs. Only the text column (and the raw record where a text's JSON type or bytes must be
checked) comes here; every other column stays in the JVM.

This module is the whole of the project an executor needs, with `deployment.predict` (the batch CLI's row
rules) and `deployment.predictor` below it: onnxruntime, tokenizers, numpy, pandas and pyarrow, no torch
(`make spark-env` packs exactly that). pyspark itself comes from the cluster's Spark, which puts its own copy
on its Python workers' path; this module imports it only where it runs inside a worker.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import sys
from pathlib import Path

from deployment.predict import CHUNK, OUT_FIELDS, check_text, output_columns
from deployment.predictor import BundleError, Predictor

# Modules an executor's Python must import for this UDF: the predictor's and Spark's pandas UDFs' own needs.
EXECUTOR_MODULES = ("numpy", "onnxruntime", "tokenizers", "pandas", "pyarrow")
OUT_TYPE = ("predicted_labels array<string>, scores map<string,double>, truncated boolean, n_tokens int, "
            "error string")   # the UDF's return type: OUT_FIELDS, in order
assert [part.split()[0] for part in OUT_TYPE.split(", ")] == list(OUT_FIELDS)

_PREDICTORS: dict[tuple, Predictor] = {}   # one per Python worker process (per bundle, threads and batch size)


class ListParam:
    """An accumulator of lists, concatenated (which worker loaded which bundle from where). pyspark's
    AccumulatorParam is only this interface; not subclassing it keeps this module importable without pyspark."""

    def zero(self, value):
        return []

    def addInPlace(self, a, b):
        return a + b


def source_digests(names=None) -> dict[str, str]:
    """{module file: hash of its source} for this package's modules, by default those this process has loaded.

    The driver compares the executors' answer with its own files, to catch an executor environment packed from
    other code (a `make spark-env` older than the checkout)."""
    root = Path(__file__).resolve().parent
    if names is None:
        names = sorted(m.__file__ and Path(m.__file__).name for name, m in list(sys.modules.items())
                       if name.startswith(f"{__package__}.") and getattr(m, "__file__", None))
    return {name: hashlib.sha256((root / name).read_bytes()).hexdigest()[:16] if (root / name).is_file() else "absent"
            for name in names}


def environment_report() -> dict:
    """What this Python worker runs on, for the driver's check before the job: interpreter, host, the sources of
    the project's modules it loaded and the version of each module the UDF needs."""
    import importlib

    versions = {name: getattr(importlib.import_module(name), "__version__", "?") for name in EXECUTOR_MODULES}
    return {"python": sys.executable, "version": sys.version.split()[0], "host": socket.gethostname(),
            "cwd": os.getcwd(), "sources": source_digests(), "modules": versions}


def shipped_bundle_dir(name: str) -> Path:
    """Where a bundle shipped with addArchive(`tgz#name`) was unpacked on this executor."""
    from pyspark import SparkFiles

    # Spark unpacks archives into the SparkFiles root (local, standalone, Kubernetes) and YARN also links them
    # into the container's working directory; both are documented places, the first one holding it wins.
    candidates = [Path(SparkFiles.getRootDirectory()) / name, Path.cwd() / name]
    for path in candidates:
        if (path / "bundle.json").is_file():
            return path.resolve()   # an executor's SparkFiles root may be "." (its working folder)
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
