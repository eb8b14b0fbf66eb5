#!/usr/bin/env bash
# Installs what is needed, builds vportfilter twice (normal, and ASan+UBSan) and runs the
# whole test suite on both builds with CTest, then the libFuzzer harnesses briefly (clang,
# ASan+UBSan; label "fuzz").  Exits non-zero if anything fails.
source "$(dirname "$0")/lib.sh"
cd "$VPF_ROOT"
start=$(date +%s)
vpf_log "install packages"
bash "$VPF_ROOT/scripts/install-deps.sh"
bash "$VPF_ROOT/scripts/build.sh"
bash "$VPF_ROOT/scripts/build.sh" --asan

export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
vpf_log "tests, ASan+UBSan build"
ctest --test-dir "$VPF_BUILD_ASAN" --output-on-failure -j"$VPF_JOBS" --timeout 600
vpf_log "tests, normal build"
ctest --test-dir "$VPF_BUILD" --output-on-failure -j"$VPF_JOBS" --timeout 600
bash "$VPF_ROOT/scripts/build.sh" --fuzz
vpf_log "fuzzing, briefly (scripts/fuzz.sh SECONDS runs longer)"
ctest --test-dir "$VPF_BUILD_FUZZ" --output-on-failure --timeout 600 -L fuzz
vpf_log "all tests passed in $(( $(date +%s) - start )) s"
