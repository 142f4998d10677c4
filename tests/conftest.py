"""Shared pytest fixtures: paths to the real data in ../shared (skipped with a reason when absent)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import config  # noqa: E402


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only ../shared folder; tests that need real data skip when it is missing."""
    if not config.SHARED_DIR.is_dir():
        pytest.skip(f"real data not available: {config.SHARED_DIR} does not exist (fresh clone without ../shared)")
    return config.SHARED_DIR


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """A real int8 bundle built by compression.quantize from a random tiny BERT (seconds); labels in TINY_LABELS."""
    from tests.tiny_bundle import TINY_LABELS, make_tiny_bundle

    return make_tiny_bundle(tmp_path_factory.mktemp("tiny"), TINY_LABELS)


@pytest.fixture(scope="session")
def sample_books_model(tmp_path_factory) -> Path:
    """The real offline backbone fine-tuned (transformer alone, no blend) on data/sample/books.csv, once per
    session, through the real commands; shared by the slow training and compression tests."""
    import subprocess

    data = config.SAMPLE_DIR / "books.csv"
    if not data.is_file():
        pytest.skip(f"{data} is missing")
    root = tmp_path_factory.mktemp("sample_books")
    processed, model = root / "processed", root / "model"
    for cmd in (["training.prepare", "--input", str(data), "--out", str(processed), "--quiet"],
                ["training.train", "--data", str(processed), "--out", str(model), "--no-blend",
                 "--epochs", "8", "--time-budget", "10m"]):
        proc = subprocess.run([sys.executable, "-m", *cmd], capture_output=True, text=True, cwd=config.ROOT,
                              timeout=1800)
        assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return model


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server (Debian's initdb + pg_ctl, as the postgres user when root) in a temp dir, started
    once per session and stopped at its end. Missing PostgreSQL: a skip locally, a failure under CI=true."""
    from feedback.pgserver import LocalPostgres, postgres_available
    from tests.ci import require

    reason = postgres_available()
    require(reason is None, reason or "")
    with LocalPostgres() as server:
        yield server
