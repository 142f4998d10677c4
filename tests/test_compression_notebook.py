"""notebooks/onnx_inference.ipynb executes headless on a bundle (via notebooks/run.py) and draws its charts."""
from __future__ import annotations

import subprocess
import sys

import nbformat

import config


def test_onnx_inference_notebook_runs_on_a_bundle_and_draws_charts(tiny_bundle, tmp_path):
    out = tmp_path / "executed.ipynb"
    proc = subprocess.run([sys.executable, "notebooks/run.py", "notebooks/onnx_inference.ipynb",
                           "-p", f"BUNDLE={tiny_bundle}", "-p", "TOP_K=2", "--out", str(out), "--timeout", "300"],
                          capture_output=True, text=True, cwd=config.ROOT, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    nb = nbformat.read(str(out), as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and str(tiny_bundle) in injected[0].source
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 2   # size chart + speed chart
    text = "".join(o.get("text", "") for o in outputs)
    assert "texts from: test split" in text and "kept:" in text


def test_run_py_rejects_malformed_parameters():
    proc = subprocess.run([sys.executable, "notebooks/run.py", "notebooks/onnx_inference.ipynb", "-p", "no-equals"],
                          capture_output=True, text=True, cwd=config.ROOT, timeout=60)
    assert proc.returncode == 2 and "KEY=VALUE" in proc.stderr
