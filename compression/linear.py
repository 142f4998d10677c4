"""The linear (TF-IDF + logistic regression) part of a bundle: how it is stored (pruned, sparse, int8), chosen on
valid by the served blend's F1, and the whole bundle's size by part.

    compress_linear(md, staged, ev_texts, m, ev, model_path, tmp, num_threads, max_eval_texts, progress)
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compression import report as rep
from compression.bundle import Staged
from compression.choice import F1_TOL
from compression.export import CompressionError
from compression.report import Progress, file_size, human_bytes, split_texts
from compression.variants import Measured
from deployment.predictor import Predictor, load_session
from deployment.scoring import LinearComponent, decide, sigmoid
from training.modeldir import ModelDir


LINEAR_F1_TOL = 0.005                 # a linear variant may lose at most 0.5 point of served micro/macro-F1 on valid
LINEAR_KEEP = (1.0, 0.5, 0.3, 0.2, 0.15, 0.1, 0.05)   # shares of the largest |coefficients| a linear variant keeps
LINEAR_DTYPES = ("float16", "int8")   # how a variant stores the kept weights (int8: one scale per label)
BUNDLE_GOAL = 0.30                    # the whole bundle folder <= 30% of the fp32 checkpoint's weights


@dataclass
class LinearVariant:
    """One way of storing the linear part: its files (in the work folder) and the component they load as."""
    name: str
    keep: float | None                    # share of the dense model's coefficients kept (None: as trained)
    dtype: str
    json_path: Path
    npz_path: Path
    component: LinearComponent            # loaded back from its own files, as a server loads it


def prune_linear(linear: LinearComponent, keep: float) -> LinearComponent:
    """The `keep` share of the coefficients largest in |w| (one ranking over all labels), every other weight
    dropped, and the vocabulary cut to the terms a kept weight uses (so the tf-idf norm runs over those alone).

    One global ranking rather than a share per label: measured on the 150-label CMU model, a per-label share
    (or |w| x idf) lost 1-2 points more micro-F1 on valid at the same size, because the labels' weight scales
    differ. Moving the dropped weights' mean contribution into the intercept helped micro-F1 and hurt macro-F1."""
    indptr, labels, values = linear.coef_by_term()
    n_keep = int(round(keep * len(values)))
    if n_keep >= len(values):
        kept = np.ones(len(values), dtype=bool)
    else:
        kept = np.zeros(len(values), dtype=bool)
        kept[np.argpartition(-np.abs(values), n_keep)[:n_keep]] = True
    term_of = np.repeat(np.arange(len(linear.terms)), np.diff(indptr))
    used = np.bincount(term_of[kept], minlength=len(linear.terms)) > 0
    new_ptr = np.zeros(int(used.sum()) + 1, dtype=np.int64)
    np.cumsum(np.bincount(term_of[kept], minlength=len(linear.terms))[used], out=new_ptr[1:])
    terms = [t for t, u in zip(linear.terms, used) if u]
    return LinearComponent(linear.settings, terms, linear.idf[used], (new_ptr, labels[kept], values[kept]),
                           linear.intercept, source=f"{linear.source} (kept {keep:.0%})")


def _dense_twin(linear: LinearComponent) -> LinearComponent:
    """The same weights held dense: identical maths, but one BLAS product per text, so that measuring a dozen
    variants over a few thousand texts takes seconds. The chosen variant is re-checked through its sparse path."""
    indptr, labels, values = linear.coef_by_term()
    dense = np.zeros((linear.n_labels, len(linear.terms)), dtype=np.float32)
    dense[labels, np.repeat(np.arange(len(linear.terms)), np.diff(indptr))] = values
    return LinearComponent(linear.settings, linear.terms, linear.idf, dense, linear.intercept, source=linear.source)


def _linear_variants(dense: LinearComponent, work: Path):
    """The dense part as trained, then every kept share x storage type, each written and loaded back (one at a
    time: a dozen loaded variants of a 150-label model would hold a few hundred MB)."""
    work.mkdir(exist_ok=True)
    staged_npz = Path(dense.source)        # the staged linear.npz as trained, beside its linear.json
    yield LinearVariant("dense-float32", None, "float32", staged_npz.with_suffix(".json"), staged_npz, dense)
    for keep in LINEAR_KEEP:
        pruned = prune_linear(dense, keep)
        for dtype in LINEAR_DTYPES:
            name = f"csr-{dtype}" if keep >= 1.0 else f"keep{100 * keep:g}%-{dtype}"
            json_path, npz_path = work / f"{name}.json", work / f"{name}.npz"
            pruned.save(json_path, npz_path, dtype, extra={"pruning": {
                "kept_share": keep, "rule": "largest |coefficient| over all labels; vocabulary cut to the kept "
                                            "weights' terms", "dense_nnz": dense.nnz}})
            loaded = LinearComponent.load(json_path, npz_path, dense.n_labels)
            yield LinearVariant(name, keep, dtype, json_path, npz_path, loaded)


def _served_decisions(linear: LinearComponent, counts, vocab_of, p_model, thresholds) -> tuple:
    """(linear probabilities, blended decisions) of a variant on texts whose counts over the dense vocabulary are
    `counts`; `vocab_of` maps the dense vocabulary onto the variant's."""
    sub = counts.select(vocab_of) if vocab_of is not None else counts
    p_lin = sigmoid(_dense_twin(linear).logits_from_counts(sub)) if linear.sparse else sigmoid(linear.logits_from_counts(sub))
    return p_lin, decide(linear.blend(p_model, p_lin), thresholds)


def compress_linear(md: ModelDir, staged: Staged, ev_texts: "rep.EvalTexts", m: Measured, ev: dict,
                     model_path: Path, tmp: Path, num_threads: int | None, max_eval_texts: int | None,
                     progress: Progress) -> None:
    """Choose how the linear part is stored (pruned, sparse, quantised) on `valid`, report it on `test`, and
    size the whole bundle by part with its served F1 (the blend included).

    Every variant is scored as served: blended with the chosen int8 transformer's probabilities, against the
    bundle's thresholds. The smallest variant losing at most LINEAR_F1_TOL micro- and macro-F1 on valid against
    the dense part wins. Replaces the staged linear files and `staged.linear` / `m.linear_p` with the choice (so
    the bundle's own verification checks what is written), and adds `linear_compression`, `bundle` and
    `served` to eval.json (`ev`) and `metrics.served` to bundle.json."""
    thresholds = np.asarray(md.thresholds)
    choice = None
    if staged.linear is not None:
        choice = _choose_linear_variant(md, staged, ev_texts, m, ev, model_path, tmp, num_threads, max_eval_texts,
                                        thresholds, progress)
    chosen_name = ev["chosen"]
    served = {"transformer": chosen_name, "linear": choice["chosen"] if choice else None}
    if ev_texts.y_true is not None:
        p = staged.linear.blend(m.probs[chosen_name], m.linear_p) if staged.linear is not None else m.probs[chosen_name]
        served.update(rep.f1_scores(ev_texts.y_true, decide(p, thresholds)))
        pt = ev["variants"]["pytorch"]
        served.update(delta_micro_f1=served["micro_f1"] - pt["micro_f1"],
                      delta_macro_f1=served["macro_f1"] - pt["macro_f1"])
        ev["goals"]["served_f1_within_1pt"] = max(abs(served["delta_micro_f1"]), abs(served["delta_macro_f1"])) <= F1_TOL
        staged.info["metrics"]["served"] = {k: served[k] for k in ("micro_f1", "macro_f1")}
    # The bundle folder by part; bundle.json, eval.json and README.md are written after this and not counted.
    parts = {"model.onnx": file_size(model_path),
             "tokenizer": sum(file_size(tmp / n) or 0 for n in staged.info["tokenizer"]["files"])}
    if staged.linear is not None:
        parts.update({"linear.npz": file_size(tmp / "linear.npz"), "linear.json": file_size(tmp / "linear.json")})
    total = sum(parts.values())
    checkpoint = file_size(md.weights)
    ev["bundle"] = {"parts_bytes": parts, "total_bytes": total, "fp32_checkpoint_bytes": checkpoint,
                    "ratio_vs_fp32_checkpoint": total / checkpoint,
                    "not_counted": "bundle.json, eval.json, README.md (written last; a few KB)"}
    ev["goals"]["bundle_le_30pct_of_fp32_checkpoint"] = total <= BUNDLE_GOAL * checkpoint
    ev["served"] = served
    ev["linear_compression"] = choice
    lines = [f"whole bundle: {rep.human_mib(total)} = {100 * total / checkpoint:.1f}% of the fp32 checkpoint "
             f"({rep.human_mib(checkpoint)}): " + ", ".join(f"{k} {human_bytes(v)}" for k, v in parts.items())]
    if "micro_f1" in served:
        lines.append(f"served (transformer {chosen_name}" + (f" + linear part {served['linear']}" if served["linear"] else "")
                     + f"): micro-F1 {served['micro_f1']:.4f} ({served['delta_micro_f1']:+.4f} vs PyTorch), "
                     f"macro-F1 {served['macro_f1']:.4f} ({served['delta_macro_f1']:+.4f})")
    if choice and choice.get("table"):
        ev["table"] += "\n\nlinear part (F1 of the served blend; agree = decisions equal to the dense part's):\n" + choice["table"]
    ev["table"] += "\n\n" + "\n".join(lines)
    for line in ([choice["table"]] if choice and choice.get("table") else []) + lines:
        progress.say(line)


def _choose_linear_variant(md: ModelDir, staged: Staged, ev_texts: "rep.EvalTexts", m: Measured, ev: dict,
                           model_path: Path, tmp: Path, num_threads: int | None, max_eval_texts: int | None,
                           thresholds: np.ndarray, progress: Progress) -> dict:
    dense = staged.linear
    valid = split_texts(md, "valid", max_eval_texts)
    if valid is None:
        return {"chosen": "dense-float32", "tolerance_f1": LINEAR_F1_TOL, "variants": {},
                "reason": "no valid split in the model's data: the linear part is kept as trained (nothing to choose on)"}
    progress.say(f"linear part: {len(LINEAR_KEEP) * len(LINEAR_DTYPES)} variants, chosen on {valid.source}")
    # The transformer's probabilities on valid, computed as the bundle will serve them (the Predictor's own path).
    if not dense.transformer_unused:
        server = Predictor(load_session(model_path, num_threads), staged.encoder, staged.info, linear=None)
        p_model_valid = server.probabilities(valid.texts)[0]
    else:
        p_model_valid = np.zeros((len(valid.texts), len(md.labels)))   # weight 1: the transformer is never run
    have_test = ev_texts.y_true is not None
    splits = {"valid": (valid, p_model_valid)}
    if have_test:
        splits["test"] = (ev_texts, m.probs[ev["chosen"]])
    counts = {name: dense.counts(t.texts) for name, (t, _) in splits.items()}
    decided, rows, files, test_p = {}, {}, {}, {}
    for v in _linear_variants(dense, tmp / "_work" / "linear"):
        files[v.name] = (v.json_path, v.npz_path)
        vocab_of = None
        if v.component.terms != dense.terms:
            index = {t: i for i, t in enumerate(v.component.terms)}
            vocab_of = np.array([index.get(t, -1) for t in dense.terms], dtype=np.int64)
        r = {"bytes": file_size(v.npz_path) + file_size(v.json_path), "npz_bytes": file_size(v.npz_path), "nnz": v.component.nnz,
             "terms": len(v.component.terms), "kept_share": v.keep, "dtype": v.dtype,
             "storage": "dense" if not v.component.sparse else "csr"}
        for split, (texts, p_model) in splits.items():
            p_lin, d = _served_decisions(v.component, counts[split], vocab_of, p_model, thresholds)
            if v.name == "dense-float32":
                decided[split] = d
            else:
                r[f"{split}_agreement"] = float((d == decided[split]).mean())
            r.update({f"{split}_{k}": val for k, val in rep.f1_scores(texts.y_true, d).items()})
            if split == "test":
                test_p[v.name] = p_lin
        rows[v.name] = r
    base = rows["dense-float32"]

    def loss(name):
        return max(base["valid_micro_f1"] - rows[name]["valid_micro_f1"], base["valid_macro_f1"] - rows[name]["valid_macro_f1"], 0.0)

    eligible = [name for name in rows if loss(name) <= LINEAR_F1_TOL + 1e-12]
    chosen = min(eligible, key=lambda n: (rows[n]["bytes"], -rows[n].get("valid_agreement", 1.0)))
    reason = (f"{chosen}: the smallest ({human_bytes(rows[chosen]['bytes'])}, "
              f"{rows[chosen]['bytes'] / base['bytes']:.1%} of the dense part) of the variants losing at most "
              f"{LINEAR_F1_TOL:.3f} micro/macro-F1 of the served blend on valid (it lost {loss(chosen):.4f})")
    rejected = sorted((n for n in rows if n not in eligible), key=lambda n: rows[n]["bytes"])
    if rejected:
        reason += "; rejected for accuracy: " + ", ".join(f"{n} ({loss(n):.4f})" for n in rejected)
    if chosen != "dense-float32":
        json_path, npz_path = files[chosen]
        shutil.copy2(npz_path, tmp / "linear.npz")
        shutil.copy2(json_path, tmp / "linear.json")
        served = LinearComponent.load(tmp / "linear.json", tmp / "linear.npz", len(md.labels))
        if have_test:
            # The measurement used the dense twin; the sparse path a server runs must give the same probabilities.
            p_sparse = served.probabilities(ev_texts.texts)
            if not np.allclose(p_sparse, test_p[chosen], atol=1e-5):
                raise CompressionError(f"{tmp / 'linear.npz'}: the sparse linear part does not reproduce its measurement "
                                       f"(max diff {np.abs(p_sparse - test_p[chosen]).max():.2e})")
            m.linear_p = p_sparse
        else:
            m.linear_p = served.probabilities(ev_texts.texts)
        staged.linear = served
    for name, r in rows.items():
        r["chosen"] = name == chosen
    return {"chosen": chosen, "reason": reason, "tolerance_f1": LINEAR_F1_TOL, "chosen_on": valid.source,
            "reported_on": ev_texts.source if have_test else None, "weight": dense.weight, "variants": rows,
            "table": _linear_table(rows, chosen, have_test)}


def _linear_table(rows: dict, chosen: str, have_test: bool) -> str:
    head = ["linear variant", "bytes", "nnz", "terms", "valid F1 mi/ma", "agree"]
    if have_test:
        head += ["test F1 mi/ma", "agree"]
    table = [head]
    for name, r in rows.items():
        row = [name + (" *" if name == chosen else ""), human_bytes(r["bytes"]), f"{r['nnz']:,}", f"{r['terms']:,}",
               f"{r['valid_micro_f1']:.4f}/{r['valid_macro_f1']:.4f}", f"{r.get('valid_agreement', 1.0):.5f}"]
        if have_test:
            row += [f"{r['test_micro_f1']:.4f}/{r['test_macro_f1']:.4f}", f"{r.get('test_agreement', 1.0):.5f}"]
        table.append(row)
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
