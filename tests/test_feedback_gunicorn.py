"""Corrections under load through the real site: gunicorn with 2 workers x 4 threads, MLTC_FEEDBACK=1, the
embedded SQLite store. 8 clients x 250 corrections store exactly 2,000 rows with no error; a worker SIGKILLed
mid-run leaves a database that passes SQLite's integrity check and holds every acknowledged correction (clients
retry a dropped request with the same client_ref, so none is stored twice either).
"""
from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from tests.ci import require
from tests.feedback_helpers import migrated
from tests.live_server import free_port, wait_until_healthy

from deployment.version import bundle_version

ROOT = Path(__file__).resolve().parents[1]
CLIENTS = 8


@pytest.fixture(scope="module")
def server(tiny_bundle, tmp_path_factory):
    gunicorn = Path(sys.executable).with_name("gunicorn")
    require(gunicorn.exists(), f"gunicorn is not installed beside {sys.executable} (requirements.txt has it)")
    path = tmp_path_factory.mktemp("gunicorn") / "feedback.db"
    url = f"sqlite:///{path}"
    tokens = migrated(url, {f"client{c}": False for c in range(CLIENTS)})
    port = free_port()
    env = {**os.environ, "MLTC_BUNDLE": str(tiny_bundle), "MLTC_THREADS": "1", "MLTC_FEEDBACK": "1",
           "MLTC_DB_URL": url, "MLTC_FEEDBACK_RATE": "off"}
    log = open(path.with_suffix(".log"), "w+")
    proc = subprocess.Popen([str(gunicorn), "-w", "2", "--threads", "4", "-b", f"127.0.0.1:{port}",
                             "flask_app:create_app()"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base, proc, log)
        yield {"url": base, "db": path, "tokens": tokens, "pid": proc.pid, "version": bundle_version(tiny_bundle),
               "labels": requests.get(base + "/healthz", timeout=5).json()["labels"]}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def post_corrections(server: dict, prefix: str, per_client: int, on_progress=None) -> tuple[list[int], list[str]]:
    """CLIENTS threads each posting `per_client` corrections; a dropped connection is retried with the same
    client_ref. Returns (acknowledged ids, errors that were not connection drops)."""
    from tests.tiny_bundle import TINY_LABELS

    acked, errors, lock = [], [], threading.Lock()
    done = [0]

    def client(c: int) -> None:
        rng = random.Random(c)
        token = server["tokens"][f"client{c}"]
        with requests.Session() as session:
            for i in range(per_client):
                payload = {"text": f"{prefix} client {c} text {i}: a dragon, a murder, a kiss.",
                           "labels": rng.sample(TINY_LABELS, rng.randint(0, 3)), "model_version": server["version"],
                           "client_ref": f"{prefix}-{c}-{i}"}
                for attempt in range(20):
                    try:
                        r = session.post(server["url"] + "/api/feedback", json=payload, timeout=60,
                                         headers={"Authorization": f"Bearer {token}"})
                    except requests.ConnectionError:   # the worker holding it died: send it again
                        time.sleep(0.2)
                        continue
                    with lock:
                        if r.status_code in (200, 201):
                            acked.append(r.json()["id"])
                        else:
                            errors.append(f"{r.status_code}: {r.text[:200]}")
                    break
                else:
                    with lock:
                        errors.append(f"{prefix}-{c}-{i}: no answer after 20 tries")
                with lock:
                    done[0] += 1
                    if on_progress:
                        on_progress(done[0])

    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(client, range(CLIENTS)))
    return acked, errors


def stored(db: Path, prefix: str) -> tuple[set[int], int, str]:
    """(ids, rows) with this prefix's client_refs, and SQLite's integrity check, from a fresh connection."""
    with sqlite3.connect(db) as conn:
        ids = {r[0] for r in conn.execute("SELECT id FROM corrections WHERE client_ref LIKE ?", (f"{prefix}-%",))}
        n = conn.execute("SELECT count(*) FROM corrections WHERE client_ref LIKE ?", (f"{prefix}-%",)).fetchone()[0]
        check = conn.execute("PRAGMA integrity_check").fetchone()[0]
    return ids, n, check


def test_eight_clients_store_exactly_2000_corrections(server):
    acked, errors = post_corrections(server, "load", 250)
    assert errors == []
    ids, n, check = stored(server["db"], "load")
    assert n == 2000 and len(acked) == 2000 and set(acked) == ids
    assert check == "ok"


def worker_pids(master: int) -> list[int]:
    with open(f"/proc/{master}/task/{master}/children") as fh:
        return [int(x) for x in fh.read().split()]


def test_a_worker_killed_mid_run_loses_no_acknowledged_correction(server):
    killed = []

    def kill_one(done: int) -> None:
        if done == 300 and not killed:   # mid-run: a third of the way through
            victim = worker_pids(server["pid"])[0]
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)

    acked, errors = post_corrections(server, "kill", 120, on_progress=kill_one)
    assert killed, "no worker was killed"
    assert errors == []
    ids, n, check = stored(server["db"], "kill")
    assert check == "ok"
    assert set(acked) <= ids                 # every acknowledged correction is there
    assert n == CLIENTS * 120 == len(ids)    # and retried ones once: client_ref makes a retry idempotent
    assert killed[0] not in worker_pids(server["pid"])   # gunicorn replaced the worker
