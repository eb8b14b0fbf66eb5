#!/usr/bin/env bash
# Builds vportfilter into build/ (or, with --asan, an ASan+UBSan build into build-asan/;
# with --fuzz, the matcher and its libFuzzer harnesses with clang into build-fuzz/).
source "$(dirname "$0")/lib.sh"
if [ "${1:-}" = "--fuzz" ]; then
  # The main build's switch, if built: its headers let the plugin's harness be built too.
  VPF_OVS_BUILT=$(readlink -f "$VPF_BUILD/ovs" 2>/dev/null || true)
  vpf_log "configure + build (libFuzzer, ASan+UBSan) in $VPF_BUILD_FUZZ"
  mkdir -p "$VPF_BUILD_FUZZ"
  vpf_configure "$VPF_BUILD_FUZZ" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang \
    -DCMAKE_CXX_COMPILER=clang++ -DVPF_FUZZ=ON -DVPF_BUILD_BENCH=OFF \
    ${VPF_OVS_BUILT:+"-DVPF_OVS_DIR=$VPF_OVS_BUILT"}
  ninja -C "$VPF_BUILD_FUZZ" -j"$VPF_JOBS"
elif [ "${1:-}" = "--asan" ]; then
  vpf_log "configure + build (ASan+UBSan) in $VPF_BUILD_ASAN"
  mkdir -p "$VPF_BUILD_ASAN"
  # The agent, library and vpfctl run sanitized against the normal build's plugin module
  # (a sanitized module cannot be loaded into the unsanitized switch).
  plugin=""
  [ -f "$VPF_BUILD/ovs_plugin/vportfilter_ovs.so" ] && plugin="$VPF_BUILD/ovs_plugin/vportfilter_ovs.so"
  vpf_configure "$VPF_BUILD_ASAN" -DCMAKE_BUILD_TYPE=Debug -DVPF_SANITIZE=ON -DVPF_BUILD_BENCH=OFF -DVPF_TEST_PLUGIN="$plugin"
  ninja -C "$VPF_BUILD_ASAN" -j"$VPF_JOBS"
else
  vpf_log "configure + build in $VPF_BUILD"
  mkdir -p "$VPF_BUILD"
  vpf_configure "$VPF_BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo
  ninja -C "$VPF_BUILD" -j"$VPF_JOBS"
fi
