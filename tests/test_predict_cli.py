"""`python -m deployment.predict` on CSV and JSONL: every row back in order, predictions equal the predictor's,
bad rows flagged instead of dropped, unreadable input a clear error."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

import config
from deployment.predict import main
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
    assert "no 'text' column" in capsys.readouterr().err
    assert main(["--bundle", str(tiny_bundle), "--input", str(src), "--out", str(tmp_path / "o.jsonl"),
                 "--text-column", "description", "--quiet"]) == 0
    assert json.loads((tmp_path / "o.jsonl").read_text())["predicted_labels"] is not None


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
