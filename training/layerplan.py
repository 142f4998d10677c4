"""Which layers a run trains (`--train-layers`), and the layer cache built for that plan (`training.layercache`).

    from training.layerplan import plan_layers, build_cached_dls
    plan = plan_layers(run, settings, rt, budget, reserved, log)   # all layers, or the top ones over a cache
    dls, cache_info = build_cached_dls(run, settings, rt, plan, log)   # when plan.n_frozen is not None

`auto` fine-tunes every layer unless a time budget is set and AUTO_MIN_FULL_EPOCHS epochs of that would not fit
in it (timed on a real step, where and how it would train); then the top third of the layers trains from a cache
of the frozen rest. The windows cached per training document: up to all of them (--max-windows; one with
--train-windows first), fewer when memory or, with a budget, the caching time (CACHE_SHARE of the time left)
cannot afford them, and no more than the epochs left will read.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from training.settings import TrainError, TrainSettings, per_process

# auto: fine-tune every layer when the budget fits at least this many epochs of it. Not 1: a one-cycle run needs
# a few epochs (the cached top layers' valid loss levels off after 3-4 on CMU), and CMU's full fine-tune timed at
# 0.48-0.92 epoch on the 2-core machines measured, close enough to 1 that a slightly faster CPU would have swapped
# six epochs of the top layers for one of the whole model. StackOverflow titles fit 2.6-5.4 and stay full.
AUTO_MIN_FULL_EPOCHS = 2.0


@dataclass
class LayerPlan:
    """Which layers train: all of them (n_frozen None) or the top ones over a cache of `n_frozen` frozen ones,
    reading up to `per_row` windows of each training document from the cache."""
    n_frozen: int | None = None
    n_layers: int | None = None
    per_row: int = 1
    why: str = ""
    cache_seconds: float | None = None   # how long caching may take (None: no limit); the first windows are timed
    train_until: float | None = None     # with a budget: when caching and training must be done (time.time())
    train_encoded: object = None         # the training texts' windows, when the plan already tokenised them

    def describe(self) -> str:
        return "all" if self.n_frozen is None else f"top {self.n_layers - self.n_frozen} of {self.n_layers}"


def plan_layers(run, s: TrainSettings, rt, budget, reserved: float, log=print) -> LayerPlan:
    """--train-layers resolved: `all`, a number, or `auto` (see the module docstring). `reserved`: seconds of the
    budget kept for the end of the run (`schedule.EvalCost`)."""
    from training import devices, layercache

    if s.train_layers == "all":
        return LayerPlan(why="--train-layers all")
    parts = layercache.embeddings_and_blocks(run.model)
    n_layers = len(parts[1]) if parts else None
    if s.train_layers == "auto":
        if budget.deadline is None:
            return LayerPlan(why="auto: no time budget")
        try:
            layercache.check_supported(run.model, max(1, math.ceil((n_layers or 3) / 3)))
        except layercache.CacheError:
            return LayerPlan(why="auto: the backbone is not BERT-like")
        local = per_process(s, len(run.texts["train"]), rt)
        first = run.encoder.encode(run.texts["train"][: max(local.batch_size * 8, 64)])
        # timed where and how it would train: a CPU-timed step said 1.33 s on a GPU that takes a fraction of it
        step = layercache.train_step_seconds(run.model, run.encoder, first, local.batch_size, len(run.labels),
                                             rt.torch_device, devices.autocast_dtype(rt.precision))
        steps = max(1, len(run.texts["train"]) // s.batch_size)
        fits = budget.left(reserved) / (step * steps)
        fits = devices.broadcast_int(int(fits * 1000), rt) / 1000   # the main process's timing decides for all
        if fits >= AUTO_MIN_FULL_EPOCHS:
            return LayerPlan(why=f"auto: a full fine-tune fits {fits:.2f} epochs in the budget ({step:.2f} s a step)")
        k = math.ceil(n_layers / 3)
        why = (f"auto: a full fine-tune would fit {fits:.2f} epoch in the budget ({step:.2f} s a step); the top "
               f"{k} of {n_layers} layers from a cache")
    else:
        k = int(s.train_layers)
        why = f"--train-layers {k}"
    try:
        n_frozen = layercache.check_supported(run.model, k)
    except layercache.CacheError as e:
        raise TrainError(str(e)) from e
    max_per_row = s.max_windows if s.train_windows == "random" else 1
    cache_seconds = None if budget.deadline is None else layercache.CACHE_SHARE * max(0.0, budget.left(reserved))
    train_encoded = run.encoder.encode(run.texts["train"])
    per_row = min(max_per_row, max(train_encoded.n_windows, default=1))
    return LayerPlan(n_frozen, n_layers, per_row, why, cache_seconds,
                     None if budget.deadline is None else budget.deadline - reserved, train_encoded)


def build_cached_dls(run, s: TrainSettings, rt, plan: LayerPlan, log=print):
    """Run the frozen layers once over the first window of every training and valid row, timed; then over as many
    more training windows a document (up to `plan.per_row`, spread over the text) as memory and the rest of
    `plan.cache_seconds` allow at that speed. Returns the DataLoaders over that cache and what it holds
    (metrics.json `train.layers.cache`: windows, train_windows, valid_windows, windows_per_document, mib,
    seconds, and with a budget the sizing of `windows_worth_caching`). `s` is this process's settings."""
    import torch

    from training import devices, layercache, loaders

    enc = {k: run.encoder.encode(run.texts[k]) if k != "train" or plan.train_encoded is None else plan.train_encoded
           for k in ("train", "valid")}
    hidden_size = int(run.model.config.hidden_size)
    available = layercache.memory_available()
    per_row = plan.per_row
    while True:   # the windows a document keeps, fewer while they would not fit in memory
        n = {"train": int(np.minimum(enc["train"].n_windows, per_row).sum()), "valid": len(enc["valid"])}
        need = sum(layercache.bytes_per_window(enc[k], hidden_size) * n[k] for k in n)
        if need <= layercache.MEMORY_SHARE * available or per_row == 1:
            break
        per_row -= 1
    if need > layercache.MEMORY_SHARE * available:
        raise TrainError(f"the layer cache needs ~{need / 2**30:.1f} GiB for {n['train'] + n['valid']} windows, more "
                         f"than half of the {available / 2**30:.1f} GiB available: use --train-layers all, "
                         f"--max-train-rows, or a shorter --max-length")
    device = torch.device(rt.torch_device)
    dtype = devices.autocast_dtype(rt.precision)
    limit = "" if plan.cache_seconds is None else f", as many as {plan.cache_seconds:.0f} s of caching allow"
    log(f"  layer cache: {plan.n_frozen} frozen layers over the first window of {len(enc['train'])} training and "
        f"{n['valid']} valid documents, then up to {per_row} windows a training document{limit} "
        f"(~{need / 2**20:.0f} MiB at most)")
    progress = None
    if not s.quiet and rt.world.main:
        from fastprogress.fastprogress import progress_bar

        progress = progress_bar
    run.model.to(device)

    def cache(k: str, windows: list[list[int]]):
        return layercache.build_cache(run.model, plan.n_frozen, run.encoder, enc[k], windows, s.eval_batch_size,
                                      device, dtype, progress)

    caches = {k: cache(k, [[0]] * len(enc[k])) for k in ("train", "valid")}
    if per_row > 1 and plan.cache_seconds is not None:   # the first windows' real speed says how many more fit
        rate = len(enc["train"]) / max(caches["train"].seconds, 1e-9)
        spare = plan.cache_seconds - caches["train"].seconds - caches["valid"].seconds
        per_row = layercache.windows_per_row(enc["train"], len(enc["train"]) + max(0.0, spare) * rate, per_row)
    sizing = None
    if per_row > 1 and s.train_windows == "random":   # no more windows than the epochs will read
        per_row, sizing = windows_worth_caching(run, s, rt, plan, enc["train"], caches, per_row, log)
    per_row = devices.broadcast_int(per_row, rt)
    if per_row > 1:
        more = [ws[1:] for ws in layercache.pick_windows(enc["train"].n_windows, per_row)]
        caches["train"] = caches["train"].extended(cache("train", more))
    n["train"] = caches["train"].n_windows
    seconds = sum(c.seconds for c in caches.values())
    info = {"windows": n["train"] + n["valid"], "train_windows": n["train"], "valid_windows": n["valid"],
            "windows_per_document": per_row, "mib": round(sum(c.nbytes for c in caches.values()) / 2**20, 1),
            "seconds": round(seconds, 1), **(sizing or {})}
    log(f"  layer cache: {info['windows']} windows (up to {per_row} a training document) in {seconds:.0f} s "
        f"({info['windows'] / max(seconds, 1e-9):.1f} windows/s), {info['mib']:.0f} MiB")
    train = loaders.CachedRows(caches["train"], run.ys["train"], s.train_windows == "random", s.seed)
    valid = loaders.CachedRows(caches["valid"], run.ys["valid"], False, s.seed)
    return loaders.cached_dls(train, valid, s.batch_size, s.eval_batch_size, s.seed), info


def windows_worth_caching(run, s: TrainSettings, rt, plan: LayerPlan, encoded, caches: dict, per_row: int,
                          log=print) -> tuple[int, dict | None]:
    """Windows per training document worth caching (`layercache.windows_for_epochs`): without a budget, as many
    as the planned epochs read; with one, from the first windows' caching speed and a timed step of the top
    layers on them, the number under which the time left reads the most distinct windows. Returns it and, with a
    budget, the sizing (`step_seconds`, `epoch_seconds`, `epochs_expected`)."""
    import torch

    from training import devices, layercache

    n_rows, seconds, per_window, epoch_seconds = len(encoded), math.inf, 0.0, 1.0
    if plan.train_until is not None:
        device = torch.device(rt.torch_device)
        net = layercache.TopLayers(run.model, plan.n_frozen, cpu_bf16=rt.precision != "fp32" and rt.device == "cpu")
        step = layercache.top_step_seconds(net, caches["train"], s.batch_size, len(run.labels), device,
                                           devices.autocast_dtype(rt.precision))
        steps = max(1, n_rows // (s.batch_size * rt.world.size))
        valid_steps = math.ceil(len(run.texts["valid"]) / (s.eval_batch_size * rt.world.size))
        # an epoch: its steps, and the epoch-end loss over the valid first windows (a forward, ~1/3 of a step).
        # The timed step (median-length first windows, no optimizer update) is not below a real one: on CMU it
        # timed 0.46 s where fastai's steps ran 0.38-0.42 s (bucketed batches of shorter windows, the update).
        epoch_seconds = steps * step + valid_steps * step * s.eval_batch_size / s.batch_size / 3
        per_window = caches["train"].seconds / max(1, n_rows)
        seconds = plan.train_until - time.time()
    k, epochs = layercache.windows_for_epochs(encoded.n_windows, seconds, per_window, epoch_seconds, per_row, s.epochs)
    if plan.train_until is None:
        return k, None
    log(f"  layer cache: a top-layer step {step:.2f} s, an epoch ~{epoch_seconds:.0f} s; with {seconds:.0f} s "
        f"left, {k} windows a document leave ~{epochs:.2f} epochs")
    return k, {"step_seconds": round(step, 4), "epoch_seconds": round(epoch_seconds, 1),
               "epochs_expected": round(epochs, 2)}
