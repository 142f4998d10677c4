"""PyTorch inference over a Hugging Face classifier, tokenised and windowed exactly as the served bundle is.

Used by training for the valid/test logits that thresholds, the window pooling and the blend are tuned and
metrics reported on (turn them into probabilities with `deployment.scoring.sigmoid`, the serving maths). The
tokenisation is `deployment.encoding.TextEncoder` over the fast tokenizer's own `tokenizers` object, the code
the predictor runs: a document's windows, and so its prediction, are the same in training and in serving.
During a run the passes go where training runs (a GPU included), batched from the token cache's arrays
(`training.tokencache`); only the logits come back.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from tokenizers import Tokenizer

from deployment.encoding import TextEncoder, Windows, pool_windows


def text_encoder(tokenizer, model, max_length: int, windows: Windows | None = None) -> TextEncoder:
    """The serving tokenisation for a Hugging Face fast tokenizer and its model (inputs the model accepts)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ValueError(f"{type(tokenizer).__name__} is not a fast tokenizer: the serving path needs tokenizer.json")
    # Segment ids only where the model has a real segment table (BERT, MiniLM), as the ONNX export decides.
    names = ["input_ids", "attention_mask"] + (["token_type_ids"]
                                               if int(getattr(model.config, "type_vocab_size", 0) or 0) > 1 else [])
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return TextEncoder(Tokenizer.from_str(backend.to_str()), max_length, names, pad, windows)


@torch.no_grad()
def window_logits(model, tokens, batch_size: int = 32, progress=None, autocast: torch.dtype | None = None,
                  max_tokens: int | None = None) -> np.ndarray:
    """Logits [n_windows, L] for every window of `tokens` (a `training.tokencache.TokenCache`), in window order, in
    eval mode on the model's device (the training device during a run): length-sorted batches of at most
    `batch_size` windows (and `max_tokens` padded tokens) built from the arrays, copied to the device without
    blocking, forward passes under autocast to `autocast` on that device when given (else the model's fp32); the
    logits stay on the device until the last batch, then come back in one copy. `progress` wraps an iterable
    (tqdm, fastprogress) and is stepped once a batch."""
    from training.devices import to_device

    model.eval()
    if not tokens.window_count:
        return np.zeros((0, model.config.num_labels), dtype=np.float32)
    device = next(model.parameters()).device
    batches = tokens.batches(batch_size, max_tokens)
    out = torch.zeros((tokens.window_count, model.config.num_labels), dtype=torch.float32, device=device)

    def forward(idx: np.ndarray) -> None:
        feeds = to_device({k: torch.from_numpy(v) for k, v in tokens.feeds(idx).items()}, device)
        out[torch.from_numpy(idx).to(device)] = model(**feeds).logits.float()

    forward, done = stepped(forward, progress, lambda: len(batches))
    with torch.autocast(device.type, dtype=autocast or torch.bfloat16, enabled=autocast is not None):
        for idx in batches:
            forward(idx)
    done()
    return out.cpu().numpy()


def stepped(forward, progress, n_batches):
    """(`forward` stepping the progress display `progress(range(n_batches()))` once a call, a function that closes
    it); `progress` None: `forward` unchanged (and the batches are not counted)."""
    if progress is None:
        return forward, lambda: None
    ticks = iter(progress(range(n_batches())))
    next(ticks, None)

    def counted(feeds):
        out = forward(feeds)
        next(ticks, None)
        return out

    return counted, lambda: next(ticks, None)


def predict_logits(model, tokenizer, texts: Sequence[str], max_length: int, batch_size: int = 32,
                   progress=None, windows: Windows | None = None, autocast: torch.dtype | None = None) -> np.ndarray:
    """Logits [n, L] in input order: each text's windows pooled as `windows` says (default: truncation), the
    forward passes where the model is, under `autocast` when given."""
    from training.tokencache import pack

    encoder = text_encoder(tokenizer, model, max_length, windows)
    encoded = encoder.encode(texts)
    return pool_windows(window_logits(model, pack(encoded, encoder), batch_size, progress, autocast), encoded.owner,
                        len(encoded), encoder.windows.pooling)
