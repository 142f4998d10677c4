"""Shared by the registry tests: tiny bundles that differ, a broken copy of one, and the registry's command.

    a, b = two_bundles(tmp_path_factory)                 # two real int8 bundles, same labels, different weights
    code, out, err = registry(capsys, "promote", a, "--db", url, "--store", store)
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import requests

from deployment.registry.__main__ import main as registry_main
from deployment.version import bundle_version


def registry(capsys, *args) -> tuple[int, str, str]:
    """Run `python -m deployment.registry ARGS` in this process; (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = registry_main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def blind_copy(bundle: Path, out: Path) -> Path:
    """A copy of `bundle` whose thresholds are all 1.0: it predicts almost nothing, so it scores worse."""
    shutil.copytree(bundle, out)
    info = json.loads((out / "bundle.json").read_text())
    info["thresholds"] = [1.0] * len(info["labels"])
    info["global_threshold"] = 1.0
    (out / "bundle.json").write_text(json.dumps(info, indent=1))
    return out


def predict_version(base: str, text: str = "A dragon and a wizard.", timeout: float = 30) -> str:
    r = requests.post(base + "/api/predict", json={"text": text}, timeout=timeout, headers={"Connection": "close"})
    r.raise_for_status()
    return r.json()["model_version"]


def wait_for_version(base: str, version: str, within_s: float = 30) -> float:
    """Seconds until the site at `base` answers with `version` (AssertionError after `within_s`)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < within_s:
        if predict_version(base) == version:
            return time.monotonic() - t0
        time.sleep(0.1)
    raise AssertionError(f"the site still answers with another version than {version[:12]} after {within_s} s")


__all__ = ["registry", "blind_copy", "bundle_version", "predict_version", "wait_for_version"]
