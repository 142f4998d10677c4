"""CSV records and JSON values, the one way every stage reads and writes them: strictly.

CSV: `csv_records(fh)` reads RFC 4180 records with the csv module in strict mode and cells of any size, and gives
each record the line it starts on. A quote that is never closed (every following row would merge into one cell)
or text after a closing quote is a `CsvError` naming the line where the broken record starts, never a silent
merge; the batch CLI (`deployment.predict`) and `training.prepare` both read through it, so they accept and
refuse the same files.

`repeated(names)` finds repeated column names or keys in linear time; `unique_keys` refuses an object that
repeats a key.

JSON: every JSON the project writes is RFC 8259 JSON that any strict reader takes: no bare `NaN`, `Infinity` or
`-Infinity`. `finite(value)` replaces each non-finite float in a value by `null`, except a number read from an
input that no double can hold (`1e999`), which `json_number` keeps as a `BigNumber` and which is written back as
a string of its original spelling (`"1e999"`), so nothing the input said is lost. `dumps` is `json.dumps` of
`finite(value)` with `allow_nan=False`.

    from deployment.formats import csv_records, dumps, json_number
    with open(path, newline="", encoding="utf-8-sig") as fh:
        for line, values in csv_records(fh):    # CsvError(line, reason) on broken quoting
            ...
    obj = json.loads(text, parse_float=json_number, object_pairs_hook=unique_keys)
    fh.write(dumps(obj, ensure_ascii=False) + "\\n")

Standard library only (the Space, which is the deployment/ folder alone, reads and writes files too).
"""
from __future__ import annotations

import csv
import json
import math
from collections import Counter
from typing import Any, Iterable, Iterator

try:
    from deployment.files import large_csv_fields
except ImportError:  # pragma: no cover - the Space: this folder is the root
    from files import large_csv_fields  # type: ignore[no-redef]


class CsvError(ValueError):
    """A CSV file whose quoting is broken: `line` is where the broken record starts."""

    def __init__(self, line: int, reason: str):
        super().__init__(f"line {line}: {reason}")
        self.line, self.reason = line, reason


def _reason(error: csv.Error) -> str:
    """The csv module's message in words a user can act on."""
    message = str(error)
    if "unexpected end of data" in message:
        return ('a quoted field opened in this record is never closed (an unmatched "), so every line after it '
                'would be read into one cell; close the quote, or double a quote inside a quoted field ("")')
    if "expected after" in message:
        return ('text follows the closing quote of a quoted field; quote the whole field and double the quotes '
                'inside it ("")')
    return f"malformed CSV ({message})"


def csv_records(lines: Iterable[str]) -> Iterator[tuple[int, list[str]]]:
    """(line the record starts on, its cells) for every record of an open CSV file (opened with `newline=""`),
    the header included; blank lines give an empty list. Strict quoting, cells of any size; CsvError on broken
    quoting, naming the record's first line."""
    with large_csv_fields():
        reader = csv.reader(lines, strict=True)
        start = 1
        while True:
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise CsvError(start, _reason(exc)) from None
            yield start, values
            start = reader.line_num + 1


def repeated(names: Iterable[str]) -> list[str]:
    """The names that occur more than once, sorted; linear time (a header or an object may have 100,000 names)."""
    return sorted(name for name, n in Counter(names).items() if n > 1)


def unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    """`object_pairs_hook` for json.loads: an object that repeats a key is a ValueError (json.loads would keep the
    last value silently)."""
    keys = repeated(k for k, _ in pairs)
    if keys:
        raise ValueError(f"key(s) {', '.join(map(repr, keys))} appear more than once in one object")
    return dict(pairs)


class BigNumber(float):
    """A JSON number no double can hold (`1e999` reads as infinity): kept with its original spelling, so it is
    written back as that string rather than as a non-JSON `Infinity` or a lossy null."""

    literal: str

    def __new__(cls, literal: str) -> "BigNumber":
        number = super().__new__(cls, literal)
        number.literal = literal
        return number


def json_number(literal: str) -> float:
    """`parse_float` for json.loads: a float, or a BigNumber when the number overflows a double."""
    value = float(literal)
    return value if math.isfinite(value) else BigNumber(literal)


def finite(value: Any) -> Any:
    """`value` with every non-finite float in it (dicts, lists and tuples walked) made JSON: a BigNumber's
    original spelling as a string, any other NaN or infinity null. Values without one are returned as they are."""
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return value.literal if isinstance(value, BigNumber) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def dumps(value: Any, **kwargs) -> str:
    """`json.dumps` that writes RFC 8259 JSON whatever `value` holds (see `finite`)."""
    return json.dumps(finite(value), allow_nan=False, **kwargs)
