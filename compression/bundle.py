"""The bundle folder's own parts: the tokenizer and linear part staged, `bundle.json`, the model card, the write.

    staged = stage(md, tmp, command)          # tokenizer + linear part copied, bundle.json drafted, the encoder
    write_bundle(tmp, staged.info, ev, model_path)

docs/CONTRACTS.md describes every key written here.
"""
from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import config
from compression import report as rep
from compression.export import CompressionError
from compression.report import human_bytes
from deployment.encoding import TextEncoder, Windows
from deployment.formats import dumps
from deployment.scoring import LinearComponent
from training.modeldir import ModelDir


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                   "vocab.json", "merges.txt", "added_tokens.json")
BACKBONE_LICENSES = {                 # what the model card says about where the weights came from
    "minilm": "Apache-2.0 (sentence-transformers/all-MiniLM-L6-v2)",
    "distilroberta": "Apache-2.0 (distilroberta-base)",
    "roberta": "MIT (roberta-base)",
    "bert": "Apache-2.0 (BERT)",
}
COLOR_FILES = ("label_colors.json", "palette.json")   # {"label": "#rrggbb"}; training.cover_hues writes palette.json


def _license(backbone: str, model_type: str) -> str:
    key = (backbone or "").lower()
    for name, text in BACKBONE_LICENSES.items():
        if name in key:
            return text
    return BACKBONE_LICENSES.get(model_type, "see the backbone's own model card")


def _copy_tokenizer(md: ModelDir, dest: Path) -> list[str]:
    if not (md.checkpoint / "tokenizer.json").is_file():
        # A checkpoint saved with a slow tokenizer only: convert once here, so serving needs only `tokenizers`.
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(md.checkpoint, use_fast=True).save_pretrained(dest)
        return sorted(n for n in TOKENIZER_FILES if (dest / n).is_file())
    copied = []
    for name in TOKENIZER_FILES:
        if (md.checkpoint / name).is_file():
            shutil.copy2(md.checkpoint / name, dest / name)
            copied.append(name)
    return copied


def _pad_token_id(md: ModelDir, dest: Path) -> int:
    from tokenizers import Tokenizer

    tok_cfg = json.loads((dest / "tokenizer_config.json").read_text()) if (dest / "tokenizer_config.json").is_file() else {}
    pad = tok_cfg.get("pad_token")
    if isinstance(pad, dict):
        pad = pad.get("content")
    pad_id = Tokenizer.from_file(str(dest / "tokenizer.json")).token_to_id(pad) if pad else None
    if pad_id is None:
        pad_id = md.config.get("pad_token_id")
    return int(pad_id or 0)


def label_display(md: ModelDir) -> dict:
    """`label_display` (+ `label_colors`): as settings.json says, else "colors" when a label_colors.json or
    palette.json beside the model, the prepared data or the data's source CSV names a #rrggbb colour for
    every label (a colour-label data set made by training.cover_hues); a genre model never matches one."""
    if "label_display" in md.settings:
        shown = md.settings["label_display"]
        return {"label_display": shown, **({"label_colors": md.settings.get("label_colors", {})}
                                           if shown == "colors" else {})}
    folders = [md.root]
    data = Path(md.settings["data"]) if md.settings.get("data") else None
    if data is not None and data.is_dir():
        folders.append(data)
        try:
            source = Path(json.loads((data / "report.json").read_text(encoding="utf-8"))["input"]["path"])
            folders += [source.parent] if source.is_absolute() else [source.parent, config.ROOT / source.parent]
        except (OSError, ValueError, KeyError, TypeError):
            pass                                           # no report: only the model and data folders count
    for folder in folders:
        for name in COLOR_FILES:
            try:
                colors = json.loads((folder / name).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(colors, dict) and all(isinstance(colors.get(lab), str)
                                                and re.fullmatch(r"#[0-9a-fA-F]{6}", colors[lab]) for lab in md.labels):
                return {"label_display": "colors", "label_colors": {lab: colors[lab].lower() for lab in md.labels}}
    return {"label_display": "text"}


def _bundle_info(md: ModelDir, dest: Path, tok_files: list[str], command: str) -> dict:
    tok_cfg = json.loads((dest / "tokenizer_config.json").read_text()) if (dest / "tokenizer_config.json").is_file() else {}
    inputs = ["input_ids", "attention_mask"] + (["token_type_ids"] if md.uses_token_type_ids else [])
    linear = None
    if md.linear is not None:
        spec = json.loads((md.linear / "linear.json").read_text())
        linear = {"weight": float(spec["weight"]), "blend_space": spec.get("blend_space", "probability")}
        if spec.get("label_weights") is not None:
            linear["label_weights"] = dict(zip(md.labels, spec["label_weights"]))
    return {
        "format_version": 1,
        "labels": md.labels,
        "thresholds": md.thresholds,
        "global_threshold": md.global_threshold,
        "max_length": min(md.max_length, int(md.config.get("max_position_embeddings", md.max_length))),
        "windows": md.settings.get("windows") or Windows().to_dict(),   # model dirs from before windows: truncation
        "backbone": md.settings.get("backbone"),
        "tokenizer": {"kind": tok_cfg.get("tokenizer_class") or md.config.get("model_type"), "files": tok_files,
                      "uses_token_type_ids": md.uses_token_type_ids, "pad_token_id": _pad_token_id(md, dest)},
        "inputs": inputs,
        "source_dataset": md.settings.get("data"),
        "metrics": {"model": md.metrics.get("model"), "baseline": md.metrics.get("baseline")},
        "quantization": None,
        "linear": linear,
        **label_display(md),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "training_command": md.command,
    }


@dataclass
class Staged:
    """What the bundle folder already holds before the model is exported: tokenizer, linear part, metadata."""
    info: dict                            # bundle.json as it will be written (quantization filled in at the end)
    encoder: TextEncoder                  # the bundle's own tokenisation, shared by every variant
    linear: LinearComponent | None


def stage(md: ModelDir, tmp: Path, command: str) -> Staged:
    tok_files = _copy_tokenizer(md, tmp)
    linear = None
    if md.linear is not None:
        for name in ("linear.json", "linear.npz"):
            shutil.copy2(md.linear / name, tmp / name)
        linear = LinearComponent.load(tmp / "linear.json", tmp / "linear.npz", len(md.labels))
    info = _bundle_info(md, tmp, tok_files, command)
    try:
        windows = Windows.from_dict(info["windows"])
        encoder = TextEncoder.from_file(tmp / "tokenizer.json", info["max_length"], info["inputs"],
                                        info["tokenizer"]["pad_token_id"], windows)
    except (TypeError, ValueError) as exc:
        raise CompressionError(f"{md.root / 'settings.json'}: bad 'windows' ({exc})") from exc
    return Staged(info, encoder, linear)


def _model_card(info: dict, ev: dict) -> str:
    pt, chosen = ev["variants"]["pytorch"], ev["variants"][ev["chosen"]]
    lines = ["# Multilabel text classifier — int8 ONNX bundle", "",
             f"Predicts {len(info['labels'])} labels from a text (multilabel: any number may apply). "
             f"Fine-tuned from `{info['backbone']}`, exported to ONNX and quantised to int8 "
             f"(`{ev['chosen']}`)"
             + (", run one window per onnxruntime call" if (info.get("quantization") or {}).get("windows_per_call") == 1
                else "") + ": a text's labels do not depend on the other texts it is predicted with.", "",
             "## Load it", "", "```python", "from deployment.predictor import Predictor",
             "pred = Predictor.from_bundle(\"path/to/bundle\")",
             "pred.predict([\"A young wizard discovers a hidden kingdom...\"], top_k=5)", "```",
             "Needs only `onnxruntime`, `tokenizers` and `numpy` (no torch). Batch CLI: "
             "`python -m deployment.predict --bundle DIR --input FILE.csv --out OUT.csv`.", "",
             "## Labels and tuned thresholds", "", "| label | threshold |", "| --- | --- |"]
    lines += [f"| {lab} | {th:.3f} |" for lab, th in zip(info["labels"], info["thresholds"])]
    win = info.get("windows") or {"max_windows": 1}
    reading = (f"in windows of {info['max_length']} tokens ({win['stride']} shared by consecutive windows, at most "
               f"{win['max_windows']} per text, logits pooled by {win['pooling']})" if win["max_windows"] > 1
               else f"up to {info['max_length']} tokens")
    lines += ["", f"Global threshold: {info['global_threshold']:.3f}. Texts are read {reading}"
              + (f"; a TF-IDF + logistic-regression component is blended in {_blend_words(info['linear'])}."
                 if info["linear"] else "."), "", "## Metrics (test split)", ""]
    model_metrics = (info["metrics"] or {}).get("model") or {}
    if model_metrics:
        lines += ["- training report: " + ", ".join(f"{k} {v:.4f}" for k, v in model_metrics.items()
                                                     if isinstance(v, (int, float)))]
    if "micro_f1" in chosen:
        lines += [f"- PyTorch fp32: micro-F1 {pt['micro_f1']:.4f}, macro-F1 {pt['macro_f1']:.4f}",
                  f"- this int8 bundle: micro-F1 {chosen['micro_f1']:.4f}, macro-F1 {chosen['macro_f1']:.4f}, "
                  f"label agreement with PyTorch {chosen['label_agreement']:.4f}"]
    served = ev.get("served") or {}
    if "micro_f1" in served:
        lines += ["- served by this bundle (int8 transformer" + (f" + linear part `{served['linear']}`, blended"
                                                                  if served.get("linear") else "")
                  + f"): micro-F1 {served['micro_f1']:.4f} ({served['delta_micro_f1']:+.4f} vs PyTorch), "
                  f"macro-F1 {served['macro_f1']:.4f} ({served['delta_macro_f1']:+.4f})"]
    for w in ev["warnings"]:
        lines.append(f"- warning: {w}")
    whole = ev.get("bundle")
    if whole:
        lines += ["", "## Size of the bundle", "", "| part | size |", "| --- | --- |"]
        lines += [f"| `{part}` | {human_bytes(n)} |" for part, n in whole["parts_bytes"].items()]
        lines += [f"| whole bundle | {rep.human_mib(whole['total_bytes'])} = "
                  f"{100 * whole['ratio_vs_fp32_checkpoint']:.1f}% of the fp32 checkpoint "
                  f"({rep.human_mib(whole['fp32_checkpoint_bytes'])}) |", "",
                  f"Not counted: {whole['not_counted']}."]
        choice = ev.get("linear_compression")
        if choice:
            lines += ["", f"Linear part: {choice['reason']}."]
    lines += ["", "## Size and speed", "", "```", ev["table"], "```", "",
              f"Source data: `{info['source_dataset']}`. Made by `{info['command']}` on {info['created']}.", "",
              "## License", "", f"Backbone weights: {_license(str(info['backbone']), info['tokenizer']['kind'] or '')}. "
              "The fine-tuned weights inherit the backbone's license; check the training data's terms before "
              "redistributing.", ""]
    return "\n".join(lines)


def _blend_words(linear: dict) -> str:
    """How bundle.json's `linear` is blended, in words for the model card."""
    space = "log-odds" if linear.get("blend_space") == "logit" else "probability"
    per = linear.get("label_weights")
    if not per:
        return f"{space} space with weight {linear['weight']}"
    return (f"{space} space with a weight per label chosen on valid ({min(per.values()):g} to {max(per.values()):g}; "
            f"{linear['weight']} for labels too rare to choose one)")


def write_bundle(tmp: Path, info: dict, ev: dict, model_path: Path) -> None:
    """model.onnx (the chosen variant), bundle.json, eval.json and the model card; the work folder goes."""
    shutil.copy2(model_path, tmp / "model.onnx")
    shutil.rmtree(tmp / "_work")
    measured = ev["variants"][ev["chosen"]]
    info["metrics"]["int8"] = {k: measured[k] for k in ("micro_f1", "macro_f1", "label_agreement") if k in measured} or None
    (tmp / "bundle.json").write_text(dumps(info, indent=2))
    (tmp / "eval.json").write_text(dumps(ev, indent=2))
    (tmp / "README.md").write_text(_model_card(info, ev))
