#!/usr/bin/env bash
# Connection tracking in the real, patched ovs-vswitchd (dummy datapath, private run dir;
# docs/connections.md): with connection rules in force, the plugin (no argument needed)
# follows a VM port's TCP connections opened by the VM and by a peer, through handshake,
# data and close, a UDP flow, a segment out of window (a guessed reset) that changes
# nothing, a SYN that a rule drops (it opens nothing); `vportfilter/conn-list` and
# `vportfilter/stats` show them.  A connection rule decides whole connections: its allow
# lets the replies of the VM's connections through a filter rule that drops inbound
# packets of their kind, and no longer once the rule is gone, also for a reply that comes
# before its opener sends again; a block added later takes over known flows, also from
# their replies.  Without connection rules nothing is tracked.  Bad arguments are refused
# with their reason; with conns=0 the command says tracking is off.
# usage: conntrack_plugin_test.sh OVS_TREE vportfilter_ovs.so
set -u
B="$1" plugin="$2"
source "$(dirname "$0")/../../common/testing/ovs_env.sh"
run=$(mktemp -d /tmp/vpf-ovs-conntrack.XXXXXX)
trap 'ovs_stop "$run"; rm -rf "$run"' EXIT

# Telnet from the VM dropped; web replies from outside dropped by a filter rule, but the
# VM's own web connections allowed by a connection rule (reflexive allow); its SSH ones
# too (a connection rule that stays in force while rule 5 goes).
cat > "$run/rules.json" <<'JSON'
[{"kind": "filter", "id": 1, "bpf": "tcp dst port 23", "action": "drop", "direction": "outgoing"},
 {"kind": "filter", "id": 2, "protocol": "tcp", "remote_port": 80, "direction": "incoming", "action": "drop"},
 {"kind": "connection", "id": 5, "protocol": "tcp", "remote_port": 80, "direction": "outgoing", "flags": ["allow"]},
 {"kind": "connection", "id": 7, "protocol": "tcp", "remote_port": 22, "direction": "outgoing", "flags": ["allow"]}]
JSON
ovs_start "$run" -- --enable-dummy --disable-system --disable-system-route || { echo "FAIL: start"; exit 1; }
dummy_bridge "$run"
ovs-ofctl add-flow br0 in_port=2,actions=output:1
ovs-vsctl set Open_vSwitch . other_config:packet-hook-plugin="$plugin" \
  other_config:packet-hook-args="rules=$run/rules.json control=none"
check "plugin started" wait_for 'grep -q "vportfilter: started" "$run/ovs-vswitchd.log"'
check "adapter set" ovs-appctl vportfilter/adapter-set p1 0 7 >/dev/null

# seg out|in VM_PORT PEER_PORT SEQ ACK FLAGS: a TCP segment (hex fields) between the VM
# (10.0.0.1, behind p1) and the peer (10.0.0.2, behind p2); out is sent by the VM.
seg() {
  local m="525400000002525400000001" src=0a000001 dst=0a000002 sp=$2 dp=$3
  if [ "$1" = in ]; then m="525400000001525400000002" src=0a000002 dst=0a000001 sp=$3 dp=$2; fi
  echo "${m}0800""45000028""00000000""40060000""${src}${dst}""${sp}${dp}""$4""$5""50$6""2000""00000000"
}
send() { if [ "$1" = out ]; then ovs-appctl netdev-dummy/receive p1 "$(seg "$@")" >/dev/null;
         else ovs-appctl netdev-dummy/receive p2 "$(seg "$@")" >/dev/null; fi; }
conn() { ovs-appctl vportfilter/conn-list | grep -qF -- "$1"; }

# The VM opens 10.0.0.1:40000 -> 10.0.0.2:80 (ISNs 1000 and 5000).
send out 9c40 0050 000003e8 00000000 02
send in 9c40 0050 00001388 000003e9 12
send out 9c40 0050 000003e9 00001389 10
check "the VM's connection is established, opened outgoing" \
  wait_for 'conn "tcp 10.0.0.1:40000 -> 10.0.0.2:80 opened=outgoing state=established packets=2/1 "'
# A peer opens 10.0.0.2:50000 -> the VM's port 22 (ISNs 7000 and 9000).
send in 0016 c350 00001b58 00000000 02
send out 0016 c350 00002328 00001b59 12
send in 0016 c350 00001b59 00002329 10
check "the peer's connection is established, opened incoming" \
  wait_for 'conn "tcp 10.0.0.1:22 -> 10.0.0.2:50000 opened=incoming state=established packets=2/1 "'
check "it carries the VM's id" bash -c "ovs-appctl vportfilter/conn-list | grep -F '10.0.0.1:22 ' | grep -q ' vm=7 '"
# A reset the peer could not have sent (far outside the window): ignored.
send in 0016 c350 00100000 00000000 04
check "a reset out of window closes nothing" \
  wait_for 'conn "10.0.0.1:22 -> 10.0.0.2:50000 opened=incoming state=established packets=2/1 " &&
            ovs-appctl vportfilter/stats | grep -q "\"out_of_window\": 1"'
# The VM closes its connection in order.
send out 9c40 0050 000003e9 00001389 11
send in 9c40 0050 00001389 000003ea 10
send in 9c40 0050 00001389 000003ea 11
send out 9c40 0050 000003ea 0000138a 10
check "closed in order: time_wait" wait_for 'conn "10.0.0.1:40000 -> 10.0.0.2:80 opened=outgoing state=time_wait packets=4/3 "'
# Its replies came in although rule 2 drops web replies: the connection rule that allowed
# its SYN decides every packet of it, both ways, and counts them; a web reply of no
# connection is dropped.
from80() { tcpdump -nr "$run/p1-tx.pcap" 2>/dev/null | grep -c '10.0.0.2.80 > '; }
check "reflexive allow: the three replies reached the VM" wait_for '[ "$(from80)" = 3 ]'
check "the connection rule counted all seven packets" bash -c "ovs-appctl vportfilter/show | grep -q 'connection:5=7'"
send in 9c4f 0050 00005000 00001000 10
check "a web reply of no connection is dropped" wait_for 'ovs-appctl vportfilter/show | grep -q "filter:2=1" && [ "$(from80)" = 3 ]'
# The rules change: without the connection rule, the next reply is dropped even though
# the connection is known, whether its opener or its peer sends first after the change.
send out 9c43 0050 00000064 00000000 02
send in 9c43 0050 00000190 00000065 12
send out 9c44 0050 00002000 00000000 02
send in 9c44 0050 00003000 00002001 12
send out 9c44 0050 00002001 00003001 10
check "two more web connections' replies pass" wait_for '[ "$(from80)" = 5 ]'
check "the connection rule removed" ovs-appctl vportfilter/rule-remove connection:5
send in 9c44 0050 00003001 00002001 10
check "a reply first after the change: dropped" wait_for 'ovs-appctl vportfilter/show | grep -q "filter:2=2" && [ "$(from80)" = 5 ]'
send out 9c43 0050 00000065 00000191 10
send in 9c43 0050 00000191 00000065 10
check "the opener first after the change: its reply dropped" wait_for 'ovs-appctl vportfilter/show | grep -q "filter:2=3" && [ "$(from80)" = 5 ]'
# A SYN to port 23 is dropped by the rule: it opens nothing.
send out 9c41 0017 00000001 00000000 02
# A UDP flow from the VM and its answer.
ovs-appctl netdev-dummy/receive p1 "525400000002525400000001""0800""4500001c""00000000""40110000""0a000001""0a000035""9c420035""00080000" >/dev/null
ovs-appctl netdev-dummy/receive p2 "525400000001525400000002""0800""4500001c""00000000""40110000""0a000035""0a000001""00359c42""00080000" >/dev/null
check "the UDP flow, answered" wait_for 'conn "udp 10.0.0.1:40002 -> 10.0.0.53:53 opened=outgoing state=replied packets=1/1 "'
check "the dropped SYN opened nothing" bash -c "! ovs-appctl vportfilter/conn-list | grep -q ':23 '"
# A connection rule added later decides a known connection once its opener sends again:
# a block drops the opener's datagram and then the answers too.
from53() { tcpdump -nr "$run/p1-tx.pcap" 2>/dev/null | grep -c '10.0.0.53.53 > '; }
check "one answer from 53 so far" [ "$(from53)" = 1 ]
udp() { # udp out|in VM_PORT: a datagram of the VM's flow VM_PORT <-> 10.0.0.53:53
  if [ "$1" = out ]; then ovs-appctl netdev-dummy/receive p1 "525400000002525400000001""0800""4500001c""00000000""40110000""0a000001""0a000035""$2""0035""00080000" >/dev/null
  else ovs-appctl netdev-dummy/receive p2 "525400000001525400000002""0800""4500001c""00000000""40110000""0a000035""0a000001""0035""$2""00080000" >/dev/null; fi; }
udp out 9c45
udp in 9c45
check "a second DNS flow answered" wait_for '[ "$(from53)" = 2 ]'
check "a connection rule blocks DNS" ovs-appctl vportfilter/rule-add '{"kind": "connection", "id": 6, "protocol": "udp", "remote_port": 53, "direction": "outgoing", "flags": ["block"]}'
ovs-appctl netdev-dummy/receive p1 "525400000002525400000001""0800""4500001c""00000000""40110000""0a000001""0a000035""9c420035""00080000" >/dev/null
ovs-appctl netdev-dummy/receive p2 "525400000001525400000002""0800""4500001c""00000000""40110000""0a000035""0a000001""00359c42""00080000" >/dev/null
check "the known flow's answer is blocked with it" wait_for 'ovs-appctl vportfilter/show | grep -q "connection:6=2" && [ "$(from53)" = 2 ]'
udp in 9c45
check "an answer before its opener sends again: blocked" wait_for 'ovs-appctl vportfilter/show | grep -q "connection:6=3" && [ "$(from53)" = 2 ]'
check "six connections in the stats" bash -c "ovs-appctl vportfilter/stats | grep -A3 '\"connections\"' | grep -q '\"active\": 6'"
# No connection rule left: the port's connections are no longer followed.
check "the last connection rules removed" bash -c "ovs-appctl vportfilter/rule-remove connection:6 && ovs-appctl vportfilter/rule-remove connection:7"
udp out 9c46
check "a new flow passes" wait_for 'tcpdump -nr "$run/p2-tx.pcap" 2>/dev/null | grep -q "10.0.0.1.40006 > "'
check "and is not tracked" bash -c "! ovs-appctl vportfilter/conn-list | grep -q ':40006 '"

# A full table refuses new connections, never evicts: with room for two per adapter, the
# third UDP flow is not tracked (counted as full) and its datagram still passes.
ovs-vsctl set Open_vSwitch . other_config:packet-hook-args="rules=$run/rules.json conns=100 conns_per_adapter=2 control=none"
check "restarted with two per adapter" wait_for 'ovs-appctl vportfilter/stats 2>/dev/null | grep -q "\"limit_per_adapter\": 2"'
ovs-appctl vportfilter/adapter-set p1 0 7 >/dev/null
before=$(tcpdump -nr "$run/p2-tx.pcap" 2>/dev/null | grep -c '10.0.0.1.4001[678] > ')
for p in 9c50 9c51 9c52; do udp out $p; done
check "two flows tracked" wait_for '[ "$(ovs-appctl vportfilter/conn-list | grep -c "udp 10.0.0.1:4001[678]")" = 2 ]'
check "the third counted as full" bash -c "ovs-appctl vportfilter/stats | grep -q '\"full\": 1'"
check "and its datagram passed all the same" wait_for '[ "$(tcpdump -nr "$run/p2-tx.pcap" 2>/dev/null | grep -c "10.0.0.1.4001[678] > ")" = $((before + 3)) ]'
ovs-vsctl set Open_vSwitch . other_config:packet-hook-args="conns=5 conns_per_adapter=many control=none"
check "a bad conns_per_adapter= refused" wait_for 'grep -q "conns_per_adapter=many: a number of connections" "$run/ovs-vswitchd.log"'

# Arguments: a bad count is refused with its reason; conns=0 turns tracking off.
ovs-vsctl set Open_vSwitch . other_config:packet-hook-args="conns=lots control=none"
check "a bad conns= refused" wait_for 'grep -q "conns=lots: a number of connections from 0 to 1000000" "$run/ovs-vswitchd.log"'
ovs-vsctl set Open_vSwitch . other_config:packet-hook-args="conns=2000000 control=none"
check "too many refused" wait_for 'grep -q "conns=2000000: a number of connections" "$run/ovs-vswitchd.log"'
ovs-vsctl set Open_vSwitch . other_config:packet-hook-args="conns=0 control=none"
check "conns=0: tracking off" wait_for 'ovs-appctl vportfilter/conn-list 2>&1 | grep -q "connection tracking is off"'
check "switch alive" ovs-appctl -t ovs-vswitchd version
check "no crash in the log" bash -c "! grep -qE 'EMER|assertion|Segmentation' '$run/ovs-vswitchd.log'"
finish
