"""`python -m deployment.predict` on CSV and JSONL: every row back in order, predictions equal the predictor's,
bad rows flagged instead of dropped, unreadable input a clear error."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import config
from deployment.predict import OUT_FIELDS, main
from deployment.predictor import Predictor

ROWS = [{"id": "1", "text": "A wizard, a dragon and a \"quest\" — in one kingdom."},
        {"id": "2", "text": "   "},
        {"id": "3", "text": "Love letters\nacross one long summer."},
        {"id": "4", "text": " ".join(["the haunted crypt at night"] * 40)}]


def write_csv(path: Path, rows) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deployment.predict", *map(str, args)], capture_output=True,
                          text=True, cwd=config.ROOT, timeout=120)


def test_csv_in_csv_out_keeps_every_row_and_matches_the_predictor(tiny_bundle, tmp_path):
    src, out = write_csv(tmp_path / "in.csv", ROWS), tmp_path / "out" / "pred.csv"
    proc = run_cli("--bundle", tiny_bundle, "--input", src, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "predicted 3/4 rows (1 with errors, 1 truncated)" in proc.stdout and "docs/s" in proc.stdout
    assert "100%" in proc.stderr  # the progress bar
    with open(out, newline="", encoding="utf-8") as fh:
        got = list(csv.DictReader(fh))
    assert [r["id"] for r in got] == ["1", "2", "3", "4"] and [r["text"] for r in got] == [r["text"] for r in ROWS]
    expected = Predictor.from_bundle(tiny_bundle).predict([ROWS[i]["text"] for i in (0, 2, 3)])
    for row, exp in zip([got[0], got[2], got[3]], expected):
        assert json.loads(row["predicted_labels"]) == exp["predicted"]
        scores = json.loads(row["scores"])
        assert list(scores) == [s["label"] for s in exp["labels"]]
        assert row["error"] == "" and row["n_tokens"] == str(exp["n_tokens"])
    assert got[1]["error"] == "empty text" and json.loads(got[1]["predicted_labels"]) == []
    assert got[3]["truncated"] == "true"


def test_jsonl_in_jsonl_out_flags_bad_lines_without_dropping_them(tiny_bundle, tmp_path):
    src, out = tmp_path / "in.jsonl", tmp_path / "pred.jsonl"
    src.write_text("\n".join([json.dumps({"text": "A ghost story", "n": 1}), "{not json", json.dumps({"text": 5}),
                              json.dumps({"title": "no text"}), "", json.dumps({"text": "A murder mystery"})]) + "\n")
    assert main(["--bundle", str(tiny_bundle), "--input", str(src), "--out", str(out), "--top-k", "2",
                 "--threshold", "0.0", "--quiet"]) == 0
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(got) == 5
    assert got[0]["n"] == 1 and len(got[0]["scores"]) == 2 and len(got[0]["predicted_labels"]) == 5
    assert got[1]["error"].startswith("invalid JSON on line 2") and got[1]["raw"] == "{not json"
    assert got[2]["error"] == "text is int, not a string"
    assert got[3]["error"] == "line 4 has no 'text' field"
    assert got[4]["text"] == "A murder mystery" and got[4]["error"] is None


def test_text_column_option_and_missing_column_error(tiny_bundle, tmp_path, capsys):
    src = write_csv(tmp_path / "in.csv", [{"description": "A dragon tale"}])
    assert main(["--bundle", str(tiny_bundle), "--input", str(src), "--out", str(tmp_path / "o.csv"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no 'text' column" in err and err.rstrip().endswith("; pick one with --text-col")
    for option in ("--text-col", "--text-column"):   # one vocabulary with training.prepare; the old spelling kept
        out = tmp_path / f"o{option}.jsonl"
        assert main(["--bundle", str(tiny_bundle), "--input", str(src), "--out", str(out), option, "description",
                     "--quiet"]) == 0
        assert json.loads(out.read_text())["predicted_labels"] is not None


@pytest.mark.parametrize("option", ["--threads", "--num-threads"])
def test_threads_has_the_serving_commands_name_and_keeps_its_old_one(tiny_bundle, tmp_path, option):
    src, out = write_csv(tmp_path / "in.csv", ROWS), tmp_path / "out.csv"
    proc = run_cli("--bundle", tiny_bundle, "--input", src, "--out", out, option, "1", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert len(read_csv(out)) == len(ROWS)


@pytest.mark.parametrize("case", ["non-utf8", "bad-extension", "missing-input", "missing-bundle"])
def test_unreadable_input_is_a_clear_error_and_no_output(tiny_bundle, tmp_path, capsys, case):
    src, out, bundle = tmp_path / "in.csv", tmp_path / "out.csv", tiny_bundle
    src.write_bytes("text\nCaf\xe9 au lait\n".encode("latin-1"))
    if case == "bad-extension":
        out = tmp_path / "out.xlsx"
    elif case == "missing-input":
        src = tmp_path / "absent.csv"
    elif case == "missing-bundle":
        bundle = tmp_path / "no-bundle"
    assert main(["--bundle", str(bundle), "--input", str(src), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert {"non-utf8": "in.csv: not UTF-8", "bad-extension": "unsupported extension '.xlsx'",
            "missing-input": "absent.csv: file not found", "missing-bundle": "no-bundle"}[case] in err
    assert not out.exists() and not any(p.name.startswith(".out") for p in tmp_path.iterdir())


def test_many_rows_stream_through_in_chunks(tiny_bundle, tmp_path):
    rows = [{"text": f"Story number {i} about a dragon" + " and a wizard" * (i % 7)} for i in range(600)]
    src, out = write_csv(tmp_path / "in.csv", rows), tmp_path / "out.jsonl"
    assert main(["--bundle", str(tiny_bundle), "--input", str(src), "--out", str(out), "--quiet"]) == 0
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [g["text"] for g in got] == [r["text"] for r in rows]


# ---- the union of fields, bad rows, hostile content --------------------------------------------------------
def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_jsonl_to_csv_keeps_every_field_when_the_first_line_is_bad(tiny_bundle, tmp_path):
    """The CSV header is the union of the rows' fields in first-seen order, not the first row's fields."""
    src, out = tmp_path / "in.jsonl", tmp_path / "out.csv"
    src.write_text("{broken\n" + "\n".join(json.dumps(r) for r in [
        {"id": "a", "text": "A ghost story"}, {"id": "b", "text": "A murder mystery", "year": 1999},
        {"text": "Love letters", "tags": ["x", "y"], "id": "c"}]) + "\n", encoding="utf-8")
    proc = run_cli("--bundle", tiny_bundle, "--input", src, "--out", out, "--quiet")
    assert proc.returncode == 0, proc.stderr
    with open(out, newline="", encoding="utf-8") as fh:
        header = next(csv.reader(fh))
    assert header == ["line", "raw", "id", "text", "year", "tags", *OUT_FIELDS]
    got = read_csv(out)
    assert [r["id"] for r in got] == ["", "a", "b", "c"]
    assert [r["text"] for r in got] == ["", "A ghost story", "A murder mystery", "Love letters"]
    assert got[0]["raw"] == "{broken" and got[0]["error"].startswith("invalid JSON on line 1")
    assert got[2]["year"] == "1999" and json.loads(got[3]["tags"]) == ["x", "y"]
    assert all(json.loads(r["predicted_labels"]) is not None for r in got)


LONE = {"id": "2", "text": "fine text then \ud800 a lone surrogate"}


@pytest.mark.parametrize("out_name", ["out.csv", "out.jsonl"])
def test_a_lone_surrogate_row_gets_an_error_cell_and_the_run_goes_on(tiny_bundle, tmp_path, out_name):
    src, out = tmp_path / "in.jsonl", tmp_path / out_name
    rows = [{"id": "1", "text": "A dragon"}, LONE, {"id": "3", "text": "A ghost", "title": "odd \udfff title"}]
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")   # ensure_ascii: "\ud800"
    proc = run_cli("--bundle", tiny_bundle, "--input", src, "--out", out, "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "predicted 2/3 rows (1 with errors" in proc.stdout and "Traceback" not in proc.stderr
    if out_name.endswith(".jsonl"):   # surrogates come back as \\udXXX escapes: the same strings, exactly
        got = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
        assert [g["text"] for g in got] == [r["text"] for r in rows] and got[2]["title"] == "odd \udfff title"
    else:                             # UTF-8 cannot hold them: the cell shows the escape
        got = read_csv(out)
        assert got[1]["text"] == "fine text then \\ud800 a lone surrogate" and got[2]["title"] == "odd \\udfff title"
    assert got[1]["error"] == "text holds a lone surrogate (U+D800 at character 15), which is not valid Unicode text"
    assert got[0]["error"] in ("", None) and got[2]["error"] in ("", None)
    assert got[2]["predicted_labels"] not in ("", None)


HOSTILE_TEXTS = ["comma, \"quote\" and 'single'", "line\nbreak", "carriage\rreturn", "crlf\r\nend", "nul\x00byte",
                 "\ufeffleading BOM", "tab\tand \u2028 line separator", "\x1c\x1d\x1e record separators",
                 "next line \x85 char", "trailing space ", "=1+1 formula-looking", "🐉 emoji"]


@pytest.mark.parametrize("in_name,out_name", [("in.csv", "out.csv"), ("in.jsonl", "out.csv"),
                                              ("in.csv", "out.jsonl"), ("in.jsonl", "out.jsonl")])
def test_hostile_field_content_round_trips_through_csv_json_and_pandas(tiny_bundle, tmp_path, in_name, out_name):
    """\\r, \\n, NUL, quotes, a BOM, U+2028 and \\x1c-\\x1e inside fields: every row back, each field exact."""
    import pandas as pd

    rows = [{"id": f"{i:03d}", "text": f"dragon story: {t}", "note": t} for i, t in enumerate(HOSTILE_TEXTS)]
    src, out = tmp_path / in_name, tmp_path / out_name
    if in_name.endswith(".csv"):
        write_csv(src, rows)
    else:
        src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    proc = run_cli("--bundle", tiny_bundle, "--input", src, "--out", out, "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert f"predicted {len(rows)}/{len(rows)} rows (0 with errors" in proc.stdout
    if out_name.endswith(".csv"):
        got = read_csv(out)
        frame = pd.read_csv(out, dtype=str, keep_default_na=False)
        assert frame[["id", "text", "note"]].to_dict("records") == rows
    else:
        got = [json.loads(line) for line in out.read_text(encoding="utf-8").split("\n") if line]
        frame = pd.read_json(out, lines=True, dtype=False)
        assert frame["note"].tolist() == [r["note"] for r in rows]
    assert [{k: g[k] for k in ("id", "text", "note")} for g in got] == rows


def test_malformed_csv_rows_are_flagged_and_their_cells_kept(tiny_bundle, tmp_path):
    src, out = tmp_path / "in.csv", tmp_path / "out.csv"
    src.write_text("id,text\n1,A dragon\n2,A ghost, in a crypt,at night\n3\n4,A wizard\n", encoding="utf-8")
    proc = run_cli("--bundle", tiny_bundle, "--input", src, "--out", out, "--quiet")
    assert proc.returncode == 0, proc.stderr
    got = read_csv(out)
    assert [r["id"] for r in got] == ["1", "2", "3", "4"]
    assert got[1]["error"] == "line 3 has 4 fields but the header has 2; quote fields that contain commas"
    assert got[1]["text"] == "A ghost" and json.loads(got[1]["_overflow"]) == [" in a crypt", "at night"]
    assert got[2]["error"] == "line 4 has 1 fields but the header has 2; quote fields that contain commas"
    assert got[0]["error"] == got[3]["error"] == "" and json.loads(got[3]["predicted_labels"]) is not None


@pytest.mark.parametrize("line,fragment", [
    ('{"text": "a", "text": "b"}', "key(s) 'text' appear more than once"),
    ('{"text": "a", "score": NaN}', "NaN is not a JSON value"),
    ('{"text": 1' + "0" * 5000 + "}", "Exceeds the limit (4300 digits)"),
    ('{"text": ' + "[" * 5000 + "]" * 5000 + "}", "nested too deeply"),
    ('["a list"]', "line 1 is not a JSON object"),
])
def test_jsonl_lines_json_would_misread_are_error_rows(tiny_bundle, tmp_path, line, fragment):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text(line + "\n" + json.dumps({"text": "A dragon"}) + "\n", encoding="utf-8")
    proc = run_cli("--bundle", tiny_bundle, "--input", src, "--out", out, "--quiet")
    assert proc.returncode == 0, proc.stderr
    got = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert len(got) == 2 and fragment in got[0]["error"] and got[1]["error"] is None


@pytest.mark.parametrize("content,fragment", [
    ("id,text,id\n1,a,2\n", "the header repeats column name(s) 'id'"),
    ("id,text,scores\n1,a,{}\n", "has field(s) ['scores'] that the output adds"),
])
def test_csv_headers_that_would_lose_or_overwrite_cells_are_refused(tiny_bundle, tmp_path, content, fragment):
    src, out = tmp_path / "in.csv", tmp_path / "out.csv"
    src.write_text(content, encoding="utf-8")
    proc = run_cli("--bundle", tiny_bundle, "--input", src, "--out", out, "--quiet")
    assert proc.returncode == 2 and fragment in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()


# ---- options, paths and signals --------------------------------------------------------------------------
def test_a_bad_number_stops_the_command_at_the_parser(tmp_path):
    src = write_csv(tmp_path / "in.csv", ROWS)
    # a bundle that does not exist: had the option passed the parser, the error would name the bundle instead
    proc = run_cli("--bundle", tmp_path / "no-bundle", "--input", src, "--out", tmp_path / "o.csv", "--batch-size", "0")
    assert proc.returncode == 2
    assert "argument --batch-size: must be an integer >= 1, got '0'" in proc.stderr
    assert "no-bundle" not in proc.stderr and "Traceback" not in proc.stderr


def test_every_numeric_option_is_checked_at_the_parser(tmp_path, capsys):
    from deployment.predict import main
    from tests.cases import parser_refuses

    src = write_csv(tmp_path / "in.csv", ROWS)
    for option, value, message in [
        ("--batch-size", "many", "argument --batch-size: must be an integer >= 1, got 'many'"),
        ("--batch-tokens", "-1", "argument --batch-tokens: must be an integer >= 0, got '-1'"),
        ("--top-k", "0", "argument --top-k: must be an integer >= 1, got '0'"),
        ("--threads", "-2", "argument --threads/--num-threads: must be an integer >= 1, got '-2'"),
        ("--threshold", "1.5", "argument --threshold: must be a number >= 0 and <= 1, got '1.5'"),
    ]:
        parser_refuses(main, ["--bundle", str(tmp_path / "no-bundle"), "--input", str(src), "--out",
                              str(tmp_path / "o.csv"), f"{option}={value}"], message, capsys)
    assert not (tmp_path / "o.csv").exists()


@pytest.mark.parametrize("how", ["same path", "relative path", "symlink", "hard link"])
def test_out_naming_the_input_is_refused_and_the_input_untouched(tiny_bundle, tmp_path, how):
    src = write_csv(tmp_path / "in.csv", ROWS)
    before = src.read_bytes()
    out, cwd = src, config.ROOT
    if how == "relative path":
        cwd, out = tmp_path, Path("sub") / ".." / "in.csv"
        (tmp_path / "sub").mkdir()
    elif how == "symlink":
        out = tmp_path / "link.csv"
        out.symlink_to(src)
    elif how == "hard link":
        out = tmp_path / "hard.csv"
        os.link(src, out)
    proc = subprocess.run([sys.executable, "-m", "deployment.predict", "--bundle", str(tiny_bundle), "--input",
                           str(src), "--out", str(out)], capture_output=True, text=True, cwd=cwd, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(config.ROOT)})
    assert proc.returncode == 2 and "is the input file" in proc.stderr, proc.stderr
    assert src.read_bytes() == before


def big_input(path: Path, n: int = 60_000) -> Path:
    """Enough long rows that a run is still predicting when the test signals it (the tiny model is fast)."""
    text = " ".join(["a dragon and a wizard in a haunted crypt at night"] * 8)
    path.write_text("".join(json.dumps({"id": i, "text": f"{i} {text}"}) + "\n" for i in range(n)), encoding="utf-8")
    return path


def start_and_wait_for_partial(tiny_bundle, src: Path, out: Path, **popen) -> tuple[subprocess.Popen, Path]:
    proc = subprocess.Popen([sys.executable, "-m", "deployment.predict", "--bundle", str(tiny_bundle), "--input",
                             str(src), "--out", str(out), "--quiet"], cwd=config.ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)
    partial = out.with_name(f".{out.name}.partial-{proc.pid}")
    deadline = time.monotonic() + 120
    while not (partial.exists() and partial.stat().st_size > 0):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no partial output appeared"
        time.sleep(0.02)
    return proc, partial


def test_a_run_killed_with_sigkill_leaves_a_partial_file_the_next_run_removes(tiny_bundle, tmp_path):
    src, out = big_input(tmp_path / "in.jsonl"), tmp_path / "out.jsonl"
    proc, partial = start_and_wait_for_partial(tiny_bundle, src, out)
    proc.kill()          # SIGKILL: nothing in the process can clean up
    proc.communicate(timeout=30)
    assert partial.exists() and not out.exists()
    alive = out.with_name(f".{out.name}.partial-{os.getpid()}")   # a live process's file (this test's): kept
    alive.write_text("someone else's run in progress")
    small = write_csv(tmp_path / "small.csv", ROWS)
    again = run_cli("--bundle", tiny_bundle, "--input", small, "--out", out, "--quiet")
    assert again.returncode == 0, again.stderr
    assert not partial.exists() and f"removed {partial}" in again.stderr
    assert alive.exists() and len(out.read_text().splitlines()) == len(ROWS)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_kill_stops_a_background_run_and_leaves_nothing_behind(tiny_bundle, tmp_path, sig):
    """A background process (`cmd &` in a script) inherits SIGINT ignored: the CLI installs its own handler."""
    src, out = big_input(tmp_path / "in.jsonl"), tmp_path / "out.csv"
    ignore_sigint = lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)  # noqa: E731 - what the shell does
    proc, partial = start_and_wait_for_partial(tiny_bundle, src, out, preexec_fn=ignore_sigint)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted: nothing written to" in stderr and "Traceback" not in stderr
    assert not partial.exists() and not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# ---- --explain: the evidence column -----------------------------------------------------------------------
def check_evidence(cell: dict, text: str, expected: dict) -> None:
    """A row's evidence: every predicted label, its strongest positive spans, offsets that slice the text."""
    assert list(cell) == expected["predicted"]
    by_label = {x["label"]: x for x in expected["labels"]}
    for label, spans in cell.items():
        want = [e for e in by_label[label]["evidence"] if e["weight"] > 0][:3]
        assert [(e["start"], e["end"], e["text"]) for e in spans] == [(e["start"], e["end"], e["text"]) for e in want]
        for e in spans:
            assert set(e) == {"start", "end", "weight", "text"}
            assert text[e["start"]:e["end"]] == e["text"] and e["weight"] == pytest.approx(
                next(w["weight"] for w in want if w["start"] == e["start"]), abs=1e-6)


@pytest.mark.parametrize("out_name", ["out.csv", "out.jsonl"])
def test_explain_adds_an_evidence_column_that_round_trips_with_the_texts(tiny_bundle, tmp_path, out_name):
    """Hostile texts (\\r\\n, NUL, quotes, a BOM, emoji): the offsets slice the text cell as the project's CSV
    reader and pandas read it back, and --top-k cuts `scores` only."""
    import pandas as pd

    rows = [{"id": f"{i:03d}", "text": f"A dragon story. {t} The end! Murder in the village."}
            for i, t in enumerate(HOSTILE_TEXTS)] + [{"id": "999", "text": "   "}]
    src, out = write_csv(tmp_path / "in.csv", rows), tmp_path / out_name
    proc = run_cli("--bundle", tiny_bundle, "--input", src, "--out", out, "--quiet", "--explain", "--threshold", "0.3",
                   "--top-k", "2")
    assert proc.returncode == 0, proc.stderr
    if out_name.endswith(".csv"):
        got = read_csv(out)
        assert list(got[0])[-6:] == [*OUT_FIELDS, "evidence"]
        frame = pd.read_csv(out, dtype=str, keep_default_na=False)
        assert frame["evidence"].tolist() == [r["evidence"] for r in got]
        cells = [json.loads(r["evidence"]) for r in got]
        scores = [json.loads(r["scores"]) for r in got]
    else:
        got = [json.loads(line) for line in out.read_text(encoding="utf-8").split("\n") if line]
        cells, scores = [r["evidence"] for r in got], [r["scores"] for r in got]
    assert [r["text"] for r in got] == [r["text"] for r in rows]
    texts = [r["text"] for r in rows[:-1]]
    expected = Predictor.from_bundle(tiny_bundle).predict(texts, threshold=0.3, explain=True)
    for cell, text, exp, top in zip(cells, texts, expected, scores):
        check_evidence(cell, text, exp)
        assert list(top) == [x["label"] for x in exp["labels"][:2]]
    assert any(cells[:-1]) and cells[-1] == {} and got[-1]["error"] == "empty text"


def test_without_explain_there_is_no_evidence_column_and_an_input_may_have_one(tiny_bundle, tmp_path):
    src = write_csv(tmp_path / "in.csv", [{"text": "A ghost story.", "evidence": "mine"}])
    out = tmp_path / "out.csv"
    proc = run_cli("--bundle", tiny_bundle, "--input", src, "--out", out, "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert list(read_csv(out)[0]) == ["text", "evidence", *OUT_FIELDS] and read_csv(out)[0]["evidence"] == "mine"
    refused = run_cli("--bundle", tiny_bundle, "--input", src, "--out", tmp_path / "o2.csv", "--quiet", "--explain")
    assert refused.returncode == 2 and "['evidence'] that the output adds" in refused.stderr
