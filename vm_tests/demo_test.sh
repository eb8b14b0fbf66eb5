#!/usr/bin/env bash
# Runs the demo (scripts/demo/run.sh) against a build and checks its report: what each VM
# received, the rule hits, the recorded pcapng.
# usage: demo_test.sh SOURCE_DIR BUILD_DIR
set -u
if [ "$(id -u)" != 0 ] || ! ip netns list >/dev/null 2>&1; then
  echo "SKIP: needs root and network namespaces"; exit 77
fi
src="$1"
export VPF_BUILD="$2"
out=$(bash "$src/scripts/demo/run.sh" 2>&1)
rc=$?
fails=0
expect() { grep -qF -- "$1" <<<"$out" || { echo "FAIL: the report lacks: $1"; fails=$((fails + 1)); }; }
expect "ping vm1 -> vm2 (5)                                  5 replies"
expect "transferred (300 kB)"
expect "blocked: the SYNs were dropped"
expect "0 received (rule 11 drops them)"
expect "4 received (rule 12 drops the large one)"
expect "2 received (passthrough 2 lets DNS to vm2 through)"
expect "2 dropped by the NF_RULE-style rule 30"
n=$(tcpdump -nr "$VPF_BUILD/demo/demo.pcapng" 2>/dev/null | wc -l)
[ "$n" -ge 6 ] || { echo "FAIL: the pcapng holds $n packets"; fails=$((fails + 1)); }
[ "$rc" = 0 ] || { echo "FAIL: the demo exited with $rc"; fails=$((fails + 1)); }
[ "$fails" = 0 ] || echo "$out"
echo "$fails failed"
[ "$fails" = 0 ]
