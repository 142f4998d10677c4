"""Fine-tuning within the budget: the steps between the loaded run and the trained model, and what they report.

    from training.finetune import fine_tune
    tuned = fine_tune(run, settings, budget, rt, linear=linear, t0=t0, log=print)
    run.model          # the fine-tuned classifier, on the training device
    tuned.fitted.steps, tuned.valid_curve, tuned.layers, tuned.eval_seconds_reserved

Time the final evaluation → decide which layers train (`layerplan`) → build the Learner (`learner`) → set up the
valid curve (`curve`) → fit the budgeted one-cycle schedule (`schedule`), data-parallel over the launcher's
processes. The results come back explicitly in `FineTuned`, the model in `run.model`.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

from training import devices
from training.settings import TrainSettings


@dataclass
class FineTuned:
    """What fine-tuning reports (metrics.json `train`): the schedule's results, per-epoch losses, the valid curve,
    which layers trained and from what cache, and the seconds the budget kept for the final evaluation."""
    fitted: object                 # schedule.Fitted
    epochs: list                   # [{epoch, step, train_loss, valid_loss}]
    valid_curve: list              # curve.valid_curve points ([] without it)
    layers: dict                   # {trained, frozen, why, cache}
    eval_seconds_reserved: float


def fine_tune(run, s: TrainSettings, budget, rt: devices.Runtime, linear=None, t0: float | None = None,
              log=print) -> FineTuned:
    """fastai fit within the budget on `rt`'s device (data-parallel over its processes); the fine-tuned model
    replaces `run.model`, still on that device, where the final evaluation reads it (`train` saves it from the
    CPU)."""
    from training.curve import curve_callback
    from training.layerplan import plan_layers
    from training.learner import build_learner, group_lrs
    from training.schedule import RESERVE_MARGIN, fit, time_evaluation

    # 1. what the end of the run will cost, timed now where training runs (it sizes the plan and the schedule
    #    under a budget)
    run.model.to(rt.torch_device)
    cost = time_evaluation(run, s, rt, with_linear=linear is not None, log=log)
    # 2. which layers train: all of them, or the top ones from a cache of the frozen rest
    plan = plan_layers(run, s, rt, budget, cost.estimate * RESERVE_MARGIN, log)
    log(f"  layers trained: {plan.describe()} ({plan.why})")
    # 3. the Learner over this process's share of the rows (the token cache's loaders, or the layer cache's)
    learn, n_groups, cache_info = build_learner(run, s, rt, plan, log)
    # 4. the valid curve (time to accuracy), measured while training
    curve = curve_callback(run, s, linear, t0 or time.time(), rt, log)
    # 5. the budgeted one-cycle fit; an epoch-end validation pass reads the first window of every valid row,
    #    through the whole model or, with a cache, through the trained layers only
    valid_share = 1.0 if plan.n_frozen is None else 1 - plan.n_frozen / plan.n_layers
    reserve = cost.reserve(len(run.texts["valid"]), rt.world.size, valid_share, curve)
    lrs = group_lrs(n_groups, s.lr, s.lr_decay, s.head_lr)
    with contextlib.ExitStack() as quiet:
        if s.quiet or not rt.world.main:  # one progress bar and epoch table, the main process's
            quiet.enter_context(learn.no_logging())
            quiet.enter_context(learn.no_bar())
        quiet.enter_context(devices.data_parallel(learn, rt))
        fitted = fit(learn, lrs, s, budget, reserve, log=log, rt=rt, curve=curve)
    # 6. the fine-tuned model (on the training device, where the evaluation reads it), and what the run reports
    run.model = learn.model.hf_model
    epochs = [{"epoch": i + 1, "step": min((i + 1) * fitted.steps_per_epoch, fitted.steps),
               "train_loss": float(v[0]), "valid_loss": float(v[1]) if len(v) > 1 else None}
              for i, v in enumerate(getattr(learn.recorder, "values", []))]
    layers = {"trained": "all" if plan.n_frozen is None else plan.n_layers - plan.n_frozen,
              "frozen": plan.n_frozen or 0, "why": plan.why, "cache": cache_info}
    return FineTuned(fitted, epochs, curve.points if curve is not None else [], layers,
                     cost.reserved_at_end(curve))
