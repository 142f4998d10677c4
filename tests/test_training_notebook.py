"""notebooks/multilabel_text_classification.ipynb executes headless with tiny settings (CI keeps it from rotting)."""
from __future__ import annotations

import subprocess
import sys

import nbformat
import pytest

import config


@pytest.mark.slow
def test_training_notebook_runs_end_to_end_with_quick_settings(tmp_path):
    out = tmp_path / "executed.ipynb"
    proc = subprocess.run([sys.executable, "notebooks/run.py", "notebooks/multilabel_text_classification.ipynb",
                           "-p", "QUICK=True", "-p", f"OUT_DIR={tmp_path}", "--out", str(out), "--timeout", "900"],
                          capture_output=True, text=True, cwd=config.ROOT, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    nb = nbformat.read(str(out), as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = sum("image/png" in o.get("data", {}) for o in outputs)
    assert images >= 4  # label distribution, lr_find, training curves, per-label F1
    tables = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert tables.count("<table") >= 3   # show_batch, the fit's epoch table, show_results
    assert "suggested learning rate" in "".join(o.get("text", "") for o in outputs)
    html = "".join(o.get("data", {}).get("text/markdown", "") for o in outputs)
    assert "tf-idf + logreg baseline" in html and "transformer alone" in html
    model_dir = tmp_path / "models" / "notebook_books"
    assert (model_dir / "metrics.json").is_file() and (model_dir / "checkpoint" / "config.json").is_file()
