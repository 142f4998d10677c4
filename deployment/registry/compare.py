"""A fair comparison of two models: both scored on the same rows, rows neither of them trained on.

    from deployment.registry.compare import evaluation_rows, compare_decisions, verdict
    rows, facts = evaluation_rows(read_dataset(cand_data), read_dataset(inc_data))
    report = compare_decisions(rows, labels, cand_pred, inc_pred)      # decisions: bool [n, L] per model

Which rows: every text in the `test` split or the `feedback` slice of either model's prepared data, minus every
text either model trained on or tuned its thresholds on (`train`, `valid` of either). Splits are stable across
re-prepares (training/stable_split.py), so this is normally the old test split plus the new test and feedback
rows; when they are not (a data set split anew), the rows one model trained on are left out and counted
(`excluded_seen`). A text's true labels are the candidate's data's (the newest corrections), else the other's.
Texts are matched by a key that ignores case, punctuation and spacing, as duplicates are matched when data is
prepared (a near-duplicate of a training text is not a fair test row either).

What is reported, per slice (`test`, `feedback`, `all`): micro- and macro-F1 of each model (scikit-learn's
definitions, zero_division=0, over the union of both models' labels) with 95% intervals from a paired bootstrap
over rows (both models scored on the same resampled rows, so the interval of the difference is the difference's
own), per-label F1 deltas, and the decisions that changed (a label on a row that one model predicts and the other
does not: fixed when the candidate is now right, broken when it is now wrong). Pure numpy, no model loaded here;
reading dataset.csv is the csv module (the registry never imports training).
"""
from __future__ import annotations

import csv
import json
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from deployment.files import large_csv_fields

HELD_OUT = ("test", "feedback")      # splits no model trains on
SEEN = ("train", "valid")            # splits a model trained on or tuned its thresholds on
DEFAULT_BOOTSTRAP = 1000
DEFAULT_TOLERANCE = 0.01             # promote refuses a candidate more than this much worse (micro or macro F1)
EXAMPLES = 10
_KEY_DROP = re.compile(r"[^\w+#]+")


@dataclass(frozen=True)
class Row:
    text: str
    labels: tuple[str, ...]
    split: str


def text_key(text: str) -> str:
    """Case, punctuation and spacing ignored (what data preparation treats as a duplicate)."""
    return _KEY_DROP.sub("", unicodedata.normalize("NFKC", text).casefold())


def read_dataset(path: Path) -> list[Row]:
    """The rows of a prepared dataset.csv (text, labels as a JSON list, split); ValueError names a bad line."""
    rows = []
    with large_csv_fields(), open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"text", "labels", "split"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: no column {', '.join(sorted(missing))}: not a prepared dataset.csv")
        for record in reader:
            try:
                labels = json.loads(record["labels"])
            except ValueError:
                raise ValueError(f"{path} line {reader.line_num}: labels is not a JSON list") from None
            if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
                raise ValueError(f"{path} line {reader.line_num}: labels is not a JSON list of strings")
            rows.append(Row(record["text"], tuple(labels), record["split"]))
    return rows


def evaluation_rows(candidate: Sequence[Row], incumbent: Sequence[Row]) -> tuple[list[Row], dict]:
    """The rows neither model trained on (split `test` or `feedback`), and how they were found."""
    seen = {text_key(r.text) for r in (*candidate, *incumbent) if r.split in SEEN}
    held: dict[str, Row] = {}
    for rows in (incumbent, candidate):   # the candidate's labels win: its data holds the newest corrections
        for r in rows:
            if r.split in HELD_OUT:
                key = text_key(r.text)
                before = held.get(key)
                split = "feedback" if r.split == "feedback" or (before and before.split == "feedback") else "test"
                held[key] = Row(r.text, r.labels, split)
    rows = [r for key, r in held.items() if key not in seen]
    facts = {"candidate_held_out": sum(r.split in HELD_OUT for r in candidate),
             "incumbent_held_out": sum(r.split in HELD_OUT for r in incumbent),
             "excluded_seen": len(held) - len(rows),   # held out by one model's data, trained on by the other's
             "rows": len(rows), "test": sum(r.split == "test" for r in rows),
             "feedback": sum(r.split == "feedback" for r in rows)}
    return rows, facts


def union_labels(first: Sequence[str], second: Sequence[str]) -> list[str]:
    return list(dict.fromkeys([*first, *second]))


def truth_matrix(rows: Sequence[Row], labels: Sequence[str]) -> np.ndarray:
    index = {x: j for j, x in enumerate(labels)}
    y = np.zeros((len(rows), len(labels)), dtype=bool)
    for i, r in enumerate(rows):
        for x in r.labels:
            if x in index:
                y[i, index[x]] = True
    return y


def decision_matrix(predicted: Sequence[Sequence[str]], labels: Sequence[str]) -> np.ndarray:
    return truth_matrix([Row("", tuple(p), "") for p in predicted], labels)


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """F1 from counts (any shape), 0 where there is nothing to count (scikit-learn's zero_division=0)."""
    den = 2 * tp + fp + fn
    return np.divide(2 * tp, den, out=np.zeros(np.broadcast(tp, den).shape, dtype=float), where=den > 0)


def _counts(y: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row and label: true positive, false positive, false negative (float [n, L])."""
    return ((y & pred).astype(float), (~y & pred).astype(float), (y & ~pred).astype(float))


def scores(y: np.ndarray, pred: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(micro-F1, macro-F1, per-label F1) over rows, or over each resample when `weights` [B, n] counts rows."""
    tp, fp, fn = _counts(y, pred)
    if weights is None:
        tp, fp, fn = tp.sum(0), fp.sum(0), fn.sum(0)
    else:
        tp, fp, fn = weights @ tp, weights @ fp, weights @ fn
    per_label = _f1(tp, fp, fn)
    micro = _f1(tp.sum(-1), fp.sum(-1), fn.sum(-1))
    return micro, per_label.mean(-1), per_label


def _interval(values: np.ndarray) -> list[float]:
    lo, hi = np.percentile(values, [2.5, 97.5], axis=0)
    return [round(float(lo), 4), round(float(hi), 4)]


def bootstrap_weights(n: int, rounds: int, seed: int, chunk: int = 100):
    """Yields [<= chunk, n] arrays: how often each row is drawn in each resample (n rows drawn with replacement).
    In chunks, so 1,000 resamples of 20,000 rows never hold 160 MB at once."""
    rng = np.random.default_rng(seed)
    for start in range(0, rounds, chunk):
        draws = rng.integers(0, n, size=(min(chunk, rounds - start), n))
        yield np.stack([np.bincount(d, minlength=n) for d in draws]).astype(float)


def _bootstrap(y: np.ndarray, pred: np.ndarray, rounds: int, seed: int) -> tuple[np.ndarray, ...]:
    """(micro, macro, per-label) F1 of every resample: [B], [B], [B, L]. The same seed draws the same rows for
    either model: the pairing."""
    parts = [scores(y, pred, w) for w in bootstrap_weights(len(y), rounds, seed)]
    return tuple(np.concatenate([p[k] for p in parts]) for k in range(3))


def slice_report(y: np.ndarray, cand: np.ndarray, inc: np.ndarray, labels: Sequence[str], rounds: int,
                 seed: int) -> dict:
    """Both models' scores on these rows, their paired-bootstrap intervals and the per-label deltas."""
    c_micro, c_macro, c_label = scores(y, cand)
    i_micro, i_macro, i_label = scores(y, inc)
    out = {"rows": int(len(y)),
           "candidate": {"micro_f1": round(float(c_micro), 4), "macro_f1": round(float(c_macro), 4)},
           "incumbent": {"micro_f1": round(float(i_micro), 4), "macro_f1": round(float(i_macro), 4)},
           "delta": {"micro_f1": round(float(c_micro - i_micro), 4), "macro_f1": round(float(c_macro - i_macro), 4)}}
    label_ci = None
    if rounds > 0 and len(y) > 1:
        bc, bi = _bootstrap(y, cand, rounds, seed), _bootstrap(y, inc, rounds, seed)
        for k, metric in enumerate(("micro_f1", "macro_f1")):
            out["candidate"][f"{metric}_ci"] = _interval(bc[k])
            out["incumbent"][f"{metric}_ci"] = _interval(bi[k])
            out["delta"][f"{metric}_ci"] = _interval(bc[k] - bi[k])
        label_ci = np.percentile(bc[2] - bi[2], [2.5, 97.5], axis=0)
    support = y.sum(0)
    out["per_label"] = {
        lab: {"support": int(support[j]), "candidate_f1": round(float(c_label[j]), 4),
              "incumbent_f1": round(float(i_label[j]), 4), "delta": round(float(c_label[j] - i_label[j]), 4),
              **({"delta_ci": [round(float(label_ci[0, j]), 4), round(float(label_ci[1, j]), 4)]}
                 if label_ci is not None else {})}
        for j, lab in enumerate(labels)}
    return out


def changed_decisions(rows: Sequence[Row], y: np.ndarray, cand: np.ndarray, inc: np.ndarray,
                      labels: Sequence[str], examples: int = EXAMPLES) -> dict:
    """Decisions (row, label) the two models disagree on: fixed (the candidate is right), broken (it is wrong)."""
    differ = cand != inc
    fixed, broken = differ & (cand == y), differ & (inc == y)
    per_row = differ.sum(1)
    order = np.argsort(-(fixed.sum(1) + broken.sum(1)), kind="stable")
    shown = []
    for i in order[:examples]:
        if not per_row[i]:
            break
        names = np.asarray(labels)
        shown.append({"text": rows[i].text[:200], "slice": rows[i].split, "true": list(names[y[i]]),
                      "incumbent": list(names[inc[i]]), "candidate": list(names[cand[i]]),
                      "fixed": list(names[fixed[i]]), "broken": list(names[broken[i]])})
    return {"decisions": int(differ.sum()), "rows": int((per_row > 0).sum()), "fixed": int(fixed.sum()),
            "broken": int(broken.sum()), "examples": shown}


def compare_decisions(rows: Sequence[Row], labels: Sequence[str], cand: np.ndarray, inc: np.ndarray,
                      rounds: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> dict:
    """The comparison report over `rows` (see the module doc); `cand`, `inc`: bool [n, len(labels)]."""
    y = truth_matrix(rows, labels)
    split = np.array([r.split for r in rows])
    slices = {}
    for name, mask in (("all", np.ones(len(rows), bool)), ("test", split == "test"), ("feedback", split == "feedback")):
        if mask.any():
            slices[name] = slice_report(y[mask], cand[mask], inc[mask], labels, rounds, seed)
    return {"labels": list(labels), "bootstrap": {"rounds": rounds, "seed": seed, "paired": True, "level": 0.95},
            "slices": slices, "changed": changed_decisions(rows, y, cand, inc, labels)}


def verdict(report: dict, tolerance: float = DEFAULT_TOLERANCE) -> tuple[bool, str]:
    """(promotable, why): refused when the candidate's micro- or macro-F1 on all held-out rows is lower than the
    incumbent's by more than `tolerance`."""
    overall = report["slices"].get("all")
    if overall is None:
        return False, "no rows to compare on: neither model's data holds a test or feedback row the other did not train on"
    worse = [f"{m.replace('_', '-')} {overall['delta'][m]:+.4f}" for m in ("micro_f1", "macro_f1")
             if overall["delta"][m] < -tolerance]
    if worse:
        return False, f"the candidate is worse than the incumbent beyond the tolerance {tolerance:g}: {', '.join(worse)}"
    return True, (f"micro-F1 {overall['delta']['micro_f1']:+.4f}, macro-F1 {overall['delta']['macro_f1']:+.4f} "
                  f"on {overall['rows']} held-out rows (tolerance {tolerance:g})")


def format_report(report: dict) -> str:
    """The comparison as a few lines of text for the terminal."""
    lines = [f"{'slice':<9} {'rows':>5}  {'model':<10} {'micro-F1 [95% CI]':<24} {'macro-F1 [95% CI]':<24}"]
    for name, s in report["slices"].items():
        for who in ("incumbent", "candidate", "delta"):
            m = s[who]
            cells = [f"{m[k]:+.4f}" if who == "delta" else f"{m[k]:.4f}" for k in ("micro_f1", "macro_f1")]
            cis = [f" [{m[k + '_ci'][0]:+.3f}, {m[k + '_ci'][1]:+.3f}]" if k + "_ci" in m else ""
                   for k in ("micro_f1", "macro_f1")]
            lines.append(f"{name if who == 'incumbent' else '':<9} {s['rows'] if who == 'incumbent' else '':>5}  "
                         f"{who:<10} {cells[0] + cis[0]:<24} {cells[1] + cis[1]:<24}")
    per_label = report["slices"].get("all", {}).get("per_label", {})
    moved = sorted(per_label.items(), key=lambda kv: -abs(kv[1]["delta"]))[:8]
    if moved:
        text = ", ".join(f"{lab} {v['delta']:+.3f} (n={v['support']})" for lab, v in moved if v["delta"])
        lines.append(f"largest per-label F1 changes (all held-out rows): {text or 'none'}")
    c = report["changed"]
    lines.append(f"decisions changed: {c['decisions']} on {c['rows']} rows ({c['fixed']} fixed, {c['broken']} broken)")
    return "\n".join(lines)
