#!/usr/bin/env bash
# The project's own ovs-vswitchd runs: a private run directory, a dummy-datapath bridge,
# two dummy ports, one flow, packets injected on p1 must leave by p2 and nowhere else; a
# malformed injection is refused without taking the switch down.
# usage: ovs_smoke_test.sh OVS_TREE
set -u
B="$1"
source "$(dirname "$0")/../../common/testing/ovs_env.sh"
run=$(mktemp -d /tmp/vpf-ovs-smoke.XXXXXX)
trap 'ovs_stop "$run"; rm -rf "$run"' EXIT

ovs_start "$run" -- --enable-dummy --disable-system --disable-system-route || { echo "FAIL: start"; exit 1; }
ovs-vsctl add-br br0 -- set bridge br0 datapath_type=dummy fail-mode=secure \
  -- add-port br0 p1 -- set interface p1 type=dummy ofport_request=1 \
       options:rxq_pcap="$run/p1-rx.pcap" options:tx_pcap="$run/p1-tx.pcap" \
  -- add-port br0 p2 -- set interface p2 type=dummy ofport_request=2 \
       options:rxq_pcap="$run/p2-rx.pcap" options:tx_pcap="$run/p2-tx.pcap"
ovs-ofctl add-flow br0 in_port=1,actions=output:2
frame=525400000002525400000001080045000020000000004011000a0a0000010a0000020400050000080000
for i in 1 2 3; do ovs-appctl netdev-dummy/receive p1 "$frame" >/dev/null; done
count() { [ -f "$1" ] && tcpdump -nr "$1" 2>/dev/null | wc -l || echo 0; }
for _ in $(seq 50); do [ "$(count "$run/p2-tx.pcap")" = 3 ] && break; sleep 0.1; done
check "3 frames out of p2" test "$(count "$run/p2-tx.pcap")" = 3
check "nothing out of p1" test "$(count "$run/p1-tx.pcap")" = 0
check "malformed injection refused" bash -c '! ovs-appctl netdev-dummy/receive p1 zz-not-hex >/dev/null 2>&1'
check "switch still running" ovs-appctl -t ovs-vswitchd version
finish
