"""The fastai DataLoaders of a full fine-tune: blurr's TextBlock over the train/valid rows, a long training document
read one window per epoch (`--train-windows random`). The layer cache has its own (`layercache.cached_dls`).

    from training.loaders import build_dls
    dls = build_dls(frames["train"], frames["valid"], ys["train"], ys["valid"], labels, tokenizer, model, settings)
    dls.show_batch()
"""
from __future__ import annotations

import numpy as np

from training.settings import TrainSettings


class WindowSampler:
    """fastai `get_x`: the text of one window of a training document, the next of its windows in a shuffled order
    each time it is asked (fastai asks once per epoch; `layercache.WindowCycle`), so the epochs see the whole of
    long documents at the cost of one truncated pass. Validation rows (and `mode="first"`) give the text itself,
    which the tokenizer cuts to the first window."""

    def __init__(self, spans: dict[int, list[tuple[int, int]]], mode: str, seed: int):
        from training.layercache import WindowCycle

        self.spans, self.mode = spans, mode
        self.cycle = WindowCycle(seed)

    def __call__(self, row) -> str:
        spans = self.spans.get(row["row_id"]) if self.mode == "random" and not row["is_valid"] else None
        if not spans:
            return row["text"]
        start, end = spans[self.cycle(row["row_id"], len(spans))]
        return row["text"][start:end]


def window_spans(encoder, texts: list[str]) -> dict[int, list[tuple[int, int]]]:
    """Character spans [start, end) of each window of every text longer than one window."""
    encoded = encoder.encode(texts)
    spans: dict[int, list[tuple[int, int]]] = {}
    for window, owner in zip(encoded.windows, encoded.owner.tolist()):
        if encoded.n_windows[owner] < 2:
            continue
        offsets = [o for o, special in zip(window.offsets, window.special_tokens_mask) if not special]
        if offsets:
            spans.setdefault(owner, []).append((offsets[0][0], offsets[-1][1]))
    return spans


def build_dls(train_df, valid_df, y_train, y_valid, labels, tokenizer, model, s: TrainSettings):
    """fastai DataLoaders through blurr's TextBlock: batch tokenisation, dynamic padding, length-sorted; a long
    training document contributes a random window per epoch (`--train-windows random`)."""
    import pandas as pd
    from fastai.data.block import ColReader, ColSplitter, DataBlock, MultiCategoryBlock

    from deployment.encoding import Windows
    from training.compat import blurr_text
    from training.inference import text_encoder

    frame = pd.concat([train_df[["text"]].assign(is_valid=False), valid_df[["text"]].assign(is_valid=True)],
                      ignore_index=True)
    frame["row_id"] = range(len(frame))
    spans = {}
    if s.train_windows == "random":
        encoder = text_encoder(tokenizer, model, s.max_length, Windows(max_windows=1_000_000, stride=0))
        spans = window_spans(encoder, train_df["text"].tolist())
    onehot = np.vstack([y_train, y_valid]).astype(np.float32)
    frame["y"] = list(onehot)
    block = blurr_text.TextBlock(hf_arch=model.config.model_type, hf_config=model.config, hf_tokenizer=tokenizer,
                                 hf_model=model, include_labels=False, max_length=s.max_length, padding=True,
                                 truncation=True)
    dblock = DataBlock(blocks=(block, MultiCategoryBlock(encoded=True, vocab=list(labels))),
                       get_x=WindowSampler(spans, s.train_windows, s.seed), get_y=ColReader("y"),
                       splitter=ColSplitter("is_valid"))
    return dblock.dataloaders(frame, bs=s.batch_size, val_bs=s.eval_batch_size, num_workers=0, seed=s.seed)
