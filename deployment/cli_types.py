"""argparse `type=` functions for numeric options: a bad value stops the command at the parser (exit 2, one line).

    from deployment.cli_types import positive_int, probability
    parser.add_argument("--batch-size", type=positive_int, default=32, help="texts per onnxruntime call")

argparse turns the `ArgumentTypeError` raised here into `prog: error: argument --batch-size: must be an
integer >= 1, got '-1'` and exit code 2, before any file is read or any model is loaded. Floats must be
finite ("nan", "inf" and "1e999" are refused), integers are plain base-10 numbers.

It lives in deployment/ because that folder must run on its own as a Hugging Face Space (whose app.py uses
it); every other stage imports it from here, as it does the predictor. Standard library only.
"""
from __future__ import annotations

import argparse
import math

MAX_PORT = 65_535


def _brief(text: str, width: int = 40) -> str:
    """The value as the user typed it, shortened: an error message must stay one readable line."""
    return repr(text if len(text) <= width else text[: width - 1] + "…")


def _int(text: str, what: str) -> int:
    try:
        return int(str(text).strip(), 10)
    except ValueError:   # also ints too long to convert (Python's 4300-digit limit)
        raise argparse.ArgumentTypeError(f"must be {what}, got {_brief(str(text))}") from None


def _float(text: str, what: str) -> float:
    try:
        value = float(str(text).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {_brief(str(text))}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be {what} (a finite number), got {_brief(str(text))}")
    return value


def int_at_least(minimum: int, maximum: int | None = None):
    """A type function accepting integers in [minimum, maximum]; its name shows in argparse's messages."""
    what = f"an integer >= {minimum}" if maximum is None else f"an integer from {minimum} to {maximum}"

    def convert(text: str) -> int:
        value = _int(text, what)
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"must be {what}, got {_brief(str(text))}")
        return value

    convert.__name__ = f"int_at_least_{minimum}"
    return convert


def float_in(low: float | None = None, high: float | None = None, *, low_open: bool = False,
             high_open: bool = False):
    """A type function accepting finite floats in the interval (bounds None: unbounded on that side)."""
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high:g}")
    what = "a number" + (" " + " and ".join(parts) if parts else "")

    def convert(text: str) -> float:
        value = _float(text, what)
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if too_low or too_high:
            raise argparse.ArgumentTypeError(f"must be {what}, got {_brief(str(text))}")
        return value

    convert.__name__ = "float_in"
    return convert


positive_int = int_at_least(1)                    # batch sizes, counts, threads, workers, epochs of work
non_negative_int = int_at_least(0)                # "0 = off / all" options, random seeds (numpy wants >= 0)
port = int_at_least(1, MAX_PORT)                  # a TCP port to listen on
probability = float_in(0.0, 1.0)                  # thresholds, fractions of rows
positive_float = float_in(0.0, low_open=True)     # seconds, learning rates
non_negative_float = float_in(0.0)                # delays, "0 = off" weights
