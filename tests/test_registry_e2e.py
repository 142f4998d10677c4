"""The whole loop on the sample books, through the real commands and a real server (slow: it trains twice).

A model trained on 80% of data/sample/books.csv is promoted and served by `python -m flask_app --registry
--feedback`; 40 corrections are posted through the JSON API as a user would (34 held-back books with their true
labels, 6 known books relabelled); `make retrain` exports them, prepares with them (old texts keep their split, a
feedback slice is held out), trains and compresses (the smallest settings that still run the real pipeline),
compares and promotes; the running server answers with the new version within seconds; `rollback` brings the old
one back. Training uses one epoch of 64-token windows with the top layer from the cache: the point is the loop,
not the model's quality, so the promote's tolerance is wide (a test of refusals lives in test_registry.py).
"""
from __future__ import annotations

import csv
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from tests.ci import require
from tests.live_server import free_port, wait_until_healthy
from tests.registry_helpers import bundle_version, predict_version, wait_for_version

import config

ROOT = Path(__file__).resolve().parents[1]
SMALL_TRAIN = "--epochs 1 --max-length 64 --train-layers 1 --curve-points 0 --batch-size 32 --seed 0 --quiet"
SMALL_COMPRESS = "--bench-rounds 0 --candidates int8"


def run(*cmd: str, env: dict, timeout: float = 1200) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(cmd), cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc



def read_splits(path: Path) -> dict[str, str]:
    with open(path, newline="", encoding="utf-8") as fh:
        return {r["text"]: r["split"] for r in csv.DictReader(fh)}


@pytest.mark.slow
def test_serve_correct_retrain_compare_promote_and_roll_back_on_the_sample_books(tmp_path):
    require(shutil.which("make") is not None, "make is not installed")
    with open(config.SAMPLE_DIR / "books.csv", newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields, books = reader.fieldnames, list(reader)
    random.Random(0).shuffle(books)
    base, held = books[: int(0.8 * len(books))], books[int(0.8 * len(books)):]
    base_csv = tmp_path / "base.csv"
    with open(base_csv, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, quoting=csv.QUOTE_ALL)
        writer.writeheader()
        writer.writerows(base)
    db = f"sqlite:///{tmp_path / 'state.db'}"
    env = {**os.environ, "MLTC_DB_URL": db, "MLTC_REGISTRY_DIR": str(tmp_path / "registry"),
           "MLTC_REGISTRY_POLL": "0.5", "MLTC_FEEDBACK_RATE": "off", "MLTC_REGISTRY_USER": "e2e"}
    env.pop("MLTC_BUNDLE", None)
    make = ["make", "-o", "install", f"PY={sys.executable}", f"DATA={base_csv}", "NAME=e2e",
            f"PROCESSED={tmp_path / 'processed'}", f"MODEL={tmp_path / 'model'}", f"BUNDLE={tmp_path / 'model' / 'bundle'}",
            f"RETRAINED={tmp_path / 'retrained'}", f"CORRECTIONS={tmp_path / 'corrections.jsonl'}",
            f"TRAIN_ARGS={SMALL_TRAIN}", f"RETRAIN_ARGS={SMALL_TRAIN}", f"COMPRESS_ARGS={SMALL_COMPRESS}",
            "PROMOTE_ARGS=--tolerance 0.25"]

    # the first model: prepare -> train -> compress (make's own rules), promoted, served
    run(*make, str(tmp_path / "model" / "bundle" / "bundle.json"), env=env)
    first = bundle_version(tmp_path / "model" / "bundle")
    run(sys.executable, "-m", "deployment.registry", "promote", str(tmp_path / "model" / "bundle"), env=env)
    token = run(sys.executable, "-m", "feedback", "tokens", "add", "e2e", env=env).stdout.strip()
    port = free_port()
    log = open(tmp_path / "server.log", "w+")
    server = subprocess.Popen([sys.executable, "-m", "flask_app", "--registry", "--feedback", "--port", str(port)],
                              cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base_url, server, log, within_s=180)
        assert predict_version(base_url) == first

        # 40 corrections through the API: the held-back books' true labels, and 6 known books relabelled
        labels = requests.get(base_url + "/healthz", timeout=10).json()["labels"]
        served = json.loads((tmp_path / "model" / "bundle" / "bundle.json").read_text())["labels"]
        assert labels == len(served)
        rng = random.Random(1)
        relabelled = {b["text"]: rng.sample(served, 2) for b in rng.sample(base, 6)}
        posted = {b["text"]: [x for x in json.loads(b["labels"]) if x in served] for b in held[:34]}
        posted = {t: labs for t, labs in posted.items() if labs} | relabelled
        for i, (text, labs) in enumerate(posted.items()):
            answer = requests.post(base_url + "/api/predict", json={"text": text}, timeout=60).json()
            r = requests.post(base_url + "/api/feedback", timeout=60, headers={"Authorization": f"Bearer {token}"},
                              json={"text": text, "labels": labs, "model_version": answer["model_version"],
                                    "client_ref": f"e2e-{i}"})
            assert r.status_code == 201, r.text
        assert len(posted) >= 36

        # make retrain: export -> prepare (stable, a feedback slice) -> train -> compress -> compare -> promote
        before = read_splits(tmp_path / "processed" / "dataset.csv")
        out = run(*make, "retrain", env=env).stdout
        second = bundle_version(tmp_path / "retrained" / "bundle")
        assert f"promoted {second}" in out, out[-3000:]
        after = read_splits(tmp_path / "processed-retrained" / "dataset.csv")
        assert all(after[t] == s for t, s in before.items() if t in after)   # old texts kept their split
        assert sum(s == "feedback" for s in after.values()) >= 3
        comparison = json.loads((tmp_path / "retrained" / "comparison.json").read_text())
        assert comparison["rows"]["excluded_seen"] == 0 and comparison["slices"]["feedback"]["rows"] >= 3
        assert "micro_f1_ci" in comparison["slices"]["all"]["delta"]

        # the running server switches without a restart, and back on rollback
        assert wait_for_version(base_url, second, within_s=60) < 30
        run(sys.executable, "-m", "deployment.registry", "rollback", env=env)
        assert wait_for_version(base_url, first, within_s=60) < 30
        history = json.loads(run(sys.executable, "-m", "deployment.registry", "history", "--json", env=env).stdout)
        assert [(e["action"], e["version"], e["actor"]) for e in history] == [
            ("promote", first, "e2e"), ("promote", second, "e2e"), ("rollback", first, "e2e")]
        assert server.poll() is None   # the same process all along
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
