"""Training-step speed: the fastai + blurr path against a plain PyTorch loop, same model, same batches, one run.

    python -m bench.train_speed                                  # sample books, offline MiniLM, 20 batches
    python -m bench.train_speed --data data/processed/cmu --batches 30 --max-length 256

The fastai run goes through `training.train`'s own DataLoaders and Learner (blurr tokenises each batch on the
fly, dynamic padding, length-sorted batches). Its batches are recorded and replayed through a plain loop:
forward, BCE-with-logits, backward, AdamW step, on a model restored to the same initial weights. Time per
batch is wall time between consecutive batch ends (data loading and tokenisation included for fastai; the
plain loop gets its batches ready-made, which flatters it). The first `--warmup` batches are not counted.
Prints a table and writes bench/results/train_speed.json.
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


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.train_speed", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=config.PROCESSED_DIR / "books",
                    help="processed data dir (default: data/processed/books; made from the sample if missing)")
    ap.add_argument("--backbone", default="all-MiniLM-L6-v2", help="backbone to time")
    ap.add_argument("--batches", type=positive_int, default=15, help="timed batches per path")
    ap.add_argument("--warmup", type=non_negative_int, default=3, help="untimed batches first")
    ap.add_argument("--batch-size", type=positive_int, default=16, help="training batch size")
    ap.add_argument("--max-length", type=int_at_least(8), default=256, help="tokens per text")
    ap.add_argument("--out", type=Path, default=config.ROOT / "bench" / "results" / "train_speed.json",
                    help="JSON output")
    return ap.parse_args(argv)


def time_fastai(learn, n_total: int) -> tuple[np.ndarray, list]:
    """Seconds per training batch through fastai's own fit loop, and the batches it ran (to replay)."""
    from fastai.callback.core import Callback, CancelFitException

    record, stamps = [], []

    class Recorder(Callback):
        order = 99

        def before_fit(self):
            stamps.append(time.perf_counter())

        def after_batch(self):
            if not self.training:
                return
            stamps.append(time.perf_counter())
            record.append(({k: v.detach().clone() for k, v in self.xb[0].items()}, self.yb[0].detach().clone()))
            if len(record) >= n_total:
                raise CancelFitException()

    with learn.no_bar(), learn.no_logging():
        learn.fit(1, lr=1e-4, cbs=[Recorder()])
    return np.diff(stamps), record


def time_plain(model, record: list, weight_decay: float, bf16: bool) -> np.ndarray:
    """Seconds per batch of a plain PyTorch loop (forward, BCE, backward, AdamW) over the recorded batches."""
    import torch

    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=weight_decay)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    plain = [time.perf_counter()]
    for x, y in record:
        x = {k: v.as_subclass(torch.Tensor) for k, v in x.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):  # same precision as the fastai path
            logits = model(**x).logits
        loss = loss_fn(logits.float(), y.as_subclass(torch.Tensor).float())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        plain.append(time.perf_counter())
    return np.diff(plain)


def table(result: dict) -> str:
    lines = [f"{result['backbone']}, bf16 autocast {'on' if result['bf16_autocast'] else 'off'} on both paths, batch "
             f"{result['batch_size']}, ≤{result['max_length']} tokens (mean {result['mean_tokens_per_batch']:.0f} "
             f"real tokens/batch), {result['batches']} timed batches each", "",
             "| path | mean s/batch | median s/batch | p90 s/batch |", "|---|---|---|---|"]
    lines += [f"| {k} | {v['mean_s']:.3f} | {v['median_s']:.3f} | {v['p90_s']:.3f} |" for k, v in result["paths"].items()]
    overhead = result["fastai_overhead"]
    lines += ["", f"fastai + blurr overhead vs plain PyTorch (median): {overhead:+.1%} "
              f"({'within' if overhead <= 0.10 else 'OUTSIDE'} the 10% goal)"]
    return "\n".join(lines)


class BenchError(ValueError):
    """The data cannot feed the benchmark (the message says what to change)."""


def measure(settings: dict) -> dict:
    """Both paths on the same recorded batches, from the same initial weights."""
    import torch

    from training.backbone import load_model_and_tokenizer, resolve_backbone
    from training.dataset import read_splits
    from training.devices import resolve_runtime
    from training.learner import make_learner
    from training.loaders import build_dls
    from training.modeling import backbone_pooling, with_pooling
    from training.settings import TrainSettings

    data, warmup, batches = Path(settings["data"]), settings["warmup"], settings["batches"]
    torch.manual_seed(0)
    # the plain loop below is a CPU loop: time both paths on the CPU, in training.train's CPU precision
    s = TrainSettings(batch_size=settings["batch_size"], max_length=settings["max_length"], pos_weight=0,
                      device="cpu")
    sp = read_splits(data)
    source, name = resolve_backbone(settings["backbone"])
    model, tok = load_model_and_tokenizer(source, sp.labels)
    model = with_pooling(model, backbone_pooling(source))  # the model exactly as training.train builds it
    bf16 = resolve_runtime(s.device, s.precision).precision == "bf16"
    initial = copy.deepcopy(model.state_dict())
    dls = build_dls(sp.frames["train"], sp.frames["valid"], sp.y["train"], sp.y["valid"], sp.labels, tok, model, s)
    learn, _ = make_learner(dls, model, sp.y["train"], s)
    n_total = warmup + batches
    if len(dls.train) < n_total:
        raise BenchError(f"only {len(dls.train)} training batches; lower --batches")

    fastai_times, record = time_fastai(learn, n_total)
    model.load_state_dict(initial)   # plain PyTorch on the very same batches, from the same initial weights
    plain_times = time_plain(model, record, s.weight_decay, bf16)

    tokens = [int(x["attention_mask"].sum()) for x, _ in record[warmup:]]
    rows = {"fastai + blurr": fastai_times[warmup:], "plain PyTorch loop": plain_times[warmup:]}
    result = {"backbone": name, "data": str(data), "bf16_autocast": bf16, "batch_size": s.batch_size,
              "max_length": s.max_length, "batches": batches, "mean_tokens_per_batch": float(np.mean(tokens)),
              "torch_threads": torch.get_num_threads(),
              "paths": {k: {"mean_s": float(v.mean()), "median_s": float(statistics.median(v)),
                            "p90_s": float(np.percentile(v, 90))} for k, v in rows.items()}}
    result["fastai_overhead"] = (result["paths"]["fastai + blurr"]["median_s"]
                                 / result["paths"]["plain PyTorch loop"]["median_s"] - 1)
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
