#!/usr/bin/env bash
# Debian packages the test suite uses: chromium for the headless-browser test of the web site, a Java
# runtime for Spark when `java` is missing, and PostgreSQL's server (initdb, pg_ctl) for the corrections store's
# tests when `initdb` is missing (the tests start a throwaway server themselves; none is left running).
# Needs root (or passwordless sudo). Without it: a note and exit 0 on a workstation (the browser tests then
# skip with a reason), but exit 1 under CI=true, where a skipped browser test would let CI pass untested.
# $CHROMIUM overrides the binary looked for (default /usr/bin/chromium, where Debian installs it).
set -uo pipefail
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
case "${CI:-}" in 1|true|TRUE|True|yes) IN_CI=1 ;; *) IN_CI=0 ;; esac
# Java 17 for pyspark (deployment/spark_predict.py and its tests), installed only when no `java` is on PATH.
if ! command -v java >/dev/null; then
  echo "system: java missing, installing openjdk-17-jre-headless (for Spark) ..."
  S=""; [ "$(id -u)" != 0 ] && S=sudo
  DEBIAN_FRONTEND=noninteractive $S apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
    $S apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless >/dev/null \
    || { echo "error: apt-get install openjdk-17-jre-headless failed" >&2; exit 1; }
fi
# PostgreSQL for the corrections store's tests (feedback/pgserver.py starts one in a temp dir as user postgres).
# Debian keeps initdb in /usr/lib/postgresql/<v>/bin, off PATH. The package's own cluster is not needed: stop it.
if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "system: PostgreSQL missing, installing postgresql (for the corrections store's tests) ..."
  S=""; [ "$(id -u)" != 0 ] && S=sudo
  DEBIAN_FRONTEND=noninteractive $S apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
    $S apt-get install -y -qq --no-install-recommends postgresql >/dev/null \
    || { echo "error: apt-get install postgresql failed" >&2; exit 1; }
  $S service postgresql stop >/dev/null 2>&1 || true
fi
if [ -x "$CHROMIUM" ]; then
  echo "system: chromium present ($("$CHROMIUM" --version 2>/dev/null | head -1))"
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO=sudo; else
    if [ "$IN_CI" = 1 ]; then
      echo "error: $CHROMIUM is missing and this CI job has no root or passwordless sudo to install it;" \
           "the browser tests would be skipped. Install chromium in the CI image or run as root." >&2
      exit 1
    fi
    echo "system: chromium missing and no root: the browser tests will skip (install: sudo apt-get install chromium)"
    exit 0
  fi
fi
echo "system: installing Debian chromium ..."
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null \
  && echo "system: chromium installed" || { echo "error: apt-get install chromium failed" >&2; exit 1; }
