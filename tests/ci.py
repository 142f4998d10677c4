"""`require`: a tool the test suite needs (chromium, gunicorn) skips its tests locally when missing, but under
CI=true it fails them: CI must not pass with real tests silently skipped.

    from tests.ci import require
    require(Path("/usr/bin/chromium").exists(), "chromium not found: apt-get install chromium")
"""
from __future__ import annotations

import os

import pytest


def in_ci() -> bool:
    """CI=true (GitHub, GitLab and most CI services set it; 1/yes also count)."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require(available: bool, reason: str) -> None:
    """Skip the test with `reason` when a tool the suite needs (chromium, gunicorn) is missing; under CI=true
    fail instead: CI must not pass with real tests silently skipped. Not for ../shared, which a fresh clone
    legitimately lacks."""
    if available:
        return
    if in_ci():
        pytest.fail(f"{reason} (CI=true: a missing required tool is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)
