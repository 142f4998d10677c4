"""Texts → model inputs, the one way: tokenise with the bundle's tokenizer, count, pad per batch, run batched.

Shared by the predictor (serving) and the compression report (which feeds every ONNX variant and PyTorch the
very same token ids), so a difference the report measures is a difference in the graph, never in tokenisation.
Needs only numpy and `tokenizers`.

    encoder = TextEncoder.from_file("bundle/tokenizer.json", max_length=256,
                                    input_names=["input_ids", "attention_mask"], pad_id=0)
    encoded = encoder.encode(["a text", ...])
    logits = encoder.run(lambda feeds: session.run(["logits"], feeds)[0], encoded, batch_size=32)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tokenizers import Encoding, Tokenizer

KNOWN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class Encoded:
    """Tokenised texts: the (possibly truncated) encodings, each text's full token count, and whether it was cut."""
    encodings: list[Encoding]
    n_tokens: list[int]
    truncated: list[bool]

    def __len__(self) -> int:
        return len(self.encodings)


class TextEncoder:
    """A configured tokenizer: truncation that keeps the end token, token counting, dynamic padding.

    Thread-safe: two configured copies of the tokenizer are made once and never reconfigured (one truncates
    with the library's own truncation, which keeps [SEP] / </s>; the other only counts tokens).
    """

    def __init__(self, tokenizer: Tokenizer, max_length: int, input_names: Sequence[str], pad_id: int = 0):
        self.max_length = int(max_length)
        self.input_names = list(input_names)
        self.pad_id = int(pad_id)             # masked out anyway; RoBERTa's is 1, BERT's 0
        self._counter = Tokenizer.from_str(tokenizer.to_str())
        self._counter.no_padding()
        self._counter.no_truncation()
        self.tokenizer = tokenizer
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=self.max_length)

    @classmethod
    def from_file(cls, path: str | Path, max_length: int, input_names: Sequence[str],
                  pad_id: int | None = None) -> "TextEncoder":
        """Load `tokenizer.json`; `pad_id=None` takes the tokenizer's own padding id (or 0)."""
        tokenizer = Tokenizer.from_file(str(path))
        if pad_id is None:
            pad_id = (tokenizer.padding or {}).get("pad_id", 0)
        return cls(tokenizer, max_length, input_names, pad_id)

    def encode(self, texts: Sequence[str]) -> Encoded:
        """Token ids cut to max_length; `n_tokens` counts the whole text (special tokens included)."""
        texts = list(texts)
        encodings = self.tokenizer.encode_batch(texts)
        n_tokens = [len(e.ids) for e in encodings]
        truncated = [bool(e.overflowing) for e in encodings]
        long_idx = [i for i, t in enumerate(truncated) if t]
        if long_idx:  # only texts that did not fit pay for a second, untruncated count
            for i, enc in zip(long_idx, self._counter.encode_batch([texts[i] for i in long_idx])):
                n_tokens[i] = len(enc.ids)
        return Encoded(encodings, n_tokens, truncated)

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
    def batches(encoded: Encoded, batch_size: int, sort: bool | None = None) -> list[list[int]]:
        """Row indices per batch. Sorted by length (less padding) when there is more than one batch, unless
        `sort` says otherwise; one batch keeps the input order."""
        order = list(range(len(encoded)))
        if sort or (sort is None and len(order) > batch_size):
            order.sort(key=lambda i: len(encoded.encodings[i].ids))
        return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]

    def run(self, forward: Callable[[dict[str, np.ndarray]], np.ndarray], encoded: Encoded,
            batch_size: int, sort: bool | None = None) -> np.ndarray:
        """`forward(feeds) -> logits [batch, labels]` over every batch; logits [n, labels] in input order."""
        out = None
        for idx in self.batches(encoded, batch_size, sort):
            logits = np.asarray(forward(self.feeds([encoded.encodings[i] for i in idx])))
            if out is None:
                out = np.zeros((len(encoded), logits.shape[1]), dtype=logits.dtype)
            out[idx] = logits
        if out is None:
            raise ValueError("nothing to run: no texts")
        return out
