"""`python -m training.baseline` run as a user runs it: a prepared sample in, the metrics table and JSON out."""
from __future__ import annotations

import csv
import json
import re
import subprocess
import sys

import pytest

import config


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=config.ROOT, timeout=300)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("baseline") / "books"
    proc = run("training.prepare", "--input", str(config.SAMPLE_DIR / "books.csv"), "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    return out


def test_baseline_prints_the_table_and_writes_the_same_metrics_as_json(prepared, tmp_path):
    out = tmp_path / "new" / "folder" / "baseline.json"   # parent folders are created
    proc = run("training.baseline", "--data", str(prepared), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads(out.read_text())
    row = re.search(r"^\| tf-idf \+ logreg \| ([0-9.]+) \| ([0-9.]+) \|", proc.stdout, re.M)
    assert row, proc.stdout
    assert float(row.group(1)) == pytest.approx(metrics["micro_f1"], abs=5e-5)
    assert float(row.group(2)) == pytest.approx(metrics["macro_f1"], abs=5e-5)
    with open(prepared / "dataset.csv", newline="", encoding="utf-8") as fh:
        n_test = sum(1 for row in csv.DictReader(fh) if row["split"] == "test")
    assert metrics["n_rows"] == n_test > 0
    labels = json.loads((prepared / "labels.json").read_text())
    assert set(metrics["per_label"]) == set(labels)
    assert metrics["C"] in (1.0, 4.0, 16.0)   # picked from the grid on valid
    assert 0.3 < metrics["micro_f1"] <= 1.0     # far above chance on the sample genres


def test_baseline_without_a_prepared_folder_is_one_line_and_exit_2(tmp_path):
    proc = run("training.baseline", "--data", str(tmp_path / "nope"))
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and "run `python -m training.prepare" in proc.stderr
    assert "Traceback" not in proc.stderr
