"""The valid curve: time to accuracy, measured while training (metrics.json `train.valid_curve`, valid_curve.png).

    from training.curve import curve_callback
    curve = curve_callback(run, settings, linear, t0, world_size, log)   # a fastai callback, or None
    ... fit ...; curve.points                                           # [{step, epoch, minutes, ...}, ...]

Valid micro-F1 of the transformer (and of its blend with the linear model) `--curve-points` times while training,
evenly over the planned steps, and once at the end. It reads the first window of a fixed sample of `--curve-rows`
valid rows with one global threshold (`metrics.micro_f1_at_best_threshold`), and for the blend the best weight
on `blend.BLEND_WEIGHTS`, both chosen on those rows: a cheap, consistent measure of progress, not the final tuned
score. Its own time is kept out of the step timing the budget re-plans from, and `cost_left()` tells the budget
how long the remaining measurements will take.
"""
from __future__ import annotations

import math
import time

import numpy as np

from training.settings import TrainSettings


def valid_curve(tokens, y: np.ndarray, p_linear: np.ndarray | None, points: int, t0: float, batching: tuple,
                log=print, autocast=None):
    """The callback over `tokens` (a `tokencache.TokenCache` of one window per row) and its labels `y`.
    `self.sched` (the schedule's callback) is set by `schedule.fit`. Minutes are wall-clock since `t0` (the
    command's start), without the measurements themselves. The forward pass runs where the model trains, in
    `batching` = (windows, padded tokens or None) a batch, under `autocast` (as the final evaluation)."""
    from fastai.callback.core import Callback

    from deployment.scoring import blend, sigmoid
    from training.blend import BLEND_SPACE, BLEND_WEIGHTS
    from training.inference import window_logits
    from training.metrics import micro_f1_at_best_threshold

    linear_f1 = micro_f1_at_best_threshold(p_linear, y)[0] if p_linear is not None else None

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
            logits = window_logits(model, tokens, batching[0], autocast=autocast, max_tokens=batching[1])
            model.train(was_training)
            p = sigmoid(logits)
            f1, threshold = micro_f1_at_best_threshold(p, y)
            point = {"step": self.sched.step, "epoch": round(self.sched.step / self.sched.steps_per_epoch, 3),
                     "minutes": round((time.time() - t0 - self.spent) / 60, 2), "transformer_micro_f1": f1,
                     "transformer_threshold": threshold}
            if p_linear is not None:
                (f1, threshold), weight = max(
                    (micro_f1_at_best_threshold(blend(p, p_linear, w, BLEND_SPACE), y), float(w))
                    for w in BLEND_WEIGHTS)
                point.update(blend_micro_f1=f1, blend_threshold=threshold, blend_weight=weight,
                             linear_micro_f1=linear_f1)
            took = time.perf_counter() - t
            point["seconds"] = round(took, 2)
            self.spent += took
            self.seconds_per_point = took if self.seconds_per_point is None else max(self.seconds_per_point, took)
            self.seconds_per_window = self.seconds_per_point / max(1, tokens.window_count)
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


def curve_callback(run, s: TrainSettings, linear, t0: float, rt, log=print):
    """The valid-curve callback on the first window of `s.curve_rows` valid rows spread over the split, measured on
    `rt`'s device (None when --curve-points is 0, valid is empty, or in a data-parallel run, where one process
    evaluating alone would stall the others at the next gradient exchange)."""
    from training import devices
    from training.tokencache import tokens_for

    if s.curve_points <= 0 or not len(run.texts["valid"]):
        return None
    if rt.world.size > 1:
        log(f"  valid curve: off in a data-parallel run ({rt.world.size} processes); the final evaluation still runs")
        return None
    n = len(run.texts["valid"])
    pick = np.unique(np.linspace(0, n - 1, min(s.curve_rows, n)).astype(int))
    valid = tokens_for(run.encoder, run.texts["valid"])   # tokenised once for the run (the evaluation reads it too)
    sample = valid.subset(valid.first_windows()[pick])
    p_linear = linear.predict_proba([run.texts["valid"][i] for i in pick]) if linear is not None else None
    log(f"  valid curve: micro-F1 on the first window of {len(pick)} valid rows, {s.curve_points} times while "
        f"training and at the end")
    return valid_curve(sample, run.ys["valid"][pick], p_linear, s.curve_points, t0,
                       devices.eval_batching(rt, s.eval_batch_size), log, devices.eval_autocast(rt))
