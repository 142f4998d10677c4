"""PyTorch inference over a Hugging Face classifier: length-sorted batches with dynamic padding.

Used by training for the valid/test logits that thresholds are tuned and metrics reported on (turn them into
probabilities with `deployment.scoring.sigmoid`, the serving maths). The compression report feeds PyTorch the
bundle's own token ids instead, and serving never uses this: it goes through `deployment/predictor.py`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def tokenize(tokenizer, texts: Sequence[str], max_length: int) -> dict:
    """Token ids without padding; truncation is the tokenizer's, so [SEP]/</s> always closes the sequence."""
    return tokenizer(list(texts), truncation=True, max_length=max_length, padding=False)


@torch.no_grad()
def predict_logits(model, tokenizer, texts: Sequence[str], max_length: int, batch_size: int = 32,
                   progress=None) -> np.ndarray:
    """Logits [n, L] in input order. Batches are formed over texts sorted by token length (less padding)."""
    model.eval()
    enc = tokenize(tokenizer, texts, max_length)
    n = len(enc["input_ids"])
    order = np.argsort([len(ids) for ids in enc["input_ids"]], kind="stable")
    out = np.zeros((n, model.config.num_labels), dtype=np.float32)
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
    steps = range(0, n, batch_size)
    for start in (progress(steps) if progress else steps):
        idx = order[start:start + batch_size]
        batch = tokenizer.pad({k: [enc[k][i] for i in idx] for k in keys}, return_tensors="pt")
        out[idx] = model(**batch).logits.float().numpy()
    return out

