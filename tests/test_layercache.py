"""Training the top layers from a cache of the frozen lower ones (`--train-layers N`, training/layercache.py):
the split model computes exactly what the whole model computes, the cache keeps every token of the windows it
picked, a real training run leaves the frozen weights bit-identical and writes a model dir that evaluates and
serves like any other, and bad settings are refused with one clear line."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import config
from tests.test_train import LABELS, tiny_backbone, tiny_data  # noqa: F401  (fixtures)
from tests.cases import check_each


def _model(backbone: Path, pooling: str):
    from transformers import AutoModelForSequenceClassification

    from training.modeling import with_pooling

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(backbone, num_labels=len(LABELS))
    return with_pooling(model, pooling).eval()


def _encoder(backbone: Path, model, max_length: int = 32, max_windows: int = 4):
    from transformers import AutoTokenizer

    from deployment.encoding import Windows
    from training.inference import text_encoder

    tok = AutoTokenizer.from_pretrained(backbone)
    return text_encoder(tok, model, max_length, Windows(max_windows=max_windows, stride=8))


TEXTS = ["A dragon.", "The detective found a clue in the haunted crypt on a long dark night " * 6,
         "Love letters, a summer wedding and a starship", "x " * 100]


@pytest.mark.parametrize("pooling", ["mean", "cls"])
@pytest.mark.parametrize("n_frozen", [0, 1])
def test_top_layers_over_the_lower_output_compute_the_whole_models_logits(tiny_backbone, pooling, n_frozen):
    from training.layercache import TopLayers, lower_hidden

    model = _model(tiny_backbone, pooling)
    encoder = _encoder(tiny_backbone, model)
    encoded = encoder.encode(TEXTS)
    feeds = {k: torch.from_numpy(v) for k, v in encoder.feeds(encoded.windows).items()}
    assert (feeds["attention_mask"] == 0).any(), "the batch must contain padding for this test to mean anything"
    whole = model(**feeds).logits
    top = TopLayers(model, n_frozen).eval()
    split = top((lower_hidden(model, n_frozen, feeds), feeds["attention_mask"]))
    torch.testing.assert_close(split, whole, atol=1e-5, rtol=1e-5)


def test_the_cache_keeps_each_picked_window_unpadded_and_reproduces_the_logits(tiny_backbone):
    from training.layercache import TopLayers, build_cache, lower_hidden, pick_windows
    from training.loaders import CachedRows, collate

    model = _model(tiny_backbone, "mean")
    encoder = _encoder(tiny_backbone, model)
    encoded = encoder.encode(TEXTS)
    picked = pick_windows(encoded.n_windows, 2)
    cache = build_cache(model, 1, encoder, encoded, picked, batch_size=3, device=torch.device("cpu"))
    assert [len(r) for r in cache.rows] == [min(n, 2) for n in encoded.n_windows]
    first = np.r_[0, np.cumsum(encoded.n_windows)[:-1]]
    top = TopLayers(model, 1).eval()
    for row, ws in enumerate(picked):
        for slot, w in zip(cache.rows[row], ws):
            window = encoded.windows[first[row] + w]
            h = cache.hidden[slot]
            assert h.shape == (len(window.ids), model.config.hidden_size) and h.dtype == torch.float16
            feeds = {k: torch.from_numpy(v) for k, v in encoder.feeds([window]).items()}
            expected = lower_hidden(model, 1, feeds)[0].half()
            torch.testing.assert_close(h, expected)
            (x, mask), _ = collate([(h, np.zeros(len(LABELS), np.float32))])
            torch.testing.assert_close(top((x, mask)), model(**feeds).logits, atol=2e-3, rtol=2e-3)
    # a batch of different lengths: the padding must not change any row's logits
    rows = CachedRows(cache, np.zeros((len(TEXTS), len(LABELS))), random=False, seed=0)
    (x, mask), y = collate([rows[i] for i in range(len(rows))])
    assert x.shape[1] == max(h.shape[0] for h in cache.hidden) and y.shape == (len(TEXTS), len(LABELS))
    alone = torch.cat([top(collate([rows[i]])[0]) for i in range(len(rows))])
    torch.testing.assert_close(top((x, mask)), alone, atol=1e-4, rtol=1e-4)


def test_a_cache_extended_by_later_windows_reads_like_one_built_in_a_single_pass(tiny_backbone):
    from training.layercache import Cache, build_cache, pick_windows

    model = _model(tiny_backbone, "mean")
    encoder = _encoder(tiny_backbone, model)
    encoded = encoder.encode(TEXTS)
    picked = pick_windows(encoded.n_windows, 3)
    assert any(len(ws) > 1 for ws in picked) and any(len(ws) == 1 for ws in picked)
    cpu = torch.device("cpu")
    whole = build_cache(model, 1, encoder, encoded, picked, batch_size=4, device=cpu)
    first = build_cache(model, 1, encoder, encoded, [ws[:1] for ws in picked], batch_size=4, device=cpu)
    rest = build_cache(model, 1, encoder, encoded, [ws[1:] for ws in picked], batch_size=4, device=cpu)
    both = first.extended(rest)
    assert [len(r) for r in both.rows] == [len(r) for r in whole.rows] and both.n_windows == whole.n_windows
    for a, b in zip(both.rows, whole.rows):
        for i, j in zip(a, b):
            torch.testing.assert_close(both.hidden[i], whole.hidden[j], atol=2e-3, rtol=2e-3)
    assert both.rows[0][0] == 0 and both.seconds == pytest.approx(first.seconds + rest.seconds)
    with pytest.raises(ValueError, match="cannot extend a cache of 2 rows with one of 1"):
        Cache([], [[], []]).extended(Cache([], [[]]))


def test_random_rows_read_every_cached_window_of_a_long_document_over_the_epochs(tiny_backbone):
    from training.layercache import build_cache, pick_windows
    from training.loaders import CachedRows

    model = _model(tiny_backbone, "mean")
    encoder = _encoder(tiny_backbone, model)
    encoded = encoder.encode(TEXTS)
    assert max(encoded.n_windows) >= 3
    picked = pick_windows(encoded.n_windows, 10)
    cache = build_cache(model, 1, encoder, encoded, picked, batch_size=8, device=torch.device("cpu"))
    rows = CachedRows(cache, np.zeros((len(TEXTS), len(LABELS))), random=True, seed=1)
    long = int(np.argmax(encoded.n_windows))
    n = len(cache.rows[long])
    rounds = []
    for _ in range(3):     # an epoch each: the bucketing DataLoader draws the windows before it orders the rows
        epochs = []
        for _ in range(n):
            rows.draw()
            epochs.append(id(rows[long][0]))
        rounds.append(epochs)
        # every n epochs read each of the row's cached windows exactly once (no window twice before all once)
        assert sorted(epochs) == sorted(id(cache.hidden[j]) for j in cache.rows[long])
    assert len({tuple(r) for r in rounds}) > 1 or n < 3, "each round must shuffle the order afresh"
    first_only = CachedRows(cache, np.zeros((len(TEXTS), len(LABELS))), random=False, seed=1)
    assert {id(first_only[long][0]) for _ in range(20) if first_only.draw() is None} == \
        {id(cache.hidden[cache.rows[long][0]])}


def _varied_cache(n_rows: int, seed: int = 0):
    """A cache shaped like CMU's: 1 to 8 windows a row, most windows full (256 tokens), each row's last one and
    short documents' only one shorter; every token of row r's windows holds r, so a batch says whose rows it read."""
    from training.layercache import Cache

    rng = np.random.default_rng(seed)
    hidden, rows = [], []
    for r in range(n_rows):
        n = int(rng.integers(1, 9))
        lengths = [256] * (n - 1) + [int(rng.integers(8, 257))]
        rows.append(list(range(len(hidden), len(hidden) + n)))
        hidden += [torch.full((t, 2), float(r), dtype=torch.float16) for t in lengths]
    return Cache(hidden, rows)


def test_bucketing_keeps_every_row_once_in_full_batches_and_the_partial_one_last():
    check_each(range(60), _bucketing_keeps_every_row_once_in_full_batches_and_the_partial_one_last_case)


def _bucketing_keeps_every_row_once_in_full_batches_and_the_partial_one_last_case(seed):
    import random

    from training.loaders import bucketed

    rng = random.Random(seed)   # random sizes and lengths, a fixed seed each: a failure names its case
    lengths = [rng.randint(1, 300) for _ in range(rng.choice([0, 1, 15, 16, 17, rng.randint(0, 2000)]))]
    batch_size = rng.randint(1, 20)
    idxs = random.Random(seed).sample(range(len(lengths)), len(lengths))
    out = bucketed(idxs, lengths.__getitem__, batch_size, random.Random(seed).shuffle)
    assert sorted(out) == sorted(idxs)
    batches = [out[i:i + batch_size] for i in range(0, len(out), batch_size)]
    assert all(len(b) == batch_size for b in batches[:-1])
    # no batch pads more than sorting the rows it was cut from demands: within a run of batches sorted together,
    # a batch's rows are contiguous in length order
    for b in batches:
        lo, hi = min(lengths[i] for i in b), max(lengths[i] for i in b)
        run = next(idxs[c:c + batch_size * 50] for c in range(0, len(idxs), batch_size * 50)
                   if b[0] in idxs[c:c + batch_size * 50])
        assert set(b) <= set(run)
        assert sum(lo < lengths[i] < hi for i in run if i not in b) == 0


def test_the_training_batches_read_each_row_once_an_epoch_and_pad_far_less_than_random_ones():
    from fastai.data.load import DataLoader

    from training.loaders import CachedRows, cached_dls, collate

    cache = _varied_cache(1000)
    y = np.arange(1000, dtype=np.float32)[:, None]
    dls = cached_dls(CachedRows(cache, y, random=True, seed=0), CachedRows(cache, y, random=False, seed=0), 16,
                     64, seed=0)

    def epoch(dl):
        rows, padded, real = [], 0, 0
        for (hidden, mask), target in dl:
            ids = target[:, 0].long().tolist()
            assert hidden[:, 0, 0].tolist() == ids and len(set(ids)) == len(ids)   # each item is its own row
            rows += ids
            padded, real = padded + mask.numel(), real + int(mask.sum())
        return rows, real / padded

    seen = [epoch(dls.train) for _ in range(3)]
    for rows, _ in seen:
        assert len(rows) == len(set(rows)) == 1000 - 1000 % 16       # every row at most once, last partial dropped
    assert len({tuple(rows) for rows, _ in seen}) == 3                 # a new order each epoch
    random_rows = CachedRows(cache, y, random=True, seed=0)
    plain = DataLoader(random_rows, bs=16, shuffle=True, drop_last=True, create_batch=collate, num_workers=0)
    random_rows.draw()
    _, random_fill = epoch(plain)
    bucketed_fill = np.mean([fill for _, fill in seen])
    assert random_fill < 0.85 and bucketed_fill > random_fill + 0.1, (random_fill, bucketed_fill)


def test_windows_are_picked_from_first_to_last_within_the_budget():
    from types import SimpleNamespace

    from training.layercache import pick_windows, windows_per_row

    assert pick_windows([1, 3, 9], 3) == [[0], [0, 1, 2], [0, 4, 8]]
    assert pick_windows([9], 1) == [[0]] and pick_windows([5], 2) == [[0, 4]]
    encoded = SimpleNamespace(n_windows=[1, 3, 9, 2])
    assert windows_per_row(encoded, None, 8) == 8                  # no budget: up to the cap
    assert windows_per_row(encoded, None, 100) == 9                # ... never more than the longest document has
    assert windows_per_row(encoded, 4 + 3, 8) == 2                 # 1+2+2+2 = 7 windows fit, 1+3+3+2 = 9 do not
    assert windows_per_row(encoded, 0, 8) == 1                     # always at least the first window


def test_a_window_cycle_reads_every_window_once_a_round_in_a_fresh_order():
    check_each(range(20), _a_window_cycle_reads_every_window_once_a_round_in_a_fresh_order_case)


def _a_window_cycle_reads_every_window_once_a_round_in_a_fresh_order_case(seed):
    from training.loaders import WindowCycle

    rng = np.random.default_rng(seed)
    sizes = {key: int(rng.integers(1, 9)) for key in range(12)}
    cycle = WindowCycle(seed)
    asked = {key: [] for key in sizes}
    for _ in range(int(rng.integers(60, 200))):   # rows asked in any interleaving
        key = int(rng.integers(len(sizes)))
        asked[key].append(cycle(key, sizes[key]))
    for key, got in asked.items():
        n = sizes[key]
        assert all(0 <= w < n for w in got)
        for start in range(0, len(got), n):     # each full round a permutation, a partial one without repeats
            part = got[start:start + n]
            assert len(set(part)) == len(part) and (len(part) < n or sorted(part) == list(range(n)))
    assert WindowCycle(0)("x", 1) == 0 and WindowCycle(0)("x", 0) == 0


def test_the_windows_worth_caching_are_those_the_epochs_left_will_read():
    from training.layercache import windows_for_epochs

    counts = [1, 2, 3, 8, 8]
    # no budget: as many as the planned epochs read, never more than --max-windows or the longest document
    assert windows_for_epochs(counts, float("inf"), 1.0, 1.0, 8, 3) == (3, 3)
    assert windows_for_epochs(counts, float("inf"), 1.0, 1.0, 8, 2.5) == (3, 2.5)
    assert windows_for_epochs(counts, float("inf"), 1.0, 1.0, 2, 10) == (2, 10)
    assert windows_for_epochs([1, 1], float("inf"), 1.0, 1.0, 8, 10) == (1, 10)
    # 100 s, an epoch 20 s, a window 1 s: k=1 leaves 5 epochs (5 distinct windows), k=2 caches 4 more and leaves
    # 4.8 (9 distinct), k=3 7 more (4.65 epochs, 12), k=4 9 (4.55, 14), k=5 11 (4.45, 14.9), k=6 13 (4.35, 14.7)
    k, epochs = windows_for_epochs(counts, 100.0, 1.0, 20.0, 8, 10)
    assert (k, epochs) == (5, pytest.approx((100 - 11) / 20))
    # caching so dear that every extra window costs more epochs than it reads: the first windows only
    assert windows_for_epochs(counts, 100.0, 30.0, 20.0, 8, 10)[0] == 1
    # time already spent: nothing left to train, so nothing more is worth caching
    assert windows_for_epochs(counts, -5.0, 1.0, 20.0, 8, 10) == (1, 0.0)


def test_the_windows_worth_caching_read_the_most_distinct_windows_of_any_choice():
    check_each(range(30), _the_windows_worth_caching_read_the_most_distinct_windows_of_any_choice_case)


def _the_windows_worth_caching_read_the_most_distinct_windows_of_any_choice_case(seed):
    from training.layercache import windows_for_epochs

    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 10, size=int(rng.integers(1, 40)))
    seconds, per_window, epoch = float(rng.uniform(0, 500)), float(rng.uniform(0.01, 3)), float(rng.uniform(1, 60))
    max_per_row, max_epochs = int(rng.integers(1, 12)), float(rng.uniform(0.5, 10))
    k, epochs = windows_for_epochs(counts, seconds, per_window, epoch, max_per_row, max_epochs)

    def distinct(j):   # brute force, written out again: windows cached beyond the first, epochs left, windows read
        e = min(max_epochs, max(0.0, seconds - sum(min(c, j) - 1 for c in counts) * per_window) / epoch)
        return sum(min(min(c, j), e) for c in counts), e

    choices = range(1, min(max_per_row, int(counts.max())) + 1)
    best = max(distinct(j)[0] for j in choices)
    assert 1 <= k <= max(1, min(max_per_row, counts.max()))
    assert distinct(k)[0] == pytest.approx(best) and epochs == pytest.approx(distinct(k)[1])
    assert all(distinct(j)[0] < best - 1e-9 for j in choices if j < k), "on a tie the fewest windows"


def test_a_timed_top_layer_step_leaves_the_weights_and_gradients_as_they_were(tiny_backbone):
    from training.layercache import TopLayers, build_cache, pick_windows, top_step_seconds

    model = _model(tiny_backbone, "mean")
    encoder = _encoder(tiny_backbone, model)
    encoded = encoder.encode(TEXTS)
    cache = build_cache(model, 1, encoder, encoded, pick_windows(encoded.n_windows, 1), batch_size=8,
                        device=torch.device("cpu"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    net = TopLayers(model, 1).eval()
    # a forward made 0.2 s slower must time at least 0.2 s: the timing holds the step, not something beside it
    slow = net.register_forward_hook(lambda *_: __import__("time").sleep(0.2))
    took = top_step_seconds(net, cache, 4, len(LABELS), torch.device("cpu"))
    slow.remove()
    assert took >= 0.2
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters()) and not net.training


def _train(tiny_data, tiny_backbone, out: Path, *extra: str) -> int:
    from training import train

    return train.main(["--data", str(tiny_data), "--out", str(out), "--backbone", str(tiny_backbone),
                       "--max-length", "32", "--batch-size", "16", "--epochs", "3", "--lr", "1e-3",
                       "--head-lr", "3e-3", "--seed", "0", "--pooling", "mean", "--quiet", *extra])


@pytest.fixture(scope="module")
def top_trained(tiny_backbone, tiny_data, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("top") / "model"
    assert _train(tiny_data, tiny_backbone, out, "--train-layers", "1") == 0
    return out


def test_training_the_top_layer_leaves_the_frozen_weights_untouched(top_trained, tiny_backbone):
    from transformers import AutoModel

    from training.modeling import load_classifier

    before = AutoModel.from_pretrained(tiny_backbone).state_dict()
    after = load_classifier(top_trained / "checkpoint").base_model.state_dict()
    frozen = [k for k in before if k.startswith("embeddings.") or k.startswith("encoder.layer.0.")]
    trained = [k for k in before if k.startswith("encoder.layer.1.")]
    assert frozen and trained
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert any(not torch.equal(before[k], after[k]) for k in trained), "the top layer must have been trained"


def test_a_top_layers_model_dir_records_the_cache_and_evaluates_like_any_other(top_trained):
    from training.evaluate import evaluate_saved

    m = json.loads((top_trained / "metrics.json").read_text())
    layers = m["train"]["layers"]
    assert layers["trained"] == 1 and layers["frozen"] == 1 and layers["why"] == "--train-layers 1"
    cache = layers["cache"]
    rows = {k: sum(1 for r in csv_rows(top_trained) if r == k) for k in ("train", "valid")}
    assert cache["valid_windows"] == rows["valid"] and cache["train_windows"] >= rows["train"]
    assert m["train"]["steps"] == 3 * (rows["train"] // 16) and cache["mib"] > 0
    assert json.loads((top_trained / "settings.json").read_text())["train_layers"] == "1"
    again = evaluate_saved(top_trained, log=lambda *a: None)
    assert again["micro_f1"] == pytest.approx(m["model"]["micro_f1"], abs=1e-6)
    # the top layer learns the synthetic genres from the cache: 0.448 against the most frequent labels' 0.352
    assert m["transformer"]["micro_f1"] > m["most_frequent"]["micro_f1"] + 0.05, (m["transformer"], m["most_frequent"])


def csv_rows(model_dir: Path) -> list[str]:
    import pandas as pd

    data = json.loads((model_dir / "settings.json").read_text())["data"]
    return pd.read_csv(Path(data) / "dataset.csv")["split"].tolist()


def _auto_inputs(tiny_data, tiny_backbone):
    """Settings and the loaded run (its serving encoder included) for deciding `--train-layers auto`."""
    from training.backbone import load_run
    from training.settings import TrainSettings

    s = TrainSettings(data=str(tiny_data), out="", backbone=str(tiny_backbone), max_length=32, pooling="mean",
                      quiet=True)
    return s, load_run(s, Path("."), lambda *a: None)


def _plan(run, s, rt, seconds_left):
    from training.layerplan import plan_layers
    from training.schedule import Budget

    deadline = None if seconds_left is None else __import__("time").time() + seconds_left
    return plan_layers(run, s, rt, Budget(deadline), 0.0, lambda *a: None)


def test_auto_trains_every_layer_when_a_full_epoch_fits_and_the_top_third_when_not(tiny_backbone, tiny_data):  # noqa: F811
    import time

    from training import devices, layercache

    s, run = _auto_inputs(tiny_data, tiny_backbone)
    rt = devices.resolve_runtime("cpu", "fp32")
    roomy = _plan(run, s, rt, 3600)
    assert roomy.n_frozen is None and roomy.why.startswith("auto: a full fine-tune fits")
    tight = _plan(run, s, rt, 0.05)
    assert (tight.n_frozen, tight.n_layers) == (1, 2) and "top 1 of 2 layers" in tight.why
    assert tight.cache_seconds is not None and tight.cache_seconds < 0.05 * layercache.CACHE_SHARE
    assert _plan(run, s, rt, None).why == "auto: no time budget"


@pytest.mark.parametrize("epochs_that_fit,cached", [(1.5, True), (2.5, False)])
def test_auto_wants_two_full_epochs_before_it_fine_tunes_every_layer(tiny_backbone, tiny_data, monkeypatch,  # noqa: F811
                                                                     epochs_that_fit, cached):
    import time

    from training import devices, layercache

    s, run = _auto_inputs(tiny_data, tiny_backbone)
    monkeypatch.setattr(layercache, "train_step_seconds", lambda *a, **k: 10.0)   # a slow machine, made exact
    steps = len(run.texts["train"]) // s.batch_size
    plan = _plan(run, s, devices.resolve_runtime("cpu", "fp32"), epochs_that_fit * 10.0 * steps)
    assert (plan.n_frozen is not None) == cached, plan.why
    assert f"{epochs_that_fit:.2f} epoch" in plan.why      # the timing the decision was made on, for metrics.json



def test_the_full_step_is_timed_where_and_in_the_precision_training_will_run_it(tiny_backbone, tiny_data,  # noqa: F811
                                                                               monkeypatch):
    # A step timed on the CPU in fp32 said 1.33 s on an H200 (a fraction of that there), so auto cached what a
    # GPU fine-tunes whole in minutes; on a bf16 CPU the fp32 timing was 1.7x the autocast step training takes.
    import time
    from dataclasses import replace

    from training import devices, layercache

    s, run = _auto_inputs(tiny_data, tiny_backbone)
    seen = []
    monkeypatch.setattr(layercache, "train_step_seconds",
                        lambda *a, **k: seen.append(a[5:] + tuple(k.values())) or 0.001)
    fp32 = devices.resolve_runtime("cpu", "fp32")
    for rt in (fp32, replace(fp32, precision="bf16")):
        _plan(run, s, rt, 3600)
    assert seen == [("cpu", None), ("cpu", torch.bfloat16)]


def test_timing_a_step_runs_it_under_autocast_and_leaves_the_model_as_it_found_it(tiny_backbone):
    from training import layercache

    model = _model(tiny_backbone, "mean")
    encoder = _encoder(tiny_backbone, model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    autocast = []
    def seen_and_slowed(m, i, o):   # records the autocast state; 0.2 s more a forward, which the timing must hold
        autocast.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        __import__("time").sleep(0.2)

    hook = model.register_forward_hook(seen_and_slowed)
    seconds = {dtype: layercache.train_step_seconds(model, encoder, encoder.encode(TEXTS), 4, len(LABELS), "cpu",
                                                    dtype) for dtype in (None, torch.bfloat16)}
    hook.remove()
    assert all(t >= 0.2 for t in seconds.values()), seconds
    assert [on for on, _ in autocast] == [False, False, True, True], autocast   # untimed + timed step each
    assert [dtype for on, dtype in autocast if on] == [torch.bfloat16] * 2
    assert not model.training and next(model.parameters()).device.type == "cpu"
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "timing must not train"

def _cli(*args):
    return subprocess.run([sys.executable, "-m", "training.train", *args], capture_output=True, text=True,
                          cwd=config.ROOT, timeout=300)


def test_training_as_many_layers_as_the_backbone_has_from_a_cache_is_a_clear_error(tiny_data, tiny_backbone,  # noqa: F811
                                                                                  tmp_path):
    proc = _cli("--data", str(tiny_data), "--out", str(tmp_path / "m"), "--backbone", str(tiny_backbone),
                "--max-length", "32", "--train-layers", "2", "--no-blend")
    assert proc.returncode == 2, proc.stderr
    assert "error: --train-layers 2: the backbone has 2 layers; train 1 to 1 of them" in proc.stderr
    assert not (tmp_path / "m").exists()


def test_a_cache_larger_than_the_memory_allows_stops_before_training(tiny_data, tiny_backbone, tmp_path,  # noqa: F811
                                                                    monkeypatch):
    from training import layercache, train

    monkeypatch.setattr(layercache, "memory_available", lambda: 1024)   # the real limit cannot be reached here
    with pytest.raises(train.TrainError, match=r"the layer cache needs ~.* GiB .* use --train-layers all"):
        train.train(train.TrainSettings(data=str(tiny_data), out=str(tmp_path / "m"), backbone=str(tiny_backbone),
                                        max_length=32, train_layers="1", blend=False, quiet=True),
                    log=lambda *a: None)
    assert not (tmp_path / "m").exists()


def test_the_trained_layers_drop_no_attention_probabilities_but_keep_hidden_dropout(tiny_backbone):
    from training.layercache import TopLayers, embeddings_and_blocks

    model = _model(tiny_backbone, "mean")
    TopLayers(model, 1)
    lower, upper = embeddings_and_blocks(model)[1]
    assert upper.attention.self.dropout.p == 0.0 and lower.attention.self.dropout.p > 0   # the frozen one is untouched
    assert upper.attention.output.dropout.p > 0 and upper.output.dropout.p > 0
    assert model.config.attention_probs_dropout_prob > 0                                   # what config.json saves


def _cache_inputs(tiny_data, tiny_backbone, **settings):
    from training import devices
    from training.backbone import load_run
    from training.settings import TrainSettings

    s = TrainSettings(data=str(tiny_data), out="", backbone=str(tiny_backbone), max_length=16, max_windows=4,
                      train_layers="1", quiet=True, **settings)
    run = load_run(s, Path("."), lambda *a: None)
    return s, run, devices.resolve_runtime("cpu", "fp32")


def test_a_cache_short_of_memory_keeps_fewer_windows_per_document(tiny_data, tiny_backbone, monkeypatch):  # noqa: F811
    from training import layercache
    from training.layerplan import LayerPlan, build_cached_dls

    s, run, rt = _cache_inputs(tiny_data, tiny_backbone)
    train_enc, valid_enc = run.encoder.encode(run.texts["train"]), run.encoder.encode(run.texts["valid"])
    per_window = layercache.bytes_per_window(train_enc, run.model.config.hidden_size)
    valid_bytes = layercache.bytes_per_window(valid_enc, run.model.config.hidden_size) * len(run.texts["valid"])
    need = {k: per_window * np.minimum(train_enc.n_windows, k).sum() + valid_bytes for k in (1, 2, 4)}
    assert need[1] < need[2] < need[4], "the data must have documents of several windows"
    for memory, expected in ((need[4] * 10, 4), ((need[1] + need[2]) / 2, 1)):
        monkeypatch.setattr(layercache, "memory_available", lambda m=memory: int(m / layercache.MEMORY_SHARE))
        dls, info = build_cached_dls(run, s, rt, LayerPlan(1, 2, 4, "test"), lambda *a: None)
        assert info["windows_per_document"] == expected
        assert info["train_windows"] == np.minimum(train_enc.n_windows, expected).sum()
        assert len(dls.train.dataset) == len(run.texts["train"])


def test_the_cache_keeps_more_windows_only_as_far_as_the_timed_first_ones_say_they_fit(tiny_data, tiny_backbone):  # noqa: F811
    from training.layerplan import LayerPlan, build_cached_dls

    s, run, rt = _cache_inputs(tiny_data, tiny_backbone)
    n_windows = run.encoder.encode(run.texts["train"]).n_windows
    assert max(n_windows) >= 4, "the data must have documents of several windows"
    for cache_seconds, expected in ((None, 4), (3600.0, 4), (0.0, 1)):
        lines = []
        dls, info = build_cached_dls(run, s, rt, LayerPlan(1, 2, 4, "test", cache_seconds), lines.append)
        assert info["windows_per_document"] == expected, lines
        assert info["train_windows"] == np.minimum(n_windows, expected).sum()
        assert sorted(len(r) for r in dls.train.dataset.cache.rows) == sorted(np.minimum(n_windows, expected))
        assert f"(up to {expected} a training document)" in lines[-1]


def test_the_cache_keeps_only_the_windows_the_epochs_will_read(tiny_data, tiny_backbone):  # noqa: F811
    import time

    from training.layerplan import LayerPlan, build_cached_dls

    for epochs, until, expected in ((2.0, None, 2), (3.0, None, 3), (2.0, 3600.0, 2), (10.0, -1.0, 1)):
        s, run, rt = _cache_inputs(tiny_data, tiny_backbone, epochs=epochs)
        n_windows = run.encoder.encode(run.texts["train"]).n_windows
        assert max(n_windows) >= 4, "the data must have documents of several windows"
        plan = LayerPlan(1, 2, 4, "test", None, None if until is None else time.time() + until)
        lines = []
        _, info = build_cached_dls(run, s, rt, plan, lines.append)
        assert info["windows_per_document"] == expected and info["train_windows"] == np.minimum(n_windows, expected).sum(), lines
        timed = [line for line in lines if "a top-layer step" in line]
        assert len(timed) == (until is not None), lines   # the step is timed only when a budget needs it
        if until is not None:
            assert f"{expected} windows a document leave" in timed[0]
            assert set(info) >= {"step_seconds", "epoch_seconds", "epochs_expected"}
