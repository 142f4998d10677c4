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
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import config
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


def print_table(result: dict) -> None:
    print(f"\n{result['backbone']}, bf16 autocast {'on' if result['bf16_autocast'] else 'off'} on both paths, batch "
          f"{result['batch_size']}, ≤{result['max_length']} tokens (mean {result['mean_tokens_per_batch']:.0f} real "
          f"tokens/batch), {result['batches']} timed batches each\n")
    print("| path | mean s/batch | median s/batch | p90 s/batch |\n|---|---|---|---|")
    for k, v in result["paths"].items():
        print(f"| {k} | {v['mean_s']:.3f} | {v['median_s']:.3f} | {v['p90_s']:.3f} |")
    overhead = result["fastai_overhead"]
    print(f"\nfastai + blurr overhead vs plain PyTorch (median): {overhead:+.1%} "
          f"({'within' if overhead <= 0.10 else 'OUTSIDE'} the 10% goal)")


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from training.devices import resolve_runtime
    from training.modeling import backbone_pooling, with_pooling
    from training.train import (TrainSettings, build_dls, load_model_and_tokenizer, load_splits, make_learner,
                                resolve_backbone)

    if not (args.data / "dataset.csv").is_file():
        if args.data == config.PROCESSED_DIR / "books":
            from training import prepare

            prepare.main(["--input", str(config.SAMPLE_DIR / "books.csv"), "--out", str(args.data), "--quiet"])
        else:
            print(f"error: {args.data} is not a processed data dir (run python -m training.prepare)", file=sys.stderr)
            return 2
    torch.manual_seed(0)
    # the plain loop below is a CPU loop: time both paths on the CPU, in training.train's CPU precision
    s = TrainSettings(batch_size=args.batch_size, max_length=args.max_length, pos_weight=0, device="cpu")
    parts, ys, labels = load_splits(args.data, None, 0)
    source, name = resolve_backbone(args.backbone)
    model, tok = load_model_and_tokenizer(source, labels)
    model = with_pooling(model, backbone_pooling(source))  # the model exactly as training.train builds it
    bf16 = resolve_runtime(s.device, s.precision).precision == "bf16"
    initial = copy.deepcopy(model.state_dict())
    dls = build_dls(parts["train"], parts["valid"], ys["train"], ys["valid"], labels, tok, model, s)
    learn, _ = make_learner(dls, model, ys["train"], s)
    n_total = args.warmup + args.batches
    if len(dls.train) < n_total:
        print(f"error: only {len(dls.train)} training batches; lower --batches", file=sys.stderr)
        return 2

    fastai_times, record = time_fastai(learn, n_total)
    model.load_state_dict(initial)   # plain PyTorch on the very same batches, from the same initial weights
    plain_times = time_plain(model, record, s.weight_decay, bf16)

    tokens = [int(x["attention_mask"].sum()) for x, _ in record[args.warmup:]]
    rows = {"fastai + blurr": fastai_times[args.warmup:], "plain PyTorch loop": plain_times[args.warmup:]}
    result = {"backbone": name, "data": str(args.data), "bf16_autocast": bf16, "batch_size": args.batch_size,
              "max_length": args.max_length, "batches": args.batches, "mean_tokens_per_batch": float(np.mean(tokens)),
              "torch_threads": torch.get_num_threads(),
              "paths": {k: {"mean_s": float(v.mean()), "median_s": float(statistics.median(v)),
                            "p90_s": float(np.percentile(v, 90))} for k, v in rows.items()}}
    result["fastai_overhead"] = (result["paths"]["fastai + blurr"]["median_s"]
                                 / result["paths"]["plain PyTorch loop"]["median_s"] - 1)
    print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
