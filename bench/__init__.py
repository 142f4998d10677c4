"""Benchmarks: each compares our path with the obvious alternative in one run, prints a table, writes JSON.

Every `python -m bench.*` command ends the same way, through `run_and_report`: its settings printed first, the run
timed, its table printed, and the result written as JSON (`write_json`: one set of options, atomically) with the
command that made it (`command`), the machine it ran on (`machine`) and the wall time (`wall_seconds`).
"""
from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Callable, Sequence

from deployment.commands import command_line, print_settings
from deployment.files import write_text
from deployment.formats import dumps


def machine() -> dict:
    """The machine a result was measured on: cores, Python, platform, processor, and its load when recorded."""
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(), "load_avg_1m": round(os.getloadavg()[0], 2)}


def write_json(path: str | Path, result) -> Path:
    """`result` as indented UTF-8 JSON at `path` (folders made, the file replaced atomically)."""
    path = Path(path)
    write_text(path, dumps(result, indent=2, ensure_ascii=False, default=str) + "\n")
    return path


def run_and_report(prog: str, run: Callable[[object], dict], settings, out: str | Path,
                   argv: Sequence[str] | None = None) -> dict:
    """Print `settings`, time `run(settings)`, print its `table`, write the whole result (with `command`,
    `machine`, `wall_seconds`) to `out` as JSON. Returns the result."""
    print_settings(settings)
    t0 = time.time()
    result = run(settings)
    result.update(command=command_line(prog, argv), machine=machine(), wall_seconds=round(time.time() - t0, 1))
    print()
    print(result["table"])
    write_json(out, result)
    print(f"wrote {out}")
    return result
