"""The fastai DataLoaders a run trains on: blurr's TextBlock over the train/valid rows for a full fine-tune
(`build_dls`), or the rows of the layer cache for the top layers (`cached_dls`, over `layercache.Cache`). Either way
a long training document is read one window per epoch, the next of its windows in a shuffled order
(`WindowCycle`, with `--train-windows random`).

    from training.loaders import build_dls
    dls = build_dls(frames["train"], frames["valid"], ys["train"], ys["valid"], labels, tokenizer, model, settings)
    dls.show_batch()
"""
from __future__ import annotations

import random
from typing import TYPE_CHECKING

import numpy as np
import torch

from training.settings import TrainSettings

if TYPE_CHECKING:
    from training.layercache import Cache


class WindowSampler:
    """fastai `get_x`: the text of one window of a training document, the next of its windows in a shuffled order
    each time it is asked (fastai asks once per epoch; `WindowCycle`), so the epochs see the whole of
    long documents at the cost of one truncated pass. Validation rows (and `mode="first"`) give the text itself,
    which the tokenizer cuts to the first window."""

    def __init__(self, spans: dict[int, list[tuple[int, int]]], mode: str, seed: int):
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


# --------------------------------------------------------------------------------------------- the layer cache's rows
class WindowCycle:
    """Which of a row's `n` windows to read each time the row is asked for one: every window once, in a random
    order, before any is read again (a fresh order each round). Drawing with replacement instead, a CMU summary
    of 3 windows read for 2.6 epochs sees 2.0 of them on average; cycling, 2.6."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.order: dict = {}
        self.asked: dict = {}

    def __call__(self, key, n: int) -> int:
        if n <= 1:
            return 0
        k = self.asked.get(key, 0)
        if k % n == 0 or len(self.order[key]) != n:
            self.order[key] = self.rng.permutation(n)
        self.asked[key] = k + 1
        return int(self.order[key][k % n])


class CachedRows:
    """A training (or valid) set over the cache: row i gives (its window this epoch, its label vector). `draw()`
    picks the epoch's windows: the next of each row's cached windows in a shuffled order when `random`
    (`WindowCycle`), else its first."""

    def __init__(self, cache: Cache, y: np.ndarray, random: bool, seed: int):
        self.cache, self.y, self.random = cache, np.asarray(y, dtype=np.float32), random
        self.cycle = WindowCycle(seed)
        self.picked = [ws[0] for ws in cache.rows]

    def draw(self) -> None:
        """New windows for the next epoch (the bucketing DataLoader calls it before it orders the rows)."""
        if self.random:
            self.picked = [ws[self.cycle(i, len(ws))] for i, ws in enumerate(self.cache.rows)]

    def length(self, i: int) -> int:
        """Tokens in row i's window this epoch."""
        return int(self.cache.hidden[self.picked[i]].shape[0])

    def __len__(self) -> int:
        return len(self.cache.rows)

    def __getitem__(self, i):
        return self.cache.hidden[self.picked[i]], self.y[i]


def collate(items) -> tuple:
    """((hidden [B, T, H], mask [B, T]), y [B, L]): windows right-padded to the longest in the batch."""
    lengths = [h.shape[0] for h, _ in items]
    t, width = max(lengths), items[0][0].shape[1]
    hidden = torch.zeros(len(items), t, width, dtype=items[0][0].dtype)
    mask = torch.zeros(len(items), t, dtype=torch.long)
    for b, ((h, _), n) in enumerate(zip(items, lengths)):
        hidden[b, :n] = h
        mask[b, :n] = 1
    return (hidden, mask), torch.from_numpy(np.stack([y for _, y in items]))


BUCKET_BATCHES = 50   # batches whose rows are sorted by window length together (fastai's SortedDL uses 50 too)


def bucketed(idxs: list, length, batch_size: int, shuffle) -> list:
    """`idxs` (already shuffled) reordered into batches of similar lengths: each run of BUCKET_BATCHES batches'
    rows sorted by `length`, cut into batches, the full batches shuffled by `shuffle` and the one partial batch
    (if any) kept last, where `drop_last` finds it. The same rows, each once."""
    n = batch_size * BUCKET_BATCHES
    batches = []
    for c in range(0, len(idxs), n):
        part = sorted(idxs[c:c + n], key=length)
        batches += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    full = [b for b in batches if len(b) == batch_size]
    shuffle(full)
    return [i for b in full + [b for b in batches if len(b) < batch_size] for i in b]


def cached_dls(train: CachedRows, valid: CachedRows, batch_size: int, eval_batch_size: int, seed: int):
    """fastai DataLoaders over the cached rows: training batches shuffled and length-bucketed (each epoch draws
    its windows, then batches windows of similar length: a random batch pads to its longest window, and one
    random window per CMU summary left 25% of the padded tokens padding; bucketed batches pad ~25% fewer),
    the last partial batch dropped (as blurr's are); valid in order."""
    from fastai.data.core import DataLoaders
    from fastai.data.load import DataLoader

    class BucketedDL(DataLoader):
        def get_idxs(self):
            self.dataset.draw()
            idxs = super().get_idxs()
            return bucketed(list(idxs), self.dataset.length, self.bs, self.rng.shuffle) if self.shuffle else idxs

    dl_train = BucketedDL(train, bs=batch_size, shuffle=True, drop_last=True, create_batch=collate, num_workers=0)
    dl_train.rng = random.Random(seed)   # fastai seeds its shuffle from the process-wide `random`: --seed decides
    dl_valid = DataLoader(valid, bs=eval_batch_size, shuffle=False, drop_last=False, create_batch=collate,
                          num_workers=0)
    torch.manual_seed(seed)
    return DataLoaders(dl_train, dl_valid)
