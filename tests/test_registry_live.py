"""Promote and rollback reach running servers without a restart: the Flask site (werkzeug over a socket), gunicorn
(2 workers x 4 threads, 8 clients predicting through both swaps) and the Gradio app, all serving the registry's
current model. Every answer names the version that gave it; no request fails during a swap; a client never sees the
versions go back and forth (each sees one switch per swap); the old model is freed; a correction may name any
registered version, and no other.
"""
from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path

import pytest
import requests
from tests.ci import require
from tests.feedback_helpers import migrated
from tests.live_server import free_port, serve, wait_until_healthy
from tests.registry_helpers import bundle_version, predict_version, registry, wait_for_version

from deployment.registry.ops import Registry
from flask_app import create_app
from flask_app.app import MODELS_KEY

ROOT = Path(__file__).resolve().parents[1]
CLIENTS = 8


@pytest.fixture(scope="module")
def pair(tiny_bundle, tmp_path_factory) -> tuple[Path, Path]:
    from tests.tiny_bundle import TINY_LABELS, make_tiny_bundle

    return tiny_bundle, make_tiny_bundle(tmp_path_factory.mktemp("live-b"), TINY_LABELS, seed=2)



def test_the_site_swaps_models_live_frees_the_old_one_and_takes_corrections_of_registered_versions(
        pair, tmp_path, monkeypatch):
    url, store = f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "store"
    token = migrated(url, {"alice": False})["alice"]
    reg = Registry.open(url, store, progress=lambda m: None)
    a, b = bundle_version(pair[0]), bundle_version(pair[1])
    reg.promote(pair[0], by="t", switch_in_s=0)
    monkeypatch.setenv("MLTC_REGISTRY_POLL", "0.2")
    monkeypatch.delenv("MLTC_BUNDLE", raising=False)
    app = create_app(registry=True, feedback=True, db_url=url)
    first = weakref.ref(app.extensions[MODELS_KEY].current().model.predictor)
    auth = {"Authorization": f"Bearer {token}"}
    try:
        with serve(app) as base:
            assert predict_version(base) == a
            page = requests.post(base + "/", data={"text": "A dragon."}, timeout=30).text
            assert f'title="{a}"' in page   # the results page names the model that answered
            event, _ = reg.promote(pair[1], by="t", force=True, switch_in_s=1.0)
            waited = wait_for_version(base, b)
            assert waited < 6, f"the new model answered {waited:.1f} s after the promote"
            health = requests.get(base + "/healthz", timeout=10).json()
            assert health["model_version"] == b and health["serving"]["mode"] == "registry"
            for _ in range(20):   # the old predictor: no request, no reference left once the swap is done
                gc.collect()
                if first() is None:
                    break
                time.sleep(0.1)
            assert first() is None, "the old model is still in memory after the swap"
            # a correction of the version served a moment ago is stored (what it showed is unknown); others are not
            body = {"text": "A dragon.", "labels": ["Fantasy"], "model_version": a}
            r = requests.post(base + "/api/feedback", json=body, headers=auth, timeout=30)
            assert r.status_code == 201 and r.json()["model_version"] == a and r.json()["changes"]["confirmed"] == []
            r = requests.post(base + "/api/feedback", json={**body, "model_version": "f" * 64}, headers=auth, timeout=30)
            assert r.status_code == 409 and "nor a version in the model registry" in r.json()["error"]
            reg.rollback(by="t", switch_in_s=0.5)
            assert wait_for_version(base, a) < 6
    finally:
        app.extensions[MODELS_KEY].stop()
        reg.engine.dispose()


def test_gunicorn_clients_see_one_switch_per_swap_and_no_failed_request(pair, tmp_path, capsys):
    gunicorn = Path(sys.executable).with_name("gunicorn")
    require(gunicorn.exists(), f"gunicorn is not installed beside {sys.executable} (requirements.txt has it)")
    url, store = f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "store"
    opts = ["--db", url, "--store", store]
    a, b = bundle_version(pair[0]), bundle_version(pair[1])
    assert registry(capsys, "promote", pair[0], *opts)[0] == 0
    assert registry(capsys, "register", pair[1], *opts)[0] == 0
    port = free_port()
    env = {**os.environ, "MLTC_REGISTRY": "1", "MLTC_DB_URL": url, "MLTC_THREADS": "1", "MLTC_REGISTRY_POLL": "0.5"}
    env.pop("MLTC_BUNDLE", None)
    log = open(tmp_path / "gunicorn.log", "w+")
    proc = subprocess.Popen([str(gunicorn), "-w", "2", "--threads", "4", "-b", f"127.0.0.1:{port}",
                             "flask_app:create_app()"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    seen: dict[int, list[str]] = {c: [] for c in range(CLIENTS)}
    failures: list[str] = []
    stop = threading.Event()

    def client(c: int) -> None:
        while not stop.is_set():
            try:   # a new connection each time, so consecutive requests reach either worker
                r = requests.post(base + "/api/predict", json={"text": f"client {c}: a dragon, a kiss."},
                                  headers={"Connection": "close"}, timeout=60)
                if r.status_code != 200:
                    failures.append(f"{r.status_code}: {r.text[:200]}")
                else:
                    seen[c].append(r.json()["model_version"])
            except requests.RequestException as err:
                failures.append(repr(err))

    def wait_all(version: str, after: list[int], n: int = 5, within_s: float = 60) -> None:
        t0 = time.monotonic()
        while not all(seen[c][after[c]:].count(version) >= n for c in seen):
            assert time.monotonic() - t0 < within_s, f"not every client saw {version[:12]} {n} times"
            time.sleep(0.2)

    threads: list[threading.Thread] = []
    try:
        wait_until_healthy(base, proc, log)
        threads = [threading.Thread(target=client, args=(c,)) for c in range(CLIENTS)]
        for t in threads:
            t.start()
        wait_all(a, [0] * CLIENTS)
        assert registry(capsys, "promote", b[:12], *opts, "--force", "--switch-in", 2)[0] == 0
        wait_all(b, [0] * CLIENTS)
        assert registry(capsys, "rollback", *opts, "--switch-in", 2)[0] == 0
        marks = [len(seen[c]) for c in range(CLIENTS)]
        wait_all(a, marks)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    assert failures == []
    for c, versions in seen.items():
        assert set(versions) == {a, b}
        runs = [v for i, v in enumerate(versions) if i == 0 or versions[i - 1] != v]
        assert runs == [a, b, a], f"client {c} saw the versions switch {len(runs) - 1} times: {[v[:6] for v in runs]}"
    assert sum(map(len, seen.values())) > 100


def test_the_gradio_app_answers_with_the_current_model(pair, tmp_path):
    import gradio_client

    from deployment.app import build_demo, launch

    url, store = f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "store"
    reg = Registry.open(url, store, progress=lambda m: None)
    a, b = bundle_version(pair[0]), bundle_version(pair[1])
    reg.promote(pair[0], by="t", switch_in_s=0)
    port = free_port()
    demo = build_demo(None, registry=True, db_url=url)
    launch(demo, port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = gradio_client.Client(f"http://127.0.0.1:{port}/", verbose=False)
        chips = client.predict("a dragon and a wizard", True, 0.5, 2, api_name="/predict")[1]
        assert f'title="{a}"' in chips
        reg.promote(pair[1], by="t", force=True, switch_in_s=0.5)
        t0 = time.monotonic()
        while f'title="{b}"' not in client.predict("a dragon and a wizard", True, 0.5, 2, api_name="/predict")[1]:
            assert time.monotonic() - t0 < 10, "the Gradio app still answers with the old model"
            time.sleep(0.2)
    finally:
        demo.close()
        reg.engine.dispose()
