#!/usr/bin/env bash
# Builds the Spark executors' Python environment (docs/SPARK.md): a fresh virtualenv with only what
# deployment/spark_worker.py needs (deployment/requirements-spark.txt: onnxruntime, tokenizers, numpy, pandas,
# pyarrow, their dependencies pinned by constraints.txt) and the project's deployment/ package; no torch. Packed
# as a .tar.gz with the environment at its root, shipped with `--archives build/spark-env.tar.gz#env` and used
# with `spark.pyspark.python=./env/bin/python`.
#
#   bash scripts/build_spark_env.sh                       # -> build/spark-env.tar.gz, prints its size
#   bash scripts/build_spark_env.sh /tmp/env.tar.gz
#   PYTHON=/usr/bin/python3.11 bash scripts/build_spark_env.sh   # link to the workers' Python (see below)
#   GZIP_LEVEL=1 bash scripts/build_spark_env.sh          # faster, a little larger (the tests use it)
#
# The archive holds the packages, not the interpreter: its bin/python links to the Python 3.11 that built it
# ($PYTHON, default python3.11 on PATH), which must exist at the same path on every worker; build it with the
# workers' own Python (in their image, or PYTHON=/path). Unpacked anywhere, ./env/bin/python runs from any
# directory: a virtualenv finds itself from the pyvenv.cfg beside its bin/, and Spark starts it by path (no
# script shebang is used). Rebuild after changing deployment/: the driver refuses executors that run other code.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${1:-build/spark-env.tar.gz}
PY=${PYTHON:-python3.11}
LEVEL=${GZIP_LEVEL:-6}
command -v "$PY" >/dev/null 2>&1 || { echo "error: $PY not found; set PYTHON=/path/to/python3.11" >&2; exit 2; }
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' 2>/dev/null \
  || { echo "error: Python 3.11 is required (found: $("$PY" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2; exit 2; }

start=$(date +%s)
mkdir -p "$(dirname "$OUT")"
work=$(mktemp -d "${TMPDIR:-/tmp}/spark-env.XXXXXX")
partial="$OUT.partial-$$"
trap 'rm -rf "$work" "$partial"' EXIT
env_dir="$work/env"

echo "spark-env: a fresh virtualenv from $("$PY" -c 'import sys; print(sys.executable)') ..."
"$PY" -m venv "$env_dir"
echo "spark-env: installing deployment/requirements-spark.txt (constraints.txt pins) ..."
# --no-compile: no bytecode for every installed file (the workers compile what they import); smaller, faster.
PIP_DISABLE_PIP_VERSION_CHECK=1 "$env_dir/bin/python" -m pip install -q --no-compile \
  -c constraints.txt -r deployment/requirements-spark.txt
# pip and setuptools only install: the executors never run them.
"$env_dir/bin/python" -m pip uninstall -q -y pip setuptools >/dev/null 2>&1 || true
site=$("$env_dir/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
mkdir "$site/deployment"
cp deployment/*.py "$site/deployment/"

# The environment must run the executor side alone, and must not hold torch (the point of a slim environment).
( cd "$work" && PYTHONDONTWRITEBYTECODE=1 ./env/bin/python -I -c '
import importlib.util, sys
import deployment.spark_worker as w
for name in w.EXECUTOR_MODULES:
    __import__(name)
assert importlib.util.find_spec("torch") is None, "torch is in the environment"
' ) || { echo "error: the new environment cannot import the executor side (see above)" >&2; exit 1; }

echo "spark-env: packing (gzip -$LEVEL) ..."
tar -C "$env_dir" -cf - . | gzip "-$LEVEL" > "$partial"
mv "$partial" "$OUT"
unpacked=$(du -sm "$env_dir" | cut -f1)
packed=$(( $(stat -c %s "$OUT") / 1048576 ))
echo "spark-env: $OUT: ${packed} MiB (${unpacked} MiB unpacked; Python $("$env_dir/bin/python" -c 'import platform; print(platform.python_version())'), no torch) in $(( $(date +%s) - start )) s"
