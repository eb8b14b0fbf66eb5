#!/usr/bin/env bash
# run_one.sh HARNESS CORPUS SECONDS: runs a libFuzzer harness for SECONDS on a copy of its
# seed corpus (new inputs go to the copy, not into the repository) and prints its
# executions; exits non-zero on a finding (the crashing input is kept in the copy's
# directory, whose path is printed).
set -euo pipefail
bin=$1 corpus=$2 secs=$3
work=$(mktemp -d /tmp/vpf-fuzz.XXXXXX)
mkdir -p "$work/corpus"
cp -r "$corpus"/. "$work/corpus/" 2>/dev/null || true
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
if "$bin" -max_total_time="$secs" -print_final_stats=1 -artifact_prefix="$work/" "$work/corpus" >"$work/log" 2>&1; then
  echo "$(basename "$bin"): $(grep -o 'stat::number_of_executed_units: *[0-9]*' "$work/log" | grep -o '[0-9]*$') executions in $secs s, no finding"
  rm -rf "$work"
else
  tail -40 "$work/log"
  echo "$(basename "$bin"): FINDING (input and log kept in $work)" >&2
  exit 1
fi
