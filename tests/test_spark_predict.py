"""`python -m deployment.spark_predict` on a real local[2] Spark: every input row out exactly once, bad rows
flagged, decisions equal to the batch CLI's, CSV / JSONL / Parquet in and out, folders and globs, the bundle
shipped as an archive, one Predictor per Python worker, and clear errors from the real command.

One SparkSession serves the whole file (the JVM takes seconds to start); the command finds it active and uses it.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

import config
from deployment import predict, spark_io, spark_predict, spark_session
from deployment.spark_predict import main
from deployment.spark_worker import row_text
from tests.tiny_bundle import TINY_LABELS, TINY_MAX_LENGTH, sample_texts

SPARK_CONF = {"spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false",
              "spark.sql.shuffle.partitions": "2"}


@pytest.fixture(scope="session")
def spark():
    """A local[2] session started the way the command starts one (its worker Python and import path)."""
    session, created = spark_session.start_session("local[2]", SPARK_CONF, quiet=True)
    assert created, "another Spark session was already active in this test process"
    yield session
    session.stop()


def run_cli(*args, timeout=180) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(config.ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "deployment.spark_predict", *map(str, args)], capture_output=True,
                          text=True, cwd=config.ROOT, timeout=timeout, env=env)


def read_parquet_rows(out: Path) -> dict[str, dict]:
    rows = pq.read_table(out).to_pylist()
    by_id = {r["id"]: r for r in rows}
    assert len(by_id) == len(rows), "an id came out twice"
    for r in by_id.values():   # pyarrow gives a map as a list of pairs, in the order written (best first)
        r["scores"] = dict(r["scores"])
    return by_id


def summary_of(out: Path) -> dict:
    return json.loads((out / spark_io.MARKER).read_text())["summary"]


def good_rows(n: int, seed: int = 0) -> list[dict]:
    texts, _ = sample_texts(TINY_LABELS, n, seed=seed)
    return [{"id": f"g{i}", "text": t} for i, t in enumerate(texts)]


def write_csv(path: Path, rows: list[dict], encoding: str = "utf-8") -> Path:
    with open(path, "w", newline="", encoding=encoding) as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


# ------------------------------------------------------------------------------------------------ pure parts
@pytest.mark.parametrize("value, raw, kind, error", [
    ("A dragon", None, "none", None),
    (None, None, "none", "text is missing (null)"),
    (float("nan"), None, "none", "text is missing (null)"),
    ("  \n", None, "none", "empty text"),
    ("bad \ud800 half", None, "none", "text holds a lone surrogate (U+D800 at character 4), which is not valid Unicode text"),
    (None, None, "csv", "empty text"),
    ("caf\ufffd", None, "csv", "text holds U+FFFD: the file has bytes that are not UTF-8 there"),
    ("x", "1,x,extra", "csv", "malformed CSV record (its number of fields differs from the header's): 1,x,extra"),
    (None, b'{"text": 5}', "json", "text is int, not a string"),
    (None, b'{"text": null}', "json", "text is missing (null)"),
    (None, b'{"title": "t"}', "json", "line has no 'text' field"),
    (None, b'[1, 2]', "json", "line is not a JSON object: [1, 2]"),
    (None, b'{"text": "a\\ud800b"}', "json", "text holds a lone surrogate (U+D800 at character 1), which is not valid Unicode text"),
    (None, b'{"text": "caf\xe9"}', "json", "line is not UTF-8 text (byte 13: invalid continuation byte)"),
    (None, b'{"text": "ok \\u2028 fine"}', "json", None),
])
def test_row_text_names_what_is_wrong_with_a_row(value, raw, kind, error):
    text, got = row_text(value, raw, kind)
    assert got == error
    assert (text is None) == (error is not None)


def test_invalid_json_keeps_the_whole_line_in_the_error():
    _, error = row_text(None, b'{"id": 3, "text": "unterminated', "json")
    assert error.startswith("invalid JSON (Unterminated string") and error.endswith('{"id": 3, "text": "unterminated')


@pytest.mark.parametrize("master, slots", [("local", 1), ("local[2]", 2), ("local[3, 4]", 3), ("yarn", None),
                                           ("spark://host:7077", None)])
def test_local_task_slots_set_the_default_threads(master, slots):
    assert spark_session.local_slots(master) == slots
    cores = spark_session.cores()
    threads, why = spark_session.default_threads(master, task_cpus=3)
    assert threads == (max(1, cores // slots) if slots else 3)
    assert why == (f"{cores} cores / {slots} task slots of {master}" if slots else "spark.task.cpus = 3")


def test_a_folder_of_mixed_files_needs_an_input_format(tmp_path):
    (tmp_path / "a.csv").write_text("text\nx\n")
    (tmp_path / "b.jsonl").write_text('{"text": "x"}\n')
    (tmp_path / "_SUCCESS").write_text("")   # Spark's marker files are not data
    with pytest.raises(spark_io.LocationError, match="cannot tell one input format.*--input-format"):
        spark_io.resolve_input(str(tmp_path), None)
    assert spark_io.resolve_input(str(tmp_path / "*.csv"), None) == ([str(tmp_path / "a.csv")], "csv")


# ------------------------------------------------------------------------------------------------ on Spark
def test_csv_every_row_out_once_and_decisions_equal_the_batch_cli(spark, tiny_bundle, tmp_path, capsys):
    rows = good_rows(60) + [
        {"id": "empty", "text": ""}, {"id": "blank", "text": "   "},
        {"id": "quoted", "text": 'A "quest", a wizard,\nand a kingdom\r\nfar away'},
        {"id": "long", "text": " ".join(["the haunted crypt at night"] * 40)}]
    src = write_csv(tmp_path / "in.csv", rows, encoding="utf-8-sig")   # with a byte-order mark, "\r\n" line ends
    out = tmp_path / "out"
    # Three partitions: rows meet other batch companions than in the batch CLI, and still get its answers (one
    # text, one answer: docs/CONTRACTS.md).
    assert main(["--bundle", str(tiny_bundle), "--input", str(src), "--out", str(out), "--partitions", "3",
                 "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "64 rows in, 64 rows out (62 predicted, 2 with errors, 1 truncated)" in printed and "texts/s" in printed

    got = read_parquet_rows(out)
    assert sorted(got) == sorted(r["id"] for r in rows)
    assert got["quoted"]["text"] == rows[-2]["text"]   # every input column comes back as it was
    assert got["empty"]["error"] == "empty text" and got["blank"]["error"] == "empty text"
    assert got["empty"]["predicted_labels"] == [] and got["empty"]["scores"] == {} and got["empty"]["n_tokens"] is None
    assert got["long"]["truncated"] is True and got["long"]["n_tokens"] > TINY_MAX_LENGTH

    reference = tmp_path / "reference.jsonl"
    assert predict.main(["--bundle", str(tiny_bundle), "--input", str(src), "--out", str(reference), "--quiet"]) == 0
    expected = {r["id"]: r for r in map(json.loads, reference.read_text().splitlines())}
    for key, exp in expected.items():
        row = got[key]
        assert row["error"] == exp["error"]
        assert row["predicted_labels"] == exp["predicted_labels"], key
        assert row["truncated"] == exp["truncated"] and row["n_tokens"] == exp["n_tokens"]
        assert list(row["scores"]) == list(exp["scores"])   # same labels, same ranking
        assert all(abs(row["scores"][k] - v) <= 1e-6 for k, v in exp["scores"].items()), key

    summary = summary_of(out)
    assert summary["rows_in"] == summary["rows_out"] == 64 and summary["errors"] == 2
    assert summary["spark"]["partitions"] == 3
    assert summary["texts_sent"] == 62   # each text went through the model once (the UDF ran once per row)
    assert 1 <= summary["predictor_loads"] <= summary["python_workers"] <= 2   # a worker loads it at most once
    assert summary["bundle_paths"] == [str(tiny_bundle)]


def test_jsonl_bad_lines_get_errors_and_keep_their_other_fields(spark, tiny_bundle, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\xef\xbb\xbf" + b"\n".join([   # a byte-order mark first
        json.dumps({"id": 1, "text": "A ghost story in a haunted crypt", "meta": {"pages": 3}}).encode(),
        b'{"id": 2, "text": "unterminated',
        b"[1, 2, 3]",
        json.dumps({"id": 4, "text": 5}).encode(),
        json.dumps({"id": 5, "text": None}).encode(),
        json.dumps({"id": 6, "title": "no text field"}).encode(),
        b'{"id": 7, "text": "lone \\ud800 surrogate"}',
        b'{"id": 8, "text": "caf\xe9 au lait"}',
        b"   ",
        json.dumps({"id": 10, "text": "A murder mystery \u2028 with a line separator"}).encode(),
    ]) + b"\n")
    out = tmp_path / "out"
    assert main(["--bundle", str(tiny_bundle), "--input", str(src), "--out", str(out), "--format", "jsonl",
                 "--top-k", "2", "--quiet"]) == 0
    # Split on "\n" only: Spark writes U+2028 as it is, and str.splitlines() would split there too.
    lines = [json.loads(line) for part in sorted(out.glob("part-*.json"))
             for line in part.read_text(encoding="utf-8").split("\n") if line]
    assert len(lines) == 9   # the blank line is not a row (as in the batch CLI); everything else is
    by_id = {r["id"]: r for r in lines if r["id"] is not None}
    unnamed = [r for r in lines if r["id"] is None]
    assert by_id[1]["error"] is None and by_id[1]["meta"] == {"pages": 3} and len(by_id[1]["scores"]) == 2
    assert by_id[10]["error"] is None and by_id[10]["text"].startswith("A murder mystery")
    assert by_id[4]["error"] == "text is int, not a string"
    assert by_id[5]["error"] == "text is missing (null)"
    assert by_id[6]["error"] == "line has no 'text' field"
    assert by_id[7]["error"].startswith("text holds a lone surrogate (U+D") and "at character 5)" in by_id[7]["error"]
    assert by_id[8]["error"].startswith("line is not UTF-8 text")
    assert sorted(r["error"].split(" ")[0] for r in unnamed) == ["invalid", "line"]
    assert any(r["error"].endswith('{"id": 2, "text": "unterminated') for r in unnamed)
    assert all(r["predicted_labels"] == [] and r["scores"] == {} for r in lines if r["error"])
    summary = summary_of(out)
    assert summary["errors"] == 7
    assert summary["spark"]["partitions_read"] == 1 and summary["spark"]["partitions"] == 2   # spread over both cores


def test_parquet_folder_csv_out_one_predictor_per_worker(spark, tiny_bundle, tmp_path):
    rows = good_rows(600, seed=1)
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(6):   # six files, six tasks for two workers
        pd.DataFrame(rows[i * 100:(i + 1) * 100]).assign(n=range(i * 100, (i + 1) * 100)).to_parquet(
            folder / f"part-{i}.parquet")
    (folder / "_SUCCESS").write_text("")
    out = tmp_path / "out"
    # One task per file: Spark packs small files into one split unless opening a file "costs" a whole split.
    spark.conf.set("spark.sql.files.openCostInBytes", str(128 << 20))
    try:
        assert main(["--bundle", str(tiny_bundle), "--input", str(folder), "--out", str(out), "--format", "csv",
                     "--quiet"]) == 0
    finally:
        spark.conf.unset("spark.sql.files.openCostInBytes")
    with_rows = []
    for part in sorted(out.glob("part-*.csv")):
        with open(part, newline="", encoding="utf-8") as fh:
            with_rows += list(csv.DictReader(fh))
    assert sorted(int(r["n"]) for r in with_rows) == list(range(600))
    assert all(r["error"] == "" and isinstance(json.loads(r["predicted_labels"]), list)
               and json.loads(r["scores"]).keys() == set(TINY_LABELS) for r in with_rows)
    summary = summary_of(out)
    assert summary["batches"] >= 6 and summary["texts_sent"] == 600
    # Six tasks, two workers: loaded at most once per worker (earlier tests may have loaded it), never per task.
    assert summary["predictor_loads"] <= summary["python_workers"] <= 2


def test_glob_and_shipped_bundle_give_the_same_rows(spark, tiny_bundle, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    rows = good_rows(40, seed=2)
    write_csv(folder / "a.csv", rows[:20])
    write_csv(folder / "b.csv", rows[20:])
    (folder / "notes.txt").write_text("not data")   # outside the glob
    shared, shipped = tmp_path / "shared", tmp_path / "shipped"
    assert main(["--bundle", str(tiny_bundle), "--input", str(folder / "*.csv"), "--out", str(shared), "--quiet"]) == 0
    assert main(["--bundle", str(tiny_bundle), "--input", str(folder / "*.csv"), "--out", str(shipped),
                 "--ship-bundle", "--quiet"]) == 0
    a, b = read_parquet_rows(shared), read_parquet_rows(shipped)
    assert sorted(a) == sorted(r["id"] for r in rows) == sorted(b)
    assert all(a[k]["predicted_labels"] == b[k]["predicted_labels"] for k in a)
    paths = summary_of(shipped)["bundle_paths"]
    assert paths and all(Path(p).name.startswith("bundle-") and Path(p) != tiny_bundle for p in paths)
    assert all((Path(p) / "bundle.json").is_file() for p in paths)   # unpacked by Spark from the archive


def test_out_folder_that_is_not_ours_is_refused_and_ours_is_replaced(spark, tiny_bundle, tmp_path, capsys):
    src = write_csv(tmp_path / "in.csv", good_rows(5))
    # A plain path goes through deployment.files.replace_dir, a URI through Hadoop's FileSystem: the same rules.
    for kind in ("path", "uri"):
        base = tmp_path / kind
        foreign, out = base / "foreign", base / "out"
        foreign.mkdir(parents=True)
        (foreign / "keep.txt").write_text("precious")
        name = (lambda p: f"file://{p}") if kind == "uri" else str
        assert main(["--bundle", str(tiny_bundle), "--input", str(src), "--out", name(foreign), "--quiet"]) == 2
        assert "is not a spark_predict output (no _spark_predict.json)" in capsys.readouterr().err
        assert [p.name for p in foreign.iterdir()] == ["keep.txt"]
        for _ in range(2):   # the second run replaces the first one's output
            assert main(["--bundle", str(tiny_bundle), "--input", str(src), "--out", name(out), "--quiet",
                         "--conf", "spark.hadoop.fs.s3a.secret.key=hunter2"]) == 0
        assert len(read_parquet_rows(out)) == 5, kind
        marker = (out / spark_io.MARKER).read_text()   # settings are saved, credentials are not
        assert json.loads(marker)["settings"]["conf"] == {"spark.hadoop.fs.s3a.secret.key": "***"}
        assert "hunter2" not in marker and "hunter2" not in capsys.readouterr().out
        assert sorted(p.name for p in base.iterdir()) == ["foreign", "out"], kind   # no staging folder left
        assert spark.conf.get("spark.hadoop.fs.s3a.secret.key", None) is None   # a --conf lasts one run


def test_a_failed_run_leaves_no_output_and_a_rerun_works(spark, tiny_bundle, tmp_path):
    """The executors cannot load the bundle (it breaks after the driver checked it): the job fails, nothing
    appears at --out, nothing is left beside it, and the same command then succeeds."""
    src = write_csv(tmp_path / "in.csv", good_rows(20))
    for kind, out in (("path", str(tmp_path / "out")), ("uri", f"file://{tmp_path}/out-uri")):
        bundle = tmp_path / f"bundle-{kind}"   # a path no Python worker has cached a Predictor for
        shutil.copytree(tiny_bundle, bundle)
        model = (bundle / "model.onnx").read_bytes()
        settings = spark_predict.SparkPredictSettings(bundle=str(bundle), input=str(src), out=out, quiet=True)

        def break_bundle_once_checked(line):
            if "input" in line and "->" in line:   # logged right after the driver's own check of the bundle
                (bundle / "model.onnx").write_bytes(b"not an onnx model")

        with pytest.raises(Exception) as failure:
            spark_predict.run(settings, log=break_bundle_once_checked)
        assert "model.onnx: not a loadable ONNX model" in spark_session.failure_reason(failure.value), kind
        left = {"path": ["bundle-path", "in.csv"], "uri": ["bundle-path", "bundle-uri", "in.csv", "out"]}[kind]
        assert sorted(p.name for p in tmp_path.iterdir()) == left, kind   # no output, no staging folder
        (bundle / "model.onnx").write_bytes(model)
        assert spark_predict.run(settings, log=lambda line: None)["rows_out"] == 20, kind
    assert len(read_parquet_rows(tmp_path / "out-uri")) == 20


def test_every_conf_is_honoured_or_refused(spark, tiny_bundle, tmp_path, capsys):
    rows = good_rows(40, seed=3)
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(4):
        write_csv(folder / f"part-{i}.csv", rows[i * 10:(i + 1) * 10])
    out = tmp_path / "out"
    args = ["--bundle", str(tiny_bundle), "--input", str(folder), "--out", str(out), "--quiet"]
    # A runtime setting applies to the run: opening a file "costs" a whole split, so each file is its own task.
    assert main(args + ["--conf", f"spark.sql.files.openCostInBytes={128 << 20}"]) == 0
    assert summary_of(out)["spark"]["partitions_read"] == 4
    assert main(args) == 0
    assert summary_of(out)["spark"]["partitions_read"] < 4   # and lasts one run: small files share splits
    # One that only a starting session reads is refused, never dropped.
    assert main(args + ["--conf", "spark.executor.memory=3g"]) == 2
    assert "spark.executor.memory takes effect only when a session starts" in capsys.readouterr().err
    assert main(args + ["--conf", "spark.pyspark.driver.python=/usr/bin/false"]) == 2
    assert "this command is the driver and runs on " + sys.executable in capsys.readouterr().err


@pytest.mark.parametrize("case", ["missing-bundle", "missing-input", "missing-text-column", "no-executor-python"])
def test_the_real_command_fails_clearly(tiny_bundle, tmp_path, case):
    src = write_csv(tmp_path / "in.csv", [{"id": "1", "description": "A dragon tale"}])
    bundle, out = tiny_bundle, tmp_path / "out"
    args = ["--master", "local[1]", "--conf", "spark.ui.enabled=false", "--quiet"]
    if case == "missing-bundle":
        bundle = tmp_path / "no-bundle"
    elif case == "missing-input":
        src = tmp_path / "absent.csv"
    elif case == "no-executor-python":   # honoured (pyspark itself reads only PYSPARK_PYTHON), and checked first
        args += ["--conf", f"spark.pyspark.python={tmp_path}/env/bin/python"]
        src = write_csv(src, [{"id": "1", "text": "A dragon tale"}])
    proc = run_cli("--bundle", bundle, "--input", src, "--out", out, *args)
    assert proc.returncode == 2, proc.stderr[-2000:]
    message = {"missing-bundle": "no-bundle: bundle directory does not exist",
               "missing-input": "absent.csv: file not found",
               "missing-text-column": "no 'text' column (columns: ['id', 'description']); pick one with --text-col",
               "no-executor-python": f'the executors cannot start their Python ({tmp_path}/env/bin/python): Cannot '
                                     f'run program "{tmp_path}/env/bin/python"'}
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message[case] in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not out.exists()


def test_the_executors_check_names_the_python_and_what_it_lacks():
    ok = {"python": "/w/env/bin/python", "version": "3.11.7", "host": "w1", "sources": {"predict.py": "aa"}}
    missing = {"python": "/usr/bin/python3", "version": "3.11.2", "host": "w2", "missing": "deployment",
               "error": "ModuleNotFoundError: No module named 'deployment'"}
    assert spark_session.executor_problem([ok], {"predict.py": "aa"}) is None
    problem = spark_session.executor_problem([ok, missing], {"predict.py": "aa"})
    assert problem.startswith("the executors' Python cannot run the predictor: /usr/bin/python3 (Python 3.11.2 on "
                              "w2) cannot import deployment (ModuleNotFoundError: No module named 'deployment')")
    assert "make spark-env" in problem and "\n" not in problem
    stale = spark_session.executor_problem([ok], {"predict.py": "bb"})
    assert stale.startswith("the executors run other code than this driver: deployment/predict.py differ on w1 "
                            "(/w/env/bin/python)") and "make spark-env" in stale
