"""Fine-tune a transformer for multilabel classification with fastai + blurr, tune thresholds on `valid`,
evaluate on `test` beside a TF-IDF + logistic-regression baseline, and write a self-describing model dir.

    python -m training.train --data data/processed/books --out models/books
    python -m training.train --data data/processed/cmu --out models/cmu --time-budget 25m
    python -m training.train --evaluate models/books          # re-evaluate a saved model, no training
    python -m training.train --data ... --out models/books --resume   # continue from models/books/checkpoint
    accelerate launch --multi_gpu --num_processes 2 -m training.train --data ... --out models/books   # data-parallel

This module is the stage read as a straight line (`train`, below) and its command line. Every default is in
`training.settings.TrainSettings`, one commented block; each step calls the module that owns it:

    backbone   find the backbone offline, load it with the prepared splits (`training.dataset`)
    baseline   the TF-IDF + one-vs-rest logistic regression (the baseline, and the blend's other part)
    finetune   time the evaluation, plan the layers (`layerplan`, `layercache`), build the Learner (`learner`,
               `loaders` over `tokencache`: texts tokenised once), fit the budgeted one-cycle schedule
               (`schedule`) with the valid curve (`curve`), on the training device
    evaluate   window pooling, thresholds (`metrics`) and the blend (`blend`) chosen on valid, the forward passes
               on the training device; metrics on test
    modeldir   the model dir written atomically (and read back by `--evaluate`, `--resume` and compression)

`--device` (CUDA, else MPS, else the CPU) and `--precision` (bf16/fp16 autocast where it pays) are chosen in
`training.devices`. Under `accelerate launch` every process trains on its share of each epoch; only the main
process fits the TF-IDF model, tunes, evaluates and writes the model dir.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

import config
from deployment.cli_types import float_in, int_at_least
from deployment.commands import command_line, print_settings
from deployment.files import OutputError, check_replaceable
from training import devices, finetune
from training.backbone import load_run
from training.evaluate import evaluate_saved, model_names, tune_and_evaluate
from training.metrics import markdown_table
from training.modeldir import OWNER_FILE, ModelDirError, write_model_dir
from training.schedule import Budget
from training.settings import TrainError, TrainSettings, check, per_process


def train(s: TrainSettings, command: str = "", log=print) -> dict | None:
    """The stage: returns metrics.json's content. Under `accelerate launch` every process runs this: all of them
    fine-tune (each on its share of the rows), only the main one does the rest; the others return None once
    training is over."""
    t0 = time.time()
    budget = Budget.starting(t0, s.time_budget)
    out = Path(s.out)
    check(s)
    # 1. where and in what precision this process trains; the main process speaks for all
    try:
        rt = devices.resolve_runtime(s.device, s.precision)
    except devices.DeviceError as e:
        raise TrainError(str(e)) from e
    is_main = rt.world.main
    if not is_main:  # no second log, no second set of loading bars
        from transformers.utils import logging as hf_logging

        log = _silent
        hf_logging.disable_progress_bar()
    # 2. refuse an --out that is not a model dir before any work
    try:
        check_replaceable(out, owned_by=OWNER_FILE, what="model dir")
    except OutputError as e:
        raise TrainError(f"--out {e}") from e
    log(f"device: {rt.describe()} (--device {s.device}, --precision {s.precision})")
    devices.start(rt)
    # 3. the splits, the backbone and the serving encoder
    run = load_run(s, out, log)
    per_process(s, len(run.texts["train"]), rt)  # a world the data cannot feed fails now, not after the baseline
    # 4. the TF-IDF + logistic-regression model: the baseline and the blend's other part (main process)
    linear = None
    if s.blend and is_main:
        log("tf-idf + logistic regression (baseline and blend component):")
        from training.baseline import fit_linear

        linear = fit_linear(run.texts["train"], run.ys["train"], run.texts["valid"], run.ys["valid"], run.labels,
                            log=log)
    # 5. fine-tune within the budget (every process)
    tuned = finetune.fine_tune(run, s, budget, rt, linear=linear, t0=t0, log=log)
    devices.finish(rt)
    if not is_main:
        return None
    train_seconds = time.time() - t0
    # 6. choose on valid, measure on test
    log("evaluating on valid (tuning) and test (reporting) ...")
    t_eval = time.time()
    ev = tune_and_evaluate(run, linear, s, rt)   # on the training device, where the model is
    eval_seconds = time.time() - t_eval
    run.model = run.model.cpu()                  # the model dir is saved from the CPU
    # 7. write the model dir atomically, and say what came of it
    fitted = tuned.fitted
    train_info = {"steps": fitted.steps, "planned_steps": fitted.planned_steps,
                  "epochs_done": round(fitted.steps / fitted.steps_per_epoch, 3),
                  "stopped_by_budget": fitted.stopped_by_budget, "train_seconds": round(train_seconds, 1),
                  "device": rt.device, "device_name": rt.device_name, "precision": rt.precision,
                  "world_size": rt.world.size, "steps_per_second": fitted.steps_per_second, "epochs": tuned.epochs,
                  "eval_seconds_reserved": round(tuned.eval_seconds_reserved, 1),
                  "eval_seconds": round(eval_seconds, 3),
                  "eval_device": rt.device,
                  "eval_precision": devices.eval_precision(rt),
                  "valid_curve": tuned.valid_curve, "layers": tuned.layers}
    metrics = write_model_dir(out, run, linear, ev, fitted.history, train_info, s, command, t0, rt)
    _log_summary(metrics, ev, out, t0, log)
    return metrics


def _silent(*args, **kwargs) -> None:
    """The log of the non-main processes of a data-parallel run: the main process speaks for all."""


def _log_summary(metrics: dict, ev, out: Path, t0: float, log) -> None:
    names, final, info = model_names(ev), metrics["model"], metrics["train"]
    log("\n" + markdown_table({names[k]: v for k, v in ev.results.items()}))
    base = ev.results.get("baseline")
    log(f"done in {time.time() - t0:.0f}s: {info['steps']} steps ({info['epochs_done']} epochs"
        f"{', cut by the time budget' if info['stopped_by_budget'] else ''}); test micro-F1 {final['micro_f1']:.4f} "
        f"macro-F1 {final['macro_f1']:.4f} ({names[ev.final_name]})"
        + (f" vs baseline {base['micro_f1']:.4f} / {base['macro_f1']:.4f}" if base else "") + f" -> {out}")


# --------------------------------------------------------------------------------------------- command line
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
                    help="tokens shared by consecutive windows, below the text tokens of a window (default: max-length // 4)")
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
        check(s)
        if devices.is_main_process():
            print_settings(s)
        train(s, command_line("python -m training.train", argv))
    except (TrainError, ModelDirError) as e:
        where = "" if devices.is_main_process() else f" (process {os.environ.get('RANK')})"
        print(f"error{where}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
