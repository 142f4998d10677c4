"""The shared predictor on a real (tiny) int8 bundle: output shape and order, thresholds, truncation, bad input,
threads, the numpy TF-IDF component against scikit-learn, and broken bundles."""
from __future__ import annotations

import json
import re
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from deployment.predictor import BundleError, InputError, LinearComponent, Predictor
from tests.tiny_bundle import TINY_LABELS, TINY_MAX_LENGTH, fit_linear, make_tiny_bundle, sample_texts, write_linear_dir

TEXTS = ["A young wizard must find the dragon's sword before the kingdom falls.",
         "Two letters, one summer, and a love that refuses to fade.",
         "Inspector Hale suspects everyone in the village of the murder.",
         "Ghost."]
LONG_TEXT = " ".join(["the haunted starship drifted through the dark galaxy"] * 60)


@pytest.fixture(scope="module")
def pred(tiny_bundle) -> Predictor:
    return Predictor.from_bundle(tiny_bundle)


@pytest.fixture(scope="module")
def linear_bundle(tmp_path_factory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("tiny-linear"), TINY_LABELS, seed=1, with_linear=True,
                            with_data=False, bench_rounds=0)


def copy_bundle(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


# ---------------------------------------------------------------- the interface
def test_bundle_attributes_come_from_bundle_json(pred, tiny_bundle):
    info = json.loads((tiny_bundle / "bundle.json").read_text())
    assert pred.labels == TINY_LABELS == info["labels"]
    assert pred.thresholds == info["thresholds"] and len(pred.thresholds) == len(pred.labels)
    assert pred.max_length == TINY_MAX_LENGTH
    assert pred.info == info


def test_each_text_gets_every_label_sorted_by_score(pred):
    results = pred.predict(TEXTS)
    assert len(results) == len(TEXTS)
    for res in results:
        assert set(res) == {"labels", "predicted", "truncated", "n_tokens", "n_windows"}
        scores = [s["score"] for s in res["labels"]]
        assert scores == sorted(scores, reverse=True)
        assert sorted(s["label"] for s in res["labels"]) == sorted(TINY_LABELS)
        assert all(0.0 <= s <= 1.0 for s in scores)
        assert all(isinstance(s["score"], float) for s in res["labels"])


def test_predicted_are_labels_at_or_above_their_tuned_threshold(pred):
    tuned = dict(zip(pred.labels, pred.thresholds))
    for res in pred.predict(TEXTS):
        for s in res["labels"]:
            assert s["threshold"] == tuned[s["label"]]
            assert s["predicted"] == (s["score"] >= tuned[s["label"]])
        assert res["predicted"] == [s["label"] for s in res["labels"] if s["predicted"]]


def test_threshold_argument_overrides_every_tuned_threshold(pred):
    everything, nothing = pred.predict(TEXTS[:1], threshold=0.0)[0], pred.predict(TEXTS[:1], threshold=1.0)[0]
    assert sorted(everything["predicted"]) == sorted(TINY_LABELS)
    assert nothing["predicted"] == []
    mid = pred.predict(TEXTS[:1], threshold=0.45)[0]
    assert all(s["threshold"] == 0.45 and s["predicted"] == (s["score"] >= 0.45) for s in mid["labels"])


def test_top_k_cuts_the_ranked_list_but_not_the_predicted_set(pred):
    full = pred.predict(TEXTS[:1], threshold=0.0)[0]
    top2 = pred.predict(TEXTS[:1], threshold=0.0, top_k=2)[0]
    assert top2["labels"] == full["labels"][:2]
    assert top2["predicted"] == full["predicted"]
    assert len(pred.predict(TEXTS[:1], top_k=100)[0]["labels"]) == len(TINY_LABELS)


def test_results_keep_input_order_when_inputs_are_length_sorted_in_batches(tiny_bundle):
    small_batches = Predictor.from_bundle(tiny_bundle, batch_size=3)
    texts = [("word " * n).strip() + f" story {n}" for n in (40, 2, 25, 7, 60, 1, 13, 33, 4, 19)]
    results = small_batches.predict(texts)  # > batch_size: sorted by length, predicted in 4 batches, put back
    singles = [small_batches.predict([t])[0] for t in texts]
    assert [r["n_tokens"] for r in results] == [s["n_tokens"] for s in singles]
    assert len({r["n_tokens"] for r in results}) == len(texts)
    for r, s in zip(results, singles):  # int8 activations are quantised per batch: close, not bit-identical
        got, want = ({x["label"]: x["score"] for x in d["labels"]} for d in (r, s))
        assert max(abs(got[k] - want[k]) for k in got) < 0.05


def test_empty_list_gives_empty_list(pred):
    assert pred.predict([]) == []


# ---------------------------------------------------------------- truncation
def test_long_text_is_truncated_by_the_tokenizer_keeping_the_end_token(pred):
    res = pred.predict([LONG_TEXT, TEXTS[0]])
    assert res[0]["truncated"] is True and res[0]["n_tokens"] > pred.max_length
    assert res[1]["truncated"] is False and res[1]["n_tokens"] <= pred.max_length
    encoded = pred.encode([LONG_TEXT])
    ids = encoded.windows[0].ids
    assert len(ids) == pred.max_length
    tokenizer = pred.encoder.tokenizer
    assert ids[0] == tokenizer.token_to_id("[CLS]")
    assert ids[-1] == tokenizer.token_to_id("[SEP]")  # the [:512] slice of the seeds dropped this
    untruncated = Tokenizer.from_str(tokenizer.to_str())
    untruncated.no_truncation()
    assert encoded.n_tokens[0] == len(untruncated.encode(LONG_TEXT).ids) > pred.max_length


def test_text_of_exactly_max_length_tokens_is_not_truncated(pred):
    text = " ".join(["dragon"] * (pred.max_length - 2))  # + [CLS] and [SEP]
    res = pred.predict([text, text + " dragon"])
    assert (res[0]["n_tokens"], res[0]["truncated"]) == (pred.max_length, False)
    assert (res[1]["n_tokens"], res[1]["truncated"]) == (pred.max_length + 1, True)


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("bad", ["", "   ", "\n\t "])
def test_empty_or_whitespace_text_is_a_value_error(pred, bad):
    with pytest.raises(ValueError, match="empty"):
        pred.predict(["fine text", bad])


@pytest.mark.parametrize("bad", [None, 3, b"bytes", ["nested"]])
def test_non_string_text_is_a_type_error(pred, bad):
    with pytest.raises(TypeError, match="text 1"):
        pred.predict(["fine text", bad])


def test_a_bare_string_is_a_type_error_not_a_list_of_characters(pred):
    with pytest.raises(TypeError, match="list of texts"):
        pred.predict("a single text")


@pytest.mark.parametrize("kwargs,fragment", [
    ({"threshold": 1.5}, "threshold must be a number between 0 and 1, got 1.5"),
    ({"threshold": -0.1}, "got -0.1"), ({"threshold": "0.5"}, "got '0.5'"), ({"threshold": float("nan")}, "got nan"),
    ({"threshold": True}, "got True"), ({"threshold": "x" * 10_000}, "threshold must be"),
    ({"top_k": 0}, "top_k must be a positive integer, got 0"), ({"top_k": 2.5}, "got 2.5"),
    ({"top_k": True}, "got True"), ({"top_k": -(10 ** 5000)}, "too large to print"),
])
def test_bad_threshold_or_top_k_is_an_input_error(pred, kwargs, fragment):
    with pytest.raises(InputError, match=re.escape(fragment)) as err:
        pred.predict(["fine text"], **kwargs)
    assert isinstance(err.value, ValueError) and len(str(err.value)) < 200   # a megabyte is not echoed back


@pytest.mark.parametrize("text,where", [("\ud800", "U+D800 at character 0"), ("fine \udfff end", "U+DFFF at character 5"),
                                        ("\udbff\udc00", "U+DBFF at character 0")])
def test_a_lone_surrogate_is_an_input_error_naming_where_it_is(pred, text, where):
    """A str can hold one (JSON "\\ud800" decodes to it); the tokenizer would raise an unrelated TypeError."""
    with pytest.raises(InputError, match=re.escape(f"text 1 holds a lone surrogate ({where})")):
        pred.predict(["fine text", text])
    problem = Predictor.text_problem(text)
    assert problem and "lone surrogate" in problem


def test_numpy_numbers_are_accepted_for_threshold_and_top_k(pred):
    got = pred.predict(["fine text"], threshold=np.float32(0.25), top_k=np.int64(2))[0]
    assert len(got["labels"]) == 2 and got["labels"] == pred.predict(["fine text"], threshold=0.25, top_k=2)[0]["labels"]


def test_unicode_and_odd_text_is_predicted(pred):
    res = pred.predict(["Ünïcödé — «guillemets» » and emoji 🐉", "<script>alert(1)</script>", "a" * 5000])
    assert all(len(r["labels"]) == len(TINY_LABELS) for r in res)


# ---------------------------------------------------------------- threads
def test_concurrent_predictions_from_threads_are_identical(pred):
    texts = TEXTS + [LONG_TEXT]
    expected = pred.predict(texts)
    results, errors = [], []

    def worker():
        try:
            for _ in range(15):
                results.append(pred.predict(texts))
        except Exception as exc:  # surfaced below: an exception in a thread would otherwise vanish
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 90 and all(r == expected for r in results)


def test_num_threads_sets_onnxruntime_intra_op_threads(tiny_bundle):
    pred = Predictor.from_bundle(tiny_bundle, num_threads=1)
    assert pred.session.get_session_options().intra_op_num_threads == 1
    assert pred.predict(TEXTS[:1])[0]["labels"]


def test_a_copied_bundle_works_on_its_own(tiny_bundle, tmp_path, pred):
    moved = copy_bundle(tiny_bundle, tmp_path / "elsewhere")
    assert Predictor.from_bundle(moved).predict(TEXTS) == pred.predict(TEXTS)


# ---------------------------------------------------------------- the linear component
def test_numpy_tfidf_logistic_regression_matches_scikit_learn():
    labels = TINY_LABELS
    train, targets = sample_texts(labels, 300, seed=7)
    vectorizer, classifier = fit_linear(train, targets, labels)
    tests, _ = sample_texts(labels, 300, seed=8)
    tests += ["", "UPPER case Dragon WIZARD", "dragon dragon dragon dragon", "zzz qqq unknownword",
              "Ünïcödé wörds — dragon's «kingdom»", "x y z 1 2 3", "the the the of of", "Dragon-wizard, sword/kingdom!"]
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        d = write_linear_dir(Path(tmp), vectorizer, classifier, weight=0.3)
        linear = LinearComponent.load(d / "linear.json", d / "linear.npz", len(labels))
        ours = linear.probabilities(tests)
    theirs = classifier.predict_proba(vectorizer.transform(tests))
    assert ours.shape == theirs.shape == (len(tests), len(labels))
    assert np.abs(ours - theirs).max() < 1e-5
    assert linear.weight == 0.3


def test_bundle_with_linear_blends_it_with_the_transformer(linear_bundle):
    pred = Predictor.from_bundle(linear_bundle)
    # a bundle written before the log-odds blend: linear.json names no space and no per-label weights
    assert pred.info["linear"] == {"weight": pred.linear.weight, "blend_space": "probability"}
    assert 0 < pred.linear.weight < 1 and pred.linear.space == "probability"
    transformer = 1 / (1 + np.exp(-pred.transformer_logits(pred.encode(TEXTS)).astype(np.float64)))
    expected = pred.linear.weight * pred.linear.probabilities(TEXTS) + (1 - pred.linear.weight) * transformer
    blended, _ = pred.probabilities(TEXTS)
    assert np.abs(blended - expected).max() < 1e-9
    res = pred.predict(TEXTS)
    for row, r in enumerate(res):
        by_label = {s["label"]: s["score"] for s in r["labels"]}
        assert all(abs(by_label[lab] - expected[row, j]) < 1e-9 for j, lab in enumerate(pred.labels))


# ---------------------------------------------------------------- broken bundles
def test_missing_bundle_directory_names_it(tmp_path):
    with pytest.raises(BundleError, match="does not exist"):
        Predictor.from_bundle(tmp_path / "no-such-bundle")


@pytest.mark.parametrize("name", ["bundle.json", "model.onnx", "tokenizer.json"])
def test_missing_bundle_file_is_named(tiny_bundle, tmp_path, name):
    bundle = copy_bundle(tiny_bundle, tmp_path / "b")
    (bundle / name).unlink()
    with pytest.raises(BundleError, match=name.replace(".", r"\.")):
        Predictor.from_bundle(bundle)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_model_onnx_is_a_bundle_error_naming_it(tiny_bundle, tmp_path, damage):
    bundle = copy_bundle(tiny_bundle, tmp_path / "b")
    model = bundle / "model.onnx"
    data = model.read_bytes()
    model.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"not an onnx file" * 100, "empty": b""}[damage])
    with pytest.raises(BundleError, match=r"model\.onnx"):
        Predictor.from_bundle(bundle)


def _edit_info(bundle: Path, **changes) -> None:
    info = json.loads((bundle / "bundle.json").read_text())
    info.update(changes)
    (bundle / "bundle.json").write_text(json.dumps(info))


def test_labels_that_do_not_match_the_model_outputs_are_a_bundle_error(tiny_bundle, tmp_path):
    bundle = copy_bundle(tiny_bundle, tmp_path / "b")
    _edit_info(bundle, labels=TINY_LABELS + ["Western"], thresholds=[0.5] * 6)
    with pytest.raises(BundleError, match=r"model\.onnx.*outputs 5 labels.*lists 6"):
        Predictor.from_bundle(bundle)


@pytest.mark.parametrize("changes, match", [
    ({"thresholds": [0.5, 0.5]}, "thresholds"),
    ({"thresholds": [0.5, 0.5, 0.5, 0.5, 7]}, "thresholds"),
    ({"format_version": 2}, "format_version"),
    ({"labels": []}, "labels"),
    ({"labels": ["A", "A", "B", "C", "D"]}, "duplicate"),
    ({"max_length": "long"}, "max_length"),
    ({"inputs": ["input_ids", "attention_mask"]}, "inputs"),
    ({"inputs": 5}, r"bundle\.json: 'inputs' must list input_ids"),
    ({"global_threshold": "high"}, r"bundle\.json: 'global_threshold' must be a number in \[0, 1\], got 'high'"),
    ({"thresholds": [True, 0.5, 0.5, 0.5, False]}, r"bundle\.json: 'thresholds' must be 5 numbers"),
    ({"format_version": True}, r"bundle\.json: format_version True"),
    ({"max_length": True}, r"bundle\.json: 'max_length' must be an integer from 2"),
    ({"tokenizer": [1, {"pad_token_id": "x"}]}, r"bundle\.json: 'tokenizer' must be an object"),
    ({"tokenizer": {"pad_token_id": "zero"}}, r"bundle\.json: 'tokenizer\.pad_token_id' must be an integer"),
    ({"linear": {"weight": "half"}}, r"bundle\.json: 'linear\.weight' must be a number"),
    ({"linear": 7}, r"bundle\.json: 'linear' must be null or an object"),
])
def test_inconsistent_bundle_json_is_a_bundle_error(tiny_bundle, tmp_path, changes, match):
    bundle = copy_bundle(tiny_bundle, tmp_path / "b")
    _edit_info(bundle, **changes)
    with pytest.raises(BundleError, match=match):
        Predictor.from_bundle(bundle)


def test_nan_threshold_in_bundle_json_is_a_bundle_error(tiny_bundle, tmp_path):
    bundle = copy_bundle(tiny_bundle, tmp_path / "b")
    text = (bundle / "bundle.json").read_text()
    (bundle / "bundle.json").write_text(re.sub(r'"global_threshold": [0-9.]+', '"global_threshold": NaN', text))
    with pytest.raises(BundleError, match=r"bundle\.json: 'global_threshold' must be a number in \[0, 1\], got nan"):
        Predictor.from_bundle(bundle)


def test_max_length_beyond_the_position_embeddings_fails_at_load_not_on_every_long_text(tiny_bundle, tmp_path):
    """The tiny model has 128 positions: a bundle claiming 200 loaded before and then failed each long text."""
    bundle = copy_bundle(tiny_bundle, tmp_path / "b")
    _edit_info(bundle, max_length=200)
    with pytest.raises(BundleError, match=r"model\.onnx: the model cannot read 200 tokens, but .*bundle\.json says "
                                          r"max_length 200: it is longer than the model's position embeddings"):
        Predictor.from_bundle(bundle)
    _edit_info(bundle, max_length=128)   # exactly the position embeddings: loads and reads 128 tokens
    assert Predictor.from_bundle(bundle).predict([LONG_TEXT])[0]["n_tokens"] > 128


# Hostile values for every key of a real bundle.json: the load must give a BundleError or a predictor that works.
HOSTILE_VALUES = [None, True, False, 0, -1, 2, 1.5, float("nan"), float("inf"), 10 ** 30, "", "x", "0.5", [], {},
                  [None], ["input_ids"], {"a": {"b": [1, {"c": None}]}}, [[0.5]], -0.0]


def test_every_bundle_json_key_set_to_hostile_values_gives_a_bundle_error_or_a_working_predictor(tiny_bundle, tmp_path):
    info = json.loads((tiny_bundle / "bundle.json").read_text())
    keys = list(info) + ["tokenizer.pad_token_id", "linear.weight", "unknown_key"]
    outcomes = {"loaded": 0, "BundleError": 0}
    problems = []
    for n, (key, value) in enumerate((k, v) for k in keys for v in HOSTILE_VALUES + ["<deleted>"]):
        bundle = tmp_path / f"b{n}"
        bundle.mkdir()
        for item in tiny_bundle.iterdir():   # links: only bundle.json differs between the cases
            (bundle / item.name).symlink_to(item)
        mutated = json.loads(json.dumps(info))
        outer, _, inner = key.partition(".")
        target = mutated
        if inner:
            target = mutated[outer] = mutated.get(outer) if isinstance(mutated.get(outer), dict) else {}
        if value == "<deleted>":
            target.pop(inner or outer, None)
        else:
            target[inner or outer] = value
        (bundle / "bundle.json").unlink()
        (bundle / "bundle.json").write_text(json.dumps(mutated))
        try:
            got = Predictor.from_bundle(bundle)
            result = got.predict(["a dragon", LONG_TEXT], top_k=2)   # a bundle that loads must also predict
            assert len(result) == 2 and result[1]["truncated"]
            outcomes["loaded"] += 1
        except BundleError as err:
            assert str(bundle) in str(err), err   # names the file (bundle.json; linear.json when it asks for one)
            outcomes["BundleError"] += 1
        except Exception as err:   # anything else is the defect this test is for
            problems.append(f"{key} = {value!r}: {type(err).__name__}: {err}")
    assert not problems, "\n".join(problems)
    assert outcomes["loaded"] > 50 and outcomes["BundleError"] > 100, outcomes   # both paths really ran


def test_half_written_bundle_json_is_a_bundle_error(tiny_bundle, tmp_path):
    bundle = copy_bundle(tiny_bundle, tmp_path / "b")
    text = (bundle / "bundle.json").read_text()
    (bundle / "bundle.json").write_text(text[: len(text) // 2])
    with pytest.raises(BundleError, match=r"bundle\.json.*not valid JSON"):
        Predictor.from_bundle(bundle)


def test_broken_linear_files_are_bundle_errors(linear_bundle, tmp_path):
    bundle = copy_bundle(linear_bundle, tmp_path / "b")
    (bundle / "linear.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(BundleError, match=r"linear\.npz"):
        Predictor.from_bundle(bundle)
    bundle2 = copy_bundle(linear_bundle, tmp_path / "c")
    npz = dict(np.load(bundle2 / "linear.npz"))
    npz["coef"] = npz["coef"][:3]
    np.savez(bundle2 / "linear.npz", **npz)
    with pytest.raises(BundleError, match=r"linear\.npz.*shapes"):
        Predictor.from_bundle(bundle2)
    bundle3 = copy_bundle(linear_bundle, tmp_path / "d")
    (bundle3 / "linear.json").unlink()
    with pytest.raises(BundleError, match=r"linear\.json"):
        Predictor.from_bundle(bundle3)


def test_a_blend_weight_of_one_skips_the_transformer(linear_bundle, tmp_path):
    bundle = copy_bundle(linear_bundle, tmp_path / "b")
    spec = json.loads((bundle / "linear.json").read_text())
    (bundle / "linear.json").write_text(json.dumps({**spec, "weight": 1.0}))
    _edit_info(bundle, linear={"weight": 1.0})
    pred = Predictor.from_bundle(bundle)
    calls = []
    pred.transformer_logits = lambda enc: calls.append(enc)  # would break the result if it were used
    probs, encoded = pred.probabilities(TEXTS + [LONG_TEXT])
    assert calls == [] and np.abs(probs - pred.linear.probabilities(TEXTS + [LONG_TEXT])).max() == 0
    assert encoded.truncated[-1] and encoded.n_tokens[-1] > pred.max_length


def _logit(p):
    p = np.clip(p, 1e-15, 1 - 1e-15)
    return np.log(p / (1 - p))


def test_a_log_odds_blend_with_a_weight_per_label_is_served_as_linear_json_says(linear_bundle, tmp_path):
    bundle = copy_bundle(linear_bundle, tmp_path / "b")
    spec = json.loads((bundle / "linear.json").read_text())
    per_label = [round(0.1 + 0.8 * j / (len(TINY_LABELS) - 1), 3) for j in range(len(TINY_LABELS))]
    per_label[0] = 1.0   # one label read from the linear model alone, one from the transformer alone
    per_label[-1] = 0.0
    (bundle / "linear.json").write_text(json.dumps({**spec, "blend_space": "logit", "label_weights": per_label}))
    pred = Predictor.from_bundle(bundle)
    texts = TEXTS + [LONG_TEXT]
    z = pred.transformer_logits(pred.encode(texts)).astype(np.float64)
    p_lin = pred.linear.probabilities(texts)
    w = np.array(per_label)
    expected = 1 / (1 + np.exp(-(w * _logit(p_lin) + (1 - w) * z)))
    probs, _ = pred.probabilities(texts)
    assert np.abs(probs - expected).max() < 1e-6
    assert np.abs(probs[:, 0] - p_lin[:, 0]).max() < 1e-9
    assert np.abs(probs[:, -1] - 1 / (1 + np.exp(-z[:, -1]))).max() < 1e-6
    # the same bundle read as a probability blend would serve other scores: the space is really used
    assert np.abs(probs - (w * p_lin + (1 - w) / (1 + np.exp(-z)))).max() > 1e-3
    for row, r in enumerate(pred.predict(texts)):   # the same batch (int8 activations are quantised per call)
        by_label = {s["label"]: s["score"] for s in r["labels"]}
        assert all(abs(by_label[lab] - probs[row, j]) < 1e-9 for j, lab in enumerate(pred.labels))


def test_the_transformer_is_skipped_only_when_every_label_weight_is_one(linear_bundle, tmp_path):
    bundle = copy_bundle(linear_bundle, tmp_path / "b")
    spec = json.loads((bundle / "linear.json").read_text())
    ones = [1.0] * len(TINY_LABELS)
    (bundle / "linear.json").write_text(json.dumps({**spec, "blend_space": "logit", "label_weights": ones}))
    pred = Predictor.from_bundle(bundle)
    calls = []
    pred.transformer_logits = lambda enc: calls.append(enc)
    assert np.abs(pred.probabilities(TEXTS)[0] - pred.linear.probabilities(TEXTS)).max() == 0 and calls == []
    ones[2] = 0.5
    (bundle / "linear.json").write_text(json.dumps({**spec, "blend_space": "logit", "label_weights": ones}))
    assert not Predictor.from_bundle(bundle).linear.transformer_unused


@pytest.mark.parametrize("edit, match", [
    ({"blend_space": "geometric"}, r"'blend_space' must be one of \['probability', 'logit'\], got 'geometric'"),
    ({"blend_space": None}, r"'blend_space' must be one of"),
    ({"label_weights": [0.5]}, r"'label_weights' must be a list of 5 numbers in \[0, 1\]"),
    ({"label_weights": [0.5] * 6}, r"'label_weights' must be a list of 5"),
    ({"label_weights": [0.5, 0.5, 0.5, 0.5, 1.5]}, r"'label_weights'"),
    ({"label_weights": [0.5, 0.5, 0.5, 0.5, float("nan")]}, r"'label_weights'"),
    ({"label_weights": [0.5, 0.5, 0.5, 0.5, True]}, r"'label_weights'"),
    ({"label_weights": [0.5, 0.5, 0.5, 0.5, "0.5"]}, r"'label_weights'"),
    ({"label_weights": {"a": 0.5}}, r"'label_weights'"),
    ({"label_weights": 0.5}, r"'label_weights'"),
])
def test_a_bad_blend_in_linear_json_is_a_bundle_error_naming_it(linear_bundle, tmp_path, edit, match):
    assert len(TINY_LABELS) == 5
    bundle = copy_bundle(linear_bundle, tmp_path / "b")
    spec = json.loads((bundle / "linear.json").read_text())
    (bundle / "linear.json").write_text(json.dumps({**spec, **edit}))
    with pytest.raises(BundleError, match=r"linear\.json: " + match):
        Predictor.from_bundle(bundle)


def test_mismatched_linear_weight_between_files_is_a_bundle_error(linear_bundle, tmp_path):
    bundle = copy_bundle(linear_bundle, tmp_path / "b")
    _edit_info(bundle, linear={"weight": 0.9})
    with pytest.raises(BundleError, match=r"linear\.json: weight"):
        Predictor.from_bundle(bundle)


# ---------------------------------------------------------------- the linear part's storages
@pytest.fixture(scope="module")
def fitted():
    train, targets = sample_texts(TINY_LABELS, 300, seed=11)
    vectorizer, classifier = fit_linear(train, targets, TINY_LABELS)
    texts, _ = sample_texts(TINY_LABELS, 200, seed=12)
    texts += ["", "zzz qqq unknownword", "Dragon-wizard, sword/kingdom!", "the the the of of"]
    return vectorizer, classifier, texts


def test_a_dense_linear_bundle_written_before_sparse_storage_still_loads(linear_bundle, tmp_path, fitted):
    """An old bundle: linear.json without `coef_storage`, linear.npz with a dense `coef` (written by the
    pre-sparse exporter's format); the predictor reads it and serves scikit-learn's probabilities."""
    vectorizer, classifier, texts = fitted
    bundle = copy_bundle(linear_bundle, tmp_path / "old")
    write_linear_dir(bundle, vectorizer, classifier, weight=json.loads((bundle / "linear.json").read_text())["weight"])
    assert "coef_storage" not in json.loads((bundle / "linear.json").read_text())
    assert np.load(bundle / "linear.npz")["coef"].dtype == np.float32
    pred = Predictor.from_bundle(bundle)
    assert not pred.linear.sparse
    theirs = classifier.predict_proba(vectorizer.transform(texts))
    assert np.abs(pred.linear.probabilities(texts) - theirs).max() < 1e-5
    assert len(pred.predict(texts[:3])) == 3


@pytest.mark.parametrize("dtype, tol", [("float32", 1e-6), ("float16", 2e-3), ("int8", 0.05)])
def test_sparse_linear_part_round_trips_through_its_files(fitted, tmp_path, dtype, tol):
    from compression.linear import prune_linear

    vectorizer, classifier, texts = fitted
    dense_dir = write_linear_dir(tmp_path / "dense", vectorizer, classifier, weight=0.4)
    dense = LinearComponent.load(dense_dir / "linear.json", dense_dir / "linear.npz", len(TINY_LABELS))
    sparse = prune_linear(dense, 1.0)
    sparse.save(tmp_path / "linear.json", tmp_path / "linear.npz", dtype)
    spec = json.loads((tmp_path / "linear.json").read_text())
    assert spec["coef_storage"] == "csr" and spec["coef_dtype"] == dtype and spec["weight"] == 0.4
    loaded = LinearComponent.load(tmp_path / "linear.json", tmp_path / "linear.npz", len(TINY_LABELS))
    assert loaded.sparse and loaded.weight == 0.4 and loaded.terms == dense.terms
    assert np.abs(loaded.probabilities(texts) - dense.probabilities(texts)).max() < tol
    assert np.load(tmp_path / "linear.npz")["coef_data"].dtype == np.dtype(dtype)


@pytest.mark.parametrize("cap", [1, 7, 50, 10**9])
def test_the_sparse_product_gives_the_same_logits_whatever_the_cap_on_gathered_weights(fitted, tmp_path, monkeypatch,
                                                                                       cap):
    """Texts are grouped so that one product gathers at most GATHER_PAIRS weights (a text over it runs alone): the
    grouping bounds memory and must not change a number, for empty, unknown-word and long texts alike."""
    from compression.linear import prune_linear
    from deployment import scoring

    vectorizer, classifier, texts = fitted
    d = write_linear_dir(tmp_path, vectorizer, classifier, weight=0.5)
    dense = LinearComponent.load(d / "linear.json", d / "linear.npz", len(TINY_LABELS))
    sparse = prune_linear(dense, 1.0)
    batch = ["", "zzz qqq", " ".join(texts)] + texts + ["", texts[0] * 5]
    want = sparse.logits(batch)
    monkeypatch.setattr(scoring, "GATHER_PAIRS", cap)
    counts = sparse.counts(batch)
    blocks = sparse._blocks(counts)
    assert [b[0] for b in blocks] == [0] + [b[1] for b in blocks[:-1]] and blocks[-1][1] == len(batch)
    pairs = [int(sum(np.diff(sparse._term_ptr)[counts.cols[counts.indptr[a]:counts.indptr[b]]])) for a, b in blocks]
    assert all(p <= cap or b - a == 1 for p, (a, b) in zip(pairs, blocks))
    assert np.array_equal(sparse.logits(batch), want)
    assert np.allclose(want, dense.logits(batch), atol=1e-5)


def test_pruning_keeps_the_largest_weights_and_only_the_terms_they_use(fitted, tmp_path):
    from compression.linear import prune_linear

    vectorizer, classifier, texts = fitted
    d = write_linear_dir(tmp_path, vectorizer, classifier, weight=0.5)
    dense = LinearComponent.load(d / "linear.json", d / "linear.npz", len(TINY_LABELS))
    coef = np.load(d / "linear.npz")["coef"]
    pruned = prune_linear(dense, 0.1)
    assert pruned.nnz == round(0.1 * coef.size)
    indptr, labels, values = pruned.coef_by_term()
    assert np.abs(values).min() >= np.sort(np.abs(coef).ravel())[-pruned.nnz]
    assert all(indptr[i + 1] > indptr[i] for i in range(len(pruned.terms)))   # every kept term has a weight
    assert len(pruned.terms) < len(dense.terms)
    # A kept weight keeps its value, for the same term and label
    col = {t: i for i, t in enumerate(dense.terms)}
    term_of = np.repeat(np.arange(len(pruned.terms)), np.diff(indptr))
    assert np.allclose(values, coef[labels, [col[pruned.terms[t]] for t in term_of]])
    # Texts with none of the kept terms get the intercept alone
    assert np.allclose(pruned.logits(["zzz qqq"]), pruned.intercept)


def _save_sparse(linear_bundle, tmp_path, name, dtype="int8"):
    from compression.linear import prune_linear

    bundle = copy_bundle(linear_bundle, tmp_path / name)
    dense = LinearComponent.load(bundle / "linear.json", bundle / "linear.npz", len(TINY_LABELS))
    prune_linear(dense, 0.5).save(bundle / "linear.json", bundle / "linear.npz", dtype)
    return bundle


@pytest.mark.parametrize("damage, match", [
    (lambda a, s: a.update(coef_indptr=a["coef_indptr"][:-1]), r"CSR shapes"),
    (lambda a, s: a.update(coef_labels=a["coef_labels"] + 100), r"coef_labels outside"),
    (lambda a, s: a.update(coef_indptr=a["coef_indptr"][::-1].copy()), r"coef_indptr must rise"),
    (lambda a, s: a.pop("coef_scale"), r"missing array.*coef_scale"),
    (lambda a, s: a.update(coef_data=a["coef_data"].astype(np.float16)), r"coef_data is float16.*int8"),
    (lambda a, s: s.update(coef_storage="coo"), r"unknown coef_storage"),
    (lambda a, s: s.update(coef_storage="dense", coef_dtype="int8"), r"coef_dtype 'int8'"),
    (lambda a, s: s.update(coef_dtype="float32"), r"missing array|coef_data is int8"),
])
def test_broken_sparse_linear_files_are_bundle_errors_naming_the_file(linear_bundle, tmp_path, damage, match):
    bundle = _save_sparse(linear_bundle, tmp_path, "b")
    Predictor.from_bundle(bundle)   # intact, it loads
    arrays = dict(np.load(bundle / "linear.npz"))
    spec = json.loads((bundle / "linear.json").read_text())
    damage(arrays, spec)
    np.savez(bundle / "linear.npz", **arrays)
    (bundle / "linear.json").write_text(json.dumps(spec))
    with pytest.raises(BundleError, match=r"linear\.(npz|json).*" + match):
        Predictor.from_bundle(bundle)
