"""The three graph steps of compression: export to ONNX, transformer graph optimisation, int8 quantisation
(dynamic, static with calibrated activation ranges, or weight-only).

The model folder they start from is read and checked by its format's owner, `training.modeldir.read_model_dir`
(a missing or half-written checkpoint fails with the file's name before any work starts).
"""
from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path
from typing import Iterable

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


def optimize_onnx(in_path: Path, out_path: Path, num_heads: int, hidden_size: int, attention: bool = True) -> dict:
    """onnxruntime's transformer optimizer (attention, layer-norm, GELU, skip-layer-norm fusions).

    opt_level=0 keeps only the portable Python fusions, so the saved graph runs on any CPU. `attention=False`
    leaves attention as plain MatMuls, which static and weight-only quantisation can see (they quantise MatMul
    nodes, not the fused Attention op). Returns the fused-operator counts so the report can show what took.
    """
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    options = FusionOptions("bert")
    options.enable_attention = attention
    opt = optimizer.optimize_model(str(in_path), model_type="bert", num_heads=num_heads, hidden_size=hidden_size,
                                   opt_level=0, use_gpu=False, optimization_options=options)
    opt.save_model_to_file(str(out_path))
    stats = opt.get_fused_operator_statistics()
    return {k: int(v) for k, v in stats.items() if v}


def quantize_int8(in_path: Path, out_path: Path, per_channel: bool) -> Path:
    """Dynamic int8 quantisation: int8 weights, activations quantised on the fly with one scale per tensor computed
    over the whole input of an onnxruntime call (padding and the other texts included), so such a model is served
    one window per call (deployment.predictor.windows_per_call)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The legacy exporter's value_info is sound and the fused contrib ops (Attention, SkipLayerNormalization) need
    # it: onnx shape inference cannot type their outputs. (Clearing it is only needed for dynamo graphs.)
    # DefaultTensorType covers any tensor that is still untyped: every weight here is float32.
    with _quiet_quantizer():
        quantize_dynamic(str(in_path), str(out_path), weight_type=QuantType.QInt8, per_channel=per_channel,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return out_path


def quantize_static_int8(in_path: Path, out_path: Path, calibration: Iterable[dict]) -> Path:
    """Static int8 quantisation (QDQ): int8 weights per channel, and uint8 activations whose ranges were
    calibrated once, by min/max over `calibration` (model feeds, one window each: padding would widen no range,
    but equal shapes are what onnxruntime's calibrator wants). A text's activations are then scaled the same way
    whatever else is in the call. MatMul and Gather (the embeddings) only: the rest stays float."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter(calibration)

        def get_next(self):
            return next(self.feeds, None)

    with _quiet_quantizer():
        quantize_static(str(in_path), str(out_path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                        op_types_to_quantize=["MatMul", "Gather"], calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return out_path


def quantize_weight_only_int8(in_path: Path, out_path: Path, block_size: int = 32) -> Path:
    """Weight-only int8: every MatMul's weights as int8 in blocks of `block_size` along the inner dimension
    (onnxruntime's MatMulNBits, bits=8), the embeddings (Gather) as int8 with one scale per row; activations stay
    float, so nothing depends on the other texts of a call."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    matmuls = out_path.with_suffix(".matmul.onnx")
    with _quiet_quantizer():
        quantizer = MatMulNBitsQuantizer(onnx.load(str(in_path)), algo_config=DefaultWeightOnlyQuantConfig(
            block_size=block_size, is_symmetric=True, accuracy_level=0, bits=8, op_types_to_quantize=("MatMul",)))
        quantizer.process()
        quantizer.model.save_model_to_file(str(matmuls), use_external_data_format=False)
        # Gather's weights only: an int8 table and a DequantizeLinear after the lookup, no activation scales.
        quantize_dynamic(str(matmuls), str(out_path), weight_type=QuantType.QInt8, op_types_to_quantize=["Gather"],
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    matmuls.unlink()
    return out_path


@contextlib.contextmanager
def _quiet_quantizer():
    """onnxruntime's quantizers log generic advice (pre-processing, IR/opset upgrades for int4) on the root and
    their own loggers at every call: drop those messages while they run; every other warning still gets through."""
    filters = [(logging.getLogger(name), _DropMessages(fragment)) for name, fragment in (
        ("", "pre-processing before quantization"), ("onnxruntime.quantization.matmul_nbits_quantizer", "int4"),
        ("onnxruntime.quantization.matmul_nbits_quantizer", "Gather only supports"))]
    for logger, drop in filters:
        logger.addFilter(drop)
    try:
        yield
    finally:
        for logger, drop in filters:
            logger.removeFilter(drop)


class _DropMessages(logging.Filter):
    def __init__(self, fragment: str):
        super().__init__()
        self.fragment = fragment

    def filter(self, record: logging.LogRecord) -> bool:
        return self.fragment not in record.getMessage()
