"""Evaluation: the window pooling, thresholds and the blend chosen on `valid`, every metric reported on `test`.

    from training.evaluate import evaluate_saved, tune_and_evaluate
    ev = tune_and_evaluate(run, linear, settings)        # after fine-tuning: what the model dir will hold
    evaluate_saved("models/books")                      # a saved model dir on its test split, no training

Both read documents through the serving encoder (`training.inference`), score with the serving maths
(`deployment.scoring`: sigmoid, blend, decide), so a metric here is what a user of the bundle gets.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training import devices
from training.blend import BLEND_RULES, rule_name
from training.settings import TrainSettings, reading_windows


@dataclass
class Evaluation:
    results: dict                  # test metrics per model: transformer, baseline, blend, most_frequent
    final_name: str                # "transformer" or "blend": what the bundle will serve
    thresholds: dict               # tuned on valid for the final model
    weight: float                  # the linear model's blend weight (0: transformer alone)
    label_weights: np.ndarray | None   # ... per label (the global weight for labels too rare in valid)
    blend_table: list | None
    windows: dict                  # how documents are read (max_windows, stride, the pooling chosen on valid)
    rule: tuple = BLEND_RULES[-1]  # how the blend combines the two (space, "one" weight or "per" label)
    rule_search: dict | None = None   # the cross-fitted choice of it on valid


def tune_and_evaluate(run, linear, s: TrainSettings, rt: devices.Runtime) -> Evaluation:
    """Window pooling, thresholds and the blend (`training.blend`) from valid; every metric on test. The forward
    passes run where `run.model` is (the training device `rt`), in that device's batches and
    autocast (`devices.eval_batching`, `devices.eval_autocast`); only the logits come back."""
    from deployment.encoding import pool_windows
    from deployment.scoring import blend, sigmoid
    from training.blend import choose_blend_rule, fit_blend
    from training.inference import window_logits
    from training.metrics import evaluate, multilabel_report, top_frequency_baseline, tune_thresholds
    from training.tokencache import tokens_for

    ys, labels = run.ys, run.labels
    encoded = {k: tokens_for(run.encoder, run.texts[k]) for k in ("valid", "test")}   # tokenised once a run
    batch_size, max_tokens = devices.eval_batching(rt, s.eval_batch_size)
    wl = {k: window_logits(run.model, encoded[k], batch_size, autocast=devices.eval_autocast(rt),
                           max_tokens=max_tokens) for k in encoded}

    def probs(k: str, pooling: str) -> np.ndarray:
        return sigmoid(pool_windows(wl[k], encoded[k].owner, len(encoded[k]), pooling))

    search = []
    for pooling in (("mean", "max") if s.window_pooling == "auto" else (s.window_pooling,)):
        th = tune_thresholds(probs("valid", pooling), ys["valid"], labels, s.min_support)
        m = evaluate(probs("valid", pooling), ys["valid"], labels, th)
        search.append({"pooling": pooling, "valid_micro_f1": m["micro_f1"], "valid_macro_f1": m["macro_f1"]})
    pooling = max(search, key=lambda r: (r["valid_micro_f1"] + r["valid_macro_f1"]) / 2)["pooling"]
    windows = {**reading_windows(s, pooling).to_dict(), "search": search,
               "mean_windows": {k: float(np.mean(e.n_windows)) for k, e in encoded.items()},
               "truncated_fraction": {k: float(np.mean(e.truncated)) for k, e in encoded.items()}}
    p_valid, p_test = probs("valid", pooling), probs("test", pooling)
    th_model = tune_thresholds(p_valid, ys["valid"], labels, s.min_support)
    results = {"transformer": evaluate(p_test, ys["test"], labels, th_model)}
    if any(n > 1 for e in encoded.values() for n in e.n_windows):   # what reading whole documents changed
        first = {k: sigmoid(wl[k][e.first_windows()]) for k, e in encoded.items()}
        results["transformer_first_window"] = evaluate(
            first["test"], ys["test"], labels, tune_thresholds(first["valid"], ys["valid"], labels, s.min_support))
    ev = Evaluation(results, "transformer", th_model, 0.0, None, None, windows)
    if linear is not None:
        pl_valid, pl_test = linear.predict_proba(run.texts["valid"]), linear.predict_proba(run.texts["test"])
        th_lin = tune_thresholds(pl_valid, ys["valid"], labels, s.min_support)
        results["baseline"] = evaluate(pl_test, ys["test"], labels, th_lin)
        results["baseline"]["C"] = linear.c
        ev.rule, ev.rule_search = choose_blend_rule(p_valid, pl_valid, ys["valid"], labels, s.min_support)
        ev.weight, ev.label_weights, ev.blend_table = fit_blend(p_valid, pl_valid, ys["valid"], labels,
                                                                s.min_support, *ev.rule)
        ws = ev.weight if ev.label_weights is None else ev.label_weights
        if np.any(ws):
            space = ev.rule[0]
            ev.thresholds = tune_thresholds(blend(p_valid, pl_valid, ws, space), ys["valid"], labels, s.min_support)
            results["blend"] = evaluate(blend(p_test, pl_test, ws, space), ys["test"], labels, ev.thresholds)
            ev.final_name = "blend"
    results["most_frequent"] = multilabel_report(
        ys["test"], top_frequency_baseline(ys["train"], len(ys["test"])), labels)
    return ev


def model_names(ev: Evaluation) -> dict[str, str]:
    """The rows of metrics.md and the summary: each evaluated model in words."""
    how = (f"{rule_name(ev.rule)}; w={ev.weight:g} for rare labels" if ev.rule[1] == "per"
           else f"{rule_name(ev.rule)}, w={ev.weight:g}")
    return {"transformer": "transformer alone", "transformer_first_window": "transformer alone, first window only",
            "blend": f"ours: transformer + tf-idf ({how})",
            "baseline": "tf-idf + logreg baseline", "most_frequent": "most frequent labels"}


def evaluate_saved(model_dir: Path, log=print) -> dict:
    """Re-evaluate a saved model dir on its data's test split with its stored thresholds (no training), on the CPU,
    read as the run read it: windows of its settings, its eval batch size, and bf16 autocast where the run evaluated
    in bf16 and this CPU has native bf16 (the margin of a close threshold call is within bf16's rounding)."""
    import torch

    from deployment.encoding import Windows
    from deployment.scoring import sigmoid  # the serving maths: evaluation sees what users get
    from training.inference import predict_logits
    from training.metrics import evaluate, markdown_table
    from training.modeldir import load_saved

    saved = load_saved(model_dir)
    texts = saved.splits.texts["test"]
    windows = Windows.from_dict(saved.dir.settings.get("windows"))   # absent in dirs written before windows
    ran_bf16 = saved.dir.metrics.get("train", {}).get("eval_precision") == "bf16"
    autocast = torch.bfloat16 if ran_bf16 and devices.cpu_has_native_bf16() else None
    p = sigmoid(predict_logits(saved.model, saved.tokenizer, texts, saved.dir.max_length,
                               int(saved.dir.settings.get("eval_batch_size", 64)), windows=windows, autocast=autocast))
    if saved.linear is not None:
        p = saved.linear.blend(p, saved.linear.probabilities(texts))
    m = evaluate(p, saved.splits.y["test"], saved.dir.labels, saved.dir.thresholds_file)
    log(markdown_table({str(model_dir): m}))
    return m
