"""Benchmarks: each compares our path with the obvious alternative in one run, prints a table, writes JSON."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable


def run_and_report(run: Callable[[object], dict], settings, out: str | Path) -> dict:
    """`run(settings)` timed (`wall_seconds`), its `table` printed, the whole result written to `out` as JSON."""
    t0 = time.time()
    result = run(settings)
    result["wall_seconds"] = round(time.time() - t0, 1)
    print()
    print(result["table"])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return result
