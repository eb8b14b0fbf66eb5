#!/usr/bin/env bash
# Builds vportfilter into build/ (or, with --asan, an ASan+UBSan build into build-asan/).
source "$(dirname "$0")/lib.sh"
if [ "${1:-}" = "--asan" ]; then
  vpf_log "configure + build (ASan+UBSan) in $VPF_BUILD_ASAN"
  mkdir -p "$VPF_BUILD_ASAN"
  vpf_configure "$VPF_BUILD_ASAN" -DCMAKE_BUILD_TYPE=Debug -DVPF_SANITIZE=ON -DVPF_BUILD_BENCH=OFF
  ninja -C "$VPF_BUILD_ASAN" -j"$VPF_JOBS"
else
  vpf_log "configure + build in $VPF_BUILD"
  mkdir -p "$VPF_BUILD"
  vpf_configure "$VPF_BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo
  ninja -C "$VPF_BUILD" -j"$VPF_JOBS"
fi
