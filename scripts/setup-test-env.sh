#!/usr/bin/env bash
# Installs what the interop tests need on a fresh Debian machine (run as root).
# Idempotent: a second run installs nothing. Quiet on success; on failure it
# prints the failing command's output and exits non-zero.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTEST_PIN="pytest==9.2.0"
PYTEST_TIMEOUT_PIN="pytest-timeout==2.4.0"
# venv name -> paho-mqtt pin (paho 1.x API and paho 2.x API)
declare -A PAHO_PIN=(
  [.venv-paho1]="paho-mqtt==1.6.1"
  [.venv-paho2]="paho-mqtt==2.2.0"
)

log=$(mktemp)
trap 'rm -f "$log"' EXIT

run() {
  # run CMD... quietly; show its output and fail loudly if it fails
  if ! "$@" >"$log" 2>&1; then
    echo "setup-test-env: FAILED: $*" >&2
    cat "$log" >&2
    exit 1
  fi
}

# Debian's Mosquitto broker (reference in validation mode) and its clients;
# monit and logrotate check the packaging files; openssl makes test
# certificates.
if ! command -v mosquitto_pub >/dev/null || ! command -v mosquitto_sub >/dev/null \
   || [ ! -x /usr/sbin/mosquitto ] || ! command -v monit >/dev/null \
   || ! command -v logrotate >/dev/null || ! command -v openssl >/dev/null; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup-test-env: mosquitto / mosquitto-clients / monit / logrotate / openssl missing and not root: install them" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  run apt-get update
  run apt-get install -y --no-install-recommends mosquitto-clients mosquitto monit logrotate openssl
fi

PY=${PYTHON:-python3}
command -v "$PY" >/dev/null || { echo "setup-test-env: $PY not found" >&2; exit 1; }

for venv in .venv-paho1 .venv-paho2; do
  reqs="${PAHO_PIN[$venv]} $PYTEST_PIN $PYTEST_TIMEOUT_PIN"
  stamp="$venv/.midge-requirements"
  if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$reqs" ] \
     && "$venv/bin/python" -c 'import paho.mqtt.client, pytest, pytest_timeout' 2>/dev/null; then
    continue
  fi
  rm -rf "$venv"
  run "$PY" -m venv "$venv"
  # shellcheck disable=SC2086
  run "$venv/bin/python" -m pip install --disable-pip-version-check -q $reqs
  echo "$reqs" >"$stamp"
done
