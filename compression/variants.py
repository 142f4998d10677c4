"""The int8 variants of a model: which exist, how each is built, run, measured and checked, as it will be served.

    paths, fusions, errors = export_variants(model, md, staged, work, candidates, opset, progress)
    m = measure(staged, ev_texts, make_runners(model, paths, errors, threads), paths, errors, md)

Dynamic int8 (the default candidates) scales activations at run time over a whole onnxruntime call, so it is
served one window per call (`Candidate.windows_per_call`); its padded-batch twin is measured beside it to show
what that buys. Static (calibrated ranges) and weight-only int8 are batch-independent by construction and were
measured slower here; `--candidates all` compares them too. Every ONNX variant gets the consistency check
(`report.consistency`: each text alone vs in mixed-length batches).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compression import report as rep
from compression.bundle import Staged
from compression.export import (CompressionError, export_onnx, optimize_onnx, quantize_int8,
                                quantize_static_int8, quantize_weight_only_int8)
from compression.report import Progress, file_size, split_texts
from deployment.encoding import Encoded, TextEncoder
from deployment.predictor import (DEFAULT_BATCH_SIZE, DEFAULT_BATCH_TOKENS, PER_CALL_SCALES, Predictor,
                                  session_options)
from deployment.scoring import decide, sigmoid
from training.modeldir import ModelDir


PARITY_TOL = 1e-4                     # max |p_onnx_fp32 - p_pytorch| allowed


@dataclass(frozen=True)
class Candidate:
    """An int8 variant: the graph it is quantised from, how, and how it is served."""
    source: str                       # "onnx-fp32", "onnx-optimized" or "onnx-noattention" (attention left unfused)
    method: str                       # "dynamic", "static" (calibrated activation ranges) or "weight-only"
    per_channel: bool                 # one weight scale per output channel (else per tensor / per block)
    batched: bool = False             # a dynamic model run in padded batches, as served before one window per call

    @property
    def activation_scales(self) -> str:
        """"per-call" (computed over each onnxruntime call's whole input), "fixed" (calibrated once) or "none"."""
        return {"dynamic": PER_CALL_SCALES, "static": "fixed", "weight-only": "none"}[self.method]

    @property
    def windows_per_call(self) -> int | None:
        """What the predictor does with the bundle (deployment.predictor.windows_per_call): a model whose scales are
        computed per call reads one window per call, unless this candidate is the batched one kept for comparison."""
        return 1 if self.activation_scales == PER_CALL_SCALES and not self.batched else None
CANDIDATES = {
    "int8": Candidate("onnx-fp32", "dynamic", False),
    "int8-per-channel": Candidate("onnx-fp32", "dynamic", True),
    "optimized-int8": Candidate("onnx-optimized", "dynamic", False),
    "optimized-int8-per-channel": Candidate("onnx-optimized", "dynamic", True),
    # The same model in padded batches of 32 windows: how bundles were served before; it fails the consistency
    # check (a text's scores move with its batch-mates) and is kept in the report to show by how much.
    "optimized-int8-per-channel-batched": Candidate("onnx-optimized", "dynamic", True, batched=True),
    # Batch-independent by construction, measured slower on these CPUs (opt in with --candidates all):
    "static-int8": Candidate("onnx-noattention", "static", True),
    "weight-only-int8": Candidate("onnx-noattention", "weight-only", False),
}
DEFAULT_CANDIDATES = ("int8", "int8-per-channel", "optimized-int8", "optimized-int8-per-channel",
                      "optimized-int8-per-channel-batched")
CALIBRATION_WINDOWS = 200             # training windows that calibrate static int8's activation ranges


def export_variants(model, md: ModelDir, staged: Staged, work: Path, candidates: list[str], opset: int,
                     progress: Progress) -> tuple[dict[str, Path], dict, dict[str, str]]:
    """fp32 export, the optimised graph and every int8 candidate: their paths, the fusions, and what failed."""
    work.mkdir()
    progress.step(f"exporting fp32 ONNX (opset {opset}, inputs {staged.info['inputs']})")
    paths = {"onnx-fp32": export_onnx(model, staged.info["inputs"], work / "model.onnx-fp32.onnx", opset)}
    errors, fusions = {}, {}
    progress.step("optimising the graph (onnxruntime transformer optimizer)")
    try:
        fusions = optimize_onnx(paths["onnx-fp32"], work / "model.onnx-optimized.onnx",
                                num_heads=int(md.config.get("num_attention_heads", 0)),
                                hidden_size=int(md.config.get("hidden_size", 0)))
        paths["onnx-optimized"] = work / "model.onnx-optimized.onnx"
        progress.say(f"fusions: {fusions or 'none'}")
    except Exception as exc:  # a graph the optimizer can't handle is reported, not fatal: int8 of the plain export remains
        errors["onnx-optimized"] = f"{type(exc).__name__}: {exc}"
        progress.say(f"optimisation failed, continuing without it: {errors['onnx-optimized']}")
    if any(CANDIDATES[c].source == "onnx-noattention" for c in candidates):
        try:
            optimize_onnx(paths["onnx-fp32"], work / "model.onnx-noattention.onnx",
                          num_heads=int(md.config.get("num_attention_heads", 0)),
                          hidden_size=int(md.config.get("hidden_size", 0)), attention=False)
            paths["onnx-noattention"] = work / "model.onnx-noattention.onnx"
        except Exception as exc:
            errors["onnx-noattention"] = f"{type(exc).__name__}: {exc}"
    progress.step(f"quantising to int8: {', '.join(candidates)}")
    for name in candidates:
        spec = CANDIDATES[name]
        if spec.batched and name not in paths:   # the same file as its one-window-per-call twin, served otherwise
            twin = next((n for n, c in CANDIDATES.items() if c == Candidate(spec.source, spec.method, spec.per_channel)
                         and n in paths), None)
            if twin:
                paths[name] = paths[twin]
                continue
        if spec.source not in paths:
            errors[name] = f"{spec.source} not available"
            continue
        try:
            out = work / f"model.{name}.onnx"
            if spec.method == "dynamic":
                paths[name] = quantize_int8(paths[spec.source], out, spec.per_channel)
            elif spec.method == "static":
                paths[name] = quantize_static_int8(paths[spec.source], out, _calibration_feeds(md, staged))
            else:
                paths[name] = quantize_weight_only_int8(paths[spec.source], out)
        except Exception as exc:
            errors[name] = f"{type(exc).__name__}: {exc}"
            progress.say(f"{name} failed: {errors[name]}")
    return paths, fusions, errors


def _calibration_feeds(md: ModelDir, staged: Staged) -> list[dict]:
    """Model inputs for static int8's calibration: the first CALIBRATION_WINDOWS windows of the training texts,
    one window per feed (no padding). Raises when the model's data has no training split."""
    train = split_texts(md, "train", CALIBRATION_WINDOWS)
    if train is None:
        raise CompressionError("static int8 calibrates on the model's training texts, and there are none")
    windows = staged.encoder.encode(train.texts).windows[:CALIBRATION_WINDOWS]
    return [staged.encoder.feeds([w]) for w in windows]


def _call_batch(name: str) -> int:
    """Windows per onnxruntime call for a variant, as the predictor would serve it."""
    spec = CANDIDATES.get(name)
    return (spec.windows_per_call if spec else None) or DEFAULT_BATCH_SIZE


def served(encoder: TextEncoder, name: str, forward):
    """`encoded -> window logits` for a variant, batched as the predictor serves it."""
    return lambda encoded: encoder.run_windows(forward, encoded, _call_batch(name), max_tokens=DEFAULT_BATCH_TOKENS)


def make_runners(model, paths: dict[str, Path], errors: dict[str, str], num_threads: int | None) -> dict:
    """`feeds -> logits` for PyTorch and every ONNX variant, with exactly the served session options."""
    import onnxruntime as ort
    import torch

    def torch_run(feeds):
        with torch.inference_mode():
            return model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.numpy()

    runners = {"pytorch": torch_run}
    for name, path in paths.items():
        if name in errors:
            continue
        try:
            sess = ort.InferenceSession(str(path), session_options(num_threads), providers=["CPUExecutionProvider"])
            runners[name] = (lambda s: (lambda f: s.run(["logits"], f)[0]))(sess)
        except Exception as exc:
            errors[name] = f"{type(exc).__name__}: {exc}"
    return runners


@dataclass
class Measured:
    encoded: Encoded
    variants: dict[str, dict]             # per variant: size, parity, agreement, F1 (timing added later)
    probs: dict[str, np.ndarray]          # transformer probabilities per variant
    linear_p: np.ndarray | None


def measure(staged: Staged, ev_texts: "rep.EvalTexts", runners: dict, paths: dict[str, Path],
             errors: dict[str, str], md: ModelDir) -> Measured:
    """Probabilities of every variant on the same token ids, each batched as the predictor would serve it; parity
    and agreement against PyTorch; F1 of the served decision (the blend when there is a linear part) with the tuned
    thresholds; and, for every ONNX variant, the consistency check (each text alone vs in mixed-length batches)."""
    texts, encoded = ev_texts.texts, staged.encoder.encode(ev_texts.texts)
    linear_p = staged.linear.probabilities(texts) if staged.linear is not None else None
    blended = staged.linear.blend if staged.linear is not None else (lambda p, _: p)
    thresholds = np.asarray(md.thresholds)
    probe = rep.consistency_texts(texts)
    probe_linear = staged.linear.probabilities(probe) if staged.linear is not None else None
    variants, probs, pt_decided = {}, {}, None
    for name, run in runners.items():
        call = _call_batch(name)
        try:
            p = sigmoid(staged.encoder.run(run, encoded, call, sort=True, max_tokens=DEFAULT_BATCH_TOKENS))
        except Exception as exc:
            errors[name] = f"{type(exc).__name__}: {exc}"
            continue
        probs[name] = p
        decided = decide(blended(p, linear_p), thresholds)
        v = {"size_bytes": file_size(md.weights) if name == "pytorch" else file_size(paths[name]),
             "windows_per_call": call if call < DEFAULT_BATCH_SIZE else None}
        if name == "pytorch":
            pt_decided = decided
        else:
            diff = np.abs(p - probs["pytorch"])
            v.update(max_abs_prob_diff=float(diff.max()), mean_abs_prob_diff=float(diff.mean()),
                     label_agreement=float((decided == pt_decided).mean()),
                     set_agreement=float((decided == pt_decided).all(1).mean()))
            if linear_p is not None:  # the blend can hide the transformer's changes (weight 1 hides them all)
                v["transformer_label_agreement"] = float((decide(p, thresholds) == decide(probs["pytorch"], thresholds)).mean())
            # PyTorch is the reference, not a served variant: it is not checked (its padded batches agree with
            # one text alone to ~1e-6, far inside the tolerance, but it would cost minutes on long texts).
            score = (lambda r, c: lambda ts: sigmoid(staged.encoder.run(
                r, staged.encoder.encode(ts), c, sort=True, max_tokens=DEFAULT_BATCH_TOKENS)))(run, call)
            v["consistency"] = rep.consistency(score, probe, lambda q: decide(blended(q, probe_linear), thresholds))
        if ev_texts.y_true is not None:
            v.update(rep.f1_scores(ev_texts.y_true, decided))
        variants[name] = v
    for name in errors:
        variants.setdefault(name, {})["error"] = errors[name]
    return Measured(encoded, variants, probs, linear_p)


def timing_windows(encoded: Encoded) -> tuple[list[Encoded], Encoded]:
    """16 single windows, and one batch of 32 (the evaluation texts' windows, repeated when there are fewer)."""
    n = len(encoded.windows)
    return [encoded.subset([i]) for i in range(min(16, n))], encoded.subset([i % n for i in range(32)])


def quantization_info(ev: dict, opset: int) -> dict:
    """bundle.json's `quantization`: how the chosen variant was made, and `windows_per_call`, which tells the
    predictor how to batch it (docs/CONTRACTS.md)."""
    chosen = ev["chosen"]
    spec = CANDIDATES[chosen]
    method, activations = {
        "dynamic": ("onnxruntime dynamic quantisation",
                    "uint8, quantised at run time with one scale per onnxruntime call"),
        "static": ("onnxruntime static quantisation (QDQ)",
                   f"uint8, ranges calibrated once (min/max) on {CALIBRATION_WINDOWS} training windows"),
        "weight-only": ("onnxruntime weight-only quantisation (MatMulNBits, 8 bits, blocks of 32; int8 embeddings)",
                        "float32")}[spec.method]
    return {"method": method, "weight_type": "int8", "activations": activations,
            "activation_scales": spec.activation_scales, "windows_per_call": spec.windows_per_call,
            "variant": chosen, "graph_optimized": spec.source != "onnx-fp32", "per_channel": spec.per_channel,
            "opset": opset, "onnxruntime": ev["onnxruntime"], "reason": ev["choice_reason"]}


def verify_bundle(tmp: Path, staged: Staged, m: Measured, chosen: str, run, texts: list[str],
                   num_threads: int | None) -> None:
    """The written bundle, loaded as a server loads it, must reproduce what was measured for the chosen variant,
    batched as it was measured (bundle.json's windows_per_call must say so)."""
    final = Predictor.from_bundle(tmp, num_threads=num_threads)
    if final.windows_per_call != CANDIDATES[chosen].windows_per_call:
        raise CompressionError(f"{tmp / 'bundle.json'}: the predictor would read {final.windows_per_call} windows per "
                               f"call, {chosen} was measured with {CANDIDATES[chosen].windows_per_call}")
    check = final.probabilities(texts)[0]
    encoded = staged.encoder.encode(texts)
    want = sigmoid(staged.encoder.run(run, encoded, _call_batch(chosen), max_tokens=DEFAULT_BATCH_TOKENS))
    if staged.linear is not None:
        want = staged.linear.blend(want, m.linear_p[:len(texts)])
    if not np.allclose(check, want, atol=1e-5):
        raise CompressionError(f"{tmp / 'model.onnx'}: the written bundle does not reproduce its own evaluation")
