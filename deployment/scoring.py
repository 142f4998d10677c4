"""The model maths shared by training, compression and serving: sigmoid, the blend, the linear component.

One home for each formula, so that the probabilities training tunes thresholds on, the ones the compression
report measures and the ones every server returns are computed by the same lines. It needs only numpy (never
torch or scikit-learn), so the Space and any server can ship it beside `predictor.py`.

    from deployment.scoring import LinearComponent, blend, sigmoid
    p = blend(sigmoid(transformer_logits), linear.probabilities(texts), linear.weight)

Formats (`linear.json`, `linear.npz`): docs/CONTRACTS.md.
"""
from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np

DEFAULT_TOKEN_PATTERN = r"(?u)\b\w\w+\b"   # scikit-learn's TfidfVectorizer default, what training.baseline uses


class BundleError(RuntimeError):
    """A bundle that cannot be served: missing or corrupt files, or labels that don't match the model."""


def read_json(path: Path) -> Any:
    """A bundle file's JSON, or BundleError naming the file."""
    if not path.is_file():
        raise BundleError(f"{path}: file is missing")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise BundleError(f"{path}: not valid JSON ({type(exc).__name__}: {exc})") from exc


def sigmoid(x) -> np.ndarray:
    """Logistic function in float64; exp(-log(1 + exp(-x))) never overflows, unlike 1 / (1 + exp(-x))."""
    return np.exp(-np.logaddexp(0.0, -np.asarray(x, dtype=np.float64)))


def blend(p_model: np.ndarray, p_linear: np.ndarray | None, weight: float) -> np.ndarray:
    """The blended probability `w * p_linear + (1 - w) * p_model` (just `p_model` without a linear part)."""
    if p_linear is None:
        return p_model
    return weight * p_linear + (1.0 - weight) * p_model


class LinearComponent:
    """TF-IDF (scikit-learn's TfidfVectorizer semantics) + one-vs-rest logistic regression, in numpy.

    Reproduces TfidfVectorizer(lowercase=True, token_pattern=..., ngram_range=(a, b), sublinear_tf=...,
    norm="l2"|None) followed by sigmoid(x @ coef.T + intercept), from `linear.json` + `linear.npz`.
    """

    def __init__(self, settings: dict, terms: Sequence[str], idf: np.ndarray, coef: np.ndarray,
                 intercept: np.ndarray, source: str = "linear"):
        self.source = source
        self.weight = float(settings["weight"])
        self.lowercase = bool(settings.get("lowercase", True))
        self.token_re = re.compile(settings.get("token_pattern", DEFAULT_TOKEN_PATTERN))
        self.ngram_range = tuple(int(n) for n in settings.get("ngram_range", (1, 1)))
        self.sublinear_tf = bool(settings.get("sublinear_tf", False))
        self.norm = settings.get("norm", "l2")
        self.vocabulary = {str(term): i for i, term in enumerate(terms)}
        self.idf = np.asarray(idf, dtype=np.float64)
        self.coef = np.asarray(coef, dtype=np.float64)
        self.intercept = np.asarray(intercept, dtype=np.float64)

    @classmethod
    def load(cls, json_path: Path, npz_path: Path, n_labels: int) -> "LinearComponent":
        """Read and check `linear.json` + `linear.npz` for a model with `n_labels` outputs (BundleError if bad)."""
        settings = read_json(json_path)
        if not isinstance(settings, dict) or "weight" not in settings:
            raise BundleError(f"{json_path}: expected an object with at least 'weight'")
        weight = settings["weight"]
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0.0 <= float(weight) <= 1.0:
            raise BundleError(f"{json_path}: 'weight' must be a number in [0, 1], got {weight!r}")
        if settings.get("norm", "l2") not in ("l2", None):
            raise BundleError(f"{json_path}: unsupported norm {settings.get('norm')!r} (only 'l2' or null)")
        ngram = settings.get("ngram_range", [1, 1])
        if not (isinstance(ngram, (list, tuple)) and len(ngram) == 2
                and all(isinstance(n, int) and not isinstance(n, bool) for n in ngram) and 1 <= ngram[0] <= ngram[1]):
            raise BundleError(f"{json_path}: bad ngram_range {ngram!r}")
        pattern = settings.get("token_pattern", DEFAULT_TOKEN_PATTERN)
        try:
            re.compile(pattern)
        except (re.error, TypeError) as exc:
            raise BundleError(f"{json_path}: bad token_pattern ({exc})") from exc
        if not npz_path.is_file():
            raise BundleError(f"{npz_path}: file is missing")
        try:
            with np.load(npz_path, allow_pickle=False) as npz:
                arrays = {key: npz[key] for key in ("terms", "idf", "coef", "intercept")}
        except KeyError as exc:
            raise BundleError(f"{npz_path}: missing array {exc}") from exc
        except Exception as exc:  # zip/pickle/format errors all mean the same thing: unreadable file
            raise BundleError(f"{npz_path}: cannot read ({type(exc).__name__}: {exc})") from exc
        terms, idf, coef, intercept = (arrays[k] for k in ("terms", "idf", "coef", "intercept"))
        n_terms = len(terms)
        if idf.shape != (n_terms,) or coef.shape != (n_labels, n_terms) or intercept.shape != (n_labels,):
            raise BundleError(
                f"{npz_path}: shapes don't match {n_labels} labels x {n_terms} terms "
                f"(idf {idf.shape}, coef {coef.shape}, intercept {intercept.shape})")
        return cls(settings, terms.tolist(), idf, coef, intercept, source=str(npz_path))

    def _terms(self, text: str) -> list[str]:
        if self.lowercase:
            text = text.lower()
        tokens = self.token_re.findall(text)
        lo, hi = self.ngram_range
        grams = list(tokens) if lo == 1 else []
        for n in range(max(lo, 2), min(hi, len(tokens)) + 1):
            grams.extend(" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1))
        return grams

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        out = np.empty((len(texts), len(self.intercept)), dtype=np.float64)
        for row, text in enumerate(texts):
            counts = Counter(self.vocabulary[t] for t in self._terms(text) if t in self.vocabulary)
            if not counts:
                out[row] = self.intercept
                continue
            cols = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
            tf = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
            if self.sublinear_tf:
                tf = np.log(tf) + 1.0
            values = tf * self.idf[cols]
            if self.norm == "l2":
                norm = math.sqrt(float(values @ values))
                if norm > 0:
                    values /= norm
            out[row] = self.coef[:, cols] @ values + self.intercept
        return out

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        return sigmoid(self.logits(texts))
