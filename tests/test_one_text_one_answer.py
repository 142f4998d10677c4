"""One text, one answer: a text's scores and labels are a function of the text and the bundle alone, whatever it is
predicted with, through every face that batches texts (Predictor.predict, the batch CLI, Spark).

The int8 bundles the compression writes quantise activations at run time with one scale per onnxruntime call
(dynamic quantisation): run in padded batches, a long neighbour moved a short text's scores (on a 150-label model
by up to 0.5). The predictor now runs such a model one window per call (bundle.json `quantization.windows_per_call`);
these tests pin that down, and show the old way failing on the same bundle so they can fail.
"""
from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

import config
from deployment.predictor import BundleError, Predictor, windows_per_call
from tests.tiny_bundle import FILLER, TINY_LABELS, WORDS, make_tiny_bundle

TOL = 1e-4          # docs/CONTRACTS.md: scores alone and in any batch within this; decisions identical
SHORT = "A dragon and a wizard."
LONG = " ".join(["The haunted crypt swallowed the inspector's last clue at midnight."] * 30)


@pytest.fixture(scope="module")
def windowed_bundle(tmp_path_factory):
    """A dynamic-int8 bundle that reads long texts as windows and blends a linear part: every moving piece."""
    return make_tiny_bundle(tmp_path_factory.mktemp("windowed"), TINY_LABELS, seed=3, with_linear=True,
                            bench_rounds=0, windows={"max_windows": 4, "stride": 16, "pooling": "mean"})


def batched_twin(pred: Predictor) -> Predictor:
    """The same bundle served as every bundle was before: padded batches of up to 32 windows per call."""
    info = {**pred.info, "quantization": {**pred.info["quantization"], "windows_per_call": None}}
    return Predictor(pred.session, pred.encoder, info, linear=pred.linear)


def random_texts(rng: random.Random, n: int) -> list[str]:
    """Texts of 1 to 300 words (a tiny bundle's window is 64 tokens: up to 4 windows, some truncated)."""
    vocab = " ".join(WORDS.values()).split() + FILLER
    return [" ".join(rng.choice(vocab) for _ in range(rng.choice([1, 2, 5, 12, 30, 60, 100, 160, 300])))
            for _ in range(n)]


def test_a_short_text_scores_the_same_alone_and_beside_a_long_one(tiny_bundle):
    pred = Predictor.from_bundle(tiny_bundle)
    assert pred.windows_per_call == 1 and pred.batch_size == 1
    alone = pred.scores([SHORT])[0]
    for company in ([SHORT, LONG], [LONG, SHORT], [LONG] * 5 + [SHORT]):
        together = pred.scores(company)[company.index(SHORT)]
        assert np.abs(together - alone).max() <= TOL
    # The same model in padded batches, as it was served before: the long neighbour moves the short text.
    old = batched_twin(pred)
    assert np.abs(old.scores([SHORT, LONG])[0] - old.scores([SHORT])[0]).max() > TOL


def test_a_texts_answer_does_not_depend_on_its_batch_companions_or_order(windowed_bundle):
    pred = Predictor.from_bundle(windowed_bundle)
    rng = random.Random(37)
    pool = random_texts(rng, 60)
    alone = [pred.predict([t])[0] for t in pool]
    assert any(a["n_windows"] > 1 for a in alone) and any(a["truncated"] for a in alone)
    for _ in range(25):
        picks = [rng.randrange(len(pool)) for _ in range(rng.randint(2, 48))]
        for i, got in zip(picks, pred.predict([pool[i] for i in picks])):
            want = alone[i]
            assert got["predicted"] == want["predicted"], pool[i]
            assert (got["n_tokens"], got["n_windows"], got["truncated"]) == (
                want["n_tokens"], want["n_windows"], want["truncated"])
            scores = {s["label"]: s["score"] for s in want["labels"]}
            assert max(abs(s["score"] - scores[s["label"]]) for s in got["labels"]) <= TOL
    # The property has teeth: served the old way, the same pool in one batch changes some scores beyond TOL.
    old = batched_twin(pred)
    moved = np.abs(old.scores(pool) - np.stack([old.scores([t])[0] for t in pool])).max()
    assert moved > TOL


def test_the_batch_cli_and_spark_give_each_text_its_answer_alone(windowed_bundle, tmp_path):
    pred = Predictor.from_bundle(windowed_bundle)
    rng = random.Random(7)
    texts = random_texts(rng, 40)
    rows = [{"id": f"r{i}", "text": texts[rng.randrange(len(texts))]} for i in range(120)]   # repeats, any order
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    alone = {t: pred.predict([t])[0] for t in texts}

    def check(row_id, text, labels, scores):
        want = alone[text]
        assert labels == want["predicted"], row_id
        assert max(abs(scores[s["label"]] - s["score"]) for s in want["labels"]) <= TOL, row_id

    out = tmp_path / "cli.jsonl"
    proc = subprocess.run([sys.executable, "-m", "deployment.predict", "--bundle", str(windowed_bundle),
                           "--input", str(src), "--out", str(out), "--quiet"],
                          capture_output=True, text=True, cwd=config.ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(got) == len(rows)
    for row, res in zip(rows, got):
        check(row["id"], row["text"], res["predicted_labels"], res["scores"])

    spark_out = tmp_path / "spark"
    proc = subprocess.run([sys.executable, "-m", "deployment.spark_predict", "--bundle", str(windowed_bundle),
                           "--input", str(src), "--out", str(spark_out), "--master", "local[2]", "--partitions", "3",
                           "--quiet"], capture_output=True, text=True, cwd=config.ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    by_id = {r["id"]: r for r in pq.read_table(spark_out).to_pylist()}
    assert sorted(by_id) == sorted(r["id"] for r in rows)
    for row in rows:
        res = by_id[row["id"]]
        check(row["id"], row["text"], list(res["predicted_labels"]), dict(res["scores"]))


def test_bundles_say_how_many_windows_a_call_may_read(tiny_bundle, tmp_path):
    """Older dynamic bundles (no windows_per_call) are read one window per call too; fp32, static and weight-only
    models are batched; a bad value is a BundleError naming the key."""
    info = json.loads((tiny_bundle / "bundle.json").read_text())
    old = {k: v for k, v in info["quantization"].items() if k not in ("windows_per_call", "activation_scales")}
    cases = [({**info, "quantization": old}, 1), ({**info, "quantization": None}, None),
             ({**info, "quantization": {**old, "activation_scales": "fixed"}}, None),
             ({**info, "quantization": {**old, "activation_scales": "none"}}, None),
             ({**info, "quantization": {**info["quantization"], "windows_per_call": None}}, None),
             ({**info, "quantization": {**info["quantization"], "windows_per_call": 4}}, 4)]
    for case, expected in cases:
        assert windows_per_call(case) == expected, case["quantization"]
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)
    (copy / "bundle.json").write_text(json.dumps({**info, "quantization": old}))
    assert Predictor.from_bundle(copy).batch_size == 1
    for bad, key in (({**info["quantization"], "windows_per_call": 0}, "windows_per_call"),
                     ({**info["quantization"], "windows_per_call": True}, "windows_per_call"),
                     ({**info["quantization"], "activation_scales": "per-batch"}, "activation_scales"),
                     ("dynamic", "quantization")):
        (copy / "bundle.json").write_text(json.dumps({**info, "quantization": bad}))
        with pytest.raises(BundleError, match=key):
            Predictor.from_bundle(copy)


def test_the_consistency_bench_shows_the_served_path_alone_equal_and_padded_batches_not(windowed_bundle, tmp_path):
    from bench.consistency import main

    out = tmp_path / "consistency.json"
    assert main(["--bundle", str(windowed_bundle), "--texts", "20", "--rounds", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    served, padded = result["rows"]["one window per call (served)"], result["rows"]["padded batches of 32 (before)"]
    assert served["texts"] == padded["texts"] == 20 and result["windows_per_call"] == 1
    assert served["max_abs_score_diff"] == 0.0 and served["label_sets_changed"] == 0
    assert padded["max_abs_score_diff"] > TOL
    assert "label sets changed" in result["table"] and result["command"].startswith("python -m bench.consistency")
