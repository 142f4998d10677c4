"""The one inference module: load a bundle, answer `predict(texts)`.

Gradio, Flask and the batch CLI all import this class; none of them tokenises, applies a sigmoid or picks a
threshold on its own. It needs only onnxruntime, tokenizers and numpy (never torch, transformers or
scikit-learn), so a bundle directory plus this file is everything a server needs.

    from deployment.predictor import Predictor
    pred = Predictor.from_bundle("models/books/bundle", num_threads=None)
    pred.predict(["A young wizard discovers ..."], threshold=None, top_k=5)

Bundle format: docs/CONTRACTS.md. The optional linear component (TF-IDF + one-vs-rest logistic regression)
is recomputed here in numpy so it matches scikit-learn's TfidfVectorizer without importing it.
"""
from __future__ import annotations

import json
import math
import numbers
import re
import reprlib
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

FORMAT_VERSION = 1                  # the bundle.json format this module reads
DEFAULT_BATCH_SIZE = 32             # texts per onnxruntime call
MAX_TOKENS = 32_768                 # largest max_length a bundle may declare (the load-time check runs one such text)
REQUIRED_KEYS = ("format_version", "labels", "thresholds", "max_length", "inputs")
KNOWN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class BundleError(RuntimeError):
    """A bundle that cannot be served: missing or corrupt files, or labels that don't match the model."""


class InputError(ValueError, TypeError):
    """Input the caller can fix: a text that is not a string, is empty or is not valid Unicode; a bad threshold or
    top_k. The message says which text and why. Servers answer it with a 4xx; it subclasses both ValueError and
    TypeError, the two types predict() raised for these cases before it existed."""


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # exp(-log(1 + exp(-x))) never overflows, unlike 1 / (1 + exp(-x)) for large negative logits
    return np.exp(-np.logaddexp(0.0, -np.asarray(x, dtype=np.float64)))


def session_options(num_threads: int | None = None) -> ort.SessionOptions:
    """onnxruntime settings for serving (the compression report times its variants with the same ones)."""
    options = ort.SessionOptions()
    if num_threads:
        options.intra_op_num_threads = int(num_threads)
    options.inter_op_num_threads = 1
    # No busy-waiting between runs: on the 2 shared cores we serve from (gunicorn workers x threads, other
    # processes), spinning threads steal the CPU that the next request needs. Measured: int8 batch-1 latency
    # 16.6 ms without spinning vs 27 ms with it on a loaded machine, and it stops slowing down other work.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


def _brief(value: Any) -> str:
    """A short repr for error messages: a client can send a megabyte where a number belongs."""
    short = reprlib.Repr()
    short.maxstring = short.maxother = 60
    short.maxlong = 40
    try:
        return short.repr(value)
    except ValueError:   # an int beyond Python's 4300-digit str() limit
        return f"a {type(value).__name__} too large to print"


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise BundleError(f"{path}: file is missing")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})") from exc


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
        self.token_re = re.compile(settings.get("token_pattern", r"(?u)\b\w\w+\b"))
        self.ngram_range = tuple(int(n) for n in settings.get("ngram_range", (1, 1)))
        self.sublinear_tf = bool(settings.get("sublinear_tf", False))
        self.norm = settings.get("norm", "l2")
        self.vocabulary = {str(term): i for i, term in enumerate(terms)}
        self.idf = np.asarray(idf, dtype=np.float64)
        self.coef = np.asarray(coef, dtype=np.float64)
        self.intercept = np.asarray(intercept, dtype=np.float64)

    @classmethod
    def load(cls, json_path: Path, npz_path: Path, n_labels: int) -> "LinearComponent":
        settings = _read_json(json_path)
        if not isinstance(settings, dict) or "weight" not in settings:
            raise BundleError(f"{json_path}: expected an object with at least 'weight'")
        weight = settings["weight"]
        if not isinstance(weight, (int, float)) or not 0.0 <= float(weight) <= 1.0:
            raise BundleError(f"{json_path}: 'weight' must be a number in [0, 1], got {weight!r}")
        if settings.get("norm", "l2") not in ("l2", None):
            raise BundleError(f"{json_path}: unsupported norm {settings.get('norm')!r} (only 'l2' or null)")
        ngram = settings.get("ngram_range", [1, 1])
        if not (isinstance(ngram, (list, tuple)) and len(ngram) == 2 and 1 <= int(ngram[0]) <= int(ngram[1])):
            raise BundleError(f"{json_path}: bad ngram_range {ngram!r}")
        try:
            re.compile(settings.get("token_pattern", r"(?u)\b\w\w+\b"))
        except re.error as exc:
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
        return _sigmoid(self.logits(texts))


class Predictor:
    """A loaded bundle: `predict(texts)` -> labels with scores, the predicted set, truncation info.

    Thread-safe: the onnxruntime session is shared (its run() is safe to call concurrently) and nothing
    is mutated after construction. The same call always gives the same result; but int8 dynamic quantisation
    scales activations per batch, so a text's scores can move in the third decimal with the other texts it is
    batched with (the compression report measures int8 on batches of 32).
    """

    def __init__(self, session: ort.InferenceSession, tokenizer: Tokenizer, info: dict,
                 linear: LinearComponent | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                 source: str = "bundle"):
        self.session = session
        self.info = info
        self.labels: list[str] = list(info["labels"])
        self.thresholds: list[float] = [float(t) for t in info["thresholds"]]
        self.global_threshold = float(info.get("global_threshold", 0.5))
        self.max_length = int(info["max_length"])
        self.linear = linear
        self.batch_size = int(batch_size)
        self.source = source
        self.input_names = [i.name for i in session.get_inputs()]
        # Two configured copies, never reconfigured afterwards (so concurrent encode_batch calls are safe):
        # one truncates with the library's own truncation (keeps [SEP] / </s>), the other only counts tokens.
        padding = tokenizer.padding or {}
        self._counter = Tokenizer.from_str(tokenizer.to_str())
        self._counter.no_padding()
        self._counter.no_truncation()
        self.tokenizer = tokenizer
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=self.max_length)
        pad = (info.get("tokenizer") or {}).get("pad_token_id", padding.get("pad_id"))
        self.pad_id = int(pad) if pad is not None else 0   # masked out anyway; RoBERTa's is 1, BERT's 0

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_bundle(cls, bundle_dir: str | Path, num_threads: int | None = None,
                    batch_size: int = DEFAULT_BATCH_SIZE, model_file: str = "model.onnx") -> "Predictor":
        """Load and check a bundle directory. `num_threads` sets onnxruntime's intra-op threads (None: its default).

        `model_file` lets the compression report load an intermediate variant from the same directory.
        """
        bundle = Path(bundle_dir)
        if not bundle.is_dir():
            raise BundleError(f"{bundle}: bundle directory does not exist (build it with `python -m compression.quantize`)")
        info_path = bundle / "bundle.json"
        info = _read_json(info_path)
        if not isinstance(info, dict):
            raise BundleError(f"{info_path}: expected a JSON object")
        missing = [k for k in REQUIRED_KEYS if k not in info]
        if missing:
            raise BundleError(f"{info_path}: missing keys {missing}")
        cls._check_info(info, info_path)
        labels = info["labels"]

        tok_path = bundle / "tokenizer.json"
        if not tok_path.is_file():
            raise BundleError(f"{tok_path}: file is missing")
        try:
            tokenizer = Tokenizer.from_file(str(tok_path))
        except Exception as exc:  # the tokenizers library raises a bare Exception on parse errors
            raise BundleError(f"{tok_path}: cannot load tokenizer ({exc})") from exc

        model_path = bundle / model_file
        if not model_path.is_file():
            raise BundleError(f"{model_path}: file is missing")
        try:
            session = ort.InferenceSession(str(model_path), session_options(num_threads),
                                           providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf types for corrupt files
            raise BundleError(f"{model_path}: not a loadable ONNX model ({type(exc).__name__}: {exc})") from exc
        session_inputs = {i.name for i in session.get_inputs()}
        if session_inputs != set(info["inputs"]):
            raise BundleError(f"{model_path}: model inputs {sorted(session_inputs)} != bundle.json inputs {info['inputs']}")
        if "logits" not in {o.name for o in session.get_outputs()}:
            raise BundleError(f"{model_path}: model has no 'logits' output")

        linear = None
        if info.get("linear"):
            try:
                linear = LinearComponent.load(bundle / "linear.json", bundle / "linear.npz", len(labels))
            except (TypeError, ValueError, KeyError) as exc:   # a value of the wrong type deep in linear.json
                raise BundleError(f"{bundle / 'linear.json'}: malformed ({type(exc).__name__}: {exc})") from exc
            expected = info["linear"].get("weight") if isinstance(info["linear"], dict) else None
            if expected is not None and abs(float(expected) - linear.weight) > 1e-9:
                raise BundleError(f"{bundle / 'linear.json'}: weight {linear.weight} != bundle.json linear.weight {expected}")

        pred = cls(session, tokenizer, info, linear=linear, batch_size=batch_size, source=str(bundle))
        # One run at full length checks that the graph executes, that its outputs match the labels, and that
        # max_length fits the model's position embeddings (else every long text would fail, not the load).
        long_text = " ".join(["a"] * pred.max_length)
        encodings = pred._encode([long_text, "warm up"])[0]
        quiet = ort.RunOptions()
        quiet.log_severity_level = 4   # the failure is reported below, naming the file; no C++ log line
        try:
            n_out = session.run(["logits"], pred._feeds(encodings), quiet)[0].shape[1]
        except Exception as exc:   # onnxruntime's own exception types (InvalidArgument, Fail, ...)
            raise BundleError(
                f"{model_path}: the model cannot read {len(encodings[0].ids)} tokens, but {info_path} says "
                f"max_length {pred.max_length}: it is longer than the model's position embeddings, or the graph "
                f"is broken ({type(exc).__name__}: {str(exc)[:200]})") from exc
        if n_out != len(labels):
            raise BundleError(f"{model_path}: the model outputs {n_out} labels but {info_path} lists {len(labels)}")
        return pred

    @staticmethod
    def _check_info(info: dict, info_path: Path) -> None:
        """Every bundle.json value the predictor reads has the type and range it needs: a BundleError naming the
        file, never a TypeError or ValueError from deep inside the constructor (bool is not a number here)."""
        def number(x) -> bool:
            return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

        version = info["format_version"]
        if not (number(version) and version == FORMAT_VERSION):
            raise BundleError(f"{info_path}: format_version {_brief(version)}, this predictor reads {FORMAT_VERSION}")
        labels, thresholds = info["labels"], info["thresholds"]
        if not (isinstance(labels, list) and labels and all(isinstance(x, str) and x.strip() for x in labels)):
            raise BundleError(f"{info_path}: 'labels' must be a non-empty list of non-empty strings")
        if len(set(labels)) != len(labels):
            raise BundleError(f"{info_path}: duplicate labels")
        if not (isinstance(thresholds, list) and len(thresholds) == len(labels)
                and all(number(t) and 0.0 <= t <= 1.0 for t in thresholds)):
            raise BundleError(f"{info_path}: 'thresholds' must be {len(labels)} numbers in [0, 1], aligned with 'labels'")
        gt = info.get("global_threshold", 0.5)
        if not (number(gt) and 0.0 <= gt <= 1.0):
            raise BundleError(f"{info_path}: 'global_threshold' must be a number in [0, 1], got {_brief(gt)}")
        max_length = info["max_length"]
        if not (isinstance(max_length, int) and not isinstance(max_length, bool) and 2 <= max_length <= MAX_TOKENS):
            raise BundleError(f"{info_path}: 'max_length' must be an integer from 2 to {MAX_TOKENS}, got {_brief(max_length)}")
        inputs = info["inputs"]
        if not (isinstance(inputs, list) and all(isinstance(n, str) for n in inputs) and "input_ids" in inputs
                and set(inputs) <= set(KNOWN_INPUTS) and len(set(inputs)) == len(inputs)):
            raise BundleError(f"{info_path}: 'inputs' must list input_ids[, attention_mask, token_type_ids], "
                              f"got {_brief(inputs)}")
        tok = info.get("tokenizer")
        if tok is not None and not isinstance(tok, dict):
            raise BundleError(f"{info_path}: 'tokenizer' must be an object, got {_brief(tok)}")
        pad = (tok or {}).get("pad_token_id")
        if pad is not None and not (isinstance(pad, int) and not isinstance(pad, bool) and pad >= 0):
            raise BundleError(f"{info_path}: 'tokenizer.pad_token_id' must be an integer >= 0, got {_brief(pad)}")
        linear = info.get("linear")
        if linear is not None and linear is not False and not isinstance(linear, dict):
            raise BundleError(f"{info_path}: 'linear' must be null or an object like {{\"weight\": 0.3}}, got {_brief(linear)}")
        weight = (linear or {}).get("weight") if isinstance(linear, dict) else None
        if weight is not None and not (number(weight) and 0.0 <= weight <= 1.0):
            raise BundleError(f"{info_path}: 'linear.weight' must be a number in [0, 1], got {_brief(weight)}")

    # ------------------------------------------------------------------ inference
    def _encode(self, texts: Sequence[str]):
        encodings = self.tokenizer.encode_batch(list(texts))
        n_tokens = [len(e.ids) for e in encodings]
        truncated = [bool(e.overflowing) for e in encodings]
        long_idx = [i for i, t in enumerate(truncated) if t]
        if long_idx:  # only texts that did not fit pay for a second, untruncated count
            for i, enc in zip(long_idx, self._counter.encode_batch([texts[i] for i in long_idx])):
                n_tokens[i] = len(enc.ids)
        return encodings, n_tokens, truncated

    def _feeds(self, encodings) -> dict[str, np.ndarray]:
        """Dynamic padding: pad to the longest sequence of this batch, not to max_length."""
        width = max(len(e.ids) for e in encodings)
        ids = np.full((len(encodings), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        types = np.zeros((len(encodings), width), dtype=np.int64)
        for row, enc in enumerate(encodings):
            n = len(enc.ids)
            ids[row, :n] = enc.ids
            mask[row, :n] = 1
            types[row, :n] = enc.type_ids
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return {name: feeds[name] for name in self.input_names}

    def _transformer_logits(self, encodings) -> np.ndarray:
        return self.session.run(["logits"], self._feeds(encodings))[0]

    def probabilities(self, texts: Sequence[str]) -> tuple[np.ndarray, list[int], list[bool]]:
        """Blended probabilities [n, labels] for already-validated texts, plus token counts and truncation flags."""
        encodings, n_tokens, truncated = self._encode(texts)
        # Sort by length when there is more than one batch, so each batch pads to similar lengths.
        order = (sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
                 if len(texts) > self.batch_size else list(range(len(texts))))
        probs = np.zeros((len(texts), len(self.labels)), dtype=np.float64)
        if self.linear is not None and self.linear.weight >= 1.0:
            # The blend gives the transformer weight 0 (training found it no help on valid): don't run it.
            return self.linear.probabilities(texts), n_tokens, truncated
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            probs[idx] = _sigmoid(self._transformer_logits([encodings[i] for i in idx]))
        if self.linear is not None:
            w = self.linear.weight
            probs = w * self.linear.probabilities(texts) + (1.0 - w) * probs
        return probs, n_tokens, truncated

    # ------------------------------------------------------------------ input checks
    # One set of rules for every consumer: Flask, Gradio and the batch CLI call these to check a request or a
    # row before predict(), and predict() applies the same ones, so what they accept the model can read.
    _LONE_SURROGATE = re.compile("[\ud800-\udfff]")   # str can hold them (JSON "\\ud800"); UTF-8 cannot

    @classmethod
    def text_problem(cls, text: Any) -> str | None:
        """Why `text` cannot be classified, as the end of a sentence ("is empty ..."); None when it can."""
        if not isinstance(text, str):
            return f"is {type(text).__name__}, expected str"
        if not text.strip():
            return "is empty or whitespace only; there is nothing to classify"
        surrogate = cls._LONE_SURROGATE.search(text)
        if surrogate:   # the tokenizer cannot take it (its Rust strings are UTF-8): say so instead of a TypeError
            return (f"holds a lone surrogate (U+{ord(surrogate.group()):04X} at character {surrogate.start()}), "
                    "which is not valid Unicode text")
        return None

    @staticmethod
    def threshold_problem(threshold: Any) -> str | None:
        """None for None (the tuned thresholds) or a finite number in [0, 1]; otherwise what is wrong."""
        if threshold is None:
            return None
        if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not 0.0 <= threshold <= 1.0:
            return f"threshold must be a number between 0 and 1, got {_brief(threshold)}"
        return None

    @staticmethod
    def top_k_problem(top_k: Any) -> str | None:
        """None for None (every label) or a positive integer; otherwise what is wrong."""
        if top_k is None:
            return None
        if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or top_k < 1:
            return f"top_k must be a positive integer, got {_brief(top_k)}"
        return None

    def predict(self, texts: Sequence[str], threshold: float | None = None,
                top_k: int | None = None) -> list[dict]:
        """Labels with scores (sorted, cut to `top_k`) and the predicted set for each text.

        `threshold=None` uses the bundle's tuned per-label thresholds; a number overrides all of them.
        `n_tokens` counts the whole text's tokens (special tokens included); `truncated` is True when that
        exceeds `max_length`, in which case the model read only the first `max_length` tokens.
        """
        if isinstance(texts, (str, bytes)):
            raise InputError("predict() takes a list of texts; wrap a single text as [text]")
        texts = list(texts)
        for i, text in enumerate(texts):
            problem = self.text_problem(text)
            if problem:
                raise InputError(f"text {i} {problem}")
        problem = self.threshold_problem(threshold) or self.top_k_problem(top_k)
        if problem:
            raise InputError(problem)
        if not texts:
            return []
        top_k = None if top_k is None else int(top_k)
        thresholds = self.thresholds if threshold is None else [float(threshold)] * len(self.labels)
        probs, n_tokens, truncated = self.probabilities(texts)
        results = []
        for row, p in enumerate(probs):
            ranked = sorted(range(len(self.labels)), key=lambda j: (-p[j], j))
            scored = [{"label": self.labels[j], "score": float(p[j]), "threshold": thresholds[j],
                       "predicted": bool(p[j] >= thresholds[j])} for j in ranked]
            results.append({
                "labels": scored[:top_k] if top_k else scored,
                "predicted": [s["label"] for s in scored if s["predicted"]],
                "truncated": truncated[row],
                "n_tokens": n_tokens[row],
            })
        return results

    def __repr__(self) -> str:
        return (f"Predictor({self.source!r}, labels={len(self.labels)}, max_length={self.max_length}, "
                f"linear={self.linear is not None})")
