"""bench.feedback, run as a command on the tiny bundle: every correction it sends is stored on both backends and
the JSON holds the predict comparison. A smoke run: no timing is asserted."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.ci import require

import config
from feedback.pgserver import postgres_available


def test_bench_stores_every_correction_on_both_backends_and_compares_predict(tiny_bundle, tmp_path):
    reason = postgres_available()
    require(reason is None, reason or "")
    out = tmp_path / "feedback.json"
    env = {**os.environ, "PYTHONPATH": str(config.ROOT)}
    proc = subprocess.run([sys.executable, "-m", "bench.feedback", "--bundle", str(tiny_bundle), "--clients", "2",
                           "--corrections", "30", "--predicts", "30", "--rounds", "1", "--threads", "2",
                           "--out", str(out)], capture_output=True, text=True, cwd=config.ROOT, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    stored = {r["mode"]: r for r in result["rows"] if r["mode"].startswith("corrections")}
    assert set(stored) == {"corrections, SQLite", "corrections, PostgreSQL"}
    for row in stored.values():
        assert row["errors"] == 0 and row["requests"] == 30 and row["all_stored"] and row["rows_stored"] == 50
    modes = [r["mode"] for r in result["rows"] if r["mode"].startswith("predict")]
    assert modes == ["predict, store off, idle", "predict, store on, idle", "predict, store off, while storing",
                     "predict, store on, while storing"]
    assert all(r["errors"] == 0 for r in result["rows"])
    assert set(result["summary"]) == {"predict_p99_median_ms", "slowdown_idle", "slowdown_writing"}
    assert "store on vs off" in result["table"] and "bench.feedback:" in proc.stdout
