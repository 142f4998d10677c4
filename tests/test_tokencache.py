"""The token cache (training/tokencache.py) and the DataLoaders built on it (training.loaders.token_dls): batches
equal to blurr's for the same rows (short, exact-length and windowed long documents), the key that invalidates a
cache, and the arrays every batch is cut from. A training run through it is tests/test_train.py's `trained`."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import config
from tests.test_train import tiny_backbone  # noqa: F401  (fixture)

MAX_LENGTH = 16   # 14 words a window: documents of every shape stay short


@pytest.fixture(scope="module")
def hf(tiny_backbone):  # noqa: F811
    from training.backbone import load_model_and_tokenizer

    return load_model_and_tokenizer(str(tiny_backbone), ["a", "b", "c"])


def one_token_words(tok) -> list[str]:
    """Words the tokenizer reads as one token each: texts made of them have windows that start at a word."""
    words = "the cat dog sat on mat house tree river light road song book ship star".split()
    assert all(len(tok.tokenize(w)) == 1 for w in words)
    return words


def shaped_texts(tok) -> list[str]:
    """Short, exactly one window, one token over (a second window of one word), and long (several windows)."""
    words = one_token_words(tok)
    rng = np.random.default_rng(0)
    n = MAX_LENGTH - 2   # words in one window beside [CLS] and [SEP]
    sizes = [1, 3, 7, n, n, n + 1, n + 1, 2 * n, 3 * n + 5, 4 * n + 9, 5, n - 1] * 2
    return [" ".join(rng.choice(words, size=k)) for k in sizes]


def settings(**kw):
    from training.settings import TrainSettings

    return TrainSettings(**{"max_length": MAX_LENGTH, "batch_size": 4, "eval_batch_size": 5, "seed": 3, **kw})


def both_paths(hf, texts, s):
    from training.loaders import align_blurr, blurr_dls, token_dls

    model, tok = hf
    y = (np.random.default_rng(1).random((len(texts), 3)) < 0.5).astype(np.float32)
    half = len(texts) // 2 + 2
    frames = {"train": pd.DataFrame({"text": texts[:half]}), "valid": pd.DataFrame({"text": texts[half:]})}
    ys = {"train": y[:half], "valid": y[half:]}
    blurr = blurr_dls(frames["train"], frames["valid"], ys["train"], ys["valid"], ["a", "b", "c"], tok, model, s)
    token = token_dls(texts[:half], texts[half:], ys["train"], ys["valid"], ["a", "b", "c"], tok, model, s)
    align_blurr(blurr, token)
    return blurr, token


def as_plain(batch) -> tuple:
    x, y = batch
    return ({k: v.as_subclass(torch.Tensor) for k, v in x.items()}, y.as_subclass(torch.Tensor))


def test_cached_batches_equal_blurrs_for_the_same_rows_and_windows(hf):
    """Training batches (each long document a window per epoch) and valid batches (first windows): ids, masks,
    segment ids and labels equal, tensor for tensor. Both pad on the right with the pad id to the batch's longest
    window. Valid: blurr reads its rows longest first (SortedDL), the token cache too; equal as sets of rows."""
    model, tok = hf
    texts = shaped_texts(tok)
    for mode in ("random", "first"):
        for epoch in range(3):   # later epochs read other windows of the long documents
            blurr, token = both_paths(hf, texts, settings(train_windows=mode, seed=epoch))
            ours, theirs = [as_plain(b) for b in token.train], [as_plain(b) for b in blurr.train]
            assert len(ours) == len(theirs) == len(token.train.dataset) // 4
            for (xa, ya), (xb, yb) in zip(ours, theirs):
                assert set(xa) == set(xb) == {"input_ids", "attention_mask", "token_type_ids"}
                for k in xa:
                    assert torch.equal(xa[k], xb[k]), (mode, k)
                assert torch.equal(ya, yb)
            # dynamic padding: to the longest window in the batch, never past one window
            assert all(x["input_ids"].shape[1] == int(x["attention_mask"].sum(1).max()) <= MAX_LENGTH for x, _ in ours)
        rows = lambda dl: sorted((tuple(x["input_ids"][i][x["attention_mask"][i] == 1].tolist()), tuple(y[i].tolist()))  # noqa: E731
                                 for x, y in map(as_plain, dl) for i in range(len(y)))
        assert rows(token.valid) == rows(blurr.valid)


def test_a_long_documents_windows_are_the_serving_windows_and_differ_from_blurrs_only_inside_a_word(hf, tiny_backbone):  # noqa: F811
    """On real text the cache holds the windows the predictor reads (TextEncoder's). blurr re-tokenised a window's
    text: where a window starts inside a word ('##ing'), it read that word's piece as a word ('ing', or 'in',
    '##g'); the tokens after it are the same, less any its extra pieces pushed past max_length."""
    from training.inference import text_encoder
    from training.loaders import train_windows, window_spans
    from training.tokencache import tokens_for

    model, tok = hf
    texts = pd.read_csv(config.SAMPLE_DIR / "books.csv")["text"].head(15).tolist()   # real prose
    encoder = text_encoder(tok, model, MAX_LENGTH, train_windows("random"))
    cache, encoded = tokens_for(encoder, texts), encoder.encode(texts)
    assert [w.ids for w in encoded.windows] == [cache.ids[a:b].tolist() for a, b in zip(cache.starts, cache.starts[1:])]
    spans = window_spans(encoder, texts)
    inside = 0
    for row, row_spans in spans.items():
        for k, (start, end) in enumerate(row_spans):
            w = int(cache.row_starts[row]) + k
            ours = tok.convert_ids_to_tokens(cache.ids[cache.starts[w] + 1:cache.starts[w + 1] - 1].tolist())
            theirs = tok.convert_ids_to_tokens(tok(texts[row][start:end], truncation=True,
                                                   max_length=MAX_LENGTH)["input_ids"][1:-1])
            if not ours[0].startswith("##"):
                assert ours == theirs
                continue
            inside += 1
            a, b = (next(i for i in range(1, len(t)) if not t[i].startswith("##")) for t in (ours, theirs))
            assert "".join(t.removeprefix("##") for t in ours[:a]) == "".join(t.removeprefix("##") for t in theirs[:b])
            # the rest is the same, less what the re-tokenised word's extra pieces pushed past max_length
            assert theirs[b:] == ours[a:a + len(theirs) - b] and len(ours) - len(theirs) <= 2
    assert inside > 0 and sum(map(len, spans.values())) > 3 * inside   # the case occurs, and is the exception


def test_a_cache_is_reused_under_its_key_and_rebuilt_when_the_tokenizer_max_length_or_stride_change(hf):
    import copy

    from deployment.encoding import Windows
    from training.inference import text_encoder
    from training.tokencache import tokens_for

    model, tok = hf
    texts = shaped_texts(tok) + ["the dragonfly sat on the mat"]
    windows = Windows(max_windows=8, stride=4)
    base = tokens_for(text_encoder(tok, model, MAX_LENGTH, windows), texts)
    tok(texts, truncation=True, max_length=7)   # a call leaves truncation settings on the tokenizer: not its content
    assert tokens_for(text_encoder(tok, model, MAX_LENGTH, windows), texts) is base
    grown = copy.deepcopy(tok)
    grown.add_tokens(["dragonfly"])             # the same tokenizer with one more word in its vocabulary
    variants = {"tokenizer": (grown, MAX_LENGTH, windows), "max_length": (tok, MAX_LENGTH + 4, windows),
                "stride": (tok, MAX_LENGTH, Windows(max_windows=8, stride=2)),
                "max_windows": (tok, MAX_LENGTH, Windows(max_windows=2, stride=4))}
    for what, (t, n, w) in variants.items():
        encoder = text_encoder(t, model, n, w)
        cache = tokens_for(encoder, texts)
        assert cache is not base and getattr(cache.key, what) != getattr(base.key, what), what
        expected = encoder.encode(texts)
        assert cache.ids.tolist() != base.ids.tolist(), what
        assert cache.ids.tolist() == [i for e in expected.windows for i in e.ids], what
        assert list(cache.n_windows) == expected.n_windows, what
    assert tokens_for(text_encoder(tok, model, MAX_LENGTH, windows), texts[:-1]) is not base   # other texts


def test_feeds_pad_every_window_as_the_encoder_does(hf):
    """The arrays' padding against `TextEncoder.feeds` (the serving batches) over random picks of windows, and a
    subset reads like the windows it took."""
    from deployment.encoding import Windows
    from training.inference import text_encoder
    from training.tokencache import pack

    model, tok = hf
    encoder = text_encoder(tok, model, MAX_LENGTH, Windows(max_windows=8, stride=3))
    encoded = encoder.encode(shaped_texts(tok) + ["", "    "])
    cache = pack(encoded, encoder)
    assert list(cache.n_windows) == encoded.n_windows and list(cache.truncated) == encoded.truncated
    assert list(cache.owner) == list(encoded.owner) and list(cache.first_windows()) == list(encoded.first_windows())
    rng = np.random.default_rng(4)
    for _ in range(40):
        pick = rng.choice(cache.window_count, size=rng.integers(1, 9))
        ours, theirs = cache.feeds(pick), encoder.feeds([encoded.windows[i] for i in pick])
        assert set(ours) == set(theirs) and all(np.array_equal(ours[k], theirs[k]) for k in ours)
        assert all(v.dtype == np.int64 for v in ours.values())
        sub = cache.subset(pick)
        assert sub.feeds(np.arange(len(pick)))["input_ids"].tolist() == ours["input_ids"].tolist()
        assert list(sub.n_windows) == [1] * len(pick)
