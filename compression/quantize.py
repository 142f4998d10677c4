"""Compress a trained model folder into a self-describing int8 ONNX bundle, with a parity/size/speed report.

    python -m compression.quantize --model models/books --out models/books/bundle [--bench-rounds 3]

Steps: check the model folder → export fp32 ONNX (legacy exporter, opset 17, dynamic batch/sequence) →
optimise with onnxruntime's transformer optimizer → quantise to int8 (several candidates) → measure every
variant on the test split against PyTorch → keep the best int8 variant → write `model.onnx`, the tokenizer,
`bundle.json`, `eval.json`, `README.md` (+ the optional linear component). Everything is written to a temporary
folder beside the output and renamed into place at the end, so a failed run leaves no half bundle.
The fp32 ONNX export must match PyTorch within 1e-4 in probability or the run fails.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import config
from compression import report as rep
from compression.bundle import stage, write_bundle
from compression.choice import evaluation_report
from compression.export import OPSET, CompressionError, load_torch_model
from compression.linear import compress_linear
from compression.report import Progress
from compression.variants import (CANDIDATES, DEFAULT_CANDIDATES, export_variants, make_runners, measure,
                                  quantization_info, served, timing_windows, verify_bundle)
from deployment.cli_types import int_at_least
from deployment.commands import command_line, print_settings
from deployment.files import OutputError, replace_dir
from training.modeldir import ModelDirError, read_model_dir


@dataclass
class Settings:
    model: Path = config.MODELS_DIR / "books"   # trained model folder (docs/CONTRACTS.md)
    out: Path | None = None                     # bundle folder; default <model>/bundle
    bench_rounds: int = 3                       # timing repetitions per variant (0: skip timing)
    max_eval_texts: int | None = 2000           # cap on test texts used for parity/F1 (None: all)
    num_threads: int | None = None              # onnxruntime intra-op threads (None: onnxruntime's default)
    candidates: list[str] = field(default_factory=lambda: list(DEFAULT_CANDIDATES))
    opset: int = OPSET


def build_bundle(model_dir: str | Path, out: str | Path | None = None, *, bench_rounds: int = 3,
                 max_eval_texts: int | None = 2000, num_threads: int | None = None,
                 candidates: list[str] | None = None, opset: int = OPSET, quiet: bool = False,
                 command: str | None = None) -> Path:
    """Run every step and write the bundle atomically; returns its path. Raises CompressionError on bad input.

    read the model dir → stage tokenizer and linear part → export and quantise → evaluate every variant →
    time them → choose → write → verify → swap into place."""
    candidates = list(candidates or DEFAULT_CANDIDATES)
    if candidates == ["all"]:
        candidates = list(CANDIDATES)
    unknown = [c for c in candidates if c not in CANDIDATES]
    if unknown:
        raise CompressionError(f"unknown candidates {unknown}; choose from {list(CANDIDATES)} (or all)")
    progress = Progress(quiet, total=7)
    command = command or command_line("python -m compression.quantize")
    progress.step(f"checking {model_dir}")
    try:
        md = read_model_dir(model_dir)
    except ModelDirError as exc:
        raise CompressionError(str(exc)) from exc
    out = Path(out) if out else md.root / "bundle"
    try:
        with replace_dir(out, owned_by="bundle.json", what="bundle") as tmp:
            staged = stage(md, tmp, command)
            model = load_torch_model(md)
            paths, fusions, errors = export_variants(model, md, staged, tmp / "_work", candidates, opset, progress)
            progress.step("evaluating every variant against PyTorch, and each text alone against in mixed batches")
            ev_texts = rep.load_eval_texts(rep.resolve_data_dir(md.settings.get("data")), md.labels, max_eval_texts)
            if ev_texts.warning:
                rep.warn(ev_texts.warning)
            runners = make_runners(model, paths, errors, num_threads)
            m = measure(staged, ev_texts, runners, paths, errors, md)
            progress.step(f"timing ({bench_rounds} rounds: batch 1 on 16 texts, batch 32)" if bench_rounds > 0
                          else "timing skipped")
            if bench_rounds > 0:
                as_served = {n: served(staged.encoder, n, r) for n, r in runners.items() if n in m.probs}
                for name, t in rep.time_runners(as_served, *timing_windows(m.encoded), bench_rounds).items():
                    m.variants[name].update(t)
            ev = evaluation_report(md, staged, ev_texts, m, paths, fusions, errors, candidates, bench_rounds, num_threads,
                         command, quiet)
            staged.info["quantization"] = quantization_info(ev, opset)
            compress_linear(md, staged, ev_texts, m, ev, paths[ev["chosen"]], tmp, num_threads, max_eval_texts, progress)
            progress.step(f"writing the bundle ({ev['chosen']}: {ev['choice_reason'].split(':')[0]})")
            write_bundle(tmp, staged.info, ev, paths[ev["chosen"]])
            verify_bundle(tmp, staged, m, ev["chosen"], runners[ev["chosen"]], ev_texts.texts[:8], num_threads)
    except OutputError as exc:
        raise CompressionError(str(exc)) from exc
    progress.say(_summary(out, ev) + f" in {time.perf_counter() - progress.t0:.0f}s")
    return out


def _summary(out: Path, ev: dict) -> str:
    pt, ch, sizes = ev["variants"]["pytorch"], ev["variants"][ev["chosen"]], ev["sizes_bytes"]
    fp32_diff = ev["parity"]["max_abs_prob_diff_fp32_vs_pytorch"]
    summary = (f"bundle {out}: {ev['chosen']} {rep.human_mib(sizes['int8'])} ({100 * ev['size_ratio_int8_vs_fp32']:.0f}% "
               f"of fp32 ONNX), parity {fp32_diff:.1e}")
    if "micro_f1" in ch:
        summary += f", micro-F1 {ch['micro_f1']:.4f} vs PyTorch {pt['micro_f1']:.4f}"
    if ev["speedup_int8_vs_pytorch"]:
        sp = ev["speedup_int8_vs_pytorch"]
        summary += f", {sp['batch1']:.1f}x/{sp['batch32']:.1f}x faster than PyTorch at batch 1/32"
    return summary


def parse_args(argv=None) -> Settings:
    d = Settings()
    p = argparse.ArgumentParser(prog="python -m compression.quantize", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", type=Path, default=d.model, help="trained model folder (checkpoint/, labels.json, ...)")
    p.add_argument("--out", type=Path, default=None, help="bundle folder to write (default: MODEL/bundle)")
    p.add_argument("--bench-rounds", type=int_at_least(0, 1000), default=d.bench_rounds,
                   help="timing repetitions per variant; 0 skips timing")
    p.add_argument("--max-eval-texts", type=int_at_least(0), default=d.max_eval_texts,
                   help="use at most this many test texts for parity and F1 (0: all)")
    p.add_argument("--threads", "--num-threads", dest="num_threads", type=int_at_least(1, 1024), default=d.num_threads,
                   help="onnxruntime intra-op threads (default: its own)")
    p.add_argument("--candidates", default=",".join(d.candidates),
                   help=f"comma-separated int8 candidates to compare, from {','.join(CANDIDATES)}; or 'all'")
    p.add_argument("--opset", type=int_at_least(17, 25), default=d.opset, help="ONNX opset")
    a = p.parse_args(argv)
    return Settings(model=a.model, out=a.out, bench_rounds=a.bench_rounds,
                    max_eval_texts=a.max_eval_texts or None, num_threads=a.num_threads,
                    candidates=[c.strip() for c in a.candidates.split(",") if c.strip()], opset=a.opset)


def main(argv=None) -> int:
    s = parse_args(argv)
    print_settings(s)
    try:
        build_bundle(s.model, s.out, bench_rounds=s.bench_rounds, max_eval_texts=s.max_eval_texts,
                     num_threads=s.num_threads, candidates=s.candidates, opset=s.opset)
    except CompressionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
