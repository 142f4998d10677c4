"""The batch CLI (`python -m deployment.predict`) and `python -m training.prepare` read CSV through one strict
reader: on generated files with broken quoting (an unclosed quote in any field of any row, text after a closing
quote, a broken header) both refuse with the same message naming the line where the broken record starts; on
files that are odd but valid (a quote inside an unquoted field, NUL, quoted line breaks, mixed line ends, a
BOM) both keep every row with its text. Never a silent merge of the following rows into one cell."""
from __future__ import annotations

import csv
import json
import random
import re

from deployment.predict import main as predict_main
from training.data import normalise_text
from training.prepare import main as prepare_main

WORDS = "dragon wizard love murder ghost planet kingdom night letters detective crypt".split()
LABELS = '"[""A""]"'                      # the labels cell ["A"], quoted as CSV must quote it
BREAKS = ("\n", "\r\n", "\r")
BROKEN = ("unclosed quote in text", "unclosed quote in labels", "text after closing quote")
ODD = ("quote inside unquoted field", "NUL", "quoted line breaks", "doubled quotes")
KINDS = (*BROKEN, "broken header", *ODD)


def quoted(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def make_case(rng: random.Random, kind: str, n_rows: int = 6):
    """(file text, expected) for one `kind` of KINDS: expected is ("error", line) or ("rows", {id: text}); every case mixes line ends,
    some start with a BOM and some hold a valid multi-line row before the broken one."""
    texts = {str(i): f"{rng.choice(WORDS)} {i} {rng.choice(WORDS)} {rng.randint(0, 10**6)}" for i in range(1, n_rows + 1)}
    lines = {i: f"{i},{quoted(t) if rng.random() < 0.5 else t},{LABELS}" for i, t in texts.items()}
    k = rng.choice(list(texts))
    if kind == "unclosed quote in text":
        lines[k] = f'{k},"{texts[k]},{LABELS}'
    elif kind == "unclosed quote in labels":
        lines[k] = f'{k},{texts[k]},"[""A""]'
    elif kind == "text after closing quote":
        lines[k] = f'{k},"{texts[k]}"{rng.choice(WORDS)},{LABELS}'
    elif kind == "quote inside unquoted field":
        texts[k] = texts[k].replace(" ", ' "', 1)
        lines[k] = f"{k},{texts[k]},{LABELS}"
    elif kind == "NUL":
        texts[k] = texts[k].replace(" ", "\x00", 1)
        lines[k] = f"{k},{quoted(texts[k]) if rng.random() < 0.5 else texts[k]},{LABELS}"
    elif kind == "quoted line breaks":
        texts[k] = texts[k].replace(" ", rng.choice(BREAKS), 2)
        lines[k] = f"{k},{quoted(texts[k])},{LABELS}"
    elif kind == "doubled quotes":
        texts[k] = f'"{texts[k]}" he said'
        lines[k] = f"{k},{quoted(texts[k])},{LABELS}"
    if rng.random() < 0.5 and kind != "quoted line breaks":   # a valid multi-line row somewhere else
        j = rng.choice([i for i in texts if i != k])
        texts[j] = texts[j].replace(" ", "\r\n", 1)
        lines[j] = f"{j},{quoted(texts[j])},{LABELS}"
    header = 'id,"text,labels' if kind == "broken header" else "id,text,labels"
    order = [header, *lines.values()]
    body = "".join(line + rng.choice(BREAKS) for line in order[:-1]) + order[-1] + rng.choice(BREAKS + ("",))
    content = ("\ufeff" if rng.random() < 0.3 else "") + body
    if kind == "broken header":
        return content, ("error", 1)
    if kind in BROKEN:
        start = body.index(lines[k] + "\n") if lines[k] + "\n" in body else body.index(lines[k])
        return content, ("error", len(re.findall(r"\r\n|\r|\n", body[:start])) + 1)
    return content, ("rows", texts)


def test_the_batch_cli_and_prepare_agree_on_broken_and_odd_csv(tiny_bundle, tmp_path, capsys):
    rng = random.Random(31)
    for case in range(2 * len(KINDS)):   # every kind twice, each with its own row, quoting, line ends, BOM
        kind = KINDS[case % len(KINDS)]
        content, (outcome, expected) = make_case(rng, kind)
        src = tmp_path / f"case{case}.csv"
        src.write_bytes(content.encode("utf-8"))
        out, prepared = tmp_path / f"out{case}.jsonl", tmp_path / f"prepared{case}"
        capsys.readouterr()
        code_cli = predict_main(["--bundle", str(tiny_bundle), "--input", str(src), "--out", str(out), "--quiet"])
        err_cli = capsys.readouterr().err
        code_prep = prepare_main(["--input", str(src), "--out", str(prepared), "--quiet", "--min-label-freq", "1",
                                  "--split", "1", "0", "0"])
        err_prep = capsys.readouterr().err
        where = f"case {case} ({kind}): {content!r}"
        if outcome == "error":
            assert code_cli == code_prep == 2, where
            for err in (err_cli, err_prep):
                assert f"{src} line {expected}: " in err and "quote" in err, (where, err)
            # the same reason in both words: the one reader's
            assert err_cli.split(f"line {expected}: ")[1] == err_prep.split(f"line {expected}: ")[1], where
            assert not out.exists() and not prepared.exists(), where
            continue
        assert code_cli == 0 and code_prep == 0, (where, err_cli, err_prep)
        got = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
        assert {r["id"]: r["text"] for r in got} == expected and all(r["error"] is None for r in got), where
        with open(prepared / "dataset.csv", newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        assert {r["id"]: r["text"] for r in rows} == {i: normalise_text(t) for i, t in expected.items()}, where


def test_a_header_or_an_object_of_150000_names_is_read_whole_and_a_repeated_name_found(tiny_bundle, tmp_path):
    """Repeated column names and keys are looked for in linear time: a 1.5 MB header or JSON object used to take
    minutes (every name counted against every other). Run as commands, each under a timeout far above a linear
    read, so a quadratic search fails the test instead of holding the suite."""
    import subprocess
    import sys

    import config

    n = 150_000
    names = [f"c{i}" for i in range(n)]

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=config.ROOT,
                              timeout=90)

    def write(name: str, text: str):
        (tmp_path / name).write_text(text, encoding="utf-8")
        return str(tmp_path / name)

    def jsonl_line(keys: list[str], text: str) -> str:
        return "{" + ",".join([f'"text": "{text}"', '"labels": ["A"]', *(f'"{k}": 1' for k in keys)]) + "}\n"

    wide_csv = write("wide.csv", ",".join(["text", *names]) + "\n" + ",".join(["a dragon book", *"x" * n]) + "\n")
    proc = run("deployment.predict", "--bundle", str(tiny_bundle), "--input", wide_csv,
               "--out", str(tmp_path / "wide.out.csv"), "--quiet")
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(tmp_path / "wide.out.csv", newline="", encoding="utf-8") as fh:
        (row,) = list(csv.DictReader(fh))
    assert row["text"] == "a dragon book" and row[names[-1]] == "x" and not row["error"]

    repeated_key = write("keys.jsonl", jsonl_line([*names, names[n // 2]], "a dragon book"))
    proc = run("deployment.predict", "--bundle", str(tiny_bundle), "--input", repeated_key,
               "--out", str(tmp_path / "keys.out.jsonl"), "--quiet")
    assert proc.returncode == 0, proc.stderr[-2000:]
    (got,) = [json.loads(line) for line in (tmp_path / "keys.out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert got["error"] == f"invalid JSON on line 1: key(s) '{names[n // 2]}' appear more than once in one object"

    repeated_column = write("repeated.csv", ",".join(["text", "labels", *names, names[7]]) + "\n"
                            + ",".join(["a dragon book", '"[""A""]"', *"x" * (n + 1)]) + "\n")
    proc = run("training.prepare", "--input", repeated_column, "--out", str(tmp_path / "p1"), "--quiet")
    assert proc.returncode == 2 and f"column name(s) '{names[7]}' appear more than once" in proc.stderr, proc.stderr

    rows = "".join(jsonl_line([], f"{WORDS[i % len(WORDS)]} book {i}") for i in range(5))
    wide_object = write("wide.jsonl", jsonl_line(names, "a wide dragon book") + rows)
    proc = run("training.prepare", "--input", wide_object, "--out", str(tmp_path / "p2"), "--quiet",
               "--min-label-freq", "1", "--split", "1", "0", "0")
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(tmp_path / "p2" / "dataset.csv", newline="", encoding="utf-8") as fh:
        assert "a wide dragon book" in {r["text"] for r in csv.DictReader(fh)}
