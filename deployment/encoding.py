"""Texts → model inputs, the one way: tokenise with the bundle's tokenizer, cut long texts into overlapping
windows, count, pad per batch, run batched, pool the windows' logits into one row per text.

Shared by the predictor (serving), the compression report (which feeds every ONNX variant and PyTorch the very
same token ids) and training's evaluation on valid/test (`training.inference`), so a document's prediction does
not depend on who asked, and a difference the report measures is a difference in the graph, never in
tokenisation. Needs only numpy and `tokenizers`.

    encoder = TextEncoder.from_file("bundle/tokenizer.json", max_length=256,
                                    input_names=["input_ids", "attention_mask"], pad_id=0,
                                    windows=Windows(max_windows=8, stride=64, pooling="mean"))
    encoded = encoder.encode(["a text", ...])
    logits = encoder.run(lambda feeds: session.run(["logits"], feeds)[0], encoded, batch_size=32)

Windows: a text longer than `max_length` tokens is read as consecutive windows of `max_length` tokens, each
with the model's own special tokens ([CLS] ... [SEP]), consecutive windows sharing `stride` tokens (the meaning
Hugging Face gives `stride`), at most `max_windows` of them (the first ones). The windows' logits are pooled
(`mean` or `max` per label) into the text's logits. `max_windows=1` is plain truncation.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tokenizers import Encoding, Tokenizer

KNOWN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


POOLINGS = ("mean", "max")


def default_stride(max_length: int) -> int:
    """Tokens consecutive windows share when no stride is given: a quarter of a window. Its bound (below the
    window's text tokens) is checked by `TextEncoder`, which knows the tokenizer's special tokens."""
    return max_length // 4


@dataclass(frozen=True)
class Windows:
    """How a text longer than max_length is read (recorded in bundle.json as `windows`)."""
    max_windows: int = 1          # windows read per text at most (1: truncate to the first max_length tokens)
    stride: int = 0               # tokens shared by consecutive windows
    pooling: str = "mean"         # how the windows' logits become the text's: mean or max per label

    def __post_init__(self):
        if isinstance(self.max_windows, bool) or not isinstance(self.max_windows, int) or self.max_windows < 1:
            raise ValueError(f"windows.max_windows must be an integer >= 1, got {self.max_windows!r}")
        if isinstance(self.stride, bool) or not isinstance(self.stride, int) or self.stride < 0:
            raise ValueError(f"windows.stride must be an integer >= 0, got {self.stride!r}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"windows.pooling must be one of {POOLINGS}, got {self.pooling!r}")

    def to_dict(self) -> dict:
        return {"max_windows": self.max_windows, "stride": self.stride, "pooling": self.pooling}

    @classmethod
    def from_dict(cls, d: dict | None) -> "Windows":
        """From bundle.json's `windows` (absent: one window, as bundles written before windows existed)."""
        if d is None:
            return cls()
        if not isinstance(d, dict) or set(d) - {"max_windows", "stride", "pooling"}:
            raise ValueError(f"windows must be an object with max_windows, stride, pooling; got {d!r}")
        return cls(**d)


@dataclass(frozen=True)
class Encoded:
    """Tokenised texts: every window of every text (text by text), the text each window belongs to, each text's
    full token count, how many windows were read, and whether the cap on windows (or truncation) cut the text."""
    windows: list[Encoding]
    owner: np.ndarray                 # int [n_windows]: index of the text each window belongs to
    n_tokens: list[int]
    n_windows: list[int]
    truncated: list[bool]

    def __len__(self) -> int:
        return len(self.n_tokens)

    def first_windows(self) -> np.ndarray:
        """Index into `windows` of each text's first window (windows are stored text by text, each text has one)."""
        return np.r_[0, np.cumsum(self.n_windows)[:-1]].astype(np.int64)[:len(self)]

    def subset(self, window_indices) -> "Encoded":
        """The windows at `window_indices` as texts of one window each (what a pass over single windows reads)."""
        picked = [self.windows[int(i)] for i in window_indices]
        return Encoded(picked, np.arange(len(picked)), [len(w.ids) for w in picked], [1] * len(picked),
                       [False] * len(picked))


class TextEncoder:
    """A configured tokenizer: truncation that keeps the end token, token counting, dynamic padding.

    Thread-safe: the tokenizer is configured once and never reconfigured (the library's own truncation, which
    keeps [SEP] / </s> in every window). A long text's full token count comes from its overflowing windows, which
    the library builds anyway: one copy of the tokenizer in memory and one pass over the text.
    """

    def __init__(self, tokenizer: Tokenizer, max_length: int, input_names: Sequence[str], pad_id: int = 0,
                 windows: Windows | None = None):
        self.max_length = int(max_length)
        self.input_names = list(input_names)
        self.pad_id = int(pad_id)             # masked out anyway; RoBERTa's is 1, BERT's 0
        self.windows = windows or Windows()
        n_special = tokenizer.post_processor.num_special_tokens_to_add(False) if tokenizer.post_processor else 0
        if self.windows.max_windows > 1 and not 0 <= self.windows.stride < self.max_length - n_special:
            raise ValueError(f"windows.stride must be below the {self.max_length - n_special} text tokens of a "
                             f"window (max_length {self.max_length} minus {n_special} special tokens), "
                             f"got {self.windows.stride}")
        self.n_special = n_special
        self.tokenizer = tokenizer
        self.tokenizer.no_padding()
        # With one window the text is simply truncated (its overflowing windows are still built: they count it).
        self._stride = self.windows.stride if self.windows.max_windows > 1 else 0
        self.tokenizer.enable_truncation(max_length=self.max_length, stride=self._stride)

    @classmethod
    def from_file(cls, path: str | Path, max_length: int, input_names: Sequence[str],
                  pad_id: int | None = None, windows: Windows | None = None) -> "TextEncoder":
        """Load `tokenizer.json`; `pad_id=None` takes the tokenizer's own padding id (or 0)."""
        tokenizer = Tokenizer.from_file(str(path))
        if pad_id is None:
            pad_id = (tokenizer.padding or {}).get("pad_id", 0)
        return cls(tokenizer, max_length, input_names, pad_id, windows)

    def encode(self, texts: Sequence[str]) -> Encoded:
        """Windows of at most max_length tokens; `n_tokens` counts the whole text (special tokens included)."""
        texts = list(texts)
        cap = self.windows.max_windows
        windows, owner, n_tokens, n_windows, truncated = [], [], [], [], []
        for i, enc in enumerate(self.tokenizer.encode_batch(texts)):
            overflow = enc.overflowing
            parts = [enc] + (list(overflow)[:cap - 1] if cap > 1 else [])
            windows.extend(parts)
            owner.extend([i] * len(parts))
            n_windows.append(len(parts))
            truncated.append(len(overflow) + 1 > cap)
            # Every overflowing window repeats the special tokens and the `stride` tokens it shares with the
            # previous one; the rest of it is new text (checked against an untruncated count in the tests).
            n_tokens.append(len(enc.ids) + sum(len(w.ids) - self.n_special - self._stride for w in overflow))
        return Encoded(windows, np.asarray(owner, dtype=np.int64), n_tokens, n_windows, truncated)

    def feeds(self, encodings: Sequence[Encoding]) -> dict[str, np.ndarray]:
        """Model inputs for one batch, padded to its longest sequence (dynamic padding), not to max_length."""
        width = max(len(e.ids) for e in encodings)
        ids = np.full((len(encodings), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        types = np.zeros((len(encodings), width), dtype=np.int64)
        for row, enc in enumerate(encodings):
            n = len(enc.ids)
            ids[row, :n] = enc.ids
            mask[row, :n] = 1
            types[row, :n] = enc.type_ids
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return {name: feeds[name] for name in self.input_names}

    @staticmethod
    def batches(encoded: Encoded, batch_size: int, sort: bool | None = None,
                max_tokens: int | None = None) -> list[list[int]]:
        """Window indices per batch (`length_batches` over the windows' token counts)."""
        return length_batches([len(w.ids) for w in encoded.windows], batch_size, sort, max_tokens)

    def run_windows(self, forward: Callable[[dict[str, np.ndarray]], np.ndarray], encoded: Encoded,
                    batch_size: int, sort: bool | None = None, max_tokens: int | None = None) -> np.ndarray:
        """`forward(feeds) -> logits [batch, labels]` over every window; logits [n_windows, labels] in order."""
        out = None
        for idx in self.batches(encoded, batch_size, sort, max_tokens):
            logits = np.asarray(forward(self.feeds([encoded.windows[i] for i in idx])))
            if out is None:
                out = np.zeros((len(encoded.windows), logits.shape[1]), dtype=logits.dtype)
            out[idx] = logits
        if out is None:
            raise ValueError("nothing to run: no texts")
        return out

    def run(self, forward: Callable[[dict[str, np.ndarray]], np.ndarray], encoded: Encoded,
            batch_size: int, sort: bool | None = None, pooling: str | None = None,
            max_tokens: int | None = None) -> np.ndarray:
        """Logits [n_texts, labels] in input order: every window run, then pooled per text (`pooling` overrides
        the encoder's)."""
        return pool_windows(self.run_windows(forward, encoded, batch_size, sort, max_tokens), encoded.owner,
                            len(encoded), pooling or self.windows.pooling)


def length_batches(lengths: Sequence[int], batch_size: int, sort: bool | None = None,
                   max_tokens: int | None = None) -> list[list[int]]:
    """Indices into `lengths` (token counts of windows) per batch: at most `batch_size` windows and, when
    `max_tokens` is set, at most that many padded tokens (windows x the longest window; a window longer than the
    budget runs alone). The budget bounds the activations, hence the memory, of one call whatever the texts'
    length. Sorted by length (less padding) when there is more than one batch, unless `sort` says otherwise; one
    batch keeps input order."""
    lengths = [int(n) for n in lengths]
    order = list(range(len(lengths)))
    one_batch = len(order) <= batch_size and (max_tokens is None or len(order) * max(lengths, default=0) <= max_tokens)
    if sort or (sort is None and not one_batch):
        order.sort(key=lambda i: lengths[i])
    if max_tokens is None:
        return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    out, batch, width = [], [], 0
    for i in order:
        grown = max(width, lengths[i])
        if batch and (len(batch) == batch_size or (len(batch) + 1) * grown > max_tokens):
            out.append(batch)
            batch, grown = [], lengths[i]
        batch.append(i)
        width = grown
    return out + [batch] if batch else out


def pool_windows(window_logits: np.ndarray, owner: np.ndarray, n_texts: int, pooling: str) -> np.ndarray:
    """One row of logits per text from its windows' rows: the mean or the max per label."""
    window_logits = np.asarray(window_logits)
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if len(window_logits) == n_texts and np.array_equal(owner, np.arange(n_texts)):
        return window_logits                      # one window per text: nothing to pool (bit-identical)
    out = np.zeros((n_texts, window_logits.shape[1]), dtype=np.float64)
    if pooling == "mean":
        np.add.at(out, owner, window_logits)
        out /= np.bincount(owner, minlength=n_texts)[:, None]
    else:
        out.fill(-np.inf)
        np.maximum.at(out, owner, window_logits)
    return out.astype(window_logits.dtype)
