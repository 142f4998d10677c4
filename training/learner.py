"""The fastai Learner a run fits: parameter groups with layer-wise learning rates, the loss, the precision.

    from training.learner import learner_for
    learn = learner_for(TrainSettings(data="data/processed/books"))   # as `python -m training.train` builds it
    learn.dls.show_batch(); learn.lr_find(); learn.fit_one_cycle(1, 1e-4); learn.show_results()

Layer-wise learning rates: the classifier head gets `--head-lr`, the top transformer layer `--lr`, each lower layer
`--lr-decay` times the one above (embeddings smallest). With a layer cache (`training.layerplan`) only the top
layers and the head are in the optimizer.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from training import devices
from training.settings import TrainSettings, per_process


def layer_groups(model) -> list[list]:
    """Parameter groups from the bottom up: embeddings, each transformer layer, then the head."""
    from training.layercache import embeddings_and_blocks

    parts = embeddings_and_blocks(model)
    if parts is None:
        from training.compat import blurr_text

        return [list(g) for g in blurr_text.blurr_splitter(model)]
    emb, blocks = parts
    seen = set()
    groups = []
    for module in [emb, *blocks]:
        ps = [p for p in module.parameters()]
        seen.update(id(p) for p in ps)
        groups.append(ps)
    groups.append([p for p in model.parameters() if id(p) not in seen])  # pooler + classifier
    return groups


def group_lrs(n_groups: int, lr: float, decay: float, head_lr: float | None = None) -> np.ndarray:
    """Rates for [embeddings, layer 1..n, head]: the top layer gets `lr`, each lower group `decay` times the
    one above (never larger), and the freshly initialised head `head_lr` (default: `lr`)."""
    body = [lr * decay ** (n_groups - 2 - i) for i in range(n_groups - 1)]
    return np.array(body + [head_lr if head_lr is not None else lr])


def pos_weights(y: np.ndarray, cap: float) -> np.ndarray | None:
    """BCE `pos_weight` per label, min(cap, sqrt(neg / pos)); None when `cap` is 0 (off)."""
    if cap <= 0:
        return None
    pos = np.clip(y.sum(0), 1, None)
    neg = len(y) - pos
    return np.minimum(cap, np.sqrt(neg / pos)).astype(np.float32)


def make_learner(dls, model, y_train, s: TrainSettings, rt: devices.Runtime | None = None,
                 n_frozen: int | None = None):
    """The fastai Learner on `rt`'s device and precision (default: resolved from `s` for one process). With
    `n_frozen`, the DataLoaders hold cached lower-layer outputs and the Learner trains the layers above them
    and the head (`training.layercache`); else the whole model through blurr's wrapper. Returns (learn, groups
    trained)."""
    import torch
    from fastai.learner import Learner
    from fastai.losses import BCEWithLogitsLossFlat
    from fastai.optimizer import Adam

    from training.compat import blurr_text

    class Bf16Wrapper(blurr_text.BaseModelWrapper):
        """Forward under CPU bfloat16 autocast (weights and optimizer stay fp32); logits back in fp32."""

        def forward(self, x):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = super().forward(x)
            out["logits"] = out["logits"].float()
            return out

    rt = rt or devices.resolve_runtime(s.device, s.precision)
    dls.to(torch.device(rt.torch_device))  # fastai moves the model to the DataLoaders' device at fit
    pw = pos_weights(y_train, s.pos_weight)
    loss = BCEWithLogitsLossFlat(pos_weight=torch.tensor(pw) if pw is not None else None)
    cpu_bf16 = rt.precision != "fp32" and rt.device == "cpu"   # fastai's MixedPrecision is CUDA-only
    if n_frozen is not None:
        from training.layercache import TopLayers, trainable_groups

        groups = trainable_groups(layer_groups(model), n_frozen)
        cbs, net = [], TopLayers(model, n_frozen, cpu_bf16=cpu_bf16)
    else:
        groups = layer_groups(model)
        cbs, net = [blurr_text.BaseModelCallback()], (Bf16Wrapper if cpu_bf16 else blurr_text.BaseModelWrapper)(model)
    if rt.precision != "fp32" and not cpu_bf16:
        from fastai.callback.fp16 import MixedPrecision

        cbs.append(MixedPrecision(amp_mode=rt.precision))  # CUDA autocast; fp16 also scales the loss
    learn = Learner(dls, net, loss_func=loss, opt_func=Adam, wd=s.weight_decay,
                    splitter=lambda m: groups, cbs=cbs)
    learn.create_opt()
    return learn, len(groups)


def build_learner(run, s: TrainSettings, rt: devices.Runtime, plan=None, log=print):
    """The Learner `train` fits on `rt`'s device, over the train/valid split (this process's share of the batch):
    the token cache's DataLoaders and the whole classifier, or with a cached `plan` (`layerplan.LayerPlan`) the
    layer cache's DataLoaders and the top layers. Returns (learn, layer groups, what the cache holds or None)."""
    from training.layerplan import LayerPlan, build_cached_dls
    from training.loaders import token_dls

    local = per_process(s, len(run.texts["train"]), rt)
    plan = plan or LayerPlan()
    cache_info = None
    if plan.n_frozen is None:
        dls = token_dls(run.texts["train"], run.texts["valid"], run.ys["train"], run.ys["valid"], run.labels,
                        run.tokenizer, run.model, local)
    else:
        dls, cache_info = build_cached_dls(run, local, rt, plan, log)
    learn, n_groups = make_learner(dls, run.model, run.ys["train"], s, rt, n_frozen=plan.n_frozen)
    return learn, n_groups, cache_info


def learner_for(s: TrainSettings, log=print):
    """The Learner `python -m training.train` would fit for these settings, data and backbone loaded the same way,
    for a fastai user to explore: `learn.dls.show_batch()`, `learn.lr_find()`, `learn.fit_one_cycle(...)`,
    `learn.show_results()`. (`train` adds the budgeted schedule, thresholds, the blend and the model dir; with
    `train_layers` a number, the Learner trains those top layers from a cache of the others.)"""
    from training.backbone import load_run
    from training.layerplan import plan_layers
    from training.schedule import Budget

    run = load_run(s, Path(s.out or "."), log)
    rt = devices.resolve_runtime(s.device, s.precision)
    plan = plan_layers(run, s, rt, Budget(), 0.0, log)
    return build_learner(run, s, rt, plan, log)[0]
