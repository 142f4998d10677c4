"""The one inference module: load a bundle, answer `predict(texts)`.

Gradio, Flask and the batch CLI all import this class; none of them tokenises, applies a sigmoid or picks a
threshold on its own. It needs only onnxruntime, tokenizers and numpy (never torch, transformers or
scikit-learn), so a bundle directory plus this file is everything a server needs.

    from deployment.predictor import Predictor
    pred = Predictor.from_bundle("models/books/bundle", num_threads=None)
    pred.predict(["A young wizard discovers ..."], threshold=None, top_k=5)

Bundle format: docs/CONTRACTS.md. Tokenisation lives in `encoding.py`, the maths (sigmoid, the blend, the
TF-IDF + logistic-regression component in numpy) in `scoring.py`: the compression report and training use the
same two modules, so what they measure is what this class serves.
"""
from __future__ import annotations

import math
import numbers
import re
import reprlib
import unicodedata
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

if __package__:   # `deployment.predictor` in the repo
    from . import explain as explaining
    from .encoding import KNOWN_INPUTS, Encoded, TextEncoder, Windows
    from .scoring import BundleError, LinearComponent, decide, read_json, sigmoid
    from .version import bundle_version
else:             # the Space: this folder is the root, modules are top-level
    import explain as explaining  # type: ignore[no-redef]
    from encoding import KNOWN_INPUTS, Encoded, TextEncoder, Windows  # type: ignore[no-redef]
    from scoring import BundleError, LinearComponent, decide, read_json, sigmoid  # type: ignore[no-redef]
    from version import bundle_version  # type: ignore[no-redef]

__all__ = ["BundleError", "InputError", "LinearComponent", "Predictor", "session_options", "windows_per_call"]

FORMAT_VERSION = 1                  # the bundle.json format this module reads
DEFAULT_BATCH_SIZE = 32             # windows per onnxruntime call at most
DEFAULT_BATCH_TOKENS = 1024         # padded tokens per onnxruntime call at most (see session_options)
MAX_TOKENS = 32_768                 # largest max_length a bundle may declare (the load-time check runs one such text)
REQUIRED_KEYS = ("format_version", "labels", "thresholds", "max_length", "inputs")
MEMORY_PATTERN = False              # onnxruntime's memory-pattern planning (see session_options; bench/memory.py)
PER_CALL_SCALES = "per-call"        # bundle.json quantization.activation_scales of dynamic int8 (see windows_per_call)
ACTIVATION_SCALES = (PER_CALL_SCALES, "fixed", "none")   # per call (dynamic), calibrated once (static), float


# "Empty" is what no reader would see: a text whose every character is whitespace (Z*), a control (Cc) or format
# character (Cf: zero-width space and joiners, word joiner, soft hyphen, BOM, direction marks), a combining mark
# (M*: with nothing else there, it has no letter to sit on) or a Hangul filler is refused like "" (docs/CONTRACTS.md).
_INVISIBLE_CATEGORIES = frozenset({"Zs", "Zl", "Zp", "Cc", "Cf", "Mn", "Mc", "Me"})
_FILLERS = frozenset("\u115f\u1160\u3164\uffa0")   # Hangul fillers: letters (Lo) that draw nothing


def _visible(char: str) -> bool:
    return unicodedata.category(char) not in _INVISIBLE_CATEGORIES and char not in _FILLERS


class InputError(ValueError, TypeError):
    """Input the caller can fix: a text that is not a string, is empty or is not valid Unicode; a bad threshold or
    top_k. The message says which text and why. Servers answer it with a 4xx; it subclasses both ValueError and
    TypeError, the two types predict() raised for these cases before it existed."""


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
    # Memory: onnxruntime's memory-pattern planning caches one allocation plan per input shape, and a server sees a
    # new shape with nearly every request (dynamic padding), so it is off; the CPU arena stays on (off, the
    # allocator keeps what every layer freed: more RSS, not less). With each call capped at DEFAULT_BATCH_TOKENS
    # padded tokens, one process's peak stays bounded whatever the texts' length (numbers: bench/memory.py).
    options.enable_mem_pattern = MEMORY_PATTERN
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


def load_session(model_path: Path, num_threads: int | None = None) -> ort.InferenceSession:
    """An onnxruntime CPU session with the serving options, or BundleError naming the file."""
    if not model_path.is_file():
        raise BundleError(f"{model_path}: file is missing")
    try:
        return ort.InferenceSession(str(model_path), session_options(num_threads), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf types for corrupt files
        raise BundleError(f"{model_path}: not a loadable ONNX model ({type(exc).__name__}: {exc})") from exc


class Predictor:
    """A loaded bundle: `predict(texts)` -> labels with scores, the predicted set, truncation info.

    Thread-safe: the onnxruntime session is shared (its run() is safe to call concurrently) and nothing
    is mutated after construction.

    One text, one answer: a text's scores are a function of the text and the bundle alone, whatever other texts
    share the call, in whatever order (docs/CONTRACTS.md). A model whose int8 activations are scaled at run time
    over the whole input of an onnxruntime call (dynamic quantisation) would let a long neighbour, or padding,
    move a short text's scores; such a model is run one window per call (`windows_per_call`), which the
    compression report measured to be no slower than padded batches on these CPUs.
    """

    def __init__(self, session: ort.InferenceSession, encoder: TextEncoder, info: dict,
                 linear: LinearComponent | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                 source: str = "bundle", batch_tokens: int | None = DEFAULT_BATCH_TOKENS):
        self.session = session
        self.encoder = encoder
        self.info = info
        self.labels: list[str] = list(info["labels"])
        self.thresholds: list[float] = [float(t) for t in info["thresholds"]]
        self.global_threshold = float(info.get("global_threshold", 0.5))
        self.max_length = encoder.max_length
        self.linear = linear
        self.windows_per_call = windows_per_call(info)
        # At most `batch_size` windows per onnxruntime call, and one where the model's activation scales are
        # computed per call: batching those would make a text's scores depend on its batch-mates.
        self.batch_size = min(int(batch_size), self.windows_per_call or int(batch_size))
        self.batch_tokens = None if batch_tokens is None else int(batch_tokens)
        self.source = source
        self.version: str | None = None   # the bundle's content hash (deployment/version.py), set by from_bundle

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_bundle(cls, bundle_dir: str | Path, num_threads: int | None = None,
                    batch_size: int = DEFAULT_BATCH_SIZE,
                    batch_tokens: int | None = DEFAULT_BATCH_TOKENS) -> "Predictor":
        """Load and check a bundle directory. `num_threads` sets onnxruntime's intra-op threads (None: its default);
        one onnxruntime call reads at most `batch_size` windows and `batch_tokens` padded tokens (None: no cap)."""
        bundle = Path(bundle_dir)
        if not bundle.is_dir():
            raise BundleError(f"{bundle}: bundle directory does not exist (build it with `python -m compression.quantize`)")
        info_path = bundle / "bundle.json"
        info = read_bundle_info(info_path)
        labels = info["labels"]
        encoder = load_encoder(bundle / "tokenizer.json", info)
        model_path = bundle / "model.onnx"
        session = load_session(model_path, num_threads)
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

        pred = cls(session, encoder, info, linear=linear, batch_size=batch_size, source=str(bundle),
                   batch_tokens=batch_tokens)
        pred.version = bundle_version(bundle)
        # One run at full length checks that the graph executes, that its outputs match the labels, and that
        # max_length fits the model's position embeddings (else every long text would fail, not the load).
        encoded = encoder.encode([" ".join(["a"] * pred.max_length), "warm up"])
        feeds = encoder.feeds([encoded.windows[0], encoded.windows[-1]])
        quiet = ort.RunOptions()
        quiet.log_severity_level = 4   # the failure is reported below, naming the file; no C++ log line
        try:
            n_out = session.run(["logits"], feeds, quiet)[0].shape[1]
        except Exception as exc:   # onnxruntime's own exception types (InvalidArgument, Fail, ...)
            raise BundleError(
                f"{model_path}: the model cannot read {len(encoded.windows[0].ids)} tokens, but {info_path} says "
                f"max_length {pred.max_length}: it is longer than the model's position embeddings, or the graph "
                f"is broken ({type(exc).__name__}: {str(exc)[:200]})") from exc
        if n_out != len(labels):
            raise BundleError(f"{model_path}: the model outputs {n_out} labels but {info_path} lists {len(labels)}")
        return pred

    # ------------------------------------------------------------------ inference
    def encode(self, texts: Sequence[str]) -> Encoded:
        """The bundle's tokenisation of `texts` (truncated to max_length; full token counts kept)."""
        return self.encoder.encode(texts)

    def transformer_logits(self, encoded: Encoded) -> np.ndarray:
        """The ONNX model's logits [n, labels] for encoded texts, in input order."""
        return self.encoder.run(lambda feeds: self.session.run(["logits"], feeds)[0], encoded, self.batch_size,
                                max_tokens=self.batch_tokens)

    def probabilities(self, texts: Sequence[str]) -> tuple[np.ndarray, Encoded]:
        """Blended probabilities [n, labels] for already-validated texts, and their encoding (token counts,
        windows read, truncation flags)."""
        encoded = self.encode(texts)
        if self.linear is not None and self.linear.transformer_unused:
            # The blend gives the transformer weight 0 (training found it no help on valid): don't run it.
            return self.linear.probabilities(texts), encoded
        p_model = sigmoid(self.transformer_logits(encoded))
        if self.linear is None:
            return p_model, encoded
        return self.linear.blend(p_model, self.linear.probabilities(texts)), encoded

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        """Blended probabilities [n, labels] alone: what explaining re-scores texts with (windows, blend and all)."""
        return self.probabilities(texts)[0]

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
        if not any(map(_visible, text)):
            first = text.lstrip()[0]
            name = " ".join([f"U+{ord(first):04X}", unicodedata.name(first, "")]).strip()
            return (f"has no visible character, only invisible ones such as {name} (whitespace, control and format "
                    "characters, combining marks without a letter); there is nothing to classify")
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

    @staticmethod
    def explain_problem(explain: Any) -> str | None:
        """None for true or false; otherwise what is wrong (a string "false" would be truthy)."""
        if isinstance(explain, (bool, np.bool_)):
            return None
        return f"explain must be true or false, got {_brief(explain)}"

    def predict(self, texts: Sequence[str], threshold: float | None = None,
                top_k: int | None = None, explain: bool = False) -> list[dict]:
        """Labels with scores (sorted, cut to `top_k`) and the predicted set for each text.

        `threshold=None` uses the bundle's tuned per-label thresholds; a number overrides all of them.
        `n_tokens` counts the whole text's tokens (special tokens included); a text longer than `max_length` is
        read as overlapping windows (bundle.json's `windows`), `n_windows` of them; `truncated` is True when the
        cap on windows (or, with one window, `max_length`) cut the text, so the model did not read all of it.

        `explain=True` adds each listed label's `evidence` (spans of the text whose removal lowers or raises
        its score, deployment/explain.py) and each text's `explanation` (how the spans were made); it costs
        scoring at most `explain.MAX_SPANS` variants of each text, in groups of bounded size (bounded memory).
        """
        if isinstance(texts, (str, bytes)):
            raise InputError("predict() takes a list of texts; wrap a single text as [text]")
        texts = list(texts)
        for i, text in enumerate(texts):
            problem = self.text_problem(text)
            if problem:
                raise InputError(f"text {i} {problem}")
        problem = self.threshold_problem(threshold) or self.top_k_problem(top_k) or self.explain_problem(explain)
        if problem:
            raise InputError(problem)
        if not texts:
            return []
        top_k = None if top_k is None else int(top_k)
        thresholds = self.thresholds if threshold is None else [float(threshold)] * len(self.labels)
        probs, encoded = self.probabilities(texts)
        decided = decide(probs, thresholds)
        results = []
        for row, p in enumerate(probs):
            ranked = sorted(range(len(self.labels)), key=lambda j: (-p[j], j))
            scored = [{"label": self.labels[j], "score": float(p[j]), "threshold": thresholds[j],
                       "predicted": bool(decided[row, j])} for j in ranked]
            results.append({
                "labels": scored[:top_k] if top_k else scored,
                "predicted": [s["label"] for s in scored if s["predicted"]],
                "truncated": encoded.truncated[row],
                "n_tokens": encoded.n_tokens[row],
                "n_windows": encoded.n_windows[row],
            })
        if explain:
            self._add_evidence(texts, probs, results)
        return results

    def _add_evidence(self, texts: list[str], probs: np.ndarray, results: list[dict]) -> None:
        """Evidence for every label listed in `results`, from scoring every text's variants (in bounded groups)."""
        index = {label: j for j, label in enumerate(self.labels)}
        explained = explaining.explain_texts(self.scores, texts, probs)
        for text, result, (spans, weights) in zip(texts, results, explained):
            for item in result["labels"]:
                item["evidence"] = explaining.evidence(text, spans, weights[:, index[item["label"]]])
            result["explanation"] = {"method": explaining.METHOD, "unit": explaining.DEFAULT_UNIT,
                                     "spans": len(spans), "max_spans": explaining.MAX_SPANS}

    def __repr__(self) -> str:
        return (f"Predictor({self.source!r}, labels={len(self.labels)}, max_length={self.max_length}, "
                f"windows={self.encoder.windows.to_dict()}, linear={self.linear is not None})")


def windows_per_call(info: dict) -> int | None:
    """How many windows one onnxruntime call may read without a text's scores depending on the others: 1 for a
    model whose int8 activation scales are computed at run time over the call's whole input (onnxruntime's
    dynamic quantisation: `quantization.activation_scales` "per-call"; bundles written before that key say
    "dynamic" in `quantization.method`), else None (no limit: fp32, fixed or per-row activation scales)."""
    quant = info.get("quantization")
    if not isinstance(quant, dict):
        return None
    if "windows_per_call" in quant:      # written by compression since one window per call existed
        return quant["windows_per_call"]
    scales = quant.get("activation_scales")
    if scales is None:
        scales = PER_CALL_SCALES if "dynamic" in str(quant.get("method", "")).lower() else None
    return 1 if scales == PER_CALL_SCALES else None


def read_bundle_info(info_path: Path) -> dict:
    """`bundle.json`, checked: every value the predictor reads has the type and range it needs, else a BundleError
    naming the file, never a TypeError or ValueError from deep inside the constructor (bool is not a number here)."""
    info = read_json(info_path)
    if not isinstance(info, dict):
        raise BundleError(f"{info_path}: expected a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in info]
    if missing:
        raise BundleError(f"{info_path}: missing keys {missing}")

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
    try:
        Windows.from_dict(info.get("windows"))
    except (TypeError, ValueError) as exc:
        raise BundleError(f"{info_path}: {exc}") from exc
    quant = info.get("quantization")
    if quant is not None and not isinstance(quant, dict):
        raise BundleError(f"{info_path}: 'quantization' must be null or an object, got {_brief(quant)}")
    per_call = (quant or {}).get("windows_per_call")
    if per_call is not None and not (isinstance(per_call, int) and not isinstance(per_call, bool) and per_call >= 1):
        raise BundleError(f"{info_path}: 'quantization.windows_per_call' must be null or an integer >= 1, "
                          f"got {_brief(per_call)}")
    scales = (quant or {}).get("activation_scales")
    if scales is not None and scales not in ACTIVATION_SCALES:
        raise BundleError(f"{info_path}: 'quantization.activation_scales' must be one of {list(ACTIVATION_SCALES)}, "
                          f"got {_brief(scales)}")
    return info


def load_encoder(tok_path: Path, info: dict) -> TextEncoder:
    """The bundle's tokenizer configured as bundle.json says (max_length, inputs, pad id)."""
    if not tok_path.is_file():
        raise BundleError(f"{tok_path}: file is missing")
    try:
        tokenizer = Tokenizer.from_file(str(tok_path))
    except Exception as exc:  # the tokenizers library raises a bare Exception on parse errors
        raise BundleError(f"{tok_path}: cannot load tokenizer ({exc})") from exc
    pad = (info.get("tokenizer") or {}).get("pad_token_id", (tokenizer.padding or {}).get("pad_id"))
    vocab = tokenizer.get_vocab_size(with_added_tokens=True)
    if pad is not None and not 0 <= int(pad) < vocab:
        raise BundleError(f"{tok_path.parent / 'bundle.json'}: 'tokenizer.pad_token_id' {_brief(pad)} is not a token "
                          f"of {tok_path.name} ({vocab} tokens)")
    try:
        return TextEncoder(tokenizer, info["max_length"], info["inputs"], int(pad) if pad is not None else 0,
                           Windows.from_dict(info.get("windows")))
    except (TypeError, ValueError) as exc:
        raise BundleError(f"{tok_path.parent / 'bundle.json'}: {exc}") from exc
