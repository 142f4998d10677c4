"""Training stage: a tiny randomly initialised BERT (built here from the offline tokenizer) trained for a few
steps end to end through fastai + blurr, every artifact checked; bad input; the blurr compatibility module.
A slow test fine-tunes the real offline backbone on the sample books."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import config
from tests.tiny_bundle import TOKENIZER_FILES, backbone_path, sample_texts

LABELS = ["Fantasy", "Romance", "Mystery", "Science Fiction", "Horror"]
# Floors over the most-frequent-labels reference (test micro-F1 0.352) on the synthetic genres, where 40% of a
# text's words name its genres. Measured with the seeded tiny backbone, bf16 and fp32 alike: TF-IDF 0.932 (0.92 on
# the valid curve's rows), the transformer 0.494-0.497 after its two epochs through blurr's batches, 0.512 through
# the token cache's (bf16; 0.448 for the top layer alone, three epochs from the cache: tests/test_layercache.py).
BASELINE_MARGIN = 0.4
TRANSFORMER_MARGIN = 0.1


@pytest.fixture(scope="module")
def tiny_backbone(tmp_path_factory) -> Path:
    """A 2-layer BERT with random weights and the real MiniLM tokenizer, saved as a local HF folder."""
    from transformers import BertConfig, BertModel

    out = tmp_path_factory.mktemp("tiny_backbone")
    src = backbone_path()
    for name in TOKENIZER_FILES:
        if (src / name).exists():
            shutil.copy(src / name, out / name)
    vocab = sum(1 for _ in open(src / "vocab.txt", encoding="utf-8"))
    cfg = BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)
    import torch

    torch.manual_seed(0)  # the same backbone every session: the F1 floors below were measured on it
    BertModel(cfg).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """A processed data set made by the real prepare stage from 300 synthetic descriptions."""
    tmp = tmp_path_factory.mktemp("tiny_data")
    texts, targets = sample_texts(LABELS, 300, seed=1)
    raw = tmp / "raw.csv"
    with raw.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["url", "title", "text", "labels"])
        for i, (t, y) in enumerate(zip(texts, targets)):
            w.writerow([f"https://example.test/{i}", f"t{i}", f"{t} (book {i})", json.dumps(y)])
    from training import prepare

    assert prepare.main(["--input", str(raw), "--out", str(tmp / "processed"), "--min-label-freq", "1"]) == 0
    return tmp / "processed"


@pytest.fixture(scope="module")
def trained(tiny_backbone, tiny_data, tmp_path_factory) -> Path:
    from training import train

    out = tmp_path_factory.mktemp("models") / "tiny"
    code = train.main(["--data", str(tiny_data), "--out", str(out), "--backbone", str(tiny_backbone),
                       "--max-length", "32", "--batch-size", "16", "--epochs", "2", "--lr", "1e-3", "--head-lr", "3e-3",
                       "--pos-weight", "4", "--seed", "0", "--pooling", "mean"])
    assert code == 0
    return out


def test_training_writes_every_artifact(trained):
    expected = ["checkpoint/config.json", "checkpoint/model.safetensors", "checkpoint/tokenizer.json",
                "labels.json", "thresholds.json", "metrics.json", "metrics.md", "settings.json", "command.txt",
                "history.json", "training_curves.png", "per_label_f1.png", "valid_curve.png"]
    missing = [f for f in expected if not (trained / f).is_file()]
    assert not missing
    assert not list(trained.parent.glob(".tiny.*")), "the temporary build dir must be renamed into place"


def test_labels_thresholds_and_checkpoint_agree(trained):
    from transformers import AutoConfig

    labels = json.loads((trained / "labels.json").read_text())
    assert list(labels.values()) == list(range(len(labels)))
    cfg = AutoConfig.from_pretrained(trained / "checkpoint")
    assert cfg.num_labels == len(labels)
    assert cfg.problem_type == "multi_label_classification"
    assert [cfg.id2label[i] for i in range(len(labels))] == list(labels)
    th = json.loads((trained / "thresholds.json").read_text())
    assert set(th["per_label"]) == set(labels)
    from training.metrics import THRESHOLD_GRID   # tuned on the tuner's grid, every one of them

    assert th["global"] in THRESHOLD_GRID and set(th["per_label"].values()) <= set(THRESHOLD_GRID.tolist())


def test_metrics_cover_model_baseline_and_reference(trained):
    from training.dataset import read_splits

    m = json.loads((trained / "metrics.json").read_text())
    for key in ("transformer", "baseline", "most_frequent", "model"):
        assert {"micro_f1", "macro_f1", "samples_f1", "per_label"} <= set(m[key])
    assert m["final"] in ("transformer", "blend") and m["model"] == m[m["final"]]   # the shipped row is its own
    assert set(m["model"]["per_label"]) == set(json.loads((trained / "labels.json").read_text()))
    n_train = len(read_splits(m["data"]).texts["train"])
    assert m["train"]["steps"] == m["train"]["planned_steps"] == 2 * (n_train // 16)   # 2 epochs of full batches
    # the synthetic words make the labels learnable: floors well above guessing the most frequent labels
    floor = m["most_frequent"]["micro_f1"]
    assert m["baseline"]["micro_f1"] > floor + BASELINE_MARGIN, (m["baseline"]["micro_f1"], floor)
    assert m["transformer"]["micro_f1"] > floor + TRANSFORMER_MARGIN, (m["transformer"]["micro_f1"], floor)
    table = (trained / "metrics.md").read_text()
    assert "tf-idf + logreg baseline" in table and "| Fantasy |" in table


def test_valid_curve_follows_training_to_its_last_step(trained):
    """Eight points evenly over the steps and one at the end: steps rise, minutes never fall; a blend point is never
    below either part alone (weights 0 and 1 are on its grid), its choices are on the grids, and the TF-IDF model
    finds the synthetic genres on the curve's rows too."""
    from training.blend import BLEND_WEIGHTS
    from training.metrics import THRESHOLD_GRID

    m = json.loads((trained / "metrics.json").read_text())
    curve = m["train"]["valid_curve"]
    steps = [p["step"] for p in curve]
    assert 2 <= len(curve) <= 9 and steps == sorted(set(steps)) and steps[-1] == m["train"]["steps"]
    assert all(a["minutes"] <= b["minutes"] for a, b in zip(curve, curve[1:]))
    for p in curve:
        assert p["blend_micro_f1"] >= max(p["transformer_micro_f1"], p["linear_micro_f1"]) - 1e-12, p
        assert p["blend_weight"] in BLEND_WEIGHTS
        assert p["transformer_threshold"] in THRESHOLD_GRID and p["blend_threshold"] in THRESHOLD_GRID
    assert curve[0]["linear_micro_f1"] > m["most_frequent"]["micro_f1"] + BASELINE_MARGIN


def test_micro_f1_at_the_best_threshold_matches_scikit_learn():
    from sklearn.metrics import f1_score

    from training.metrics import THRESHOLD_GRID, micro_f1_at_best_threshold, tune_thresholds

    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.random((int(rng.integers(1, 40)), int(rng.integers(2, 6)))) < 0.3   # 1 column: sklearn says binary
        p = rng.random(y.shape)
        f1, t = micro_f1_at_best_threshold(p, y)
        theirs = [f1_score(y, p >= th, average="micro", zero_division=0) for th in THRESHOLD_GRID]
        assert abs(f1 - max(theirs)) < 1e-12 and t in THRESHOLD_GRID
        assert t == tune_thresholds(p, y, [str(j) for j in range(y.shape[1])])["global"]   # one tuner
        assert abs(f1_score(y, p >= t, average="micro", zero_division=0) - f1) < 1e-12


def test_blend_component_is_written_when_chosen(trained):
    from training.blend import BLEND_RULES, BLEND_WEIGHTS, rule_name

    m = json.loads((trained / "metrics.json").read_text())
    search = m["blend_rule"]
    assert search["chosen"] in {rule_name(r) for r in BLEND_RULES}
    assert set(search["mean"]) == {rule_name(r) for r in BLEND_RULES}
    assert search["chosen"] == max(search["mean"], key=search["mean"].get)
    assert all(len(v) == search["repeats"] for v in search["scores"].values())
    per_label = m["blend_label_weights"]
    space, kind = next(r for r in BLEND_RULES if rule_name(r) == search["chosen"])
    assert m["blend_space"] == space and (per_label is None) == (kind == "one")
    if per_label is not None:
        assert list(per_label) == m["labels"] and set(per_label.values()) <= set(BLEND_WEIGHTS.tolist())
    weights = list(per_label.values()) if per_label is not None else [m["blend_weight"]]
    if m["final"] == "blend":
        spec = json.loads((trained / "linear" / "linear.json").read_text())
        assert spec["weight"] == m["blend_weight"] and spec["blend_space"] == space
        assert spec.get("label_weights") == (weights if per_label is not None else None) and max(weights) > 0
        npz = np.load(trained / "linear" / "linear.npz")
        assert npz["coef"].shape == (len(m["labels"]), len(npz["terms"]))
    else:
        assert not (trained / "linear").exists() and max(weights) == 0


def test_the_blend_rule_is_chosen_on_held_out_folds_of_valid():
    """Labels each known by only one of the two models: a weight per label is worth it and the cross-fitted
    choice sees so; the scores are each rule's held-out (micro + macro) / 2, the same for the same folds; too few
    valid rows are not cross-fitted, and say why."""
    from training.blend import choose_blend_rule, rule_name

    rng = np.random.default_rng(4)
    n, n_labels = 300, 6
    y = rng.random((n, n_labels)) < 0.3
    noise = lambda: rng.uniform(0.05, 0.95, n)
    sure = lambda col: np.where(col, rng.uniform(0.6, 0.99, n), rng.uniform(0.01, 0.4, n))
    p_model = np.stack([sure(y[:, j]) if j % 2 else noise() for j in range(n_labels)], 1)
    p_linear = np.stack([noise() if j % 2 else sure(y[:, j]) for j in range(n_labels)], 1)
    labels = [f"l{j}" for j in range(n_labels)]
    rule, search = choose_blend_rule(p_model, p_linear, y, labels, 5)
    assert rule == ("logit", "per") and search["chosen"] == rule_name(rule)
    assert search["mean"][rule_name(rule)] > search["mean"][rule_name(("probability", "one"))] + 0.02
    assert search["folds"] == 5 and search["mean"][rule_name(rule)] == pytest.approx(np.mean(search["scores"][rule_name(rule)]))
    again = choose_blend_rule(p_model, p_linear, y, labels, 5)[1]
    assert again == search
    one = choose_blend_rule(p_model, p_linear, y, labels, 5, rules=(("probability", "one"),), repeats=2)
    assert one[0] == ("probability", "one") and len(one[1]["scores"][rule_name(one[0])]) == 2
    few = choose_blend_rule(p_model[:9], p_linear[:9], y[:9], labels, 5)
    assert few[0] == ("logit", "per") and "not cross-fitted" in few[1]["why"]


def test_each_label_gets_the_blend_weight_of_the_model_that_knows_it():
    """Label 0 is read only by the linear model, label 1 only by the transformer, label 2 by both halves (each
    sees half its positives), label 3 is too rare in valid to choose for: it keeps the global weight."""
    from training.metrics import best_label_f1
    from training.blend import BLEND_SPACE, BLEND_WEIGHTS, choose_label_weights
    from deployment.scoring import blend

    rng = np.random.default_rng(3)
    n = 400
    y = np.zeros((n, 4), dtype=bool)
    y[:, :3] = rng.random((n, 3)) < 0.3
    y[rng.choice(n, 3, replace=False), 3] = True
    noise = lambda: rng.uniform(0.05, 0.95, n)
    sure = lambda col: np.where(col, rng.uniform(0.7, 0.99, n), rng.uniform(0.01, 0.3, n))
    half = rng.random(n) < 0.5
    p_model = np.stack([noise(), sure(y[:, 1]), np.where(half, sure(y[:, 2]), 0.5), noise()], 1)
    p_linear = np.stack([sure(y[:, 0]), noise(), np.where(~half, sure(y[:, 2]), 0.5), noise()], 1)
    w = choose_label_weights(p_model, p_linear, y, 0.3, min_support=5)
    assert w.shape == (4,) and w[0] >= 0.7 and w[1] <= 0.3 and 0.2 <= w[2] <= 0.8 and w[3] == 0.3
    f1 = np.stack([best_label_f1(blend(p_model, p_linear, v, BLEND_SPACE), y) for v in BLEND_WEIGHTS])
    chosen = best_label_f1(blend(p_model, p_linear, w, BLEND_SPACE), y)
    assert np.allclose(chosen[:3], f1[:, :3].max(0))            # each label at its best weight on the grid
    assert chosen[2] > max(f1[0, 2], f1[-1, 2]) + 0.05           # both halves beat either model alone


def test_settings_and_command_describe_the_run(trained, tiny_backbone):
    s = json.loads((trained / "settings.json").read_text())
    assert s["max_length"] == 32 and s["backbone"] == str(tiny_backbone) and Path(s["data"]).is_dir()
    assert (trained / "command.txt").read_text().startswith("python -m training.train --data ")
    hist = json.loads((trained / "history.json").read_text())
    lrs = [h["lr"] for h in hist]
    assert max(lrs) > lrs[0] and lrs[-1] < max(lrs) / 10, "one-cycle: warm up, then anneal"


def test_mean_pooling_is_saved_and_restored_with_the_checkpoint(trained):
    from training.modeling import MeanPooledClassifier, load_classifier

    cfg = json.loads((trained / "checkpoint" / "config.json").read_text())
    assert cfg["classifier_pooling"] == "mean"
    assert isinstance(load_classifier(trained / "checkpoint"), MeanPooledClassifier)


def test_mean_pooling_ignores_padding(trained):
    import torch
    from transformers import AutoTokenizer

    from training.modeling import load_classifier

    model = load_classifier(trained / "checkpoint").eval()
    tok = AutoTokenizer.from_pretrained(trained / "checkpoint")
    alone = tok(["a dragon and a wizard"], return_tensors="pt")
    padded = tok(["a dragon and a wizard", "a much longer text about a detective, a murder and a clue"],
                 padding=True, return_tensors="pt")
    with torch.no_grad():
        a = model(**alone).logits[0]
        b = model(**padded).logits[0]
    assert torch.allclose(a, b, atol=1e-5)


def test_sentence_transformers_backbone_declares_mean_pooling(tiny_backbone):
    from training.modeling import backbone_pooling

    assert backbone_pooling(backbone_path()) == "mean"
    assert backbone_pooling(tiny_backbone) == "cls"


def test_evaluate_saved_model_reproduces_its_test_metrics(trained):
    from training.evaluate import evaluate_saved

    m = json.loads((trained / "metrics.json").read_text())
    again = evaluate_saved(trained, log=lambda *_: None)
    assert again["micro_f1"] == pytest.approx(m["model"]["micro_f1"], abs=1e-6)
    assert again["macro_f1"] == pytest.approx(m["model"]["macro_f1"], abs=1e-6)


def test_one_reader_gives_evaluate_and_compression_the_same_error_for_a_damaged_model_dir(trained, tmp_path, capsys):
    """training.modeldir.read_model_dir is the model dir's one reader: `--evaluate` and compression.quantize refuse a
    thresholds.json missing a label with the same one line, before any model is loaded."""
    from compression.export import CompressionError
    from compression.quantize import build_bundle
    from training import train

    broken = tmp_path / "broken"
    shutil.copytree(trained, broken)
    th = json.loads((broken / "thresholds.json").read_text())
    th["per_label"].pop("Horror")
    (broken / "thresholds.json").write_text(json.dumps(th))
    message = f"{broken / 'thresholds.json'}: 'per_label' must have one threshold per label (missing ['Horror'])"
    assert train.main(["--evaluate", str(broken)]) == 2
    assert f"error: {message}" in capsys.readouterr().err
    with pytest.raises(CompressionError) as err:
        build_bundle(broken, tmp_path / "bundle", bench_rounds=0, quiet=True)
    assert str(err.value) == message and not (tmp_path / "bundle").exists()


def test_a_window_stride_the_windows_cannot_hold_is_one_line_before_training(tiny_backbone, tiny_data, tmp_path, capsys):
    from training import train

    out = tmp_path / "m"
    assert train.main(["--data", str(tiny_data), "--out", str(out), "--backbone", str(tiny_backbone), "--max-length",
                       "32", "--window-stride", "30", "--no-blend", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert ("error: --window-stride 30: windows.stride must be below the 30 text tokens of a window (max_length 32 "
            "minus 2 special tokens), got 30") in err
    assert not out.exists()


def test_training_tokenises_and_windows_exactly_as_hugging_face_does(tiny_backbone):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from deployment.encoding import Windows
    from training.inference import text_encoder

    tok = AutoTokenizer.from_pretrained(tiny_backbone)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_backbone, num_labels=3)
    text = " ".join(f"word{i % 7} w" for i in range(60))
    plain = text_encoder(tok, model, 16).encode([text])
    ids = plain.windows[0].ids
    assert ids == tok([text], truncation=True, max_length=16)["input_ids"][0]
    assert len(ids) == 16 and ids[-1] == tok.sep_token_id and ids[0] == tok.cls_token_id and plain.truncated == [True]
    windowed = text_encoder(tok, model, 16, Windows(max_windows=100, stride=4)).encode([text])
    theirs = tok([text], truncation=True, max_length=16, stride=4, return_overflowing_tokens=True)["input_ids"]
    assert [w.ids for w in windowed.windows] == theirs and windowed.truncated == [False]
    assert windowed.n_windows == [len(theirs)] and windowed.n_tokens == [len(tok(text)["input_ids"])]


def test_layer_groups_give_lower_layers_smaller_rates(tiny_backbone):
    from transformers import AutoModelForSequenceClassification

    from training.learner import group_lrs, layer_groups

    model = AutoModelForSequenceClassification.from_pretrained(tiny_backbone, num_labels=3)
    groups = layer_groups(model)
    assert len(groups) == 1 + 2 + 1  # embeddings, 2 layers, head
    assert sum(len(g) for g in groups) == len(list(model.parameters()))
    head_names = {n for n, p in model.named_parameters() if any(p is q for q in groups[-1])}
    assert any(n.startswith("classifier") for n in head_names)
    lrs = group_lrs(len(groups), 1e-4, 0.5, head_lr=1e-3)
    assert list(lrs) == sorted(lrs) and lrs[-1] == 1e-3 and lrs[-2] == 1e-4 and lrs[0] == pytest.approx(2.5e-5)


def test_one_cycle_schedule_shape():
    from training.schedule import one_cycle, plan_steps

    assert one_cycle(0, 0.25) == pytest.approx(1 / 25)
    assert one_cycle(0.25, 0.25) == pytest.approx(1.0)
    assert one_cycle(1.0, 0.25) == pytest.approx(1e-4)
    assert plan_steps(100, 2.0, 50) == 25 and plan_steps(100, 0.1, 1e6) == 100 and plan_steps(10, 5, 1) == 1


def _run(*args):
    return subprocess.run([sys.executable, "-m", "training.train", *args], capture_output=True, text=True,
                          cwd=config.ROOT, timeout=300)


def test_unknown_backbone_is_an_error_not_a_fallback(tiny_data, tmp_path):
    r = _run("--data", str(tiny_data), "--out", str(tmp_path / "m"), "--backbone", "no-such-org/no-such-model")
    assert r.returncode == 2
    assert "no-such-org/no-such-model" in r.stderr and "not available" in r.stderr
    assert not (tmp_path / "m").exists()


def test_out_that_is_not_a_model_dir_is_never_replaced(tiny_data, tiny_backbone, tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    r = _run("--data", str(tiny_data), "--out", str(precious), "--backbone", str(tiny_backbone))
    assert r.returncode == 2 and "refusing to replace" in r.stderr
    assert (precious / "thesis.tex").read_text() == "years of work"


def test_missing_data_dir_is_a_clear_error(tmp_path):
    r = _run("--data", str(tmp_path / "nope"), "--out", str(tmp_path / "m"))
    assert r.returncode == 2 and "prepared data folder not found" in r.stderr and "training.prepare" in r.stderr


def test_labels_json_not_matching_the_data_is_a_clear_error(tiny_data, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_data, bad)
    labels = json.loads((bad / "labels.json").read_text())
    labels.pop(next(iter(labels)))
    (bad / "labels.json").write_text(json.dumps({k: i for i, k in enumerate(labels)}))
    r = _run("--data", str(bad), "--out", str(tmp_path / "m"))
    assert r.returncode == 2 and "labels.json" in r.stderr
    assert not (tmp_path / "m").exists()


def test_compat_imports_blurr_offline_and_show_batch_works(tiny_backbone, tiny_data, monkeypatch):
    import fastcore.all

    from training.compat import blurr_text
    from training.backbone import load_model_and_tokenizer
    from training.dataset import read_splits
    from training.loaders import blurr_dls
    from training.settings import TrainSettings

    assert callable(fastcore.all.typedispatch)
    sp = read_splits(tiny_data, 64, 0)
    labels = sp.labels
    model, tok = load_model_and_tokenizer(str(tiny_backbone), labels)
    dls = blurr_dls(sp.frames["train"], sp.frames["valid"], sp.y["train"], sp.y["valid"], labels, tok, model,
                    TrainSettings(max_length=24, batch_size=8))
    batch = dls.one_batch()
    assert set(batch[0]) >= {"input_ids", "attention_mask"}
    lengths = batch[0]["attention_mask"].sum(1)
    assert batch[0]["input_ids"].shape[1] == int(lengths.max()) <= 24, "dynamic padding: pad to the longest"
    assert isinstance(batch[0]["input_ids"], blurr_text.TextInput) or batch[0]["input_ids"].ndim == 2
    shown = []
    monkeypatch.setattr(blurr_text.data, "display_df", shown.append)  # blurr renders an HTML table
    dls.show_batch(dataloaders=dls, max_n=2, trunc_at=40)  # blurr's TextInput method through plum dispatch
    assert len(shown) == 1
    df = shown[0]
    assert list(df.columns) == ["text", "target"] and len(df) == 2
    assert all(set(t) <= set(labels) and t for t in df["target"])


def test_compat_load_metric_stand_in_explains_itself():
    import datasets

    import training.compat  # noqa: F401

    with pytest.raises(RuntimeError, match="squad"):
        datasets.load_metric("squad").compute(predictions=[], references=[])


@pytest.mark.slow
def test_real_backbone_on_sample_books_beats_most_frequent_labels(sample_books_model):
    m = json.loads((sample_books_model / "metrics.json").read_text())
    assert m["final"] == "transformer"
    assert m["transformer"]["micro_f1"] > m["most_frequent"]["micro_f1"] + 0.25, m["transformer"]
    assert m["transformer"]["macro_f1"] > m["most_frequent"]["macro_f1"] + 0.25, m["transformer"]


def test_time_budget_shrinks_the_schedule_and_still_anneals(tiny_backbone, tiny_data, tmp_path):
    from training import schedule, train

    out = tmp_path / "budget"
    assert train.main(["--data", str(tiny_data), "--out", str(out), "--backbone", str(tiny_backbone),
                       "--max-length", "32", "--epochs", "200", "--time-budget", "20s", "--no-blend"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["train"]["stopped_by_budget"] and m["train"]["steps"] < m["train"]["planned_steps"]
    assert m["train"]["total_seconds"] < 20 * 1.5, m["train"]
    # the evaluation's time is reserved from a timed forward pass (plus saving) and reported beside what it took
    assert m["train"]["eval_seconds_reserved"] >= schedule.POST_EVAL_SECONDS and m["train"]["eval_seconds"] > 0, m["train"]
    lrs = [h["lr"] for h in json.loads((out / "history.json").read_text())]
    head_lr = json.loads((out / "settings.json").read_text())["head_lr"]
    assert lrs[-1] < 0.05 * head_lr, "the shortened schedule must still anneal"


BAD_NUMBERS = [
    (["--lr", "nan"], "--lr: must be a number > 0 and <= 1"),
    (["--seed", "-1"], "--seed: must be an integer from 0"),
    (["--max-windows", "0"], "--max-windows: must be an integer from 1 to 1024"),
    (["--window-stride", "-3"], "--window-stride: must be an integer >= 0"),
    (["--threads", "0"], "--threads: must be an integer from 1 to 1024"),
    (["--batch-size", "-1"], "--batch-size: must be an integer from 1"),
    (["--time-budget", "0"], "--time-budget: must be a duration above zero"),
    (["--time-budget", "25x"], "--time-budget: not a duration: '25x'"),
    (["--train-layers", "0"], "--train-layers: must be all, auto or a number of layers from 1"),
    (["--train-layers", "two"], "--train-layers: must be all, auto or a number of layers from 1"),
    (["--train-layers", "1.5"], "--train-layers: must be all, auto or a number of layers from 1"),
]


def test_a_bad_number_stops_the_command_at_the_parser(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "training.train", "--data", str(tmp_path), "--epochs", "0"],
                          capture_output=True, text=True, cwd=config.ROOT, timeout=120)
    assert proc.returncode == 2 and "--epochs: must be a number > 0" in proc.stderr and "settings:" not in proc.stdout


def test_every_numeric_option_is_checked_at_the_parser(tmp_path, capsys):
    from tests.cases import parser_refuses
    from training import train

    for args, message in BAD_NUMBERS:
        parser_refuses(train.main, ["--data", str(tmp_path), *args], message, capsys)
    assert train.parse_duration("1.5h") == 5400 and train.parse_duration("25m") == 1500
    assert train.train_layers_arg("auto") == "auto" and train.train_layers_arg("3") == "3"
