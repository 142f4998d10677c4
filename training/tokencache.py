"""The token cache: texts tokenised once, before training, into flat arrays, so that a batch is built by indexing
and padding arrays: no tokenizer call and no Python loop over examples per step.

    from training.tokencache import tokens_for
    cache = tokens_for(encoder, texts)         # every window `encoder` cuts from `texts`, packed (reused while its key holds)
    feeds = cache.feeds(np.array([0, 5, 7]))   # {"input_ids": int64 [3, T], "attention_mask": ..., ...}, T the longest

What it holds: the windows `deployment.encoding.TextEncoder` cuts (the code the predictor serves with: the same
ids, the same special tokens, the same overlap), as one flat int32 array of token ids (and one of segment ids when
the model reads them) with each window's offset into it, the text each window belongs to, and each text's
windows, token count and whether the cap on windows cut it. `feeds` pads to the batch's longest window on the
right with the tokenizer's pad id and a 0 in the attention mask, as Hugging Face tokenizers pad for BERT-like
models (and as blurr's batches come out).

Keyed by (the tokenizer's content hash, max_length, stride, max_windows, the texts' hash, and the model inputs and
pad id it feeds): change any of them and `tokens_for` tokenises again. The tokenizer's hash covers its vocabulary, normaliser, pre-tokeniser and special
tokens, not the truncation and padding settings a call leaves on it (`TextEncoder` sets its own).

Where: in memory, for the process (`tokens_for` keeps the last MEMO_SIZE caches). Not on disk, because tokenising
costs little next to training and blurr's path paid it up front too: every window of CMU's 9,617 training
summaries (26,868 windows, 5.6 M tokens, 27 MiB of arrays) took 13 s on the shared 2-core machine under load,
where blurr's DataLoaders spent 28 s before their first batch (bench/train_speed.json `tokenise_seconds`,
`blurr_setup_seconds`), and a file beside the prepared data would be a second writer in a folder
`training.prepare` owns, with a format, an invalidation rule and a contract of its own to keep true. In memory
the key still makes every reuse safe: the notebook's `learner_for` and then `train`, the evaluation's timing at
the start and its valid/test pass at the end, the valid curve's rows.
"""
from __future__ import annotations

import hashlib
import itertools
import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from deployment.encoding import Encoded, TextEncoder, length_batches

MEMO_SIZE = 6   # caches kept per process: train + valid + test of one run, and of one more (the notebook's two)


@dataclass(frozen=True)
class CacheKey:
    """What a cache's content depends on; a cache is reused only under the same key."""
    tokenizer: str      # sha256 of the tokenizer's content (`tokenizer_digest`)
    max_length: int     # tokens per window, special tokens included
    stride: int         # tokens consecutive windows share (0 with one window)
    max_windows: int    # windows kept per text
    texts: str          # sha256 of the texts, in order
    inputs: tuple       # the model inputs fed (segment ids or not)
    pad_id: int


def tokenizer_digest(tokenizer) -> str:
    """sha256 of a `tokenizers.Tokenizer`'s JSON without its truncation and padding settings (which calls change)."""
    spec = json.loads(tokenizer.to_str())
    spec.pop("truncation", None)
    spec.pop("padding", None)
    return hashlib.sha256(json.dumps(spec, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def texts_digest(texts: Sequence[str]) -> str:
    """sha256 over the texts, each prefixed by its byte length (so that ["ab", "c"] and ["a", "bc"] differ)."""
    h = hashlib.sha256()
    for t in texts:
        b = t.encode("utf-8", "surrogatepass")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def key_for(encoder: TextEncoder, texts: Sequence[str]) -> CacheKey:
    w = encoder.windows
    return CacheKey(tokenizer_digest(encoder.tokenizer), encoder.max_length, w.stride if w.max_windows > 1 else 0,
                    w.max_windows, texts_digest(texts), tuple(encoder.input_names), encoder.pad_id)


def pad(flat: np.ndarray, starts: np.ndarray, windows: np.ndarray, pad_value: int) -> tuple[np.ndarray, np.ndarray]:
    """(int64 [B, T], bool mask [B, T]): windows `windows` of the flat array (window i is flat[starts[i]:starts[i+1]])
    right-padded with `pad_value` to the longest of them. One gather, no loop over the windows."""
    begin = starts[windows]
    lengths = starts[windows + 1] - begin
    width = int(lengths.max(initial=0))
    pos = np.arange(width)
    mask = pos < lengths[:, None]
    gathered = flat[np.where(mask, begin[:, None] + pos, 0)] if len(flat) else np.zeros(mask.shape, flat.dtype)
    return np.where(mask, gathered, pad_value).astype(np.int64), mask


@dataclass(frozen=True)
class TokenCache:
    """Texts' windows as arrays. Windows are stored text by text: text r's windows are
    `row_starts[r]:row_starts[r + 1]`, its first one first. Reads like `deployment.encoding.Encoded` where the
    evaluation reads it (`owner`, `n_windows`, `truncated`, `first_windows()`, `len()`)."""
    key: CacheKey | None
    ids: np.ndarray             # int32 [tokens]: every window's ids, window after window
    type_ids: np.ndarray | None  # int8 [tokens]: segment ids, when the model reads them (None: it does not)
    starts: np.ndarray          # int64 [windows + 1]: window i is ids[starts[i]:starts[i + 1]]
    owner: np.ndarray           # int64 [windows]: the text each window belongs to
    row_starts: np.ndarray      # int64 [texts + 1]
    n_tokens: np.ndarray        # int64 [texts]: each whole text's token count (special tokens included)
    truncated: np.ndarray       # bool [texts]: the cap on windows cut the text
    input_names: tuple
    pad_id: int

    def __len__(self) -> int:
        return len(self.row_starts) - 1

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per window."""
        return np.diff(self.starts)

    @property
    def n_windows(self) -> np.ndarray:
        """Windows per text."""
        return np.diff(self.row_starts)

    @property
    def window_count(self) -> int:
        return len(self.starts) - 1

    def first_windows(self) -> np.ndarray:
        """Index of each text's first window."""
        return self.row_starts[:-1]

    @property
    def nbytes(self) -> int:
        arrays = (self.ids, self.type_ids, self.starts, self.owner, self.row_starts, self.n_tokens, self.truncated)
        return sum(a.nbytes for a in arrays if a is not None)

    def feeds(self, windows) -> dict[str, np.ndarray]:
        """Model inputs for the windows `windows` (int array), in that order, right-padded to the longest."""
        windows = np.asarray(windows, dtype=np.int64)
        ids, mask = pad(self.ids, self.starts, windows, self.pad_id)
        out = {"input_ids": ids, "attention_mask": mask.astype(np.int64)}
        if "token_type_ids" in self.input_names:
            out["token_type_ids"] = pad(self.type_ids, self.starts, windows, 0)[0]
        return {k: out[k] for k in self.input_names}

    def batches(self, batch_size: int, max_tokens: int | None = None) -> list[np.ndarray]:
        """Window indices per batch, sorted by length (`deployment.encoding.length_batches`: the encoder's rule)."""
        return [np.asarray(b, dtype=np.int64) for b in length_batches(self.lengths, batch_size, True, max_tokens)]

    def subset(self, windows) -> "TokenCache":
        """The windows `windows` as texts of one window each (what a pass over single windows reads)."""
        windows = np.asarray(windows, dtype=np.int64)
        lengths = self.lengths[windows]
        starts = np.r_[0, np.cumsum(lengths)].astype(np.int64)
        pos = np.arange(int(lengths.max(initial=0)))
        take = (self.starts[windows][:, None] + pos)[pos < lengths[:, None]]   # their tokens, window after window
        n = len(windows)
        return TokenCache(None, self.ids[take], None if self.type_ids is None else self.type_ids[take], starts,
                          np.arange(n, dtype=np.int64), np.arange(n + 1, dtype=np.int64), lengths.astype(np.int64),
                          np.zeros(n, dtype=bool), self.input_names, self.pad_id)


def pack(encoded: Encoded, encoder: TextEncoder, key: CacheKey | None = None) -> TokenCache:
    """`encoded` (what `encoder.encode` made) as arrays: one pass over its windows, once."""
    windows = encoded.windows
    lengths = np.fromiter((len(w.ids) for w in windows), dtype=np.int64, count=len(windows))
    total = int(lengths.sum())
    ids = np.fromiter(itertools.chain.from_iterable(w.ids for w in windows), dtype=np.int32, count=total)
    type_ids = None
    if "token_type_ids" in encoder.input_names:
        type_ids = np.fromiter(itertools.chain.from_iterable(w.type_ids for w in windows), dtype=np.int8, count=total)
    return TokenCache(key, ids, type_ids, np.r_[0, np.cumsum(lengths)].astype(np.int64),
                      np.asarray(encoded.owner, dtype=np.int64),
                      np.r_[0, np.cumsum(encoded.n_windows)].astype(np.int64),
                      np.asarray(encoded.n_tokens, dtype=np.int64), np.asarray(encoded.truncated, dtype=bool),
                      tuple(encoder.input_names), encoder.pad_id)


_memo: "OrderedDict[CacheKey, TokenCache]" = OrderedDict()


def tokens_for(encoder: TextEncoder, texts: Sequence[str]) -> TokenCache:
    """The cache of `texts` as `encoder` windows them: the one already built under the same key, else a new one
    (tokenised once, the least recently used of MEMO_SIZE dropped)."""
    texts = list(texts)
    key = key_for(encoder, texts)
    if key in _memo:
        _memo.move_to_end(key)
        return _memo[key]
    cache = pack(encoder.encode(texts), encoder, key)
    _memo[key] = cache
    while len(_memo) > MEMO_SIZE:
        _memo.popitem(last=False)
    return cache
