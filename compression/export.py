"""The three graph steps of compression: export to ONNX, transformer graph optimisation, int8 quantisation.

The model folder they start from is read and checked by its format's owner, `training.modeldir.read_model_dir`
(a missing or half-written checkpoint fails with the file's name before any work starts).
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import config
from training.modeldir import ModelDir

config.use_offline_hub()   # this module loads Hugging Face models: never wait on an unreachable hub

OPSET = 17                     # >= 17: LayerNormalization is a real op, which the optimizer fuses cleanly


class CompressionError(RuntimeError):
    """Bad input or a failed check; the message names the file."""


def load_torch_model(md: ModelDir):
    """The checkpoint as an eval-mode PyTorch model with eager attention (the pattern the ONNX fusions know)."""
    from training.modeling import load_classifier  # the checkpoint's model definition (pooling), shared with training

    try:
        model = load_classifier(md.checkpoint, attn_implementation="eager")
    except Exception as exc:  # safetensors/transformers raise many types for truncated or foreign files
        raise CompressionError(f"{md.weights}: cannot load the checkpoint ({type(exc).__name__}: {exc})") from exc
    if model.config.num_labels != len(md.labels):
        raise CompressionError(f"{md.root / 'labels.json'}: {len(md.labels)} labels, model has {model.config.num_labels}")
    return model.eval()


def export_onnx(model, input_names: list[str], out_path: Path, opset: int = OPSET) -> Path:
    """Legacy (TorchScript) exporter: the dynamo one needs onnxscript and breaks quantize_dynamic (DESIGN.md)."""
    import torch

    class Logits(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                kwargs["token_type_ids"] = token_type_ids
            return self.inner(**kwargs).logits

    batch, seq = 2, 16
    dummy = {"input_ids": torch.randint(1000, 2000, (batch, seq)),
             "attention_mask": torch.ones(batch, seq, dtype=torch.long),
             "token_type_ids": torch.zeros(batch, seq, dtype=torch.long)}
    dummy["attention_mask"][1, seq // 2:] = 0
    axes = {name: {0: "batch", 1: "sequence"} for name in input_names}
    axes["logits"] = {0: "batch"}
    # A fresh wrapper is in training mode, and the exporter restores that mode afterwards, recursively, which
    # would switch dropout on in `model` for everything that follows: keep both in eval mode.
    wrapper = Logits(model).eval()
    with torch.no_grad(), warnings.catch_warnings():
        # Known and harmless here: transformers' mask code branches on a shape (kv length always equals the mask
        # length without a cache) and indexes with non-negative indices. The parity check guards the result.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Exporting aten::index operator")
        torch.onnx.export(wrapper, tuple(dummy[n] for n in input_names), str(out_path),
                          input_names=input_names, output_names=["logits"], dynamic_axes=axes,
                          opset_version=opset, do_constant_folding=True, dynamo=False)
    model.eval()
    import onnx

    onnx.checker.check_model(str(out_path))
    return out_path


def optimize_onnx(in_path: Path, out_path: Path, num_heads: int, hidden_size: int) -> dict:
    """onnxruntime's transformer optimizer (attention, layer-norm, GELU, skip-layer-norm fusions).

    opt_level=0 keeps only the portable Python fusions, so the saved graph runs on any CPU.
    Returns the fused-operator counts so the report can show whether the fusions took.
    """
    from onnxruntime.transformers import optimizer

    opt = optimizer.optimize_model(str(in_path), model_type="bert", num_heads=num_heads, hidden_size=hidden_size,
                                   opt_level=0, use_gpu=False)
    opt.save_model_to_file(str(out_path))
    stats = opt.get_fused_operator_statistics()
    return {k: int(v) for k, v in stats.items() if v}


def quantize_int8(in_path: Path, out_path: Path, per_channel: bool) -> Path:
    """Dynamic int8 quantisation of the weights (activations quantised on the fly)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The legacy exporter's value_info is sound and the fused contrib ops (Attention, SkipLayerNormalization) need
    # it: onnx shape inference cannot type their outputs. (Clearing it is only needed for dynamo graphs.)
    # DefaultTensorType covers any tensor that is still untyped: every weight here is float32.
    # quantize_dynamic logs a generic "consider pre-processing" advice on the root logger on every call: drop that
    # one message while it runs (a filter, not a level change, so every other warning still gets through).
    root = logging.getLogger()
    advice = _DropMessages("pre-processing before quantization")
    root.addFilter(advice)
    try:
        quantize_dynamic(str(in_path), str(out_path), weight_type=QuantType.QInt8, per_channel=per_channel,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
        root.removeFilter(advice)
    return out_path


class _DropMessages(logging.Filter):
    def __init__(self, fragment: str):
        super().__init__()
        self.fragment = fragment

    def filter(self, record: logging.LogRecord) -> bool:
        return self.fragment not in record.getMessage()
