"""The TF-IDF + one-vs-rest logistic-regression model: the baseline every transformer run is compared with,
and the linear component that `training.train` can blend with the transformer.

    python -m training.baseline --data data/processed/books        # baseline metrics on the same split

Vectoriser settings are fixed to what the serving predictor re-implements in numpy (docs/CONTRACTS.md);
the regularisation strength C is chosen on `valid` from a small grid, so the baseline is tuned as honestly
as the transformer.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deployment.formats import dumps
from training.metrics import evaluate, markdown_table, tune_thresholds

TOKEN_PATTERN = r"(?u)\b\w\w+\b"


@dataclass
class LinearSettings:
    ngram_max: int = 2                  # word 1..n-grams
    min_df: int = 2                     # drop terms seen in fewer documents
    max_features: int = 50_000          # caps the bundle: coef is [labels, features] float32
    c_grid: tuple = (1.0, 4.0, 16.0)    # LogisticRegression C candidates, picked on valid
    class_weight: str | None = None     # "balanced" helps rare labels at some cost to precision
    seed: int = 42


@dataclass
class LinearModel:
    vectorizer: object
    classifier: object
    c: float
    settings: LinearSettings = field(default_factory=LinearSettings)

    def predict_proba(self, texts) -> np.ndarray:
        return _proba(self.classifier, self.vectorizer.transform(texts))

    def export(self, out_dir: Path, weight: float, label_weights=None, space: str = "probability") -> None:
        """Write linear.json + linear.npz (docs/CONTRACTS.md): everything a numpy-only server needs, with how it
        is blended (`weight`, a weight per label or None, the blend space).

        Dense float32, exactly as fitted: this is the reference that `compression.quantize` prunes, stores
        sparse and quantises for the bundle, choosing on `valid` (which it can read; training's export can't
        know the blend's final thresholds at this point)."""
        out_dir.mkdir(parents=True, exist_ok=True)
        vocab = self.vectorizer.vocabulary_
        terms = np.empty(len(vocab), dtype=object)
        for term, col in vocab.items():
            terms[col] = term
        coef = np.vstack([est.coef_.ravel() for est in self.classifier.estimators_]).astype(np.float32)
        intercept = np.array([est.intercept_[0] for est in self.classifier.estimators_], dtype=np.float32)
        np.savez_compressed(out_dir / "linear.npz", terms=terms.astype(str), idf=self.vectorizer.idf_.astype(np.float32),
                            coef=coef, intercept=intercept)
        spec = {"lowercase": True, "token_pattern": TOKEN_PATTERN, "ngram_range": [1, self.settings.ngram_max],
                "sublinear_tf": True, "norm": "l2", "weight": float(weight), "blend_space": space,
                **({"label_weights": [float(w) for w in label_weights]} if label_weights is not None else {}),
                "C": self.c,
                "n_features": int(len(vocab)), "coef_storage": "dense", "coef_dtype": "float32"}
        (out_dir / "linear.json").write_text(json.dumps(spec, indent=2))


def _proba(clf, X) -> np.ndarray:
    # OneVsRest with a constant label column returns a 1-column estimator; predict_proba handles it
    return np.asarray(clf.predict_proba(X), dtype=np.float64)


def _vectorizer(s: LinearSettings):
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(lowercase=True, token_pattern=TOKEN_PATTERN, ngram_range=(1, s.ngram_max),
                           sublinear_tf=True, norm="l2", min_df=s.min_df, max_features=s.max_features,
                           dtype=np.float32)


def fit_linear(train_texts, y_train, valid_texts, y_valid, labels, settings: LinearSettings | None = None,
               log=print) -> LinearModel:
    """Fit TF-IDF + OvR logistic regression, choosing C by the mean of micro- and macro-F1 on valid."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    s = settings or LinearSettings()
    vec = _vectorizer(s)
    X_train = vec.fit_transform(train_texts)
    X_valid = vec.transform(valid_texts)
    best = None
    for c in s.c_grid:
        clf = OneVsRestClassifier(LogisticRegression(C=c, solver="liblinear", class_weight=s.class_weight,
                                                     random_state=s.seed), n_jobs=1)
        clf.fit(X_train, y_train)
        p = _proba(clf, X_valid)
        th = tune_thresholds(p, y_valid, labels)
        m = evaluate(p, y_valid, labels, th)
        score = (m["micro_f1"] + m["macro_f1"]) / 2
        log(f"  tf-idf + logreg C={c:g}: valid micro-F1 {m['micro_f1']:.4f} macro-F1 {m['macro_f1']:.4f}")
        if best is None or score > best[0]:
            best = (score, c, clf)
    return LinearModel(vectorizer=vec, classifier=best[2], c=best[1], settings=s)


def run_baseline(data_dir: Path, settings: LinearSettings | None = None, log=print) -> dict:
    """Baseline metrics on `test` of a processed data set (thresholds tuned on `valid`)."""
    from training.dataset import read_splits

    sp = read_splits(data_dir)
    texts, ys, labels = sp.texts, sp.y, sp.labels
    t0 = time.time()
    model = fit_linear(texts["train"], ys["train"], texts["valid"], ys["valid"], labels, settings, log=log)
    th = tune_thresholds(model.predict_proba(texts["valid"]), ys["valid"], labels)
    metrics = evaluate(model.predict_proba(texts["test"]), ys["test"], labels, th)
    metrics["C"] = model.c
    metrics["seconds"] = round(time.time() - t0, 1)
    return metrics


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.baseline", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="a processed data dir (training.prepare output)")
    ap.add_argument("--out", type=Path, help="write the metrics JSON here")
    args = ap.parse_args(argv)
    from training.data import PrepareError

    try:
        m = run_baseline(args.data)
    except PrepareError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(markdown_table({"tf-idf + logreg": m}))
    if args.out:
        try:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(dumps(m, indent=2))
        except OSError as e:
            print(f"error: --out {args.out}: cannot write ({e.strerror})", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
