"""How a trained model's two parts are combined and decoded: every rule tried for issue 11, re-scored side by side
on one model's valid and test outputs, in one run (no training).

    python -m bench.combine --model models/cmu_book_summaries
    python -m bench.combine --model models/books --out bench/results/combine_books.json

The model dir (`training.train --out`) holds the fine-tuned checkpoint, its TF-IDF part (`linear/`) and names the
prepared data it was trained on. Every window of valid and test is read once, as training's final evaluation read
them (the same windows, batch size and precision), so the first row reproduces the model's metrics.json. Then each
rule is chosen on valid and scored on test:

- window pooling: the mean of the windows' logits, their max, the average of the two;
- the combination: a probability or a log-odds blend, with one weight or a weight per label (the shipped one is
  the one the model's metrics.json records);
- the thresholds of the shipped combination: per label (each label's best F1; shipped), one global threshold,
  per label shrunk halfway to the global one, per label tuned for the best (micro + macro) / 2 (coordinate ascent
  from the shipped ones);
- decoding: at least one label per text (the one furthest above its threshold in log-odds when none passes);
- training's choice of the blend on valid (`training.blend.choose_blend_rule`: k-fold cross-fitting, weights and
  thresholds fitted on k-1 folds and scored on the held-out one, over several fold seeds) between the probability
  blend with one weight and the log-odds blend with a weight per label: for a model dir written before training
  made that choice, what it would ship now.

Prints a table (test micro/macro and the change against the shipped row) and writes JSON.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from bench import run_and_report
from deployment.cli_types import int_at_least

DEFAULT_OUT = Path("bench/results/combine.json")
RULES = (("probability", "one"), ("probability", "per"), ("logit", "one"), ("logit", "per"))


def window_outputs(saved, metrics: dict, progress: bool = True) -> dict:
    """Per split: the windows' logits, which text each window belongs to, and the TF-IDF part's probabilities."""
    import torch
    from tqdm import tqdm

    from deployment.encoding import Windows
    from training.inference import text_encoder, window_logits
    from training.tokencache import pack

    s = saved.dir.settings
    w = Windows.from_dict(s.get("windows"))
    encoder = text_encoder(saved.tokenizer, saved.model, s["max_length"], Windows(w.max_windows, w.stride, "mean"))
    autocast = torch.bfloat16 if metrics.get("train", {}).get("eval_precision") == "bf16" else None
    out = {}
    for k in ("valid", "test"):
        texts = saved.splits.texts[k]
        enc = encoder.encode(texts)
        bar = (lambda batches, what=f"{k} windows": tqdm(batches, unit="batch", desc=what, file=sys.stderr))
        wl = window_logits(saved.model, pack(enc, encoder), s["eval_batch_size"], autocast=autocast,
                           progress=bar if progress else None)
        out[k] = {"window_logits": wl, "owner": enc.owner, "n": len(enc),
                  "linear": saved.linear.probabilities(texts) if saved.linear is not None else None}
    return out


def pooled(outputs: dict, how: str) -> dict:
    """Per split, the texts' probabilities [n, L] from their windows: mean, max, or mean+max (their average)."""
    from deployment.encoding import pool_windows
    from deployment.scoring import sigmoid

    def one(o):
        wl = o["window_logits"].astype(np.float64)
        if how == "mean+max":
            return sigmoid((pool_windows(wl, o["owner"], o["n"], "mean")
                            + pool_windows(wl, o["owner"], o["n"], "max")) / 2)
        return sigmoid(pool_windows(wl, o["owner"], o["n"], how))
    return {k: one(o) for k, o in outputs.items()}


def at_least_one(probs, thresholds) -> np.ndarray:
    """Labels at or above their thresholds; a text with none gets the one furthest above (least below) its own."""
    from deployment.scoring import decide, logit

    th = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), probs.shape)
    pred = decide(probs, th)
    empty = np.flatnonzero(~pred.any(1))
    pred[empty, (logit(probs) - logit(th)).argmax(1)[empty]] = True
    return pred


def shipped_rule(metrics: dict) -> tuple[str, str]:
    """How the model's blend combines its parts, from its metrics.json (model dirs before the choice: log-odds with
    a weight per label, or before that a probability blend with one weight)."""
    return metrics.get("blend_space") or "probability", "per" if metrics.get("blend_label_weights") else "one"


def fit_combination(p_model, p_linear, y, labels, min_support: int, space: str, kind: str):
    """The weight (one, or one per label) of the blend (space, kind), chosen on (p_model, p_linear, y)."""
    from training.blend import fit_blend

    w, per, _ = fit_blend(p_model, p_linear, y, labels, min_support, space, kind)
    return w if per is None else per


def run(model_dir: Path, folds: int, repeats: int, progress: bool = True) -> dict:
    from deployment.scoring import blend, decide
    from training.blend import choose_blend_rule, rule_name
    from training.metrics import multilabel_report, threshold_vector, tune_thresholds
    from training.modeldir import ModelDirError, load_saved, read_model_dir

    model_dir = Path(model_dir)
    md = read_model_dir(model_dir)
    if not md.metrics:
        raise ModelDirError(f"{model_dir / 'metrics.json'} is missing: {model_dir} is not a complete model dir "
                            "(train it first)")
    if md.linear is None:
        raise ModelDirError(f"{model_dir} has no TF-IDF part (linear/): there is nothing to combine")
    saved = load_saved(model_dir)
    metrics = md.metrics
    labels, ys = saved.dir.labels, saved.splits.y
    min_support = int(saved.dir.settings.get("min_support", 5))
    outputs = window_outputs(saved, metrics, progress)
    pl = {k: o["linear"] for k, o in outputs.items()}
    rows = []

    def add(name, valid_pred, test_pred, **extra):
        v, t = (multilabel_report(ys[k], p, labels) for k, p in (("valid", valid_pred), ("test", test_pred)))
        rows.append({"rule": name, "valid_micro_f1": v["micro_f1"], "valid_macro_f1": v["macro_f1"],
                     "test_micro_f1": t["micro_f1"], "test_macro_f1": t["macro_f1"], **extra})

    def thresholded(p_valid, p_test, how="per-label", objective="label_f1"):
        th = tune_thresholds(p_valid, ys["valid"], labels, min_support, objective=objective)
        t = threshold_vector(th, labels) if how == "per-label" else th["global"]
        return decide(p_valid, t), decide(p_test, t)

    shipped_pooling = (saved.dir.settings.get("windows") or {}).get("pooling", "mean")
    shipped = shipped_rule(metrics)
    p_model = pooled(outputs, shipped_pooling)
    combined = {}
    for rule in RULES:
        ws = fit_combination(p_model["valid"], pl["valid"], ys["valid"], labels, min_support, *rule)
        combined[rule] = {k: blend(p_model[k], pl[k], ws, rule[0]) for k in ("valid", "test")}
    ship = combined[shipped]
    add(f"shipped: {rule_name(shipped)}, per-label thresholds ({shipped_pooling} of windows)",
        *thresholded(ship["valid"], ship["test"]), group="shipped")
    for name, p in (("transformer alone", p_model), ("TF-IDF alone", pl)):
        for how in ("per-label", "global"):
            add(f"{name}, {how} thresholds", *thresholded(p["valid"], p["test"], how), group="parts")
    for rule in RULES:
        if rule != shipped:
            add(f"{rule_name(rule)}, per-label thresholds",
                *thresholded(combined[rule]["valid"], combined[rule]["test"]), group="combination")
    th = tune_thresholds(ship["valid"], ys["valid"], labels, min_support)
    per, glob = threshold_vector(th, labels), th["global"]
    add("shipped blend, one global threshold", *thresholded(ship["valid"], ship["test"], "global"),
        group="thresholds")
    half = glob + 0.5 * (per - glob)
    add("shipped blend, per-label thresholds shrunk halfway to the global one",
        decide(ship["valid"], half), decide(ship["test"], half), group="thresholds")
    add("shipped blend, per-label thresholds for the best (micro + macro) / 2",
        *thresholded(ship["valid"], ship["test"], objective="mean_f1"), group="thresholds")
    add("shipped blend, at least one label per text", at_least_one(ship["valid"], per),
        at_least_one(ship["test"], per), group="decoding")
    for how in ("mean", "max", "mean+max"):
        if how == shipped_pooling:
            continue
        p = pooled(outputs, how)
        ws = fit_combination(p["valid"], pl["valid"], ys["valid"], labels, min_support, *shipped)
        add(f"shipped blend on the {how} of windows",
            *thresholded(blend(p["valid"], pl["valid"], ws, shipped[0]), blend(p["test"], pl["test"], ws, shipped[0])),
            group="pooling")
    picked, choice = choose_blend_rule(p_model["valid"], pl["valid"], ys["valid"], labels, min_support, folds=folds,
                                       repeats=repeats)
    add(f"training's cross-fitted choice ({folds} folds x {repeats}): the {rule_name(picked)}",
        *thresholded(combined[picked]["valid"], combined[picked]["test"]), group="choice")
    ref = rows[0]
    for r in rows:
        r["test_micro_delta"] = r["test_micro_f1"] - ref["test_micro_f1"]
        r["test_macro_delta"] = r["test_macro_f1"] - ref["test_macro_f1"]
    recorded = {k: metrics["model"][k] for k in ("micro_f1", "macro_f1")}
    return {"model": str(model_dir), "labels": len(labels), "rows": {k: len(ys[k]) for k in ("valid", "test")},
            "min_support": min_support, "recorded": recorded, "reproduced": bool(
                np.isclose(ref["test_micro_f1"], recorded["micro_f1"], atol=1e-9)
                and np.isclose(ref["test_macro_f1"], recorded["macro_f1"], atol=1e-9)),
            "shipped_rule": rule_name(shipped), "cross_fit": choice, "results": rows}


def table(result: dict) -> str:
    said = "reproduced" if result["reproduced"] else "NOT reproduced"
    lines = [f"{result['model']}: {result['labels']} labels, {result['rows']['valid']} valid / "
             f"{result['rows']['test']} test rows; metrics.json says test {result['recorded']['micro_f1']:.4f} / "
             f"{result['recorded']['macro_f1']:.4f} ({said})", "",
             "| rule (chosen on valid) | valid micro | valid macro | test micro | test macro | vs shipped (test) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in result["results"]:
        lines.append(f"| {r['rule']} | {r['valid_micro_f1']:.4f} | {r['valid_macro_f1']:.4f} | "
                     f"{r['test_micro_f1']:.4f} | {r['test_macro_f1']:.4f} | "
                     f"{100 * r['test_micro_delta']:+.2f} / {100 * r['test_macro_delta']:+.2f} |")
    cf = result["cross_fit"]
    if "mean" in cf:
        lines += ["", "cross-fitted (micro + macro) / 2 on valid: "
                  + ", ".join(f"{k} {v:.4f}" for k, v in cf["mean"].items())]
    else:
        lines += ["", f"not cross-fitted: {cf['why']}"]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.combine", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, required=True, help="a model dir written by python -m training.train --out")
    ap.add_argument("--folds", type=int_at_least(2, 50), default=5, help="folds of valid for the cross-fitted choice")
    ap.add_argument("--repeats", type=int_at_least(1, 20), default=3,
                    help="fold seeds the cross-fitted choice averages")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    a = ap.parse_args(argv)
    from training.modeldir import ModelDirError

    def measure(settings: dict) -> dict:
        result = run(settings["model"], settings["folds"], settings["repeats"], progress=not settings["no_progress"])
        return {**result, "table": table(result)}

    try:
        run_and_report("python -m bench.combine", measure, vars(a), a.out, argv)
    except ModelDirError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
