"""How training combines the transformer with the TF-IDF + logistic-regression model: the one description of the
blend rule (docs/CONTRACTS.md gives the formula, `deployment.scoring.blend` computes it, the rest point here).

    from training.blend import choose_blend_rule, fit_blend
    rule, search = choose_blend_rule(p_model_valid, p_linear_valid, y_valid, labels, min_support=5)
    weight, label_weights, table = fit_blend(p_model_valid, p_linear_valid, y_valid, labels, 5, *rule)

The rule. Two ways of blending are candidates (BLEND_RULES): the probability blend with one weight,
`w * p_linear + (1 - w) * p_transformer`, and the log-odds blend with a weight per label,
`sigmoid(w_j * logit(p_linear) + (1 - w_j) * logit(p_transformer))`. Everything is chosen on `valid` and reported
on `test`:
1. the global weight is the one on the 11-point grid BLEND_WEIGHTS (0, 0.1, ..., 1) with the best
   (micro-F1 + macro-F1) / 2 on valid, the thresholds re-tuned for each weight;
2. with a weight per label, each label with at least `min_support` positives in valid takes the grid weight at
   which its blend reaches its best F1 (at its own best threshold), the middle of the widest run of ties; rarer
   labels keep the global weight;
3. which of the two rules ships is chosen by cross-fitting on valid (valid itself cannot choose: a weight per
   label always fits it better): CROSS_FIT_REPEATS times, valid is cut into CROSS_FIT_FOLDS folds, each rule fitted
   (weights and thresholds) on the other folds and scored on the held-out one; the best mean (micro + macro) / 2
   wins. With fewer than 2 x CROSS_FIT_FOLDS valid rows the log-odds rule is taken without cross-fitting;
4. a chosen weight of 0 everywhere ships the transformer alone (no `linear/`).

Why both: re-scoring saved models (same logits, everything chosen on valid), the log-odds blend with a weight per
label beat the probability blend with one weight by +0.5-1.0 micro / +1.6-2.3 macro-F1 on CMU models and +0.7 /
+0.8 on 150-label blurbs, and lost 0.7 / 0.6 on StackOverflow titles, where the transformer leads the linear model
by 5 points; the cross-fitted choice picked the better one on every saved model but one whose logits were
recomputed in another batch order (CMU margins are 0.1-0.6 points). `python -m bench.combine` re-scores every rule
on a trained model.
"""
from __future__ import annotations

import time

import numpy as np

BLEND_SPACE = "logit"   # the valid curve's blend and choose_* default (deployment.scoring.blend)
BLEND_RULES = (("probability", "one"), ("logit", "per"))   # (space, "one" weight or "per" label)
CROSS_FIT_FOLDS, CROSS_FIT_REPEATS = 5, 3
BLEND_WEIGHTS = np.round(np.linspace(0, 1, 11), 2)         # the linear model's weights tried: 0, 0.1, ..., 1


def choose_blend_weight(p_model, p_linear, y_valid, labels, min_support, space: str | None = None
                        ) -> tuple[float, list]:
    """The linear weight in [0, 1] with the best mean of micro- and macro-F1 on valid (thresholds re-tuned), for a
    blend in `space` (default BLEND_SPACE)."""
    from deployment.scoring import blend
    from training.metrics import evaluate, tune_thresholds

    table = []
    for w in BLEND_WEIGHTS:
        p = blend(p_model, p_linear, w, space or BLEND_SPACE)
        th = tune_thresholds(p, y_valid, labels, min_support)
        m = evaluate(p, y_valid, labels, th)
        table.append({"weight": float(w), "micro_f1": m["micro_f1"], "macro_f1": m["macro_f1"]})
    best = max(table, key=lambda r: (r["micro_f1"] + r["macro_f1"]) / 2)
    return best["weight"], table


def choose_label_weights(p_model, p_linear, y_valid, weight: float, min_support: int, space: str | None = None
                         ) -> np.ndarray:
    """A blend weight per label [L] (step 2 of the rule): the grid weight whose blend reaches the label's best F1
    on valid at its own best threshold, the middle of the widest run of weights that tie; labels with fewer than
    `min_support` positives in valid keep the global `weight`. The linear model is the stronger one on some
    labels and the weaker on others."""
    from deployment.scoring import blend
    from training.metrics import best_label_f1, widest_best

    f1 = np.stack([best_label_f1(blend(p_model, p_linear, w, space or BLEND_SPACE), y_valid) for w in BLEND_WEIGHTS])
    support = np.asarray(y_valid, dtype=bool).sum(0)
    return np.array([widest_best(f1[:, j], BLEND_WEIGHTS) if support[j] >= min_support else weight
                     for j in range(f1.shape[1])])


def fit_blend(p_model, p_linear, y, labels, min_support: int, space: str, kind: str):
    """The blend of rule (space, kind) fitted on (p_model, p_linear, y): the global weight, the weights per label
    (None for kind "one") and the global weight's search table."""
    w, table = choose_blend_weight(p_model, p_linear, y, labels, min_support, space=space)
    per = choose_label_weights(p_model, p_linear, y, w, min_support, space=space) if kind == "per" else None
    return w, per, table


def blend_choice_seconds(n_valid: int, n_labels: int, min_support: int, seed: int = 0) -> float:
    """What choosing the blend (choose_blend_rule, then the final fit) will take on a valid set of this shape: one
    fit of each rule on random scores of a training fold's size, timed, times the fits made."""
    rng = np.random.default_rng(seed)
    n_fit = max(2, n_valid - n_valid // CROSS_FIT_FOLDS)
    y = rng.random((n_fit, n_labels)) < 0.2
    p_model, p_linear = rng.random(y.shape), rng.random(y.shape)
    labels = [str(j) for j in range(n_labels)]
    t = time.perf_counter()
    for rule in BLEND_RULES:
        fit_blend(p_model, p_linear, y, labels, min_support, *rule)
    return (time.perf_counter() - t) * (CROSS_FIT_FOLDS * CROSS_FIT_REPEATS + 1)


def rule_name(rule) -> str:
    space, kind = rule
    weights = "a weight per label" if kind == "per" else "one weight"
    return f"{'log-odds' if space == 'logit' else 'probability'} blend, {weights}"


def choose_blend_rule(p_model, p_linear, y, labels, min_support: int, rules=BLEND_RULES,
                      folds: int = CROSS_FIT_FOLDS, repeats: int = CROSS_FIT_REPEATS) -> tuple[tuple, dict]:
    """The rule of `rules` with the best (micro-F1 + macro-F1) / 2 on held-out folds of valid (step 3 of the rule),
    the folds drawn `repeats` times (fixed seeds). Returns the rule and the search ({folds, repeats, scores per
    rule and repeat, mean}); with fewer than 2 * folds valid rows, the last rule and a search saying why."""
    from deployment.scoring import blend, decide
    from training.metrics import multilabel_report, threshold_vector, tune_thresholds

    y = np.asarray(y, dtype=bool)
    if len(y) < 2 * folds:
        return rules[-1], {"folds": folds, "repeats": repeats, "chosen": rule_name(rules[-1]),
                           "why": f"valid has {len(y)} rows, fewer than 2 x {folds} folds: not cross-fitted"}
    scores = {r: [] for r in rules}
    for seed in range(repeats):
        order = np.random.default_rng(seed).permutation(len(y))
        for rule in rules:
            pred = np.zeros(y.shape, dtype=bool)
            for held in np.array_split(order, folds):
                fit = np.setdiff1d(order, held)
                w, per, _ = fit_blend(p_model[fit], p_linear[fit], y[fit], labels, min_support, *rule)
                ws = w if per is None else per
                th = tune_thresholds(blend(p_model[fit], p_linear[fit], ws, rule[0]), y[fit], labels, min_support)
                pred[held] = decide(blend(p_model[held], p_linear[held], ws, rule[0]), threshold_vector(th, labels))
            m = multilabel_report(y, pred, labels)
            scores[rule].append((m["micro_f1"] + m["macro_f1"]) / 2)
    mean = {r: float(np.mean(v)) for r, v in scores.items()}
    best = max(rules, key=lambda r: mean[r])
    return best, {"folds": folds, "repeats": repeats, "chosen": rule_name(best),
                  "scores": {rule_name(r): v for r, v in scores.items()},
                  "mean": {rule_name(r): v for r, v in mean.items()}}
