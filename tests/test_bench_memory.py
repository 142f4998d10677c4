"""bench.memory runs end to end on a tiny bundle: one fresh process per setting, peaks that only grow, a JSON table."""
from __future__ import annotations

import json
import subprocess
import sys

from tests.tiny_bundle import TINY_LABELS, make_tiny_bundle

ROOT = __import__("config").ROOT


def test_memory_bench_measures_each_setting_in_its_own_process(tmp_path):
    bundle = make_tiny_bundle(tmp_path, TINY_LABELS, bench_rounds=0)
    out = tmp_path / "m.json"
    proc = subprocess.run([sys.executable, "-m", "bench.memory", "--bundle", str(bundle), "--batch-tokens", "0", "256",
                           "--memory-pattern", "off", "on", "--requests", "4", "--rounds", "1", "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert [(r["batch_tokens"], r["memory_pattern"]) for r in result["rows"]] == [
        (None, False), (256, False), (None, True), (256, True)]
    for r in result["rows"]:
        # VmHWM never falls, and each process starts from a bare interpreter, not the parent's memory
        assert 0 < r["rss_after_imports_mib"] <= r["peak_rss_probe_mib"] <= r["peak_rss_mixed_mib"]
        assert r["rss_end_mib"] <= r["peak_rss_mixed_mib"]
        assert r["mixed_texts_per_s"] > 0 and r["batch32x128_texts_per_s"] > 0 and r["batch1_ms"] > 0
    assert result["n_mixed_texts"] >= 4
    assert "tokens/call" in proc.stdout and "no cap" in proc.stdout and "lowest mixed-workload peak" in proc.stdout


def test_memory_bench_refuses_a_missing_bundle_and_a_negative_cap(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bench.memory", "--bundle", str(tmp_path / "nope")],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 1 and "bundle not found" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "bench.memory", "--batch-tokens", "-5"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2 and "--batch-tokens" in proc.stderr
