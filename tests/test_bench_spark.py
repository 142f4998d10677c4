"""`python -m bench.spark` end to end on 200 real texts: every mode returns every text and the JSON holds the table
and the 10-million-text projection."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import config


def test_bench_spark_smoke_run_writes_the_table_and_projection(shared_dir, tmp_path):
    out = tmp_path / "spark.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in [str(config.ROOT), os.environ.get("PYTHONPATH")] if p)}
    proc = subprocess.run([sys.executable, "-m", "bench.spark", "--n", "200", "--masters", "local[2]",
                           "--out", str(out)], capture_output=True, text=True, cwd=config.ROOT, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["tiny_bundle"] == ("TINY RANDOM bundle" in proc.stdout)   # says so when it built one
    assert [r["mode"] for r in result["rows"]] == ["deployment.predict", "spark local[2]"]
    for row in result["rows"]:
        assert row["texts"] == 200 and row["predicted"] + row["errors"] == 200 and row["texts_per_s"] > 0
    spark_row = result["rows"][1]
    assert spark_row["startup_what"] == "JVM + SparkSession" and spark_row["startup_s"] > 0
    assert spark_row["python_workers"] >= 1 and spark_row["predictor_loads"] == spark_row["python_workers"]
    assert result["sources"] == {"stackoverflow": 100, "cmu": 100}
    hours = result["projection"]["hours_by_executors"]
    assert all(h["10"] < h["1"] for h in hours.values())
    assert "spark local[2]" in proc.stdout and "10,000,000 texts" in proc.stdout
