#!/usr/bin/env bash
# THE test command (the README and .ci/run call it): installs missing
# packages, builds build/ (RelWithDebInfo) and build-asan/ (Debug,
# ASan+UBSan), runs every ctest in build/ and the unit and integration
# tests in build-asan/, and ends with one line: "N passed, N failed".
# Exits non-zero when anything failed. JOBS (default 2) sets build
# parallelism; the tests run one at a time (each starts its own Redis,
# devbroker and journeyd).
set -uo pipefail
cd "$(dirname "$0")"

jobs=${JOBS:-2}
passed=0
failed=0
status=0
log_dir=$(mktemp -d "${TMPDIR:-/tmp}/journeyd-test.XXXXXX")
trap 'rm -rf "$log_dir"' EXIT

# step NAME CMD...: a build step; a failure counts once and stops what
# depends on it.
step() {
  local name=$1
  shift
  echo "==> $name"
  if "$@"; then
    return 0
  fi
  echo "FAILED: $name" >&2
  failed=$((failed + 1))
  status=1
  return 1
}

# run_ctest NAME ARGS...: runs ctest and adds its pass/fail counts.
run_ctest() {
  local name=$1
  shift
  local out="$log_dir/$name.log"
  echo "==> ctest $name: ctest $*"
  ctest "$@" 2>&1 | tee "$out"
  local rc=${PIPESTATUS[0]}
  local line total nfail
  line=$(grep -E '[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$out" | tail -1)
  if [ -n "$line" ]; then
    nfail=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/' <<<"$line")
    total=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\2/' <<<"$line")
    passed=$((passed + total - nfail))
    failed=$((failed + nfail))
  elif [ "$rc" -ne 0 ]; then
    failed=$((failed + 1))
  fi
  if [ "$rc" -ne 0 ]; then
    status=1
  fi
}

step "dependencies" tests/deps.sh || { echo "$passed passed, $failed failed"; exit 1; }

if step "configure build/" cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo &&
   step "build build/" cmake --build build -j "$jobs"; then
  run_ctest main --test-dir build --output-on-failure
fi

if step "configure build-asan/" cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DJD_SANITIZE=ON &&
   step "build build-asan/" cmake --build build-asan -j "$jobs"; then
  # Leaks in our binaries fail the run; the daemons started by the Python
  # harness inherit these options (jdtest.child_env keeps what is set).
  ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:strict_string_checks=1} \
  UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
    run_ctest asan --test-dir build-asan --output-on-failure -L 'unit|integration'
fi

# The rule compiler's libFuzzer target (clang), a bounded number of runs.
if step "configure build-fuzz/" env CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DJD_FUZZ=ON &&
   step "build build-fuzz/" cmake --build build-fuzz -j "$jobs" --target fuzz_rules; then
  run_ctest fuzz --test-dir build-fuzz --output-on-failure -L fuzz
fi

echo "$passed passed, $failed failed"
if [ "$failed" -ne 0 ]; then
  status=1
fi
exit "$status"
