#!/usr/bin/env bash
# scripts/bench.sh matcher   -- classifier, updates and BPF against rte_acl, rte_bpf, libpcap
# scripts/bench.sh datapath  -- OVS-DPDK throughput with the plugin against without it
# scripts/bench.sh agent     -- rule add -> active, notify relay, capture round trip
# Builds, runs, keeps the full output in build/bench/, and ends with the "ratio" lines.
source "$(dirname "$0")/lib.sh"
cd "$VPF_ROOT"
what="${1:-matcher}"
reps="${VPF_BENCH_REPS:-5}"
bash "$VPF_ROOT/scripts/install-deps.sh" >/dev/null
bash "$VPF_ROOT/scripts/build.sh" >/dev/null
mkdir -p "$VPF_BUILD/bench"
case "$what" in
  matcher)
    log="$VPF_BUILD/bench/matcher.txt"
    vpf_log "matcher benchmarks ($reps repetitions each, medians; full output in $log)"
    "$VPF_BUILD/matcher/bench/matcher_bench" --benchmark_repetitions="$reps" \
        --benchmark_report_aggregates_only=true --benchmark_min_time=0.2 | tee "$log"
    ;;
  datapath)
    log="$VPF_BUILD/bench/datapath.txt"
    vpf_log "datapath benchmark (OVS-DPDK, one PMD; full output in $log)"
    bash "$VPF_ROOT/scripts/bench_datapath.sh" | tee "$log"
    ;;
  agent)
    log="$VPF_BUILD/bench/agent.txt"
    vpf_log "agent benchmark (one NetFilter client; full output in $log)"
    bash "$VPF_ROOT/scripts/bench_agent.sh" | tee "$log"
    ;;
  *)
    echo "usage: scripts/bench.sh matcher|datapath|agent" >&2
    exit 2
    ;;
esac
