"""Execute a notebook headless with injected parameters (what CI and `make notebooks` run).

    python notebooks/run.py notebooks/onnx_inference.ipynb -p BUNDLE=models/books/bundle
    python notebooks/run.py notebooks/multilabel_text_classification.ipynb -p EPOCHS=0.2 --out test-artifacts/nb.ipynb

Parameters follow papermill's convention without needing papermill: the cell tagged `parameters` keeps its
defaults, and a new cell right after it assigns the `-p KEY=VALUE` pairs (VALUE is read as a Python literal when it
is one — numbers, True, None, lists — and as a string otherwise). The kernel starts in the repository root, so
notebooks use repo-relative paths. Exits non-zero, naming the failing cell, if any cell raises.
"""
from __future__ import annotations

import argparse
import ast
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[1]


def parse_value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def inject_parameters(nb: nbformat.NotebookNode, params: dict) -> nbformat.NotebookNode:
    """Insert an `injected-parameters` cell after the `parameters` cell (or first, when there is none)."""
    if not params:
        return nb
    source = "# Parameters injected by notebooks/run.py\n" + "\n".join(f"{k} = {v!r}" for k, v in params.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    nb.cells.insert(tagged[0] + 1 if tagged else 0, cell)
    return nb


def run_notebook(path: str | Path, params: dict | None = None, out: str | Path | None = None,
                 timeout: int = 1800, kernel: str = "python3") -> nbformat.NotebookNode:
    """Execute `path` with `params` in a kernel started at the repo root; optionally save the executed copy."""
    nb = inject_parameters(nbformat.read(str(path), as_version=4), params or {})
    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel, resources={"metadata": {"path": str(ROOT)}})
    try:
        client.execute()
    finally:
        if out:
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, str(out))
    return nb


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python notebooks/run.py", description=__doc__.split("\n\n")[0])
    p.add_argument("notebook", type=Path, help="the .ipynb to execute")
    p.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE", help="a parameter to inject (repeatable)")
    p.add_argument("--out", type=Path, default=None, help="where to save the executed notebook (default: not saved)")
    p.add_argument("--timeout", type=int, default=1800, help="seconds allowed per cell")
    p.add_argument("--kernel", default="python3", help="Jupyter kernel name")
    a = p.parse_args(argv)
    params = {}
    for item in a.param:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            p.error(f"-p expects KEY=VALUE with KEY a Python name, got {item!r}")
        params[key] = parse_value(value)
    t0 = time.perf_counter()
    try:
        nb = run_notebook(a.notebook, params, a.out, a.timeout, a.kernel)
    except CellExecutionError as exc:
        print(f"error: {a.notebook} failed:\n{exc}", file=sys.stderr)
        return 1
    n = sum(1 for c in nb.cells if c.cell_type == "code")
    print(f"executed {a.notebook}: {n} code cells in {time.perf_counter() - t0:.1f}s"
          + (f" -> {a.out}" if a.out else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
