#!/usr/bin/env bash
# The project's test command: Rust build and tests, then the interop suite
# (tests/interop) once per paho-mqtt major version. Runs every step even when
# one fails, says which failed, and exits non-zero if any did. The last line
# is `interop: N passed, M failed`, summed over the interop runs.
#
# MIDGE_TEST_BROKER=mosquitto runs the interop suite against Debian's
# Mosquitto instead of target/debug/midge (to validate the tests themselves).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

INTEROP_RUN_TIMEOUT=${INTEROP_RUN_TIMEOUT:-1200}  # seconds per pytest run, on top of 60 s per test

failed_steps=()
interop_passed=0
interop_failed=0

step() {
  local name=$1; shift
  echo "==> $name: $*"
  "$@"
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "==> $name FAILED (exit $rc)"
    failed_steps+=("$name")
  fi
}

step setup bash scripts/setup-test-env.sh

step cargo-build cargo build --workspace --all-targets
if cargo nextest --version >/dev/null 2>&1; then
  step rust-tests cargo nextest run --workspace --no-tests=warn
else
  step rust-tests cargo test --workspace
fi

junit_dir=$(mktemp -d)
trap 'rm -rf "$junit_dir"' EXIT

for venv in .venv-paho1 .venv-paho2; do
  name="interop-${venv#.venv-}"
  junit="$junit_dir/$name.xml"
  echo "==> $name: pytest tests/interop (${MIDGE_TEST_BROKER:-midge})"
  timeout -k 10 "$INTEROP_RUN_TIMEOUT" "$venv/bin/python" -m pytest tests/interop \
    -q -p no:cacheprovider --junitxml="$junit" </dev/null
  rc=$?
  # passed and failed (failures + errors) from the JUnit report
  counts=$(python3 - "$junit" <<'PY' 2>/dev/null
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
t = f = e = s = 0
for su in suites:
    t += int(su.get("tests", 0)); f += int(su.get("failures", 0))
    e += int(su.get("errors", 0)); s += int(su.get("skipped", 0))
print(t - f - e - s, f + e)
PY
  ) || counts="0 0"
  read -r p f <<<"$counts"
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    # no tests collected (5), interrupted, timed out, internal or usage error
    f=1
  fi
  if [ "$rc" -ne 0 ]; then
    echo "==> $name FAILED (pytest exit $rc)"
    failed_steps+=("$name")
  fi
  interop_passed=$((interop_passed + p))
  interop_failed=$((interop_failed + f))
done

if [ ${#failed_steps[@]} -gt 0 ]; then
  echo "==> failed steps: ${failed_steps[*]}"
else
  echo "==> all steps passed"
fi
echo "interop: $interop_passed passed, $interop_failed failed"
[ ${#failed_steps[@]} -eq 0 ]
