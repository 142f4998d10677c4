"""Bulk prediction: a CSV or JSONL file in, the same rows with predicted labels out.

    python -m deployment.predict --bundle models/books/bundle --input books.csv --out predictions.csv
    python -m deployment.predict --bundle models/books/bundle --input books.jsonl --out predictions.jsonl --top-k 5

Every input row comes out, in order, with `predicted_labels` (JSON list), `scores` (JSON object, label → score,
best first), `truncated`, `n_tokens` and `error` (empty unless the row could not be predicted: empty text, a
non-string value, a lone surrogate, a malformed JSON line, a CSV row with the wrong number of fields). A bad row
never stops the run; broken CSV quoting (a quote never closed, which would swallow every later row, or text
after a closing quote) is a broken file: exit code 2 naming the line, as `training.prepare` says for the same
file (one reader, deployment/formats.py). Thresholds are the bundle's tuned ones unless `--threshold` is given.

`--explain` adds an `evidence` column: for each predicted label, the (up to 3) spans of the text whose removal
lowers its score most, as JSON `{"label": [{"start", "end", "weight", "text"}, ...]}` (offsets into the text
cell as read back, weights the score's drop rounded to 6 decimals; `{}` for a row with an error). It costs one
more scoring pass over at most 16 variants of each text (deployment/explain.py).

CSV output has the union of the input rows' fields, in first-seen order (JSONL objects need not share keys),
then the five prediction columns; cells of a CSV row with more fields than its header go to `_overflow` (a
JSON list). A lone surrogate (JSON "\\ud800", which UTF-8 cannot encode) is written as its `\\ud800` escape;
every JSON written is strict RFC 8259 (a number no double holds, `1e999`, comes back as the string "1e999").
The output is written to a hidden `.<out>.partial-<pid>` file and renamed into place when complete; the
input is never the output. Ctrl-C or SIGTERM stops the run and leaves no output and no temporary file; the
temporary files of runs that died harder (kill -9) are removed by the next run writing the same output. A
closed stdout or stderr (`... 2>&1 | head`) stops the progress bar and messages, never the run.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

try:  # run as `python -m deployment.predict` or from inside the deployment/ folder (a Space)
    from deployment.cli_types import non_negative_int, positive_int, probability
    from deployment.console import SafeStream, unbreakable_output
    from deployment.files import LocationError, clean_stale, replace_file
    from deployment.formats import CsvError, csv_records, dumps, finite, json_number, repeated, unique_keys
    from deployment.predictor import DEFAULT_BATCH_SIZE, DEFAULT_BATCH_TOKENS, BundleError, Predictor
except ImportError:  # pragma: no cover
    from cli_types import non_negative_int, positive_int, probability
    from console import SafeStream, unbreakable_output
    from files import LocationError, clean_stale, replace_file
    from formats import CsvError, csv_records, dumps, finite, json_number, repeated, unique_keys
    from predictor import DEFAULT_BATCH_SIZE, DEFAULT_BATCH_TOKENS, BundleError, Predictor

CHUNK = 256                       # rows read, predicted and written at a time (bounded memory on big files)
OUT_FIELDS = ("predicted_labels", "scores", "truncated", "n_tokens", "error")
EVIDENCE_FIELD = "evidence"       # added after OUT_FIELDS with --explain
EVIDENCE_SPANS = 3                # spans per predicted label in the evidence column (the strongest pushes up)
OVERFLOW_FIELD = "_overflow"      # cells of a CSV row beyond its header, as a JSON list
EXIT_INTERRUPTED = 130
_SURROGATE = re.compile("[\ud800-\udfff]")

Row = tuple[dict, object, "str | None"]   # (fields written back out, the text value, why it can't be predicted)


# ---------------------------------------------------------------------------------------------- paths
def _format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".csv", ".jsonl"):
        return suffix[1:]
    raise LocationError(f"{path}: unsupported extension {suffix!r}; use .csv or .jsonl")


def check_paths(input_path: Path, out_path: Path) -> None:
    """Both formats known, the input a file, the output not a folder and never the input itself."""
    _format(input_path), _format(out_path)
    if not input_path.is_file():
        raise LocationError(f"{input_path}: file not found")
    if out_path.is_dir():
        raise LocationError(f"{out_path}: is a folder; --out names the output file")
    # resolve() follows symlinks and makes relative paths absolute; samefile() also catches hard links.
    if input_path.resolve() == out_path.resolve() or (out_path.exists() and os.path.samefile(input_path, out_path)):
        raise LocationError(f"--out {out_path} is the input file {input_path}; write the predictions somewhere else")


# ---------------------------------------------------------------------------------------------- reading
def _no_constants(name: str):
    raise ValueError(f"{name} is not a JSON value")   # Python reads NaN/Infinity; strict readers of our output don't



def _csv_rows(fh, path: Path, text_column: str) -> Iterator[Row]:
    # Strict quoting (deployment/formats.py, training.prepare's reader too): an unclosed quote is an error naming
    # its line, never every later row merged into one cell.
    records = csv_records(fh)
    _, header = next(records, (1, None))
    if not header or text_column not in header:
        raise LocationError(f"{path}: no {text_column!r} column (columns: {header})", hint="pick one with --text-col")
    dupes = repeated(header)
    if dupes:   # a dict per row would keep one of them and lose the others' cells
        raise LocationError(f"{path}: the header repeats column name(s) {', '.join(map(repr, dupes))}; rename them")
    for line, values in records:
        if not values:   # a blank line is not a row
            continue
        row = dict(zip(header, values))
        if len(values) == len(header):
            yield row, row[text_column], None
            continue
        if len(values) > len(header):
            row[OVERFLOW_FIELD] = json.dumps(values[len(header):], ensure_ascii=False)
        yield row, None, (f"line {line} has {len(values)} fields but the header has {len(header)}; "
                          "quote fields that contain commas")


def _jsonl_rows(fh, text_column: str) -> Iterator[Row]:
    for n, line in enumerate(fh, 1):
        if not line.strip():
            continue
        try:
            # parse_float: a number no double holds (1e999) keeps its spelling, written back as that string
            obj = json.loads(line, object_pairs_hook=unique_keys, parse_constant=_no_constants,
                             parse_float=json_number)
        except json.JSONDecodeError as exc:
            yield {"line": n, "raw": line.rstrip("\r\n")}, None, f"invalid JSON on line {n}: {exc.msg}"
            continue
        except (ValueError, RecursionError) as exc:   # duplicate keys, NaN, 4300+ digit numbers, deep nesting
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc).split(":")[0]
            yield {"line": n, "raw": line.rstrip("\r\n")}, None, f"invalid JSON on line {n}: {reason}"
            continue
        if not isinstance(obj, dict):
            yield {"line": n, "raw": obj}, None, f"line {n} is not a JSON object"
            continue
        if text_column not in obj:
            yield obj, None, f"line {n} has no {text_column!r} field"
            continue
        yield obj, obj[text_column], None


def read_rows(path: Path, text_column: str) -> Iterator[Row]:
    """(row, text value, error) per input record, in file order; the row is written back out unchanged."""
    fmt = _format(path)
    try:
        # JSONL: lines end at "\n" only (a JSON string can hold U+2028 or \x1c, which other splitters cut at).
        with open(path, newline="" if fmt == "csv" else "\n", encoding="utf-8-sig") as fh:
            yield from _csv_rows(fh, path, text_column) if fmt == "csv" else _jsonl_rows(fh, text_column)
    except UnicodeDecodeError as exc:
        raise LocationError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason}); re-save it as UTF-8") from exc
    except CsvError as exc:
        raise LocationError(f"{path} {exc}") from exc
    except OSError as exc:
        raise LocationError(f"{path}: cannot read ({exc.strerror})") from exc


def scan(path: Path, text_column: str) -> tuple[int, list[str]]:
    """Rows and the union of their fields in first-seen order: the CSV header must exist before the first row.

    Reading the whole file first also finds a non-UTF-8 byte or broken quoting before any work is done.
    """
    n, fields = 0, {}
    for row, _, _ in read_rows(path, text_column):
        n += 1
        fields.update(dict.fromkeys(row))
    return n, list(fields)


# ---------------------------------------------------------------------------------------------- predicting
def check_text(text) -> str | None:
    """Why a row's text cannot be predicted (its `error` cell), or None. The rules are the predictor's own."""
    problem = Predictor.text_problem(text)
    if problem is None:
        return None
    if not isinstance(text, str):   # a number too big for a double (1e999) is still a float
        return f"text is {'float' if isinstance(text, float) else type(text).__name__}, not a string"
    if not text.strip():
        return "empty text"
    return f"text {problem}"


def out_fields(explain: bool) -> tuple[str, ...]:
    """The fields every output row gains, in order."""
    return OUT_FIELDS + ((EVIDENCE_FIELD,) if explain else ())


def evidence_cell(result: dict) -> dict:
    """Each predicted label's strongest evidence, `{"label": [{"start", "end", "weight", "text"}, ...]}`."""
    return {x["label"]: [{"start": e["start"], "end": e["end"], "weight": round(e["weight"], 6), "text": e["text"]}
                         for e in x["evidence"] if e["weight"] > 0][:EVIDENCE_SPANS]
            for x in result["labels"] if x["predicted"]}


def output_columns(result: dict | None, error: str | None, top_k: int | None = None, explain: bool = False) -> dict:
    """The columns a row gains: `result` is one `Predictor.predict` answer, None when the row has an `error`;
    `scores` holds its first `top_k` labels; `explain` adds the evidence column."""
    columns = {"predicted_labels": result["predicted"] if result else [],
               "scores": {s["label"]: round(s["score"], 6) for s in result["labels"][:top_k]} if result else {},
               "truncated": result["truncated"] if result else None,
               "n_tokens": result["n_tokens"] if result else None,
               "error": error}
    if explain:
        columns[EVIDENCE_FIELD] = evidence_cell(result) if result else {}
    return columns


def _chunks(rows: Iterable[Row], size: int) -> Iterator[list[Row]]:
    chunk: list[Row] = []
    for row, text, err in rows:
        chunk.append((row, text, err or check_text(text)))
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def predict_chunk(pred: Predictor, chunk: list[Row], threshold: float | None, top_k: int | None,
                  explain: bool = False) -> list[dict | None]:
    """One predictor call for the chunk's good rows; None for the rows with an error. Explaining asks for every
    label (top_k then applies to `scores` only), so each predicted label has its evidence."""
    ok = [i for i, (_, _, err) in enumerate(chunk) if err is None]
    texts = [chunk[i][1] for i in ok]
    results = pred.predict(texts, threshold=threshold, top_k=None if explain else top_k, explain=explain) if ok else []
    by_row = dict(zip(ok, results))
    return [by_row.get(i) for i in range(len(chunk))]


# ---------------------------------------------------------------------------------------------- writing
def _escape_surrogates(text: str) -> str:
    """JSON text with each lone surrogate as its \\uXXXX escape: still valid JSON, decodes to the same string."""
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _csv_cell(value) -> object:
    value = finite(value)   # 1e999 from a JSONL input: its spelling, never "inf"
    if isinstance(value, (dict, list)):
        return dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return str(value).lower()   # JSON's true/false, like the `truncated` column
    return "" if value is None else value


class _Writer:
    """Writes rows to the open temporary file as CSV (fixed header: the union of fields) or JSONL."""

    def __init__(self, fh, fmt: str, fields: list[str], explain: bool = False):
        self.fh, self.fmt = fh, fmt
        if fmt == "csv":
            self.csv = csv.DictWriter(fh, fieldnames=fields + list(out_fields(explain)), restval="",
                                      extrasaction="raise")
            self.csv.writeheader()

    def write(self, row: dict, extra: dict) -> None:
        if self.fmt == "jsonl":
            self.fh.write(_escape_surrogates(dumps({**row, **extra}, ensure_ascii=False)) + "\n")
            return
        self.csv.writerow({**{k: _csv_cell(v) for k, v in row.items()},
                           "predicted_labels": dumps(extra["predicted_labels"], ensure_ascii=False),
                           "scores": dumps(extra["scores"], ensure_ascii=False),
                           "truncated": "" if extra["truncated"] is None else str(extra["truncated"]).lower(),
                           "n_tokens": "" if extra["n_tokens"] is None else extra["n_tokens"],
                           "error": extra["error"] or "",
                           **({EVIDENCE_FIELD: dumps(extra[EVIDENCE_FIELD], ensure_ascii=False)}
                              if EVIDENCE_FIELD in extra else {})})


def _progress_bar(total: int, enabled: bool):
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is tiny but optional for a Space
        return None
    # A SafeStream: a closed stderr stops the bar, never the run (deployment/console.py).
    stream = sys.stderr if isinstance(sys.stderr, SafeStream) else SafeStream(sys.stderr)
    return tqdm(total=total, unit="doc", disable=not enabled, file=stream)


def predict_file(pred: Predictor, input_path: Path, out_path: Path, text_column: str = "text",
                 threshold: float | None = None, top_k: int | None = None, progress: bool = True,
                 on_chunk: Callable[[int, int], None] | None = None, explain: bool = False) -> dict:
    """Predict every row of `input_path` into `out_path`; returns counts and timing. `explain` adds the
    evidence column.

    `progress` draws a bar on stderr; `on_chunk(rows_done, rows_total)` is called after each chunk (the
    Gradio app drives its own progress bar with it)."""
    check_paths(input_path, out_path)
    t0 = time.perf_counter()
    stats = {"rows": 0, "predicted": 0, "errors": 0, "truncated": 0,
             "stale_partials_removed": [str(p) for p in clean_stale(out_path)]}   # left by kill -9
    total, fields = scan(input_path, text_column)
    clash = [f for f in fields if f in out_fields(explain)]
    if clash:
        raise LocationError(f"{input_path}: has field(s) {clash} that the output adds (a prediction output given "
                         "back as input?); rename them so nothing is overwritten")
    bar = _progress_bar(total, progress)
    try:
        # backslashreplace: a lone surrogate (valid in JSON input, not encodable in UTF-8) is written as \udXXX.
        with replace_file(out_path, newline="" if out_path.suffix.lower() == ".csv" else None,
                          errors="backslashreplace") as fh:
            writer = _Writer(fh, _format(out_path), fields, explain)
            for chunk in _chunks(read_rows(input_path, text_column), CHUNK):
                for (row, _, err), res in zip(chunk, predict_chunk(pred, chunk, threshold, top_k, explain)):
                    writer.write(row, output_columns(res, err, top_k, explain))
                    stats["rows"] += 1
                    stats["predicted"] += res is not None
                    stats["errors"] += err is not None
                    stats["truncated"] += bool(res and res["truncated"])
                if bar is not None:
                    bar.update(len(chunk))
                if on_chunk is not None:
                    on_chunk(stats["rows"], total)
    except OSError as exc:
        raise LocationError(f"{exc.filename or out_path}: cannot write ({exc.strerror})") from exc
    finally:
        if bar is not None:
            bar.close()
    stats["seconds"] = time.perf_counter() - t0
    stats["docs_per_s"] = stats["predicted"] / stats["seconds"] if stats["seconds"] > 0 else 0.0
    stats["input_format"], stats["output_format"] = _format(input_path), _format(out_path)
    return stats


# ---------------------------------------------------------------------------------------------- command line
@contextlib.contextmanager
def interrupts_as_keyboard_interrupt():
    """Ctrl-C (SIGINT) and `kill` (SIGTERM) both raise KeyboardInterrupt, so the temporary file is removed.

    SIGINT gets an explicit handler because a process started in the background (`cmd &` in a script)
    inherits it ignored, and Python then never raises KeyboardInterrupt (as scraper/cli.py does).
    """
    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:   # not the main thread (a caller running main() from a worker): leave signals alone
        yield
        return
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m deployment.predict", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--bundle", type=Path, required=True, help="bundle folder written by compression.quantize")
    p.add_argument("--input", type=Path, required=True, help="a .csv (with a text column) or .jsonl file")
    p.add_argument("--out", type=Path, required=True, help="output .csv or .jsonl (format from the extension); "
                                                           "never the input")
    # One vocabulary with the other commands (training.prepare --text-col, flask_app/deployment.app --threads);
    # the earlier spellings --text-column and --num-threads still work.
    p.add_argument("--text-col", "--text-column", dest="text_column", default="text",
                   help="column / field holding the text")
    p.add_argument("--threshold", type=probability, default=None,
                   help="one threshold in [0, 1] for every label (default: the bundle's tuned ones)")
    p.add_argument("--top-k", type=positive_int, default=None, help="keep only the k best scores per row in `scores`")
    p.add_argument("--explain", action="store_true",
                   help=f"add an `{EVIDENCE_FIELD}` column: each predicted label's {EVIDENCE_SPANS} strongest evidence "
                        "spans as JSON {label: [{start, end, weight, text}]} (one more scoring pass per row)")
    p.add_argument("--batch-size", type=positive_int, default=DEFAULT_BATCH_SIZE,
                   help="windows per onnxruntime call at most (a long text is read as several windows)")
    p.add_argument("--batch-tokens", type=non_negative_int, default=DEFAULT_BATCH_TOKENS,
                   help="padded tokens per onnxruntime call at most: bounds memory whatever the texts' length "
                        f"(default {DEFAULT_BATCH_TOKENS}; 0: no cap)")
    p.add_argument("--threads", "--num-threads", dest="threads", type=positive_int, default=None,
                   help="onnxruntime intra-op threads (default: its own)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    with unbreakable_output():   # a closed stdout/stderr (`... 2>&1 | head`) never costs the results
        return _run(a)


def _run(a: argparse.Namespace) -> int:
    try:
        with interrupts_as_keyboard_interrupt():
            check_paths(a.input, a.out)   # before the bundle loads: a wrong path fails in milliseconds
            pred = Predictor.from_bundle(a.bundle, num_threads=a.threads, batch_size=a.batch_size,
                                          batch_tokens=a.batch_tokens or None)
            stats = predict_file(pred, a.input, a.out, text_column=a.text_column, threshold=a.threshold,
                                 top_k=a.top_k, progress=not a.quiet, explain=a.explain)
    except (BundleError, LocationError) as exc:
        hint = getattr(exc, "hint", None)
        print(f"error: {exc}" + (f"; {hint}" if hint else ""), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted: nothing written to {a.out} (the input is untouched); rerun the command",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    for path in stats["stale_partials_removed"]:
        print(f"removed {path}: the temporary file of an earlier run that did not finish", file=sys.stderr)
    print(f"predicted {stats['predicted']}/{stats['rows']} rows ({stats['errors']} with errors, "
          f"{stats['truncated']} truncated) in {stats['seconds']:.1f}s = {stats['docs_per_s']:.1f} docs/s -> {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
