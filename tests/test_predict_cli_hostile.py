"""The batch CLI (`python -m deployment.predict`) against hostile input it used to mishandle: numbers no double
holds (output must stay RFC 8259 JSON), a closed stdout/stderr (the finished output must be kept), and texts
of only invisible characters (flagged like the empty text, here and on the JSON API)."""
from __future__ import annotations

import csv
import json
import math
import random
import subprocess
import sys

import requests
from tests.live_server import serve

import config
from deployment.predict import main
from flask_app import create_app


# ---- numbers: every output is JSON any strict reader takes --------------------------------------------------
OVERFLOWING = ["1e999", "-1e999", "1E400", "-2.5e308", "1e309", "9" * 400 + ".5", "-1.0E+1000"]
FINITE = ["1e-999", "-0.0", "0e999", "1.7976931348623157e308", "3.25", "-12", "1" + "0" * 400]


def read_jsonl(path, loads=json.loads) -> list:
    """JSONL as the project reads it: lines end at "\n" only (a string may hold U+2028, which splitlines cuts at)."""
    return [loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line]


def strict_loads(text: str):
    """json.loads that refuses NaN/Infinity and any number that is not a finite double."""
    def no_constant(name):
        raise ValueError(f"bare {name} in output")

    def finite_float(literal):
        value = float(literal)
        if not math.isfinite(value):
            raise ValueError(f"number {literal} overflows a double")
        return value

    return json.loads(text, parse_constant=no_constant, parse_float=finite_float)


def hostile_value(rng: random.Random, depth: int = 0) -> tuple[str, object, str]:
    """(JSON text, what the output must hold, the type the CLI reads it as): an overflowing number is read as a
    float and comes back as its spelling, a string."""
    kind = rng.choice(["big", "big", "finite", "string", "list", "dict"] if depth < 3 else ["big", "finite"])
    if kind == "big":
        literal = rng.choice(OVERFLOWING)
        return literal, literal, "float"
    if kind == "finite":
        literal = rng.choice(FINITE)
        return literal, json.loads(literal), type(json.loads(literal)).__name__
    if kind == "string":
        s = rng.choice(["NaN", "Infinity", "-Infinity", "1e999", "plain"])
        return json.dumps(s), s, "str"
    items = [hostile_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if kind == "list":
        return "[" + ", ".join(t for t, _, _ in items) + "]", [e for _, e, _ in items], "list"
    keys = [f"k{i}" for i in range(len(items))]
    return ("{" + ", ".join(f'"{k}": {t}' for k, (t, _, _) in zip(keys, items)) + "}",
            {k: e for k, (_, e, _) in zip(keys, items)}, "dict")


def csv_cell_holds(cell: str, want) -> bool:
    """A CSV output cell holds `want`: containers as strict JSON, scalars as their text."""
    if isinstance(want, (list, dict)):
        return strict_loads(cell) == want
    return cell == (want if isinstance(want, str) else str(want))


def test_hostile_numbers_in_any_field_come_out_as_strict_json(tiny_bundle, tmp_path):
    rng = random.Random(4)
    lines, expected = [], []
    for i in range(40):
        fields = {"id": (str(i), i, "int")}
        fields["text"] = hostile_value(rng) if i % 4 == 0 else (json.dumps(f"a dragon tale {i}"), f"a dragon tale {i}",
                                                                "str")
        for name in ("n", "extra"):
            fields[name] = hostile_value(rng)
        lines.append("{" + ", ".join(f'"{k}": {t}' for k, (t, _, _) in fields.items()) + "}")
        expected.append({k: (e, kind) for k, (_, e, kind) in fields.items()})
    lines.append('{"id": 40, "text": "a ghost", "n": NaN}')   # bare NaN in: an error row, its raw line kept
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    csv_src = tmp_path / "in.csv"   # the same spellings as CSV cells: text, whatever they look like
    with open(csv_src, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "text", "n"])
        writer.writerows([[i, rng.choice(OVERFLOWING + ["NaN", "Infinity"]), lit] for i, lit in enumerate(OVERFLOWING)])

    for source in (src, csv_src):
        for out_name, explain in (("out.jsonl", False), ("out.csv", False), ("explained.jsonl", True)):
            out = tmp_path / f"{source.stem}-{out_name}"
            assert main(["--bundle", str(tiny_bundle), "--input", str(source), "--out", str(out), "--quiet",
                         *(["--explain"] if explain else [])]) == 0
            if out.suffix == ".jsonl":
                got = read_jsonl(out, strict_loads)
            else:
                with open(out, newline="", encoding="utf-8") as fh:
                    got = list(csv.DictReader(fh))
                for row in got:   # the prediction columns are strict JSON
                    row["predicted_labels"], row["scores"] = map(strict_loads, (row["predicted_labels"], row["scores"]))
            if source is csv_src:   # CSV cells are text: "1e999" stays that text, and is predicted as text
                assert [r["n"] for r in got] == OVERFLOWING and all(not r["error"] for r in got)
                continue
            assert len(got) == len(expected) + 1 and "NaN" in got[-1]["raw"] and got[-1]["error"]
            for row, want in zip(got, expected):
                for name, (value, _) in want.items():
                    assert (row[name] == value) if out.suffix == ".jsonl" else csv_cell_holds(row[name], value), \
                        (name, row[name], value)
                kind = want["text"][1]
                assert (row["error"] or None) == (None if kind == "str" else f"text is {kind}, not a string"), row
                assert bool(row["scores"]) == (kind == "str")


# ---- a closed stdout/stderr never costs the output ---------------------------------------------------------
def test_a_closed_stderr_or_stdout_pipe_keeps_the_finished_output(tiny_bundle, tmp_path):
    rows = [{"id": str(i), "text": f"Story {i} of a dragon" + " and a wizard" * (i % 5)} for i in range(700)]
    src = tmp_path / "in.csv"
    with open(src, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["id", "text"])
        writer.writeheader()
        writer.writerows(rows)
    # `cmd 2>/closed pipe`, `cmd 2>&1 | head -c 1` (both streams, read a little), `cmd | true` (stdout only)
    for case, out_name in (("stderr", "out.csv"), ("both", "out.jsonl"), ("stdout", "out2.csv")):
        out = tmp_path / out_name
        cmd = [sys.executable, "-m", "deployment.predict", "--bundle", str(tiny_bundle), "--input", str(src),
               "--out", str(out)]   # progress bar on (no --quiet)
        proc = subprocess.Popen(cmd, cwd=config.ROOT, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE if case != "stderr" else subprocess.DEVNULL,
                                stderr={"stderr": subprocess.PIPE, "both": subprocess.STDOUT,
                                        "stdout": subprocess.DEVNULL}[case])
        pipe = proc.stderr if case == "stderr" else proc.stdout
        if case == "both":
            pipe.read(1)   # like `head -c 1`: the bar has started, then the reader goes away
        pipe.close()
        assert proc.wait(timeout=300) == 0, case
        if out.suffix == ".csv":
            with open(out, newline="", encoding="utf-8") as fh:
                got = list(csv.DictReader(fh))
        else:
            got = read_jsonl(out)
        assert [(r["id"], r["text"]) for r in got] == [(r["id"], r["text"]) for r in rows], case
        assert all(not r["error"] and json.loads(r["predicted_labels"]) is not None
                   if out.suffix == ".csv" else r["error"] is None for r in got), case
        assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name], case


# ---- invisible-only texts are empty, on every face ---------------------------------------------------------
FORMAT = "\u200b\u200c\u200d\u2060\ufeff\u00ad\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069" \
         "\u061c\u180e\ufff9\ufffa\ufffb\U000e0001\U000e0041"
SPACES = " \u00a0\u2000\u2003\u2009\u200a\u202f\u205f\u3000\u2028\u2029"
CONTROLS = "\t\n\r\x00\x01\x07\x1b\x1f\x7f\x80\x9f"
MARKS = "\u0300\u0301\u0327\u036f\u0e31\u0e48\u0941\u093f\u094d\u0652\u20dd\u20d0\ufe0f\u034f"
FILLERS = "\u3164\u115f\u1160\uffa0"
INVISIBLE = FORMAT + SPACES + CONTROLS + MARKS + FILLERS
VISIBLE = ["a", "é", "क", "ไ", "中", "7", "!", "€", "Ω", "ж"]


def invisible_texts(rng: random.Random, n: int) -> list[str]:
    return ["".join(rng.choice(INVISIBLE) for _ in range(rng.randint(1, 8))) for _ in range(n)] + list(INVISIBLE)


def test_texts_of_only_invisible_characters_are_empty_on_the_api_and_in_the_batch_cli(tiny_bundle, tmp_path):
    rng = random.Random(8)
    empty = invisible_texts(rng, 60)
    visible = [s[:k] + rng.choice(VISIBLE) + s[k:] for s in empty[:40] for k in [rng.randint(0, len(s))]]

    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in empty + visible), encoding="utf-8")
    assert main(["--bundle", str(tiny_bundle), "--input", str(src), "--out", str(out), "--quiet"]) == 0
    got = read_jsonl(out)
    assert [g["text"] for g in got] == empty + visible
    for row in got[:len(empty)]:
        assert row["predicted_labels"] == [] and row["scores"] == {}, repr(row["text"])
        assert row["error"] == "empty text" or row["error"].startswith("text has no visible character"), row
    assert all(row["error"] is None and row["scores"] for row in got[len(empty):])

    with serve(create_app(tiny_bundle)) as url:
        for text in empty:
            r = requests.post(url + "/api/predict", json={"text": text}, timeout=30)
            assert r.status_code == 400 and "nothing to classify" in r.json()["error"], repr(text)
        r = requests.post(url + "/api/predict", json={"texts": visible[:64]}, timeout=60)
        assert r.status_code == 200 and len(r.json()["predictions"]) == len(visible[:64])
        page = requests.post(url + "/", data={"text": empty[0]}, timeout=30)
        assert page.status_code == 400 and "nothing to classify" in page.text
