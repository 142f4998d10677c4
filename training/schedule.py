"""The learning-rate schedule and the time budget: one home for the arithmetic of `--epochs` and `--time-budget`.

    from training.schedule import Budget, fit, time_evaluation
    budget = Budget.starting(time.time(), 25 * 60)          # or Budget() without a budget
    cost = time_evaluation(run, settings, rt, with_linear=True)  # what the end of the run will take, timed now
    fitted = fit(learn, lrs, settings, budget, cost.reserve(...), log, rt, curve)

Training follows a one-cycle schedule counted in optimizer steps (cosine warm-up over `--pct-start`, cosine
anneal), sized to `--epochs` or to what fits in `--time-budget`: the total is re-planned from measured step times
at a few early steps and shortened (never lengthened) at a few late ones, so a budgeted run still anneals fully
and ends before the deadline. The time kept back from training is the final evaluation (a forward pass over
every window of valid and test where training runs, timed on the untrained model at the start, then choosing
thresholds and the blend, and saving), the epoch-end validation passes and the valid curve's remaining points,
with a margin.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from training.settings import TrainError, TrainSettings

POST_EVAL_SECONDS = 10.0   # after the forward passes: pooling and threshold search, the blend, saving, plots
RESERVE_MARGIN = 1.15      # on the measured evaluation time: a busy machine slows it down


# --------------------------------------------------------------------------------------------- the schedule
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

        def replan(self, now: float, late: bool = False) -> None:
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
                self.replan(now)
            elif (self.deadline and self.step > max(self.REPLAN_AT) and len(self.durations) > 20
                  and any(self.step == int(f * self.total) for f in self.LATE_CHECKS)):
                self.replan(now, late=True)
            if self.step >= self.total:
                raise CancelFitException()

    return BudgetedOneCycle()


@dataclass
class Fitted:
    """What the schedule did: optimizer steps run and planned, whether the budget cut them, their speed and the
    per-step loss and learning rate (history.json)."""
    steps: int
    planned_steps: int
    total_steps: int              # the schedule's final total (re-planned under a budget); `steps` reached it
    stopped_by_budget: bool
    steps_per_second: float | None
    steps_per_epoch: int
    history: list = field(default_factory=list)


def fit(learn, lrs: np.ndarray, s: TrainSettings, budget: "Budget", reserve_fn, log=print, rt=None,
        curve=None) -> Fitted:
    """Freeze phase (optional), then the budgeted one-cycle run over the layer groups' peak rates `lrs`. Steps are
    global optimizer steps: in a data-parallel run each one consumes --batch-size rows in all."""
    from training import devices

    rt = rt or devices.Runtime("cpu", "fp32")  # only its world matters here: one process
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
    if budget.deadline:
        # a first estimate from a couple of timed steps is made inside the callback; plan optimistically here
        if devices.broadcast_int(budget.left() <= 0, rt):  # the main process's clock decides for all (it fit TF-IDF)
            raise TrainError("--time-budget is already used up before training started (data loading, baseline)")
    sched = budgeted_one_cycle(lrs, total, s.pct_start, budget.deadline, reserve_fn, steps_per_epoch, log=log,
                               agree=lambda n: devices.broadcast_int(n, rt))
    log(f"  one-cycle: {total} steps ({s.epochs:g} epochs x {steps_per_epoch}), lr {lrs[0]:.2e} (lowest trained "
        f"group) ... {lrs[-2]:.2e} (top layer), {lrs[-1]:.2e} (head)")
    if curve is not None:
        curve.sched = sched   # the curve places its points on the schedule's steps
    learn.fit(math.ceil(total / steps_per_epoch), cbs=[sched] + ([curve] if curve is not None else []))
    return Fitted(sched.step, sched.planned, sched.total, sched.stopped_by_budget, sched.steps_per_second,
                  steps_per_epoch, sched.history)


# --------------------------------------------------------------------------------------------- the budget
@dataclass(frozen=True)
class Budget:
    """`--time-budget` as a deadline on the wall clock (time.time()); None: no budget."""
    deadline: float | None = None

    @classmethod
    def starting(cls, t0: float, seconds: float | None) -> "Budget":
        return cls(t0 + seconds if seconds else None)

    def left(self, reserved: float = 0.0) -> float:
        """Seconds until the deadline less `reserved` (infinite without a budget)."""
        return math.inf if self.deadline is None else self.deadline - time.time() - reserved


def forward_seconds_per_window(model, tokens, batching: tuple, autocast=None, n: int = 64) -> float:
    """Seconds per window of a no-grad forward pass where the model is (under `autocast`, `batching` = (windows,
    padded tokens or None) a batch), timed on up to `n` windows of `tokens` spread over the data (full-length
    windows of long texts and short texts alike): the faster of two passes, the first of which also warms up every
    batch shape (bf16 kernels are built on first use). The logits come back to the host: the timing waits for
    the device."""
    from training.inference import window_logits

    pick = np.linspace(0, tokens.window_count - 1, min(n, tokens.window_count)).astype(int)
    sample = tokens.subset(pick)
    took = math.inf
    for _ in range(2):
        t = time.perf_counter()
        window_logits(model, sample, batching[0], autocast=autocast, max_tokens=batching[1])
        took = min(took, time.perf_counter() - t)
    return max(took, 1e-6) / len(pick)


@dataclass
class EvalCost:
    """What the end of a run costs besides training steps: the final evaluation's forward pass over `n_eval`
    windows of valid and test at `per_window` seconds each, then `post_eval` seconds of choosing and saving."""
    per_window: float
    n_eval: int
    post_eval: float

    @property
    def estimate(self) -> float:
        return self.per_window * self.n_eval + self.post_eval

    def reserve(self, n_valid: int, world_size: int, valid_share: float, curve=None) -> Callable[..., float]:
        """`reserve(per_step, epoch_ends)`: seconds the schedule must leave at the deadline: the epoch-end
        validation passes (first windows of the `n_valid` rows, through `valid_share` of the model, shared by the
        processes), the valid curve's remaining points and the final evaluation (main process only), with
        RESERVE_MARGIN. The forward pass is re-timed by the valid curve's points while training (full windows, a
        larger sample than the first timing, which overestimated it by ~30% on CMU): the smaller of the two counts."""
        def reserve(per_step: float, epoch_ends: int = 0) -> float:
            curve_left = curve.cost_left() if curve is not None else 0.0
            per = min(self.per_window, curve.seconds_per_window or self.per_window) if curve is not None \
                else self.per_window
            return (per * valid_share * epoch_ends * n_valid / world_size + curve_left
                    + per * self.n_eval + self.post_eval) * RESERVE_MARGIN
        return reserve

    def reserved_at_end(self, curve=None) -> float:
        """What the budget kept for the evaluation once training is over (metrics.json `eval_seconds_reserved`)."""
        if curve is not None and curve.seconds_per_window:
            return min(self.per_window, curve.seconds_per_window) * self.n_eval + POST_EVAL_SECONDS
        return self.estimate


def time_evaluation(run, s: TrainSettings, rt, with_linear: bool, log=print) -> EvalCost:
    """The final evaluation reads every window of valid and test where training runs (`rt`): time that forward
    pass now, on the untrained model where it is (its speed does not change), rather than guess it from training
    steps; and the blend's cross-fitted choice (`blend.blend_choice_seconds`) when there is a linear part. Valid
    and test are tokenised here once for the run (`tokencache.tokens_for`; the evaluation reuses them)."""
    from training import devices
    from training.blend import blend_choice_seconds
    from training.tokencache import tokens_for

    valid = tokens_for(run.encoder, run.texts["valid"])
    n_eval = valid.window_count + tokens_for(run.encoder, run.texts["test"]).window_count
    per_window = forward_seconds_per_window(run.model, valid, devices.eval_batching(rt, s.eval_batch_size),
                                            devices.eval_autocast(rt))
    post_eval = POST_EVAL_SECONDS + (blend_choice_seconds(len(run.texts["valid"]), len(run.labels), s.min_support)
                                     if with_linear else 0.0)
    cost = EvalCost(per_window, n_eval, post_eval)
    log(f"  evaluation: {n_eval} windows of valid + test at {1 / per_window:.1f} windows/s on {rt.device}, then "
        f"~{post_eval:.0f} s of choosing (the blend cross-fitted) -> ~{cost.estimate:.0f} s reserved in the budget")
    return cost
