#!/usr/bin/env bash
# scripts/fuzz.sh [SECONDS]: builds the libFuzzer harnesses (fuzz/, clang with ASan and
# UBSan) in build-fuzz/ and runs each for SECONDS (default 60) from a copy of its seed
# corpus; prints each harness's executions; exits non-zero on a finding.  CI runs them
# briefly through CTest (label "fuzz", scripts/test.sh).
source "$(dirname "$0")/lib.sh"
secs="${1:-60}"
bash "$VPF_ROOT/scripts/build.sh" --fuzz
status=0
for h in $(ls "$VPF_ROOT/fuzz/corpus"); do  # a harness per seed corpus (fuzz/CMakeLists.txt)
  [ -x "$VPF_BUILD_FUZZ/fuzz/fuzz_$h" ] || { echo "fuzz_$h: not built (it needs the main build's switch)"; continue; }
  "$VPF_ROOT/fuzz/run_one.sh" "$VPF_BUILD_FUZZ/fuzz/fuzz_$h" "$VPF_ROOT/fuzz/corpus/$h" "$secs" || status=1
done
exit $status
