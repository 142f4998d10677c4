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

from pathlib import Path
from typing import Sequence

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

if __package__:   # `deployment.predictor` in the repo
    from .encoding import KNOWN_INPUTS, Encoded, TextEncoder
    from .scoring import BundleError, LinearComponent, blend, read_json, sigmoid
else:             # the Space: this folder is the root, modules are top-level
    from encoding import KNOWN_INPUTS, Encoded, TextEncoder  # type: ignore[no-redef]
    from scoring import BundleError, LinearComponent, blend, read_json, sigmoid  # type: ignore[no-redef]

__all__ = ["BundleError", "LinearComponent", "Predictor", "session_options"]

FORMAT_VERSION = 1                  # the bundle.json format this module reads
DEFAULT_BATCH_SIZE = 32             # texts per onnxruntime call
REQUIRED_KEYS = ("format_version", "labels", "thresholds", "max_length", "inputs")


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
    # onnxruntime's CPU arena and memory-pattern planning stay on (its defaults), measured for one process that
    # loads the 150-label CMU bundle and predicts 32 texts x 128 tokens: peak RSS 234 MiB with both on, 291 MiB
    # with the arena off and 311 MiB with both off (the allocator then keeps what every layer freed), 231 MiB with
    # only memory patterns off (no gain). An environment arena growing by what is asked rather than by powers of
    # two saved 12 MiB, but it is process-wide state registered outside the session, so it is left out; turning
    # weight prepacking off saved 6 MiB. Graph optimisation stays at onnxruntime's default (all levels).
    options.log_severity_level = 3
    return options


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
    is mutated after construction. The same call always gives the same result; but int8 dynamic quantisation
    scales activations per batch, so a text's scores can move in the third decimal with the other texts it is
    batched with (the compression report measures int8 on batches of 32).
    """

    def __init__(self, session: ort.InferenceSession, encoder: TextEncoder, info: dict,
                 linear: LinearComponent | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                 source: str = "bundle"):
        self.session = session
        self.encoder = encoder
        self.info = info
        self.labels: list[str] = list(info["labels"])
        self.thresholds: list[float] = [float(t) for t in info["thresholds"]]
        self.global_threshold = float(info.get("global_threshold", 0.5))
        self.max_length = encoder.max_length
        self.linear = linear
        self.batch_size = int(batch_size)
        self.source = source

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_bundle(cls, bundle_dir: str | Path, num_threads: int | None = None,
                    batch_size: int = DEFAULT_BATCH_SIZE) -> "Predictor":
        """Load and check a bundle directory. `num_threads` sets onnxruntime's intra-op threads (None: its default)."""
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
            linear = LinearComponent.load(bundle / "linear.json", bundle / "linear.npz", len(labels))
            expected = info["linear"].get("weight") if isinstance(info["linear"], dict) else None
            if expected is not None and abs(float(expected) - linear.weight) > 1e-9:
                raise BundleError(f"{bundle / 'linear.json'}: weight {linear.weight} != bundle.json linear.weight {expected}")

        pred = cls(session, encoder, info, linear=linear, batch_size=batch_size, source=str(bundle))
        # One tiny run checks that the graph executes and that its outputs match the labels.
        n_out = pred.transformer_logits(encoder.encode(["warm up"])).shape[1]
        if n_out != len(labels):
            raise BundleError(f"{model_path}: the model outputs {n_out} labels but {info_path} lists {len(labels)}")
        return pred

    # ------------------------------------------------------------------ inference
    def encode(self, texts: Sequence[str]) -> Encoded:
        """The bundle's tokenisation of `texts` (truncated to max_length; full token counts kept)."""
        return self.encoder.encode(texts)

    def transformer_logits(self, encoded: Encoded) -> np.ndarray:
        """The ONNX model's logits [n, labels] for encoded texts, in input order."""
        return self.encoder.run(lambda feeds: self.session.run(["logits"], feeds)[0], encoded, self.batch_size)

    def probabilities(self, texts: Sequence[str]) -> tuple[np.ndarray, list[int], list[bool]]:
        """Blended probabilities [n, labels] for already-validated texts, plus token counts and truncation flags."""
        encoded = self.encode(texts)
        if self.linear is not None and self.linear.weight >= 1.0:
            # The blend gives the transformer weight 0 (training found it no help on valid): don't run it.
            return self.linear.probabilities(texts), encoded.n_tokens, encoded.truncated
        p_model = sigmoid(self.transformer_logits(encoded))
        p_linear = self.linear.probabilities(texts) if self.linear is not None else None
        probs = blend(p_model, p_linear, self.linear.weight if self.linear is not None else 0.0)
        return probs, encoded.n_tokens, encoded.truncated

    def predict(self, texts: Sequence[str], threshold: float | None = None,
                top_k: int | None = None) -> list[dict]:
        """Labels with scores (sorted, cut to `top_k`) and the predicted set for each text.

        `threshold=None` uses the bundle's tuned per-label thresholds; a number overrides all of them.
        `n_tokens` counts the whole text's tokens (special tokens included); `truncated` is True when that
        exceeds `max_length`, in which case the model read only the first `max_length` tokens.
        """
        if isinstance(texts, (str, bytes)):
            raise TypeError("predict() takes a list of texts; wrap a single text as [text]")
        texts = list(texts)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"text {i} is {type(text).__name__}, expected str")
            if not text.strip():
                raise ValueError(f"text {i} is empty or whitespace only; there is nothing to classify")
        if threshold is not None:
            if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
                raise ValueError(f"threshold must be a number in [0, 1], got {threshold!r}")
        if top_k is not None:
            if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
                raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
        if not texts:
            return []
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


def read_bundle_info(info_path: Path) -> dict:
    """`bundle.json`, checked: BundleError naming the file for anything this predictor cannot serve."""
    info = read_json(info_path)
    if not isinstance(info, dict):
        raise BundleError(f"{info_path}: expected a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in info]
    if missing:
        raise BundleError(f"{info_path}: missing keys {missing}")
    if info["format_version"] != FORMAT_VERSION:
        raise BundleError(f"{info_path}: format_version {info['format_version']!r}, this predictor reads {FORMAT_VERSION}")
    labels, thresholds = info["labels"], info["thresholds"]
    if not (isinstance(labels, list) and labels and all(isinstance(x, str) for x in labels)):
        raise BundleError(f"{info_path}: 'labels' must be a non-empty list of strings")
    if len(set(labels)) != len(labels):
        raise BundleError(f"{info_path}: duplicate labels")
    if not (isinstance(thresholds, list) and len(thresholds) == len(labels)
            and all(isinstance(t, (int, float)) and 0.0 <= t <= 1.0 for t in thresholds)):
        raise BundleError(f"{info_path}: 'thresholds' must be {len(labels)} numbers in [0, 1], aligned with 'labels'")
    if not isinstance(info["max_length"], int) or info["max_length"] < 2:
        raise BundleError(f"{info_path}: 'max_length' must be an integer >= 2")
    bad_inputs = [n for n in info["inputs"] if n not in KNOWN_INPUTS]
    if bad_inputs or "input_ids" not in info["inputs"]:
        raise BundleError(f"{info_path}: 'inputs' must name input_ids[, attention_mask, token_type_ids], got {info['inputs']}")
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
    return TextEncoder(tokenizer, info["max_length"], info["inputs"], int(pad) if pad is not None else 0)
