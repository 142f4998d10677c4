"""bench.windows runs end to end on a tiny windowed bundle and writes the table it prints."""
from __future__ import annotations

import json
import subprocess
import sys

from tests.tiny_bundle import TINY_LABELS, make_tiny_bundle

ROOT = __import__("config").ROOT


def test_windows_bench_compares_caps_and_reports_windows_needed(tmp_path):
    bundle = make_tiny_bundle(tmp_path, TINY_LABELS, bench_rounds=0,
                              windows={"max_windows": 4, "stride": 8, "pooling": "mean"})
    out = tmp_path / "w.json"
    proc = subprocess.run([sys.executable, "-m", "bench.windows", "--bundle", str(bundle), "--docs", "4",
                           "--rounds", "1", "--caps", "1", "3", "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert {(r["texts"], r["cap"]) for r in result["rows"]} == {(k, c) for k in ("short", "medium", "long") for c in (1, 3)}
    long = {r["cap"]: r for r in result["rows"] if r["texts"] == "long"}
    assert long[1]["mean_windows_read"] == 1 and long[1]["truncated_fraction"] == 1
    assert 1 < long[3]["mean_windows_read"] <= 3
    assert all(r["docs_per_s_b1"] > 0 and r["docs_per_s_b32"] > 0 for r in result["rows"])
    assert "| long |" in proc.stdout and "windows needed" in proc.stdout


def test_windows_bench_refuses_a_missing_bundle(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bench.windows", "--bundle", str(tmp_path / "nope")],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2 and "bundle directory does not exist" in proc.stderr
