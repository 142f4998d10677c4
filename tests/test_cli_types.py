"""deployment/cli_types.py in-process: every numeric option of every command is one of these type functions, so
their rules are pinned here once (through a real argparse parser: exit 2 and one line naming the option), and each
command keeps one smoke test of a bad number through its real process in its own test file."""
from __future__ import annotations

import argparse
import math
import random

import pytest

from deployment import cli_types as ct
from tests.cases import check_each


def refused(type_fn, text: str, capsys) -> str:
    """The one error line argparse prints for `--n text`, after checking the exit code."""
    ap = argparse.ArgumentParser(prog="cmd")
    ap.add_argument("--n", type=type_fn)
    with pytest.raises(SystemExit) as exit_info:
        ap.parse_args([f"--n={text}"])   # "=": a value such as -inf is not read as an option
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("cmd: error")]
    assert len(lines) == 1
    return lines[0]


def test_int_at_least_takes_base_10_integers_in_range_and_names_the_rule(capsys):
    one_to_ten = ct.int_at_least(1, 10)
    assert [one_to_ten(t) for t in ("1", "10", " 7 ", "+3", "007")] == [1, 10, 7, 3, 7]
    for text in ("0", "11", "-1", "1.5", "1e3", "two", "", "0x10"):
        assert refused(one_to_ten, text, capsys) == (f"cmd: error: argument --n: must be an integer from 1 to 10, "
                                                     f"got {text!r}")
    assert refused(ct.non_negative_int, "-1", capsys).endswith("must be an integer >= 0, got '-1'")
    assert ct.int_at_least(0)("9" * 50) == int("9" * 50)                       # no upper bound: any size
    assert "must be an integer >= 0" in refused(ct.non_negative_int, "9" * 5000, capsys)   # beyond int(): refused


def test_float_in_takes_finite_numbers_within_its_open_or_closed_bounds(capsys):
    unit = ct.float_in(0, 1, low_open=True)
    assert [unit(t) for t in ("1", "0.5", "1e-3", " .25 ")] == [1.0, 0.5, 0.001, 0.25]
    for text in ("0", "-0.1", "1.0001", "x", ""):
        assert refused(unit, text, capsys).endswith(f"must be a number > 0 and <= 1, got {text!r}")
    for text in ("nan", "inf", "-inf", "1e999"):
        assert refused(ct.non_negative_float, text, capsys).endswith(
            f"must be a number >= 0 (a finite number), got {text!r}")
    assert ct.float_in()("-1e300") == -1e300 and ct.float_in(high=2, high_open=True)("1.99") == 1.99
    assert refused(ct.float_in(high=2, high_open=True), "2", capsys).endswith("must be a number < 2, got '2'")


def test_the_named_types_mean_what_their_names_say():
    accepts = {ct.positive_int: ("1", "65536"), ct.non_negative_int: ("0",), ct.port: ("1", "65535"),
               ct.probability: ("0", "1", "0.5"), ct.positive_float: ("1e-9",), ct.non_negative_float: ("0",)}
    refuses = {ct.positive_int: ("0",), ct.non_negative_int: ("-1",), ct.port: ("0", "65536"),
               ct.probability: ("-0.01", "1.01"), ct.positive_float: ("0",), ct.non_negative_float: ("-1e-9",)}
    for fn, texts in accepts.items():
        assert all(fn(t) == (int(t) if "int" in fn.__name__ else float(t)) for t in texts), fn.__name__
    for fn, texts in refuses.items():
        for t in texts:
            with pytest.raises(argparse.ArgumentTypeError):
                fn(t)
    assert ct.MAX_PORT == 65_535


def test_a_long_value_is_shortened_in_the_message(capsys):
    line = refused(ct.positive_int, "x" * 5000, capsys)
    assert len(line) < 120 and line.endswith("…'")


def test_int_at_least_agrees_with_a_plain_oracle_on_generated_values():
    """Random integers, floats, words and padding: accepted exactly when int(text, 10) parses and lies in range."""
    def check(seed):
        rng = random.Random(seed)
        low = rng.randint(-5, 5)
        high = rng.choice([None, low + rng.randint(0, 10)])
        fn = ct.int_at_least(low, high)
        text = rng.choice([str(rng.randint(-20, 20)), f" {rng.randint(-20, 20)} ", f"{rng.uniform(-9, 9):.2f}",
                           rng.choice(["", "x", "1e2", "--3", "٣"])])
        try:
            want = int(text.strip(), 10)
            ok = want >= low and (high is None or want <= high)
        except ValueError:
            ok = False
        if ok:
            assert fn(text) == want
        else:
            with pytest.raises(argparse.ArgumentTypeError):
                fn(text)

    assert check_each(range(300), check) == 300


def test_float_in_agrees_with_a_plain_oracle_on_generated_values():
    def check(seed):
        rng = random.Random(seed)
        low, high = sorted(rng.uniform(-3, 3) for _ in range(2))
        lo_open, hi_open = rng.random() < 0.5, rng.random() < 0.5
        fn = ct.float_in(low, high, low_open=lo_open, high_open=hi_open)
        text = rng.choice([f"{rng.uniform(-4, 4):.3f}", str(low), str(high), "nan", "inf", "abc"])
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        ok = (math.isfinite(value) and (value > low if lo_open else value >= low)
              and (value < high if hi_open else value <= high))
        if ok:
            assert fn(text) == value
        else:
            with pytest.raises(argparse.ArgumentTypeError):
                fn(text)

    assert check_each(range(300), check) == 300
