#!/usr/bin/env bash
# scripts/fuzz_long.sh HARNESS RUNS [WORKERS] [START_CORPUS]: the long run of one libFuzzer
# harness (docs/reliability.md): RUNS executions in all, split over WORKERS processes
# (default 1, one per core) that share one corpus, started from a copy of the harness's
# seed corpus plus START_CORPUS (a corpus an earlier run grew) when given.  Builds the
# fuzz build first.  Prints each worker's executions and the total; exits non-zero on a
# finding (the input and the logs are kept in the printed directory).
#
# ASan keeps 4 frames of an allocation's stack and a 32 MiB quarantine here instead of 30
# frames and 256 MiB: the agent's harness spends most of its time recording allocation
# stacks and scanning the heap for leaks, and these settings run it ~1.5x faster.  They
# change what a report shows (shorter allocation stacks) and how long freed memory stays
# poisoned, not which errors are detected; leak detection stays on.
source "$(dirname "$0")/lib.sh"
[ $# -ge 2 ] || { echo "usage: $0 HARNESS RUNS [WORKERS] [START_CORPUS]" >&2; exit 2; }
h=$1 runs=$2 workers=${3:-1} start=${4:-}
bash "$VPF_ROOT/scripts/build.sh" --fuzz >/dev/null
bin="$VPF_BUILD_FUZZ/fuzz/fuzz_$h"
[ -x "$bin" ] || { echo "fuzz_$h: not built (see fuzz/CMakeLists.txt)" >&2; exit 2; }
work=$(mktemp -d /tmp/vpf-fuzz-long.XXXXXX)
mkdir -p "$work/corpus"
cp -r "$VPF_ROOT/fuzz/corpus/$h"/. "$work/corpus/"
[ -n "$start" ] && cp -r "$start"/. "$work/corpus/"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:malloc_context_size=4:quarantine_size_mb=32}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
echo "fuzz_$h: $runs executions on $workers worker(s) in $work"
start_s=$(date +%s)
status=0
cd "$work"
if [ "$workers" -eq 1 ]; then
  "$bin" -runs="$runs" -print_final_stats=1 -artifact_prefix="$work/" corpus >fuzz-0.log 2>&1 || status=1
else
  # -jobs: each job is a process of its own, with its own -runs; they share the corpus.
  "$bin" -jobs="$workers" -workers="$workers" -runs=$(( (runs + workers - 1) / workers )) -print_final_stats=1 \
    -artifact_prefix="$work/" corpus >driver.log 2>&1 || status=1
fi
total=0
for log in fuzz-*.log; do
  n=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  echo "  $log: ${n:-0} executions"
  total=$(( total + ${n:-0} ))
  grep -qE 'ERROR: |finding: |SUMMARY: ' "$log" && status=1
done
ls "$work" | grep -qE '^(crash|leak|timeout|oom)-' && status=1
echo "fuzz_$h: $total executions in $(( $(date +%s) - start_s )) s, $([ $status -eq 0 ] && echo 'no finding' || echo FINDING)"
[ $status -eq 0 ] && [ -z "${VPF_FUZZ_KEEP:-}" ] && rm -rf "$work"
exit $status
