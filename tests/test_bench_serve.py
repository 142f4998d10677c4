"""bench.serve, run as a command on a tiny bundle: the JSON it writes reports memory (one fresh serving process,
every gunicorn worker) and the bundle's size beside throughput. A smoke run: no timing is asserted."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import config
from tests.tiny_bundle import TINY_LABELS, make_tiny_bundle


@pytest.fixture(scope="module")
def blended_bundle(tmp_path_factory) -> Path:
    """A tiny bundle with a linear part, so the memory probe loads and runs both halves of the blend."""
    return make_tiny_bundle(tmp_path_factory.mktemp("serve"), TINY_LABELS, seed=2, with_linear=True, bench_rounds=0)


def test_bench_json_reports_memory_per_process_and_bundle_size(blended_bundle, tmp_path):
    out = tmp_path / "serve.json"
    env = {**os.environ, "PYTHONPATH": str(config.ROOT)}
    proc = subprocess.run([sys.executable, "-m", "bench.serve", "--bundle", str(blended_bundle), "--clients", "1", "2",
                           "--seconds", "2", "--requests", "20", "--warmup", "2", "--workers", "2", "--threads", "1",
                           "--out", str(out)], capture_output=True, text=True, cwd=config.ROOT, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())

    memory = result["process_memory"]
    assert memory["batch"] == 32 and memory["tokens"] == 128
    assert memory["n_tokens"] == [128]            # every probe text is exactly 128 tokens long
    assert memory["linear"] is True
    # ordered as they happen: an interpreter, + numpy/onnxruntime/tokenizers, + the bundle, + one batch
    assert 0 < memory["rss_start_mib"] < memory["rss_after_imports_mib"] < memory["rss_after_load_mib"]
    assert memory["peak_rss_mib"] >= max(memory["rss_after_load_mib"], memory["rss_after_predict_mib"])

    sizes = result["bundle_size"]
    files = {p.name: p.stat().st_size for p in blended_bundle.iterdir()}
    assert sizes["files_bytes"] == files and sizes["total_bytes"] == sum(files.values())

    web = [r for r in result["rows"] if r["mode"] == "gunicorn"]
    assert [r["clients"] for r in web] == [1, 2] and all(r["errors"] == 0 and r["requests"] > 0 for r in web)
    for row in web:
        workers = row["workers_memory"]
        assert len(workers) == 2 and len({w["pid"] for w in workers}) == 2
        assert all(w["peak_rss_mib"] >= w["rss_mib"] > 0 for w in workers)
    assert "peak RSS/worker" in result["table"] and " MiB" in result["table"]
    assert "one serving process peaks at" in proc.stdout
