#!/usr/bin/env bash
# The packet-hook ABI on the real, patched ovs-vswitchd (dummy datapath, private run dir):
# load failures leave the switch forwarding; a loaded plugin sees rx and tx batches and
# every verdict takes effect on the wire; injection both ways; commands; unload and
# reload; the switch never stops.
# usage: packet_hook_test.sh OVS_TREE PLUGIN.so
set -u
B="$1" plugin="$2"
source "$(dirname "$0")/../../common/testing/ovs_env.sh"
run=$(mktemp -d /tmp/vpf-ovs-hook.XXXXXX)
trap 'ovs_stop "$run"; rm -rf "$run"' EXIT

ovs_start "$run" -- --enable-dummy --disable-system --disable-system-route || { echo "FAIL: start"; exit 1; }
dummy_bridge "$run"

# Ethernet + IPv4 + UDP: the payload's first byte (offset 42) is the test plugin's marker.
F=52540000000252540000000108004500002000000000401100000a0000010a0000020400050000080000
send() { ovs-appctl netdev-dummy/receive p1 "${F}${1}000000" >/dev/null; }
# markers MARKER... : the marker byte of every frame p2 has sent, in order
markers() { pcap_markers "$run/p2-tx.pcap" | joined; }
lengths() { pcap_lengths "$run/p2-tx.pcap" | joined; }
log_has() { grep -q -- "$1" "$run/ovs-vswitchd.log"; }

# 1. A plugin that cannot be loaded: logged, forwarding goes on.
ovs-vsctl set Open_vSwitch . other_config:packet-hook-plugin=/nonexistent/plugin.so
check "bad path logged" wait_for 'log_has "nonexistent/plugin.so: cannot load packet hook plugin"'
ovs-vsctl set Open_vSwitch . other_config:packet-hook-plugin=/bin/true
check "not a plugin logged" wait_for 'log_has "cannot load packet hook plugin\|not a packet hook plugin"'
ovs-vsctl set Open_vSwitch . other_config:packet-hook-plugin="$plugin" other_config:packet-hook-args=fail
check "refusal logged with the plugin's reason" wait_for 'log_has "failed to start: asked to fail"'
send d1
check "forwarding without a plugin" wait_for '[ "$(markers)" = "d1 " ]'

# 2. Loaded: every netdev opened, every verdict on the wire.
ovs-vsctl remove Open_vSwitch . other_config packet-hook-args
check "loaded" wait_for 'log_has "packet hook plugin loaded"'
check "ports opened" log_has "test hook: opened port p1 (type dummy)"
for m in 00 d1 e5 f7 c4 d2; do send $m; done
check "pass, drop, modify, replace, take+inject, tx drop" wait_for '[ "$(markers)" = "d1 00 e6 f8 c5 " ]'
check "replaced frame is 100 bytes longer" test "$(lengths)" = "46 46 46 146 46 "
check "counters" bash -c "ovs-appctl test-hook/show | grep -q 'p1 rx=6 tx=0 rx_dropped=1 tx_dropped=0 modified=1 replaced=1 taken=1'"
check "tx hook saw 5, dropped 1" bash -c "ovs-appctl test-hook/show | grep -q 'p2 rx=0 tx=5 rx_dropped=0 tx_dropped=1'"

# 3. Injection: toward the VM (tx on p2) and as if received (rx on p1, then the flow).
ovs-appctl test-hook/inject p2 tx "${F}d2000000" >/dev/null
ovs-appctl test-hook/inject p1 rx "${F}bb000000" >/dev/null
# d2 is a marker the tx hook drops: an injected packet must not pass through the hook.
check "injected both ways, tx injection not hooked" wait_for '[ "$(markers)" = "d1 00 e6 f8 c5 d2 bb " ]'
check "unknown port refused" bash -c "! ovs-appctl test-hook/inject nosuch rx ${F}bb000000 >/dev/null 2>&1"
check "bad input to the command refused" bash -c "! ovs-appctl test-hook/inject p1 rx zz >/dev/null 2>&1"

# 4. Unload: commands answer clearly, packets no longer touched; reload works.
ovs-vsctl remove Open_vSwitch . other_config packet-hook-plugin
check "unloaded" wait_for 'log_has "packet hook plugin unloaded"'
check "fini called" log_has "test hook: fini"
check "command says not loaded" bash -c "ovs-appctl test-hook/show 2>&1 | grep -q 'packet hook plugin not loaded'"
send d1
check "no hook after unload" wait_for '[ "$(markers)" = "d1 00 e6 f8 c5 d2 bb d1 " ]'
ovs-vsctl set Open_vSwitch . other_config:packet-hook-plugin="$plugin"
check "reloaded" wait_for '[ "$(grep -c "packet hook plugin loaded" "$run/ovs-vswitchd.log")" = 2 ]'
send d1
send 00
check "hook again after reload" wait_for '[ "$(markers)" = "d1 00 e6 f8 c5 d2 bb d1 00 " ]'

check "switch alive" ovs-appctl -t ovs-vswitchd version
check "no crash in the log" bash -c "! grep -qE 'EMER|assertion|Segmentation' '$run/ovs-vswitchd.log'"
finish
