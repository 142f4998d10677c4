"""Bulk prediction: a CSV or JSONL file in, the same rows with predicted labels out.

    python -m deployment.predict --bundle models/books/bundle --input books.csv --out predictions.csv
    python -m deployment.predict --bundle models/books/bundle --input books.jsonl --out predictions.jsonl --top-k 5

Every input row comes out, in order, with `predicted_labels` (JSON list), `scores` (JSON object, label → score,
best first), `truncated`, `n_tokens` and `error` (empty unless the row could not be predicted: empty text, a
non-string value, a malformed JSON line). Thresholds are the bundle's tuned ones unless `--threshold` is given.
The output is written to a temporary file and renamed into place when complete.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path
from typing import Iterator

try:  # run as `python -m deployment.predict` or from inside the deployment/ folder (a Space)
    from deployment.predictor import BundleError, Predictor
except ImportError:  # pragma: no cover
    from predictor import BundleError, Predictor

CHUNK = 256                       # rows read, predicted and written at a time (bounded memory on big files)
OUT_FIELDS = ("predicted_labels", "scores", "truncated", "n_tokens", "error")


class InputError(ValueError):
    """An input file that cannot be read at all (the message names it)."""


def _format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".csv", ".jsonl"):
        return suffix[1:]
    raise InputError(f"{path}: unsupported extension {suffix!r}; use .csv or .jsonl")


def read_rows(path: Path, text_column: str) -> Iterator[tuple[dict, object, str | None]]:
    """(row, text value, error) per input record, in file order; the row is written back out unchanged."""
    fmt = _format(path)
    with open(path, newline="" if fmt == "csv" else None, encoding="utf-8-sig") as fh:
        if fmt == "csv":
            csv.field_size_limit(sys.maxsize)
            reader = csv.DictReader(fh)
            if not reader.fieldnames or text_column not in reader.fieldnames:
                raise InputError(f"{path}: no {text_column!r} column (columns: {reader.fieldnames}); "
                                 f"pick one with --text-column")
            for row in reader:
                yield row, row.get(text_column), None
        else:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield {"line": n, "raw": line.rstrip("\n")}, None, f"invalid JSON on line {n}: {exc.msg}"
                    continue
                if not isinstance(obj, dict):
                    yield {"line": n, "raw": obj}, None, f"line {n} is not a JSON object"
                    continue
                if text_column not in obj:
                    yield obj, None, f"line {n} has no {text_column!r} field"
                    continue
                yield obj, obj[text_column], None


def count_rows(path: Path) -> int | None:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            if _format(path) == "csv":
                csv.field_size_limit(sys.maxsize)
                return max(sum(1 for _ in csv.reader(fh)) - 1, 0)
            return sum(1 for line in fh if line.strip())
    except (OSError, UnicodeDecodeError, csv.Error):
        return None   # the real read reports the problem properly


def check_text(text) -> str | None:
    """Why a row's text cannot be predicted (its `error` cell), or None; deployment.spark_predict uses it too."""
    if not isinstance(text, str):
        return f"text is {type(text).__name__}, not a string"
    if not text.strip():
        return "empty text"
    return None


def output_columns(result: dict | None, error: str | None) -> dict:
    """The columns a row gains: `result` is one `Predictor.predict` answer, None when the row has an `error`."""
    return {"predicted_labels": result["predicted"] if result else [],
            "scores": {s["label"]: round(s["score"], 6) for s in result["labels"]} if result else {},
            "truncated": result["truncated"] if result else None,
            "n_tokens": result["n_tokens"] if result else None,
            "error": error}


def predict_file(pred: Predictor, input_path: Path, out_path: Path, text_column: str = "text",
                 threshold: float | None = None, top_k: int | None = None, progress: bool = True) -> dict:
    """Predict every row of `input_path` into `out_path`; returns counts and timing."""
    in_fmt, out_fmt = _format(input_path), _format(out_path)
    if not input_path.is_file():
        raise InputError(f"{input_path}: file not found")
    total = count_rows(input_path) if progress else None
    try:
        from tqdm import tqdm
        bar = tqdm(total=total, unit="doc", disable=not progress, file=sys.stderr)
    except ImportError:  # pragma: no cover - tqdm is tiny but optional for a Space
        bar = None
    tmp = out_path.with_name(f".{out_path.name}.partial-{os.getpid()}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    stats = {"rows": 0, "predicted": 0, "errors": 0, "truncated": 0}
    t0 = time.perf_counter()
    writer = None
    try:
        with open(tmp, "w", newline="" if out_fmt == "csv" else None, encoding="utf-8") as out:
            chunk: list[tuple[dict, object, str | None]] = []

            def flush():
                nonlocal writer
                ok = [i for i, (_, text, err) in enumerate(chunk) if err is None]
                results = pred.predict([chunk[i][1] for i in ok], threshold=threshold, top_k=top_k) if ok else []
                by_row = dict(zip(ok, results))
                for i, (row, _, err) in enumerate(chunk):
                    res = by_row.get(i)
                    extra = output_columns(res, err)
                    stats["rows"] += 1
                    stats["predicted"] += res is not None
                    stats["errors"] += err is not None
                    stats["truncated"] += bool(res and res["truncated"])
                    if out_fmt == "jsonl":
                        out.write(json.dumps({**row, **extra}, ensure_ascii=False) + "\n")
                        continue
                    flat = {**{k: v if not isinstance(v, (dict, list)) else json.dumps(v, ensure_ascii=False)
                                for k, v in row.items() if k is not None},
                            "predicted_labels": json.dumps(extra["predicted_labels"], ensure_ascii=False),
                            "scores": json.dumps(extra["scores"], ensure_ascii=False),
                            "truncated": "" if res is None else str(res["truncated"]).lower(),
                            "n_tokens": "" if res is None else res["n_tokens"],
                            "error": err or ""}
                    if writer is None:
                        fields = [k for k in flat if k not in OUT_FIELDS] + list(OUT_FIELDS)
                        writer = csv.DictWriter(out, fieldnames=fields, extrasaction="ignore", restval="")
                        writer.writeheader()
                    writer.writerow(flat)
                if bar is not None:
                    bar.update(len(chunk))
                chunk.clear()

            for row, text, err in read_rows(input_path, text_column):
                chunk.append((row, text, err or check_text(text)))
                if len(chunk) >= CHUNK:
                    flush()
            if chunk:
                flush()
            if writer is None and out_fmt == "csv":  # no rows at all: still a valid, empty CSV
                csv.writer(out).writerow(list(OUT_FIELDS))
        tmp.replace(out_path)
    except UnicodeDecodeError as exc:
        raise InputError(f"{input_path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from exc
    except csv.Error as exc:
        raise InputError(f"{input_path}: malformed CSV ({exc})") from exc
    finally:
        if bar is not None:
            bar.close()
        if tmp.exists():
            tmp.unlink()
    stats["seconds"] = time.perf_counter() - t0
    stats["docs_per_s"] = stats["predicted"] / stats["seconds"] if stats["seconds"] > 0 else 0.0
    stats["input_format"], stats["output_format"] = in_fmt, out_fmt
    return stats


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m deployment.predict", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--bundle", type=Path, required=True, help="bundle folder written by compression.quantize")
    p.add_argument("--input", type=Path, required=True, help="a .csv (with a text column) or .jsonl file")
    p.add_argument("--out", type=Path, required=True, help="output .csv or .jsonl (format from the extension)")
    p.add_argument("--text-column", default="text", help="column / field holding the text")
    p.add_argument("--threshold", type=float, default=None, help="one threshold for every label (default: the bundle's tuned ones)")
    p.add_argument("--top-k", type=int, default=None, help="keep only the k best scores per row in `scores`")
    p.add_argument("--batch-size", type=int, default=32, help="texts per onnxruntime call")
    p.add_argument("--num-threads", type=int, default=None, help="onnxruntime intra-op threads (default: its own)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    try:
        for path in (a.input, a.out):
            _format(path)
        pred = Predictor.from_bundle(a.bundle, num_threads=a.num_threads, batch_size=a.batch_size)
        stats = predict_file(pred, a.input, a.out, text_column=a.text_column, threshold=a.threshold,
                             top_k=a.top_k, progress=not a.quiet)
    except (BundleError, InputError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"predicted {stats['predicted']}/{stats['rows']} rows ({stats['errors']} with errors, "
          f"{stats['truncated']} truncated) in {stats['seconds']:.1f}s = {stats['docs_per_s']:.1f} docs/s -> {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
