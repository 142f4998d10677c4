"""The model maths shared by training, compression and serving: sigmoid, the blend, the linear component.

One home for each formula, so that the probabilities training tunes thresholds on, the ones the compression
report measures and the ones every server returns are computed by the same lines. It needs only numpy (never
torch or scikit-learn), so the Space and any server can ship it beside `predictor.py`.

    from deployment.scoring import LinearComponent, decide, sigmoid
    p = linear.blend(sigmoid(transformer_logits), linear.probabilities(texts))
    predicted = decide(p, thresholds)      # bool [n, L]

Formats (`linear.json`, `linear.npz`): docs/CONTRACTS.md.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
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


def logit(p) -> np.ndarray:
    """The log-odds of probabilities, in float64, clipped to 1e-15 from 0 and 1 (|logit| <= 34.5)."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-15, 1.0 - 1e-15)
    return np.log(p) - np.log1p(-p)


BLEND_SPACES = ("probability", "logit")   # linear.json "blend_space"; absent: "probability" (bundles before it)


def blend(p_model: np.ndarray, p_linear: np.ndarray | None, weight, space: str = "probability") -> np.ndarray:
    """The blended probability (just `p_model` without a linear part). `weight` is the linear model's weight, one
    for every label or one per label (an array [L]). In "probability" space `w * p_linear + (1 - w) * p_model`; in
    "logit" space `sigmoid(w * logit(p_linear) + (1 - w) * logit(p_model))`, a weighted product of the two models'
    odds: a label one model is sure of and the other doubts keeps more of the sure one's evidence."""
    if p_linear is None:
        return p_model
    w = np.asarray(weight, dtype=np.float64)
    if space == "probability":
        return w * p_linear + (1.0 - w) * p_model
    if space != "logit":
        raise ValueError(f"blend space must be one of {BLEND_SPACES}, got {space!r}")
    return sigmoid(w * logit(p_linear) + (1.0 - w) * logit(p_model))


def decide(probs, thresholds) -> np.ndarray:
    """The predicted labels: True where a score reaches its label's threshold (`thresholds` one number, or one per
    label [L] aligned with the scores' columns). Every consumer decides with this: training's tuning and metrics,
    the compression report, the predictor, the benchmarks."""
    return np.asarray(probs) >= np.asarray(thresholds, dtype=np.float64)


COEF_STORAGES = ("dense", "csr")           # linear.json "coef_storage"; absent means "dense" (every bundle before it)
COEF_DTYPES = {"dense": ("float32",), "csr": ("float32", "float16", "int8")}
LOGIT_BLOCK = 16                            # texts per dense product at most
GATHER_PAIRS = 1 << 17                      # (term, label) weights one sparse product gathers at most (~5 MB of
                                            # temporaries; a text needing more runs alone): bounds RSS whatever the
                                            # texts' length and the labels' count (a 149-label model gathers ~47k a text)


@dataclass(frozen=True)
class TermCounts:
    """Raw term counts of a batch of texts over one vocabulary, as CSR rows (one row per text, columns sorted)."""
    indptr: np.ndarray      # int64 [n + 1]
    cols: np.ndarray        # int32 [nnz] vocabulary columns
    counts: np.ndarray      # float32 [nnz]

    def __len__(self) -> int:
        return len(self.indptr) - 1

    def select(self, keep: np.ndarray) -> "TermCounts":
        """The same counts over a smaller vocabulary: `keep` [V_old] is each old column's new index, or -1 (dropped)."""
        new = keep[self.cols]
        kept = new >= 0
        rows = np.repeat(np.arange(len(self)), np.diff(self.indptr))[kept]
        indptr = np.zeros(len(self) + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=len(self)), out=indptr[1:])
        cols, counts = new[kept].astype(np.int32), self.counts[kept]
        order = np.lexsort((cols, rows))          # keep the columns sorted within each row
        return TermCounts(indptr, cols[order], counts[order])


class LinearComponent:
    """TF-IDF (scikit-learn's TfidfVectorizer semantics) + one-vs-rest logistic regression, in numpy float32.

    Reproduces TfidfVectorizer(lowercase=True, token_pattern=..., ngram_range=(a, b), sublinear_tf=...,
    norm="l2"|None) followed by sigmoid(x @ coef.T + intercept), from `linear.json` + `linear.npz`.
    The coefficients come dense ([L, V] float32: the training export, and every bundle written before compression
    pruned them) or sparse (the kept weights as CSR rows per term, float32, float16 or int8 with a per-label
    scale). Sparse weights stay in memory in the type they are stored in (an int8 model holds one byte a weight and
    applies each label's scale to the summed logit); a text's sparse tf-idf row meets only its terms' weights.
    """

    def __init__(self, settings: dict, terms: Sequence[str], idf: np.ndarray, coef, intercept: np.ndarray,
                 source: str = "linear"):
        """`coef`: a dense [L, V] array, or the transposed matrix [V, L] as CSR rows, one per term:
        `(indptr [V+1], labels [nnz], values [nnz])` (the `coef_by_term()` layout, what linear.npz stores), with
        values float32/float16, or int8 and a fourth item, the per-label scale [L] (weight = value * scale)."""
        self.source = source
        self.settings = dict(settings)
        self.weight = float(settings["weight"])          # the blend weight of every label without its own
        self.space = settings.get("blend_space", "probability")
        per_label = settings.get("label_weights")
        self.label_weights = (np.full(len(intercept), self.weight) if per_label is None
                              else np.asarray(per_label, dtype=np.float64))
        self.lowercase = bool(settings.get("lowercase", True))
        self.token_re = re.compile(settings.get("token_pattern", DEFAULT_TOKEN_PATTERN))
        self.ngram_range = tuple(int(n) for n in settings.get("ngram_range", (1, 1)))
        self.sublinear_tf = bool(settings.get("sublinear_tf", False))
        self.norm = settings.get("norm", "l2")
        self.terms = [str(t) for t in terms]
        self.vocabulary = {term: i for i, term in enumerate(self.terms)}
        self.idf = np.asarray(idf, dtype=np.float32)
        self.intercept = np.asarray(intercept, dtype=np.float32)
        if isinstance(coef, tuple):
            indptr, labels, values, *scale = coef
            values = np.asarray(values)
            if values.dtype not in (np.float32, np.float16, np.int8):
                values = values.astype(np.float32)
            if (values.dtype == np.int8) != bool(scale):
                raise ValueError("int8 coefficients need a per-label scale, and only they take one")
            self._term_ptr = np.asarray(indptr, dtype=np.int64 if len(values) >= 2**31 else np.int32)
            # The label of each weight in the narrowest type that holds it (uint8 up to 256 labels: on a 149-label
            # model this array is the largest in memory, 4.3 MB instead of 8.5 as int16); numpy widens on use.
            n = len(self.intercept)
            self._term_labels = np.asarray(labels, dtype=np.uint8 if n <= 2**8 else np.int16 if n <= 2**15 else np.int32)
            self._term_values = values
            self._label_scale = np.asarray(scale[0], dtype=np.float32) if scale else None
            self._dense_t = None
        else:
            # Dense: held as [V, L] so that one text's columns are rows, read contiguously.
            self._dense_t = np.ascontiguousarray(np.asarray(coef, dtype=np.float32).T)

    # ------------------------------------------------------------------ blending
    def blend(self, p_model: np.ndarray, p_linear: np.ndarray) -> np.ndarray:
        """The served probability: the transformer's `p_model` blended with this model's `p_linear` as
        linear.json says (its space, its weight per label)."""
        return blend(p_model, p_linear, self.label_weights, self.space)

    @property
    def transformer_unused(self) -> bool:
        """Every label's weight is 1: the blend is this model alone and the transformer need not run."""
        return bool(np.all(self.label_weights >= 1.0))

    # ------------------------------------------------------------------ coefficients
    @property
    def n_labels(self) -> int:
        return len(self.intercept)

    @property
    def sparse(self) -> bool:
        return self._dense_t is None

    def coef_by_term(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The coefficients as float32 CSR rows per term, `(indptr [V+1], labels [nnz], values [nnz])`; a dense
        matrix gives every non-zero entry."""
        if self._dense_t is None:
            values = self._term_values.astype(np.float32)
            if self._label_scale is not None:
                values *= self._label_scale[self._term_labels]
            return self._term_ptr.astype(np.int64), self._term_labels, values
        terms, labels = np.nonzero(self._dense_t)
        indptr = np.zeros(len(self.terms) + 1, dtype=np.int64)
        np.cumsum(np.bincount(terms, minlength=len(self.terms)), out=indptr[1:])
        return indptr, labels.astype(np.int32), self._dense_t[terms, labels].copy()

    @property
    def nnz(self) -> int:
        """Stored coefficients (all L x V when dense)."""
        return int(self._dense_t.size if self._dense_t is not None else len(self._term_values))

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, json_path: Path, npz_path: Path, n_labels: int) -> "LinearComponent":
        """Read and check `linear.json` + `linear.npz` for a model with `n_labels` outputs (BundleError if bad)."""
        settings = read_json(json_path)
        if not isinstance(settings, dict) or "weight" not in settings:
            raise BundleError(f"{json_path}: expected an object with at least 'weight'")
        weight = settings["weight"]
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0.0 <= float(weight) <= 1.0:
            raise BundleError(f"{json_path}: 'weight' must be a number in [0, 1], got {weight!r}")
        if settings.get("blend_space", "probability") not in BLEND_SPACES:
            raise BundleError(f"{json_path}: 'blend_space' must be one of {list(BLEND_SPACES)}, "
                              f"got {settings.get('blend_space')!r}")
        per_label = settings.get("label_weights")
        if per_label is not None and not (
                isinstance(per_label, list) and len(per_label) == n_labels
                and all(isinstance(x, (int, float)) and not isinstance(x, bool) and 0.0 <= x <= 1.0
                        for x in per_label)):
            raise BundleError(f"{json_path}: 'label_weights' must be a list of {n_labels} numbers in [0, 1] "
                              f"(one per label)")
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
        storage = settings.get("coef_storage", "dense")
        if storage not in COEF_STORAGES:
            raise BundleError(f"{json_path}: unknown coef_storage {storage!r} (expected one of {list(COEF_STORAGES)})")
        dtype = settings.get("coef_dtype", "float32")
        if dtype not in COEF_DTYPES[storage]:
            raise BundleError(f"{json_path}: coef_dtype {dtype!r} is not one of {list(COEF_DTYPES[storage])} "
                              f"for coef_storage {storage!r}")
        keys = (("terms", "idf", "intercept", "coef") if storage == "dense" else
                ("terms", "idf", "intercept", "coef_indptr", "coef_labels", "coef_data")
                        + (("coef_scale",) if dtype == "int8" else ()))
        if not npz_path.is_file():
            raise BundleError(f"{npz_path}: file is missing")
        try:
            with np.load(npz_path, allow_pickle=False) as npz:
                arrays = {key: npz[key] for key in keys}
        except KeyError as exc:
            raise BundleError(f"{npz_path}: missing array {exc} (linear.json says coef_storage {storage!r}, "
                              f"coef_dtype {dtype!r})") from exc
        except Exception as exc:  # zip/pickle/format errors all mean the same thing: unreadable file
            raise BundleError(f"{npz_path}: cannot read ({type(exc).__name__}: {exc})") from exc
        terms, idf, intercept = arrays["terms"], arrays["idf"], arrays["intercept"]
        n_terms = len(terms)
        if idf.shape != (n_terms,) or intercept.shape != (n_labels,):
            raise BundleError(f"{npz_path}: shapes don't match {n_labels} labels x {n_terms} terms "
                              f"(idf {idf.shape}, intercept {intercept.shape})")
        if storage == "dense":
            coef = arrays["coef"]
            if coef.shape != (n_labels, n_terms):
                raise BundleError(f"{npz_path}: shapes don't match {n_labels} labels x {n_terms} terms "
                                  f"(coef {coef.shape})")
        else:
            coef = _check_csr(npz_path, arrays, dtype, n_labels, n_terms)
        return cls(settings, terms.tolist(), idf, coef, intercept, source=str(npz_path))

    def save(self, json_path: Path, npz_path: Path, dtype: str = "float32", extra: dict | None = None) -> None:
        """Write this component as CSR rows in `dtype` (float32, float16, or int8 with a per-label scale)."""
        if dtype not in COEF_DTYPES["csr"]:
            raise ValueError(f"dtype must be one of {COEF_DTYPES['csr']}, got {dtype!r}")
        indptr, labels, values = self.coef_by_term()
        arrays = {"terms": np.asarray(self.terms, dtype=str), "idf": self.idf, "intercept": self.intercept}
        if dtype == "int8":
            stored, arrays["coef_scale"] = quantize_int8_per_label(labels, values, self.n_labels)
        else:
            stored = values.astype(dtype)
        # Weights that round to exactly 0 in the stored type are left out: the file then says what it serves,
        # and a reader neither holds nor multiplies them (int8 rounds ~40% of a dense model's weights to 0).
        nonzero = stored != 0
        counts = np.bincount(np.repeat(np.arange(len(self.terms)), np.diff(indptr))[nonzero], minlength=len(self.terms))
        indptr = np.concatenate([[0], np.cumsum(counts)])
        arrays.update(coef_indptr=indptr.astype(np.int32), coef_data=stored[nonzero],
                      coef_labels=labels[nonzero].astype(np.int16 if self.n_labels < 2**15 else np.int32))
        values = stored[nonzero]
        np.savez_compressed(npz_path, **arrays)
        settings = {k: v for k, v in self.settings.items() if k not in ("coef_storage", "coef_dtype")}
        settings.update(coef_storage="csr", coef_dtype=dtype, n_features=len(self.terms), nnz=len(values), **(extra or {}))
        json_path.write_text(json.dumps(settings, indent=2))

    # ------------------------------------------------------------------ inference
    def _terms(self, text: str) -> list[str]:
        if self.lowercase:
            text = text.lower()
        tokens = self.token_re.findall(text)
        lo, hi = self.ngram_range
        grams = list(tokens) if lo == 1 else []
        for n in range(max(lo, 2), min(hi, len(tokens)) + 1):
            grams.extend(" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1))
        return grams

    def counts(self, texts: Sequence[str]) -> TermCounts:
        """Each text's raw counts of this vocabulary's terms (what TfidfVectorizer counts before weighting)."""
        indptr = np.zeros(len(texts) + 1, dtype=np.int64)
        cols: list[np.ndarray] = []
        values: list[np.ndarray] = []
        vocab = self.vocabulary
        for row, text in enumerate(texts):
            found = Counter(vocab[t] for t in self._terms(text) if t in vocab)
            c = np.fromiter(sorted(found), dtype=np.int32, count=len(found))
            cols.append(c)
            values.append(np.fromiter((found[j] for j in c.tolist()), dtype=np.float32, count=len(c)))
            indptr[row + 1] = indptr[row] + len(c)
        empty32 = np.zeros(0, dtype=np.int32)
        return TermCounts(indptr, np.concatenate(cols) if cols else empty32,
                          np.concatenate(values) if values else empty32.astype(np.float32))

    def tfidf(self, counts: TermCounts) -> np.ndarray:
        """The tf-idf values [nnz] float32 for `counts` (sublinear tf, idf, then each row's l2 norm)."""
        tf = counts.counts.astype(np.float32)
        if self.sublinear_tf:
            tf = np.log(tf) + np.float32(1.0)
        values = tf * self.idf[counts.cols]
        if self.norm == "l2" and len(values):
            rows = np.repeat(np.arange(len(counts)), np.diff(counts.indptr))
            norms = np.sqrt(np.bincount(rows, weights=values.astype(np.float64) ** 2, minlength=len(counts)))
            norms[norms == 0] = 1.0
            values = (values / norms[rows]).astype(np.float32)
        return values

    def logits_from_counts(self, counts: TermCounts) -> np.ndarray:
        """Logits [n, labels] float32 from term counts over this vocabulary (see `counts`)."""
        n, n_labels = len(counts), self.n_labels
        values = self.tfidf(counts)
        out = np.empty((n, n_labels), dtype=np.float32)
        for start, stop in self._blocks(counts):
            lo, hi = counts.indptr[start], counts.indptr[stop]
            cols, vals = counts.cols[lo:hi], values[lo:hi]
            if self._dense_t is not None:
                bounds = counts.indptr[start:stop + 1] - lo
                block = np.zeros((stop - start, n_labels), dtype=np.float32)
                for r in range(stop - start):  # one text: its terms' rows of [V, L], weighted and summed
                    a, b = bounds[r], bounds[r + 1]
                    if b > a:
                        block[r] = vals[a:b] @ self._dense_t[cols[a:b]]
            else:
                rows = np.repeat(np.arange(stop - start), np.diff(counts.indptr[start:stop + 1]))
                # Gather every (label, weight) stored for each of the block's terms, then sum per (text, label).
                first = self._term_ptr[cols]
                lens = self._term_ptr[cols + 1] - first
                ends = np.cumsum(lens)
                pos = np.repeat(first - ends + lens, lens) + np.arange(ends[-1] if len(ends) else 0)
                contrib = self._term_values[pos].astype(np.float32) * np.repeat(vals, lens)
                keys = np.repeat(rows, lens) * n_labels + self._term_labels[pos]
                block = np.bincount(keys, weights=contrib, minlength=(stop - start) * n_labels)
                block = block.reshape(stop - start, n_labels)
                if self._label_scale is not None:
                    block = block * self._label_scale
                block = block.astype(np.float32)
            out[start:stop] = block + self.intercept
        return out

    def _blocks(self, counts: TermCounts) -> list[tuple[int, int]]:
        """Consecutive text ranges for one product each: LOGIT_BLOCK texts (dense), or texts whose terms gather at
        most GATHER_PAIRS stored weights together (sparse; a text over the cap is a block of its own)."""
        n = len(counts)
        if self._dense_t is not None:
            return [(start, min(start + LOGIT_BLOCK, n)) for start in range(0, n, LOGIT_BLOCK)]
        per_term = self._term_ptr[counts.cols + 1] - self._term_ptr[counts.cols]
        done = np.concatenate([[0], np.cumsum(per_term, dtype=np.int64)])[counts.indptr]   # pairs before each text
        blocks, start = [], 0
        while start < n:
            stop = int(np.searchsorted(done, done[start] + GATHER_PAIRS, side="right")) - 1
            stop = min(max(stop, start + 1), n)
            blocks.append((start, stop))
            start = stop
        return blocks

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        return self.logits_from_counts(self.counts(texts))

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        return sigmoid(self.logits(texts))


def quantize_int8_per_label(labels: np.ndarray, values: np.ndarray, n_labels: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 with one scale per label: `values ~= q * scale[labels]`, scale = the label's max |w| / 127."""
    peak = np.zeros(n_labels, dtype=np.float32)
    np.maximum.at(peak, labels, np.abs(values).astype(np.float32))
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(values / scale[labels]), -127, 127).astype(np.int8)
    return q, scale


def _check_csr(npz_path: Path, arrays: dict, dtype: str, n_labels: int, n_terms: int) -> tuple:
    """CSR rows per term as stored (int8 with its per-label scale), checked; BundleError naming the file when
    inconsistent."""
    indptr, labels, data = arrays["coef_indptr"], arrays["coef_labels"], arrays["coef_data"]
    if indptr.shape != (n_terms + 1,) or labels.ndim != 1 or data.shape != labels.shape:
        raise BundleError(f"{npz_path}: CSR shapes don't match {n_terms} terms (coef_indptr {indptr.shape}, "
                          f"coef_labels {labels.shape}, coef_data {data.shape})")
    if not (np.issubdtype(indptr.dtype, np.integer) and np.issubdtype(labels.dtype, np.integer)):
        raise BundleError(f"{npz_path}: coef_indptr and coef_labels must be integers")
    if data.dtype != np.dtype(dtype):
        raise BundleError(f"{npz_path}: coef_data is {data.dtype}, linear.json says coef_dtype {dtype!r}")
    if indptr[0] != 0 or indptr[-1] != len(labels) or np.any(np.diff(indptr) < 0):
        raise BundleError(f"{npz_path}: coef_indptr must rise from 0 to {len(labels)}")
    if len(labels) and (labels.min() < 0 or labels.max() >= n_labels):
        raise BundleError(f"{npz_path}: coef_labels outside 0..{n_labels - 1}")
    if dtype == "int8":
        scale = arrays["coef_scale"]
        if scale.shape != (n_labels,) or not np.all(np.isfinite(scale)):
            raise BundleError(f"{npz_path}: coef_scale must be {n_labels} finite numbers, got shape {scale.shape}")
        return indptr, labels, data, scale.astype(np.float32)
    if not np.all(np.isfinite(data)):
        raise BundleError(f"{npz_path}: coef_data holds non-finite values")
    return indptr, labels, data
