"""The fastai DataLoaders a run trains on, and the one it used to.

- `token_dls` (a full fine-tune, what `training.train` and `learner_for` use): batches built from the token cache
  (`training.tokencache`: every window tokenised once, before training) by indexing and padding arrays: no
  tokenizer call and no Python loop over examples per step; length-bucketed; on a CUDA device copied from pinned
  memory without blocking.
- `cached_dls`: the rows of the layer cache for the top layers (`layercache.Cache`).
- `blurr_dls`: blurr's `TextBlock`, which tokenises and pads every batch on the CPU as it is drawn. Kept as the
  reference the token cache's batches are tested against and `bench.train_speed` times (on a GPU it kept the
  step at 0.13 s for 0.03 s of arithmetic).

Either way a long training document is read one window per epoch, the next of its windows in a shuffled order
(`WindowCycle`, with `--train-windows random`).

What is kept of blurr, and why: its `show_batch` / `show_results` views (the batches carry blurr's
`BatchDecodeTransform`, which tells them the tokenizer and the label names, so `dls.show_batch()` and
`learn.show_results()` show the decoded texts with their labels as before), its model wrapper and callback (a
Hugging Face model in a fastai Learner: `training.learner`) and its splitter (for backbones `layer_groups` does
not know). Not its `TextBlock`: its per-batch tokenisation is what bounded the GPU.

    from training.loaders import token_dls
    dls = token_dls(texts["train"], texts["valid"], ys["train"], ys["valid"], labels, tokenizer, model, settings)
    dls.show_batch(dataloaders=dls)
"""
from __future__ import annotations

import random
from typing import TYPE_CHECKING

import numpy as np
import torch

from training.settings import TrainSettings

if TYPE_CHECKING:
    from training.layercache import Cache

# The windows a training document is read in, one per epoch with --train-windows random: all of them, sharing no
# tokens (as the former blurr path cut them); evaluation and serving read --max-windows overlapping ones.
ALL_WINDOWS = 1_000_000


# --------------------------------------------------------------------------------------------- blurr's (the reference)
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


def blurr_dls(train_df, valid_df, y_train, y_valid, labels, tokenizer, model, s: TrainSettings):
    """fastai DataLoaders through blurr's TextBlock (the former training path, the reference of `token_dls`):
    batch tokenisation, dynamic padding, length-sorted; a long training document contributes a random window per
    epoch (`--train-windows random`), the text of its window re-tokenised."""
    import pandas as pd
    from fastai.data.block import ColReader, ColSplitter, DataBlock, MultiCategoryBlock

    from training.compat import blurr_text
    from training.inference import text_encoder

    frame = pd.concat([train_df[["text"]].assign(is_valid=False), valid_df[["text"]].assign(is_valid=True)],
                      ignore_index=True)
    frame["row_id"] = range(len(frame))
    spans = {}
    if s.train_windows == "random":
        encoder = text_encoder(tokenizer, model, s.max_length, train_windows("random"))
        spans = window_spans(encoder, train_df["text"].tolist())
    onehot = np.vstack([y_train, y_valid]).astype(np.float32)
    frame["y"] = list(onehot)
    block = blurr_text.TextBlock(hf_arch=model.config.model_type, hf_config=model.config, hf_tokenizer=tokenizer,
                                 hf_model=model, include_labels=False, max_length=s.max_length, padding=True,
                                 truncation=True)
    sampler = WindowSampler(spans, s.train_windows, s.seed)
    dblock = DataBlock(blocks=(block, MultiCategoryBlock(encoded=True, vocab=list(labels))),
                       get_x=sampler, get_y=ColReader("y"), splitter=ColSplitter("is_valid"))
    dls = dblock.dataloaders(frame, bs=s.batch_size, val_bs=s.eval_batch_size, num_workers=0, seed=s.seed)
    dls.window_sampler = sampler   # bench.train_speed makes it read the windows the token cache's rows read
    return dls


# --------------------------------------------------------------------------------------------- the token cache's rows
def train_windows(mode: str):
    """`deployment.encoding.Windows` of a training document: all of them (random), or the first."""
    from deployment.encoding import Windows

    return Windows(max_windows=ALL_WINDOWS, stride=0) if mode == "random" else Windows()


class TokenRows:
    """A training (or valid) set over a `tokencache.TokenCache`: row i is its window this epoch and its label
    vector. `draw()` picks the epoch's windows: the next of each row's windows in a shuffled order when `random`
    (`WindowCycle`), else its first. `batch(rows)` builds a whole batch from the arrays."""

    def __init__(self, cache, y: np.ndarray, random: bool, seed: int):
        self.cache, self.random = cache, random
        self.y = torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32))
        self.cycle = WindowCycle(seed)
        self.first, self.count = cache.first_windows(), cache.n_windows
        self.several = np.flatnonzero(self.count > 1)   # only these rows have a window to choose
        self.picked = self.first.copy()
        self.lengths = cache.lengths[self.picked]

    def draw(self) -> None:
        """New windows for the next epoch (the DataLoader calls it before it orders the rows)."""
        if self.random and len(self.several):
            offsets = np.fromiter((self.cycle(int(i), int(self.count[i])) for i in self.several), dtype=np.int64,
                                  count=len(self.several))
            self.picked[self.several] = self.first[self.several] + offsets
            self.lengths = self.cache.lengths[self.picked]

    def length(self, i: int) -> int:
        """Tokens in row i's window this epoch."""
        return int(self.lengths[i])

    def batch(self, rows: np.ndarray) -> tuple:
        """(({input_ids, attention_mask[, token_type_ids]} int64 [B, T]), y [B, L]) for `rows`, in that order."""
        feeds = self.cache.feeds(self.picked[rows])
        return {k: torch.from_numpy(v) for k, v in feeds.items()}, self.y[torch.from_numpy(rows)]

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, i):
        return i   # a row is its index: batches are built whole (`TokenDL.create_batch`)


def token_dl_class():
    """fastai's `TfmdDL` with whole batches built from a `TokenRows` (a factory: this module imports without
    fastai). Shuffled: length-bucketed (`bucketed`); in order: longest first, as blurr's SortedDL read valid."""
    from fastai.data.core import TfmdDL

    from training.devices import to_device

    class TokenDL(TfmdDL):
        def get_idxs(self):
            self.dataset.draw()
            idxs = super().get_idxs()
            if self.shuffle:
                return bucketed(list(idxs), self.dataset.length, self.bs, self.rng.shuffle)
            idxs = np.asarray(idxs, dtype=np.int64)
            return idxs[np.argsort(-self.dataset.lengths[idxs], kind="stable")].tolist()

        def create_batches(self, samps):
            idxs = np.fromiter(samps, dtype=np.int64)   # the epoch's (or this process's share of its) row order
            end = len(idxs) - len(idxs) % self.bs if self.drop_last else len(idxs)
            for start in range(0, end, self.bs):
                yield self.create_batch(idxs[start:start + self.bs])

        def create_batch(self, b):
            return to_device(self.dataset.batch(np.asarray(b, dtype=np.int64)), self.device)

        def do_batch(self, b):
            return self.create_batch(b)

    return TokenDL


def token_dls(train_texts, valid_texts, y_train, y_valid, labels, tokenizer, model, s: TrainSettings):
    """fastai DataLoaders over the token cache: every window of the training texts (`train_windows`) and the
    first window of the valid ones tokenised once (`tokencache.tokens_for`, reused within the process while the
    key holds); training batches shuffled and length-bucketed, the last partial one dropped (as blurr's were);
    valid longest first. blurr's `BatchDecodeTransform` rides along for `show_batch` / `show_results`."""
    from fastai.data.core import DataLoaders

    from deployment.encoding import Windows
    from training.compat import blurr_text
    from training.inference import text_encoder
    from training.tokencache import tokens_for

    train = TokenRows(tokens_for(text_encoder(tokenizer, model, s.max_length, train_windows(s.train_windows)),
                                 train_texts), y_train, s.train_windows == "random", s.seed)
    valid = TokenRows(tokens_for(text_encoder(tokenizer, model, s.max_length, Windows()), valid_texts), y_valid,
                      False, s.seed)
    show = blurr_text.data.BatchDecodeTransform(input_return_type=blurr_text.TextInput, hf_tokenizer=tokenizer,
                                                labels=list(labels))
    dl = token_dl_class()
    dl_train = dl(train, bs=s.batch_size, shuffle=True, drop_last=True, num_workers=0, after_batch=show)
    dl_train.rng = random.Random(s.seed)   # fastai seeds its shuffle from the process-wide `random`: --seed decides
    dl_valid = dl(valid, bs=s.eval_batch_size, shuffle=False, drop_last=False, num_workers=0, after_batch=show)
    return DataLoaders(dl_train, dl_valid)


def align_blurr(blurr, token) -> None:
    """Make blurr's DataLoaders (`blurr_dls`) replay the token cache's (`token_dls`): the same training rows in the
    same batches (the token cache's first epoch: its windows drawn, its bucketed order), each long document read in
    the same window. For comparing the two paths (tests/test_tokencache.py, bench.train_speed)."""
    order = list(token.train.get_idxs())
    for dls in (blurr, token):
        dls.train.get_idxs = lambda: list(order)
    rows = token.train.dataset
    offset = rows.picked - rows.first
    blurr.window_sampler.cycle = lambda row_id, n: int(offset[row_id])


# --------------------------------------------------------------------------------------------- a document's windows
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


# --------------------------------------------------------------------------------------------- the layer cache's rows
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
