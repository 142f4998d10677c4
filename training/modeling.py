"""The classifier definition shared by training and compression: a Hugging Face sequence classifier whose
sentence vector is either the first token (HF's default) or the attention-masked mean of the token vectors.

    from training.modeling import load_classifier
    model = load_classifier("models/books/checkpoint")        # honours config.classifier_pooling

Why mean pooling: sentence-transformers backbones such as the offline all-MiniLM-L6-v2 were trained to be
read by mean pooling (their `1_Pooling/config.json` says so); their [CLS] vector was never trained to sum
up the text, and fine-tuning through it on a few hundred steps learns little beyond label priors (measured:
micro-F1 0.21-0.33 on the sample books where mean pooling learns the genres). The checkpoint stays a plain
`save_pretrained` folder; `config.json` carries `"classifier_pooling": "mean"`, and the ONNX export bakes the
pooling into the graph, so serving needs nothing from here.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

import config

config.use_offline_hub()   # this module loads Hugging Face models: never wait on an unreachable hub

POOLING_KEY = "classifier_pooling"


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, T, H] hidden states -> [B, H]: the mean over the tokens the mask keeps."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-6)


class MeanPooledClassifier(torch.nn.Module):
    """Wraps a BERT-like `*ForSequenceClassification` (a `dropout` and a linear `classifier` on top of
    `base_model`) and feeds the classifier the masked mean of the last hidden states instead of [CLS]."""

    def __init__(self, hf_model):
        super().__init__()
        if not (isinstance(getattr(hf_model, "classifier", None), torch.nn.Linear) and hasattr(hf_model, "dropout")):
            raise ValueError(f"{type(hf_model).__name__} has no linear `classifier` head: mean pooling supports "
                             "BERT-like models only; use --pooling cls")
        self.hf = hf_model
        self.config = hf_model.config
        self.config.__dict__[POOLING_KEY] = "mean"

    @property
    def base_model(self):
        return self.hf.base_model

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, output_hidden_states=False,
                output_attentions=False, return_dict=True, **kwargs):
        from transformers.modeling_outputs import SequenceClassifierOutput

        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        out = self.hf.base_model(**inputs, output_hidden_states=output_hidden_states,
                                 output_attentions=output_attentions, return_dict=True)
        logits = self.hf.classifier(self.hf.dropout(mean_pool(out.last_hidden_state, attention_mask)))
        return SequenceClassifierOutput(logits=logits, hidden_states=out.hidden_states, attentions=out.attentions)

    def save_pretrained(self, path, **kwargs):
        self.hf.config.__dict__[POOLING_KEY] = "mean"
        self.hf.save_pretrained(path, **kwargs)


def backbone_pooling(source: str | Path) -> str:
    """'mean' when a sentence-transformers folder declares mean pooling, else 'cls'."""
    cfg = Path(source) / "1_Pooling" / "config.json"
    try:
        return "mean" if json.loads(cfg.read_text()).get("pooling_mode_mean_tokens") else "cls"
    except (OSError, ValueError):
        return "cls"


def with_pooling(hf_model, pooling: str):
    """The model as trained and served for `pooling` ('mean' wraps it, 'cls' is HF's own head)."""
    if pooling == "mean":
        return MeanPooledClassifier(hf_model)
    if pooling != "cls":
        raise ValueError(f"pooling must be 'mean' or 'cls', not {pooling!r}")
    hf_model.config.__dict__[POOLING_KEY] = "cls"
    return hf_model


def load_classifier(path: str | Path, **kwargs):
    """Load a saved checkpoint with the pooling it was trained with (config.json's classifier_pooling)."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(path, **kwargs)
    return with_pooling(model, getattr(model.config, POOLING_KEY, "cls"))
