#!/usr/bin/env bash
# Debian packages the test suite uses: chromium for the headless-browser test of the web site.
# Needs root (or sudo); without it the browser test skips with a reason and everything else still runs.
set -uo pipefail
# Java 17 for pyspark (deployment/spark_predict.py and its tests), installed only when no `java` is on PATH.
if ! command -v java >/dev/null; then
  echo "system: java missing, installing openjdk-17-jre-headless (for Spark) ..."
  S=""; [ "$(id -u)" != 0 ] && S=sudo
  DEBIAN_FRONTEND=noninteractive $S apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
    $S apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless >/dev/null \
    || { echo "error: apt-get install openjdk-17-jre-headless failed" >&2; exit 1; }
fi
if [ -x /usr/bin/chromium ]; then
  echo "system: chromium present ($(/usr/bin/chromium --version 2>/dev/null | head -1))"
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO=sudo; else
    echo "system: chromium missing and no root: the browser test will skip (install: sudo apt-get install chromium)"
    exit 0
  fi
fi
echo "system: installing Debian chromium ..."
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null \
  && echo "system: chromium installed" || { echo "error: apt-get install chromium failed" >&2; exit 1; }
