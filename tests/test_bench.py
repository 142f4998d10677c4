"""Every `python -m bench.*` command run small, as a user runs it: exit 0, the table printed, the JSON written.

Speed numbers are the benches' business, not the tests': these check only that each command works end to end
and writes what it says. bench.accuracy and bench.train_speed fine-tune or step the real backbone: slow.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

import config


def run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=config.ROOT,
                          timeout=timeout)
    assert proc.returncode == 0, f"{args}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return proc


def test_bench_prepare_times_prepare_and_the_split(tmp_path):
    out = tmp_path / "prepare.json"
    proc = run("bench.prepare", "--data", str(config.SAMPLE_DIR / "books.csv"), "--split-rows", "2000", "--out", str(out))
    result = json.loads(out.read_text())
    [prep] = result["prepare"]
    assert prep["rows_in"] == 420 and prep["seconds"] > 0 and prep["labels_out"] > 0
    assert result["split"]["rows"] == 2000 and result["split"]["label_proportion_error"] < 0.05
    assert "| prepare books.csv | 420 |" in proc.stdout and "| iterative stratification | 2000 |" in proc.stdout


def test_bench_serve_compares_gunicorn_with_in_process_calls(tiny_bundle, tmp_path):
    out = tmp_path / "serve.json"
    proc = run("bench.serve", "--bundle", str(tiny_bundle), "--clients", "1", "2", "--seconds", "2", "--requests",
               "15", "--warmup", "2", "--workers", "1", "--threads", "2", "--n-texts", "10", "--out", str(out))
    result = json.loads(out.read_text())
    assert [(r["mode"], r["clients"]) for r in result["rows"]] == [
        ("in-process", 1), ("gunicorn", 1), ("in-process", 2), ("gunicorn", 2)]
    assert all(r["errors"] == 0 and 0 < r["requests"] <= 15 for r in result["rows"])
    assert all("ratio" in r for r in result["rows"] if r["mode"] == "gunicorn")
    assert result["table"] in proc.stdout and "0 errors" in proc.stdout


def test_bench_scrape_runs_both_scrapers_and_the_naive_loop_on_the_local_site(tmp_path):
    out = tmp_path / "scrape.json"
    proc = run("bench.scrape", "--items", "10", "--per-page", "5", "--out", str(out))
    result = json.loads(out.read_text())
    stages = [(r["site"], r["stage"], r["pages"]) for r in result["results"]]
    assert stages == [("smashwords", "urls (listings)", 2), ("smashwords", "details", 10),
                      ("stackoverflow", "urls (listings)", 2), ("stackoverflow", "details", 10)]
    assert all(r["ours_pages_per_s"] > 0 and r["naive_pages_per_s"] > 0 for r in result["results"])
    assert "| smashwords | details | 10 |" in proc.stdout


@pytest.mark.slow
def test_bench_train_speed_times_each_part_of_a_step_for_blurr_and_the_token_cache(tmp_path):
    data = tmp_path / "books"
    run("training.prepare", "--input", str(config.SAMPLE_DIR / "books.csv"), "--out", str(data), "--quiet")
    out = tmp_path / "train_speed.json"
    proc = run("bench.train_speed", "--data", str(data), "--batches", "1", "--warmup", "1", "--rounds", "2",
               "--production-batches", "5", "--batch-size", "4", "--max-length", "32", "--out", str(out), timeout=900)
    result = json.loads(out.read_text())
    assert set(result["paths"]) == set(result["batch_production_ms"]) == {"blurr", "token_cache"}
    for p in result["paths"].values():
        assert p["batch_production_ms"] > 0 and p["forward_backward_ms"] > 0 and p["optimizer_ms"] > 0
        assert p["steps_per_second"] > 0 and len(p["steps_per_second_rounds"]) == 2
    # the same rows in the same batches, each document's same window: the same tokens on both paths, but for
    # windows that start inside a word, which blurr re-tokenised with up to 2 tokens fewer (tests/test_tokencache.py)
    tokens = [result["paths"][k]["mean_tokens_per_batch"] for k in ("blurr", "token_cache")]
    assert 0 <= tokens[1] - tokens[0] <= 2 * 4 and tokens[1] > 4 * 10
    assert "| batch production (CPU, no model) |" in proc.stdout and "steps/s end to end" in proc.stdout


@pytest.mark.slow
def test_bench_accuracy_reports_ours_against_the_baseline(tmp_path):
    out = tmp_path / "accuracy.json"
    proc = run("bench.accuracy", "--data", str(config.SAMPLE_DIR / "books.csv"), "--time-budget", "2m",
               "--max-length", "32", "--epochs", "1", "--min-label-freq", "40", "--work", str(tmp_path / "work"),
               "--out", str(out), timeout=1200)
    [result] = json.loads(out.read_text())["runs"]
    report = json.loads((tmp_path / "work" / "processed" / "books" / "report.json").read_text())
    assert report["settings"]["min_label_freq"] == 40                      # the labels kept: 40 rows or more
    assert min(report["label_frequencies"]["all"].values()) >= 40 and report["labels_out"] < report["labels_in"]
    assert {"baseline", "baseline_global", "transformer", "transformer_global", "final"} <= set(result["results"])
    for metrics in result["results"].values():
        assert {"micro_f1", "macro_f1", "samples_f1"} <= set(metrics)
    assert result["results"]["baseline"]["micro_f1"] > result["results"]["most_frequent"]["micro_f1"] + 0.1
    res, g = result["results"], result["margins"]
    best = max(res["baseline"]["micro_f1"], res["baseline_global"]["micro_f1"])
    assert g["final_minus_baseline_micro_f1"] == pytest.approx(res["final"]["micro_f1"] - best)
    alone = max(res["transformer"]["micro_f1"], res["transformer_global"]["micro_f1"])   # held to the same rule
    assert g["transformer_minus_baseline_micro_f1"] == pytest.approx(alone - best)
    assert "one global threshold |" in proc.stdout and "transformer alone, whole document, one global" in proc.stdout
    assert "| books (" in proc.stdout and "against the strongest baseline" in proc.stdout
    curve = result["train"]["valid_curve"]     # time to accuracy: measured while training, plotted beside the JSON
    assert len(curve) >= 2 and curve[-1]["step"] == result["train"]["steps"]
    assert all(p["blend_micro_f1"] >= max(p["transformer_micro_f1"], p["linear_micro_f1"]) - 1e-12 for p in curve)
    assert (tmp_path / "accuracy_time_to_accuracy.png").stat().st_size > 10_000
    assert "| books | " in proc.stdout and "tf-idf alone" in proc.stdout


# ---- bad numbers stop each command at the parser ----------------------------------------------------------
def test_a_bad_number_stops_a_bench_at_the_parser():
    proc = subprocess.run([sys.executable, "-m", "bench.serve", "--clients", "0"], capture_output=True, text=True,
                          cwd=config.ROOT, timeout=120)
    assert proc.returncode == 2
    assert "argument --clients: must be an integer >= 1, got '0'" in proc.stderr and "Traceback" not in proc.stderr


def test_every_bench_checks_its_numeric_options_at_the_parser(capsys):
    import importlib

    from tests.cases import parser_refuses

    for module, argv, message in [
        ("bench.serve", ["--seconds", "-1"], "argument --seconds: must be a number > 0, got '-1'"),
        ("bench.serve", ["--ort-threads", "-1"], "argument --ort-threads: must be an integer >= 0, got '-1'"),
        ("bench.scrape", ["--items", "0"], "argument --items: must be an integer >= 1, got '0'"),
        ("bench.scrape", ["--workers", "two"], "argument --workers: must be an integer >= 1, got 'two'"),
        ("bench.prepare", ["--split-rows", "-5"], "argument --split-rows: must be an integer >= 1, got '-5'"),
        ("bench.train_speed", ["--batch-size", "0"], "argument --batch-size: must be an integer >= 1, got '0'"),
        ("bench.train_speed", ["--max-length", "4"], "argument --max-length: must be an integer >= 8, got '4'"),
        ("bench.accuracy", ["--time-budget", "0"], "argument --time-budget: must be a duration above zero"),
        ("bench.accuracy", ["--epochs", "nan"], "argument --epochs: must be a number > 0 (a finite number), got 'nan'"),
        ("bench.accuracy", ["--min-label-freq=-1"], "argument --min-label-freq: must be a number >= 0"),
        ("bench.windows", ["--docs", "0"], "argument --docs: must be an integer >= 1, got '0'"),
        ("bench.spark", ["--n", "1"], "argument --n: must be an integer >= 2, got '1'"),
    ]:
        parser_refuses(importlib.import_module(module).main, argv, message, capsys)
