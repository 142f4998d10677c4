"""Training-step speed, part by part: blurr's per-batch tokenising against the token cache, one model, one run.

    python -m bench.train_speed                                  # sample books, offline MiniLM, CPU or the GPU
    python -m bench.train_speed --data data/processed/cmu --batch-size 16 --max-length 256 --out cmu_speed.json

Two paths feed the same model the same rows in the same batches, each reading the same window of a long document:
  blurr        blurr's TextBlock tokenises and pads each batch as it is drawn (`training.loaders.blurr_dls`)
  token_cache  batches indexed and padded from arrays tokenised once (`training.loaders.token_dls`: training's path)

Rows, each the median per batch of --batch-size windows of up to --max-length tokens:
  batch production   making one batch on the CPU, no model involved (the cost the GPU waits for)
  host-to-device     copying it to the training device (pinned, non-blocking on the token cache's path; 0 on the CPU)
  forward+backward   the forward pass, the loss and the backward pass on the training device, in its precision
  optimizer          the optimizer's step and clearing the gradients
and steps/s end to end through fastai's `fit`, the loop training runs, each path through its own DataLoaders, with
the process's CPU seconds a step (on a shared machine steadier than the wall clock).
The parts are timed in a plain loop that waits for the device after each one; `fit` does not. The machine is
shared: rounds interleave the paths (A B, then B A, ...) so that a burst of load falls on both. Prints a table,
writes JSON (`batch_production_ms` per path: the median ms per batch, for scripts: scripts/gpu_check.sh).
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import config
from bench import run_and_report
from deployment.cli_types import int_at_least, non_negative_int, positive_int

PATHS = ("blurr", "token_cache")
PARTS = ("batch_production", "host_to_device", "forward_backward", "optimizer")
GOAL_MS = 3.0   # batch production per batch of 16 x 256 tokens on one core: a 0.03 s GPU step stays >= 90% arithmetic


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.train_speed", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=config.PROCESSED_DIR / "books",
                    help="processed data dir (default: data/processed/books; made from the sample if missing)")
    ap.add_argument("--backbone", default="all-MiniLM-L6-v2", help="backbone to time (a name or a local folder)")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where the model runs")
    ap.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                    help="as training.train's --precision")
    ap.add_argument("--batches", type=positive_int, default=5, help="timed training steps per path and round")
    ap.add_argument("--warmup", type=non_negative_int, default=1, help="untimed steps first, each time")
    ap.add_argument("--rounds", type=positive_int, default=2, help="rounds, the paths' order alternating")
    ap.add_argument("--production-batches", type=positive_int, default=30,
                    help="batches made per path and round for the batch-production row (no model: cheap)")
    ap.add_argument("--batch-size", type=positive_int, default=16, help="training batch size")
    ap.add_argument("--max-length", type=int_at_least(8), default=256, help="tokens per window")
    ap.add_argument("--out", type=Path, default=config.ROOT / "bench" / "results" / "train_speed.json",
                    help="JSON output")
    return ap.parse_args(argv)


class BenchError(ValueError):
    """The data cannot feed the benchmark (the message says what to change)."""


def production_ms(dl, n: int) -> list[float]:
    """Milliseconds per batch of `dl` drawn on the CPU (its device unset: no copy), `n` of them."""
    dl.device, device = None, dl.device
    try:
        it, out = iter(dl), []
        for _ in range(n):
            t = time.perf_counter()
            next(it)
            out.append((time.perf_counter() - t) * 1000)
        return out
    finally:
        dl.device = device


def parts_ms(learn, rt, n: int, warmup: int) -> dict[str, list[float]]:
    """Milliseconds of each part of `n` training steps (after `warmup`) of `learn` over its own training batches,
    in a plain loop that waits for the device after each part."""
    import torch

    from training import devices

    device = torch.device(rt.torch_device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    gpu_autocast = devices.autocast_dtype(rt.precision) if device.type == "cuda" else None   # as MixedPrecision
    dl = learn.dls.train
    dl.device, home = None, dl.device
    out = {p: [] for p in PARTS}
    learn.model.train()
    try:
        it = iter(dl)
        for step in range(warmup + n):
            t0 = time.perf_counter()
            xb, yb = next(it)
            t1 = time.perf_counter()
            xb, yb = devices.to_device((xb, yb), device)
            sync()
            t2 = time.perf_counter()
            with torch.autocast(device.type, dtype=gpu_autocast or torch.float32, enabled=gpu_autocast is not None):
                loss = learn.loss_func(learn.model(dict(xb))["logits"], yb)
            loss.backward()
            sync()
            t3 = time.perf_counter()
            learn.opt.step()
            learn.opt.zero_grad()
            sync()
            t4 = time.perf_counter()
            if step >= warmup:
                for part, (a, b) in zip(PARTS, ((t0, t1), (t1, t2), (t2, t3), (t3, t4))):
                    out[part].append((b - a) * 1000)
    finally:
        dl.device = home
    return out


def fit_steps_per_second(learn, n: int, warmup: int) -> tuple[float, float]:
    """(optimizer steps per second, CPU seconds per step) through fastai's own fit loop, `n` steps timed after
    `warmup`. The CPU seconds are this process's (all its threads): on a machine shared with other jobs they move
    far less than the wall clock, which counts the time other processes held the cores."""
    from fastai.callback.core import Callback, CancelFitException

    stamps = []

    class Stamp(Callback):
        order = 99

        def after_batch(self):
            if self.training:
                stamps.append((time.perf_counter(), time.process_time()))
                if len(stamps) > warmup + n:
                    raise CancelFitException()

    with learn.no_bar(), learn.no_logging():
        learn.fit(1, lr=1e-4, cbs=[Stamp()])
    (w0, c0), (w1, c1) = stamps[warmup], stamps[-1]
    return n / (w1 - w0), (c1 - c0) / n


def table(r: dict) -> str:
    p = r["paths"]
    lines = [f"{r['backbone']} on {r['device_name']} ({r['precision']}), batch {r['batch_size']} x <={r['max_length']} "
             f"tokens (mean {p['token_cache']['mean_tokens_per_batch']:.0f} real tokens a batch on the token cache, "
             f"{p['blurr']['mean_tokens_per_batch']:.0f} on blurr's), {r['rounds']} rounds x {r['batches']} steps a "
             f"path; setting up: {r['tokenise_seconds']:.1f} s to tokenise once for the token cache, "
             f"{r['blurr_setup_seconds']:.1f} s for blurr's (windows, lengths)", "",
             "| part of a step (median ms per batch) | blurr (tokenises each batch) | token cache | share of the "
             "token cache's step |", "|---|---|---|---|"]
    names = {"batch_production": "batch production (CPU, no model)", "host_to_device": "host-to-device copy",
             "forward_backward": "forward + backward", "optimizer": "optimizer step"}
    total = sum(p["token_cache"][f"{k}_ms"] for k in PARTS)
    for k in PARTS:
        lines.append(f"| {names[k]} | {p['blurr'][f'{k}_ms']:.2f} | {p['token_cache'][f'{k}_ms']:.2f} | "
                     f"{p['token_cache'][f'{k}_ms'] / total:.1%} |")
    lines.append(f"| steps/s end to end (fastai fit) | {p['blurr']['steps_per_second']:.3f} | "
                 f"{p['token_cache']['steps_per_second']:.3f} | |")
    lines.append(f"| CPU seconds a step end to end (fastai fit, all threads) | {p['blurr']['cpu_seconds_per_step']:.2f} | "
                 f"{p['token_cache']['cpu_seconds_per_step']:.2f} | |")
    ms = r["batch_production_ms"]["token_cache"]
    lines += ["", f"batch production: {r['batch_production_ms']['blurr']:.2f} ms -> {ms:.2f} ms a batch "
              f"({'within' if ms <= GOAL_MS else 'OUTSIDE'} the {GOAL_MS:g} ms goal); end to end "
              f"{r['speedup']:.2f}x the steps/s of blurr's path (median of the rounds' paired ratios)"]
    return "\n".join(lines)


def measure(settings: dict) -> dict:
    import torch

    from training import devices
    from training.backbone import load_model_and_tokenizer, resolve_backbone
    from training.dataset import read_splits
    from training.learner import make_learner
    from training.loaders import align_blurr, blurr_dls, token_dls
    from training.modeling import backbone_pooling, with_pooling
    from training.settings import TrainSettings

    rt = devices.resolve_runtime(settings["device"], settings["precision"])
    torch.manual_seed(0)
    s = TrainSettings(batch_size=settings["batch_size"], max_length=settings["max_length"], pos_weight=0,
                      device=rt.device, precision=rt.precision)
    sp = read_splits(settings["data"])
    source, name = resolve_backbone(settings["backbone"])
    model, tok = load_model_and_tokenizer(source, sp.labels)
    model = with_pooling(model, backbone_pooling(source))  # the model exactly as training.train builds it
    initial = copy.deepcopy(model.state_dict())
    t = time.perf_counter()
    dls = {"token_cache": token_dls(sp.texts["train"], sp.texts["valid"], sp.y["train"], sp.y["valid"], sp.labels,
                                    tok, model, s)}
    tokenise_seconds = time.perf_counter() - t
    t = time.perf_counter()
    dls["blurr"] = blurr_dls(sp.frames["train"], sp.frames["valid"], sp.y["train"], sp.y["valid"], sp.labels, tok,
                             model, s)
    blurr_setup_seconds = time.perf_counter() - t   # it tokenises too, up front: windows, SortedDL's lengths
    steps = settings["warmup"] + settings["batches"]
    if len(dls["token_cache"].train) < max(steps + 1, settings["production_batches"]):
        raise BenchError(f"only {len(dls['token_cache'].train)} training batches; lower --batches or "
                         f"--production-batches")
    align_blurr(dls["blurr"], dls["token_cache"])   # same rows, same batches, same windows
    learners = {k: make_learner(d, model, sp.y["train"], s, rt)[0] for k, d in dls.items()}
    samples = {k: {"production": [], "fit": [], "fit_cpu": [], **{p: [] for p in PARTS}} for k in PATHS}
    for r in range(settings["rounds"]):
        for k in (PATHS if r % 2 == 0 else PATHS[::-1]):
            print(f"  round {r + 1}/{settings['rounds']}: {k}", flush=True)
            samples[k]["production"] += production_ms(dls[k].train, settings["production_batches"])
            model.load_state_dict(initial)   # the same model for both paths, every round
            for part, v in parts_ms(learners[k], rt, settings["batches"], settings["warmup"]).items():
                samples[k][part] += v
            model.load_state_dict(initial)
            per_second, cpu = fit_steps_per_second(learners[k], settings["batches"], settings["warmup"])
            samples[k]["fit"].append(per_second)
            samples[k]["fit_cpu"].append(cpu)
    tokens = {k: [int(b[0]["attention_mask"].sum()) for b, _ in zip(dls[k].train, range(steps))] for k in PATHS}
    paths = {}
    for k in PATHS:
        v = samples[k]
        paths[k] = {"batch_production_ms": statistics.median(v["production"]),
                    **{f"{p}_ms": statistics.median(v[p]) for p in PARTS[1:]},
                    "batch_production_in_loop_ms": statistics.median(v["batch_production"]),
                    "steps_per_second": statistics.median(v["fit"]), "steps_per_second_rounds": v["fit"],
                    "cpu_seconds_per_step": statistics.median(v["fit_cpu"]), "cpu_seconds_per_step_rounds": v["fit_cpu"],
                    "mean_tokens_per_batch": float(np.mean(tokens[k]))}
    result = {"backbone": name, "data": str(settings["data"]), "device": rt.device, "device_name": rt.device_name,
              "precision": rt.precision, "batch_size": s.batch_size, "max_length": s.max_length,
              "batches": settings["batches"], "rounds": settings["rounds"], "torch_threads": torch.get_num_threads(),
              "tokenise_seconds": round(tokenise_seconds, 2), "blurr_setup_seconds": round(blurr_setup_seconds, 2),
              "paths": paths,
              "batch_production_ms": {k: paths[k]["batch_production_ms"] for k in PATHS},
              "goal_batch_production_ms": GOAL_MS,
              # each round's ratio of the two paths' steps/s (run back to back), then their median: on a loaded
              # machine a paired ratio is steadier than the ratio of the medians
              "speedup": statistics.median(a / b for a, b in zip(samples["token_cache"]["fit"], samples["blurr"]["fit"]))}
    return {**result, "table": table(result)}


def main(argv=None) -> int:
    args = parse_args(argv)
    if not (args.data / "dataset.csv").is_file():
        if args.data == config.PROCESSED_DIR / "books":
            from training import prepare

            prepare.main(["--input", str(config.SAMPLE_DIR / "books.csv"), "--out", str(args.data), "--quiet"])
        else:
            print(f"error: {args.data} is not a processed data dir (run python -m training.prepare)", file=sys.stderr)
            return 2
    try:
        run_and_report("python -m bench.train_speed", measure, vars(args), args.out, argv)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
