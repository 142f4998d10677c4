"""Whole documents: texts longer than one window are read as overlapping windows whose logits are pooled, the
same way in serving (the predictor), in compression (PyTorch vs ONNX parity) and in training's evaluation."""
from __future__ import annotations

import json

import numpy as np
import pytest
from tokenizers import Tokenizer

from deployment.encoding import TextEncoder, Windows, pool_windows
from deployment.predictor import BundleError, Predictor
from tests.tiny_bundle import TINY_LABELS, TINY_MAX_LENGTH, make_tiny_bundle
from tests.cases import check_each

WINDOWS = {"max_windows": 4, "stride": 8, "pooling": "mean"}
SHORT = "A young wizard must find the dragon's sword."
LONG = " ".join(f"ghost{i % 9} haunted crypt starship galaxy" for i in range(30))   # ~3x the window


@pytest.fixture(scope="module")
def windowed_bundle(tmp_path_factory):
    return make_tiny_bundle(tmp_path_factory.mktemp("windowed"), TINY_LABELS, windows=WINDOWS, bench_rounds=0)


@pytest.fixture(scope="module")
def pred(windowed_bundle) -> Predictor:
    return Predictor.from_bundle(windowed_bundle)


def _encoder(pred: Predictor, **windows) -> TextEncoder:
    return TextEncoder.from_file(pred.source + "/tokenizer.json", pred.max_length, pred.encoder.input_names,
                                 windows=Windows(**windows))


def test_the_bundle_records_its_windows_and_compression_checked_them(windowed_bundle, pred):
    info = json.loads((windowed_bundle / "bundle.json").read_text())
    assert info["windows"] == WINDOWS and pred.encoder.windows == Windows(**WINDOWS)
    ev = json.loads((windowed_bundle / "eval.json").read_text())
    assert ev["texts"]["windows"] == WINDOWS and ev["parity"]["passed"]


def _untruncated(pred: Predictor) -> Tokenizer:
    tok = Tokenizer.from_file(pred.source + "/tokenizer.json")
    tok.no_truncation()
    tok.no_padding()
    return tok


def test_the_token_count_of_any_text_is_its_untruncated_length(pred):
    """n_tokens is computed from the windows (no second tokenisation): it must equal an untruncated count for any
    text, whatever the windows and the cap, including random Unicode, control characters and empty text."""
    check_each([(1, 0), (2, 0), (4, 8), (100, 8), (100, 25)], lambda case: _token_count_case(pred, *case))


def _token_count_case(pred, max_windows, stride):
    rng = np.random.default_rng(max_windows * 100 + stride)
    alphabet = list("ab cd ef.,;!?\n\t\x00\x1fé漢字😀") + ["ghost", " dragon ", "starship", "\u2028", "-"]
    texts = ["", " ", SHORT, LONG, LONG * 7] + ["".join(rng.choice(alphabet, size=int(rng.integers(0, 400))))
                                                 for _ in range(200)]
    enc = _encoder(pred, max_windows=max_windows, stride=stride).encode(texts)
    assert enc.n_tokens == [len(e.ids) for e in _untruncated(pred).encode_batch(texts)]
    step = TINY_MAX_LENGTH - pred.encoder.n_special - (stride if max_windows > 1 else 0)   # new tokens per window
    needed = [1 + max(0, -(-(n - TINY_MAX_LENGTH) // step)) for n in enc.n_tokens]
    assert enc.n_windows == [min(k, max_windows) for k in needed]
    assert enc.truncated == [k > max_windows for k in needed]


def test_short_and_exact_length_texts_are_one_window_and_not_truncated(pred):
    exact = " ".join(["dragon"] * (TINY_MAX_LENGTH - 2))
    res = pred.predict([SHORT, exact])
    assert [r["n_windows"] for r in res] == [1, 1] and [r["truncated"] for r in res] == [False, False]
    assert res[1]["n_tokens"] == TINY_MAX_LENGTH


def test_long_text_windows_keep_special_tokens_overlap_and_cover_the_whole_text(pred):
    enc = pred.encode([LONG])
    tok = pred.encoder.tokenizer
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    assert 1 < enc.n_windows[0] <= WINDOWS["max_windows"] and enc.truncated == [False]
    content = []
    for w in enc.windows:
        assert w.ids[0] == cls and w.ids[-1] == sep and len(w.ids) <= TINY_MAX_LENGTH   # the end token in every window
        content.append([(i, o) for i, o, special in zip(w.ids, w.offsets, w.special_tokens_mask) if not special])
    for a, b in zip(content, content[1:]):
        assert a[-WINDOWS["stride"]:] == b[:WINDOWS["stride"]]          # consecutive windows share `stride` tokens
    covered = [content[0]] + [c[WINDOWS["stride"]:] for c in content[1:]]
    ids = [i for part in covered for i, _ in part]
    whole = _untruncated(pred).encode(LONG)
    assert ids == whole.ids[1:-1] and enc.n_tokens[0] == len(whole.ids)   # every token read exactly once
    assert covered[0][0][1][0] == 0 and covered[-1][-1][1][1] == len(LONG)  # offsets span the text end to end


def test_the_cap_on_windows_is_honoured_and_reported_as_truncation(pred):
    capped = _encoder(pred, max_windows=2, stride=8).encode([LONG, SHORT])
    assert capped.n_windows == [2, 1] and capped.truncated == [True, False]
    full = _encoder(pred, max_windows=100, stride=8).encode([LONG])
    assert full.n_windows[0] > 2 and [w.ids for w in full.windows[:2]] == [w.ids for w in capped.windows[:2]]


def test_document_logits_are_the_pooled_logits_of_its_windows(pred):
    enc = pred.encode([SHORT, LONG])
    # each window run as the predictor runs it (one window per call for this dynamic-int8 bundle)
    per_window = pred.encoder.run_windows(lambda f: pred.session.run(["logits"], f)[0], enc, pred.batch_size)
    pooled = pred.transformer_logits(enc)
    assert np.allclose(pooled[1], per_window[enc.owner == 1].mean(0), atol=1e-5)
    assert np.allclose(pool_windows(per_window, enc.owner, 2, "max")[1], per_window[enc.owner == 1].max(0))
    assert np.array_equal(pool_windows(per_window[:1], np.array([0]), 1, "mean"), per_window[:1])


def test_a_document_gets_the_same_answer_alone_and_in_a_batch(pred):
    alone = pred.predict([LONG])[0]
    batched = pred.predict([SHORT, LONG, SHORT + " again"] * 12)[1]      # 36 texts: several sorted batches
    # int8 activations are quantised per batch, so the company a window keeps moves scores in the 3rd decimal
    assert alone["n_windows"] == batched["n_windows"] and alone["n_tokens"] == batched["n_tokens"]
    a = {s["label"]: s["score"] for s in alone["labels"]}
    b = {s["label"]: s["score"] for s in batched["labels"]}
    assert max(abs(a[k] - b[k]) for k in a) < 0.02
    near = {k for k, th in zip(pred.labels, pred.thresholds) if abs(a[k] - th) < 0.02}
    assert set(alone["predicted"]) - near == set(batched["predicted"]) - near


def test_batches_hold_every_window_once_within_the_window_and_token_caps(pred):
    check_each(range(6), lambda seed: _batches_case(pred, seed))


def _batches_case(pred, seed):
    rng = np.random.default_rng(seed)
    words = ["ghost", "dragon", "starship", "crypt", "galaxy", "a"]
    texts = [" ".join(rng.choice(words, size=int(rng.integers(1, 200)))) for _ in range(int(rng.integers(1, 60)))]
    enc = _encoder(pred, max_windows=int(rng.integers(1, 6)), stride=4).encode(texts)
    lengths = [len(w.ids) for w in enc.windows]
    batch_size, max_tokens = int(rng.integers(1, 40)), int(rng.choice([8, 20, 64, 100, 500]))
    batches = TextEncoder.batches(enc, batch_size, max_tokens=max_tokens)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert 1 <= len(b) <= batch_size
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= max_tokens   # a window over the cap runs alone
    if len(batches) > 1:        # sorted by length: the batches are as full as the caps allow
        for b, nxt in zip(batches, batches[1:]):
            assert len(b) == batch_size or (len(b) + 1) * max(lengths[i] for i in b + nxt[:1]) > max_tokens


def test_the_token_cap_changes_how_texts_are_grouped_not_what_they_get(windowed_bundle):
    texts = [SHORT, LONG, LONG * 2, SHORT + " again"] * 5
    capped = Predictor.from_bundle(windowed_bundle, batch_tokens=3 * TINY_MAX_LENGTH).predict(texts)
    uncapped = Predictor.from_bundle(windowed_bundle, batch_tokens=None).predict(texts)
    for a, b in zip(capped, uncapped):
        assert (a["n_tokens"], a["n_windows"], a["truncated"]) == (b["n_tokens"], b["n_windows"], b["truncated"])
        sa, sb = ({s["label"]: s["score"] for s in r["labels"]} for r in (a, b))
        assert max(abs(sa[k] - sb[k]) for k in sa) < 0.02     # int8 activations are quantised per call


def test_pytorch_and_onnx_read_the_same_windows_and_agree(windowed_bundle, pred):
    from transformers import AutoTokenizer

    from deployment.scoring import sigmoid
    from training.inference import predict_logits, text_encoder
    from training.modeling import load_classifier

    ckpt = windowed_bundle.parent / "checkpoint"
    model, tok = load_classifier(ckpt), AutoTokenizer.from_pretrained(ckpt)
    texts = [SHORT, LONG, LONG[:300]]
    ours = text_encoder(tok, model, TINY_MAX_LENGTH, Windows(**WINDOWS)).encode(texts)
    served = pred.encode(texts)
    assert [w.ids for w in ours.windows] == [w.ids for w in served.windows] and ours.n_windows == served.n_windows
    p_torch = sigmoid(predict_logits(model, tok, texts, TINY_MAX_LENGTH, windows=Windows(**WINDOWS)))
    p_onnx = sigmoid(pred.transformer_logits(served))
    assert np.abs(p_torch - p_onnx).max() < 0.05                       # int8 against fp32 PyTorch


@pytest.mark.parametrize("windows, match", [
    ({"max_windows": 0, "stride": 8, "pooling": "mean"}, "max_windows"),
    ({"max_windows": 3, "stride": TINY_MAX_LENGTH, "pooling": "mean"}, "stride"),
    ({"max_windows": 3, "stride": 8, "pooling": "median"}, "pooling"),
    ({"max_windows": "3", "stride": 8, "pooling": "mean"}, "max_windows"),
    ({"max_windows": 3, "stride": 8, "pooling": "mean", "extra": 1}, "windows must be"),
    ("all of it", "windows must be"),
])
def test_bad_windows_in_bundle_json_are_bundle_errors(windowed_bundle, tmp_path, windows, match):
    import shutil

    bundle = tmp_path / "b"
    shutil.copytree(windowed_bundle, bundle)
    info = json.loads((bundle / "bundle.json").read_text())
    (bundle / "bundle.json").write_text(json.dumps({**info, "windows": windows}))
    with pytest.raises(BundleError, match=match):
        Predictor.from_bundle(bundle)


def test_the_web_site_reports_windows_read_and_says_when_the_cap_cut_the_text(windowed_bundle):
    import requests
    from bs4 import BeautifulSoup

    from flask_app import create_app
    from tests.live_server import serve

    huge = " ".join([LONG] * 3)                                          # more than 4 windows
    with serve(create_app(windowed_bundle)) as base:
        r = requests.post(base + "/api/predict", json={"texts": [SHORT, LONG, huge]}, timeout=30)
        assert r.status_code == 200
        preds = r.json()["predictions"]
        assert [p["n_windows"] for p in preds[:2]] == [1, pred_windows(windowed_bundle, LONG)]
        assert preds[2]["n_windows"] == WINDOWS["max_windows"] and preds[2]["truncated"] is True
        assert preds[1]["truncated"] is False
        page = BeautifulSoup(requests.post(base + "/", data={"text": huge}, timeout=30).text, "html.parser")
        note = page.find(class_="notice").get_text(" ", strip=True)
        assert "longer than the model reads" in note and f"{WINDOWS['max_windows']} windows of {TINY_MAX_LENGTH} tokens" in note
        assert f"up to {WINDOWS['max_windows']} windows of {TINY_MAX_LENGTH} tokens" in page.get_text(" ")
        page = BeautifulSoup(requests.post(base + "/", data={"text": LONG}, timeout=30).text, "html.parser")
        assert page.find(class_="notice") is None


def pred_windows(bundle, text: str) -> int:
    return Predictor.from_bundle(bundle).encode([text]).n_windows[0]
