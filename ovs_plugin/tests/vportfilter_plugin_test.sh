#!/usr/bin/env bash
# The vportfilter plugin in the real, patched ovs-vswitchd (dummy datapath, private run
# dir): rules from a file, a VM port made an adapter, drops in both directions observed on
# the wire, the fail-open/fail-closed policy for captures without an agent, counters,
# refused input that changes nothing, and a rule swap under traffic that loses nothing the
# change does not touch.
# usage: vportfilter_plugin_test.sh OVS_TREE vportfilter_ovs.so
set -u
B="$1" plugin="$2"
source "$(dirname "$0")/../../common/testing/ovs_env.sh"
run=$(mktemp -d /tmp/vpf-ovs-plugin.XXXXXX)
trap 'ovs_stop "$run"; rm -rf "$run"' EXIT
count() { tcpdump -nr "$1" 2>/dev/null | grep -c '^[0-9]'; }  # a line per frame (not the hex of odd ones)
ports() { tcpdump -nr "$1" 2>/dev/null | sed -n 's/.* > [0-9.]*\.\([0-9]*\): .*/\1/p' | tr '\n' ' '; }

cat > "$run/rules.json" <<'JSON'
{"rules": [
  {"kind": "passthrough", "id": 1, "bpf": "tcp port 22"},
  {"kind": "filter", "id": 1, "bpf": "tcp dst port 23", "action": "drop", "direction": "outgoing"},
  {"kind": "filter", "id": 2, "protocol": "tcp", "remote_port": 443, "direction": "incoming", "action": "drop"},
  {"kind": "filter", "id": 3, "bpf": "udp dst port 53", "action": "capture"}
]}
JSON
# The same rules plus one that touches other traffic (UDP 9999).
sed 's/^]}$/,{"kind": "filter", "id": 9, "bpf": "udp port 9999", "action": "drop"}]}/' "$run/rules.json" > "$run/rules2.json"

ovs_start "$run" -- --enable-dummy --disable-system --disable-system-route || { echo "FAIL: start"; exit 1; }
dummy_bridge "$run"
ovs-ofctl add-flow br0 in_port=2,actions=output:1
ovs-vsctl set Open_vSwitch . other_config:packet-hook-plugin="$plugin" other_config:packet-hook-args="$run/rules.json"
check "plugin started" wait_for 'grep -q "vportfilter: started" "$run/ovs-vswitchd.log"'
check "the switch names the plugin (ABI 6)" bash -c "ovs-appctl packet-hook/show | grep -qx 'name: vportfilter' && ovs-appctl packet-hook/show | grep -qx 'abi: 6'"
check "adapter set" ovs-appctl vportfilter/adapter-set p1 0 7 >/dev/null

mac="525400000002525400000001"; mac_r="525400000001525400000002"
tcp() {  # tcp SPORT DPORT (hex, 4 digits) OUTGOING|INCOMING
  local m=$mac src=0a000001 dst=0a000002
  [ "$3" = in ] && m=$mac_r src=0a000002 dst=0a000001
  # Ethernet | IPv4: 45 00 0028 0000 0000 40 06 0000 src dst | TCP: ports seq ack 5002 2000 0000 0000
  echo "${m}0800""45000028""00000000""40060000""${src}${dst}""${1}${2}""00000001""00000000""5002200000000000"
}
udp() { echo "${mac}0800""4500001c""00000000""40110000""0a000001""0a000035""${1}${2}""00080000"; }
# Outgoing, VM -> uplink: telnet dropped, http passes, ssh passes (passthrough), DNS is a
# capture: fail-open passes it without an agent.
for f in "$(tcp 9c40 0017 out)" "$(tcp 9c41 0050 out)" "$(tcp 9c42 0016 out)" "$(udp 9c43 0035)"; do
  ovs-appctl netdev-dummy/receive p1 "$f" >/dev/null
done
check "outgoing: http, ssh and dns arrive, telnet does not" wait_for '[ "$(ports "$run/p2-tx.pcap")" = "80 22 53 " ]'
# Incoming, uplink -> VM: replies from 443 dropped on the way to the VM, others pass.
ovs-appctl netdev-dummy/receive p2 "$(tcp 01bb 9c44 in)" >/dev/null
ovs-appctl netdev-dummy/receive p2 "$(tcp 0050 9c45 in)" >/dev/null
check "incoming: only the reply from port 80 reaches the VM" wait_for '[ "$(ports "$run/p1-tx.pcap")" = "40005 " ]'

# Fail-closed: a capture with no agent drops.
check "policy set" ovs-appctl vportfilter/policy fail-closed >/dev/null
ovs-appctl netdev-dummy/receive p1 "$(udp 9c46 0035)" >/dev/null
ovs-appctl netdev-dummy/receive p1 "$(tcp 9c47 0050 out)" >/dev/null
check "fail-closed drops the capture" wait_for '[ "$(ports "$run/p2-tx.pcap")" = "80 22 53 80 " ]'

show=$(ovs-appctl vportfilter/show)
check "show: rules" grep -q "rules: 4 " <<<"$show"
check "show: adapter" grep -q "adapter 0: p1 (dummy, vm 7)" <<<"$show"
check "show: outgoing counters" grep -q "outgoing: packets 6 bytes .* dropped 2 .* events_lost 2" <<<"$show"
check "show: incoming counters" grep -q "incoming: packets 2 bytes .* dropped 1 " <<<"$show"

# Refused input changes nothing.
echo '[{"id": 1, "bpf": "tcp port eighty"}]' > "$run/bad.json"
check "bad rules refused" bash -c "! ovs-appctl vportfilter/rules-load '$run/bad.json' 2>/dev/null"
check "bad rules message" bash -c "ovs-appctl vportfilter/rules-load '$run/bad.json' 2>&1 | grep -q \"field 'bpf'\""
check "bad adapter refused" bash -c "! ovs-appctl vportfilter/adapter-set p1 minus 2>/dev/null"
check "bad policy refused" bash -c "! ovs-appctl vportfilter/policy maybe 2>/dev/null"
ovs-appctl netdev-dummy/receive p1 "$(tcp 9c48 0017 out)" >/dev/null
ovs-appctl netdev-dummy/receive p1 "$(tcp 9c49 0050 out)" >/dev/null
check "old rules still in force" wait_for '[ "$(ports "$run/p2-tx.pcap")" = "80 22 53 80 80 " ]'

# Rule swap under traffic: 400 http frames in 40 calls while the rules flip 40 times;
# the change only touches UDP 9999, so all 400 must arrive.
before=$(count "$run/p2-tx.pcap")
http=$(tcp 9c50 0050 out)
batch=$(for _ in $(seq 10); do printf '%s ' "$http"; done)
for i in $(seq 40); do
  ovs-appctl netdev-dummy/receive p1 $batch >/dev/null
  if [ $((i % 2)) = 0 ]; then ovs-appctl vportfilter/rules-load "$run/rules2.json" >/dev/null
  else ovs-appctl vportfilter/rules-load "$run/rules.json" >/dev/null; fi
done
check "400 frames through 40 rule swaps" wait_for '[ "$(count "$run/p2-tx.pcap")" = "$((before + 400))" ]'

# Malformed frames through rules that look deep into packets (BPF beyond the headers,
# ports, IPv6, VLAN, a raw offset): none of them matches, so every frame passes, and the
# last rule (count, no condition) counts each one: classification ran to its end on every
# frame without reading past it.
cat > "$run/deep.json" <<'JSON'
[{"kind": "filter", "id": 11, "bpf": "tcp[20:4] == 0x41414141", "action": "drop"},
 {"kind": "filter", "id": 12, "bpf": "ip6 and tcp dst port 80", "action": "drop"},
 {"kind": "filter", "id": 13, "protocol": "udp", "remote_port": 7, "action": "drop"},
 {"kind": "filter", "id": 14, "bpf": "vlan 5 and udp", "action": "drop"},
 {"kind": "filter", "id": 15, "bpf": "ip[100] == 1", "action": "capture"},
 {"kind": "filter", "id": 16, "min_size": 1000, "action": "notify"},
 {"kind": "filter", "id": 20, "action": "count"}]
JSON
check "deep rules loaded" ovs-appctl vportfilter/rules-load "$run/deep.json"
before=$(count "$run/p2-tx.pcap")
e="${mac}"
bad_frames=(
  "${e}0800"                                                     # Ethernet header only
  "${e}08004200001c0000000040110000"                             # IPv4, IHL 2
  "${e}08004500ffff00000000401100000a0000010a000002"             # IPv4, total length past the frame
  "${e}08004500002800000000400600000a0000010a0000029c40"         # TCP header cut after 2 bytes
  "${e}86dd60000000"                                             # IPv6 header cut
  "${e}86dd6000000000080040fe800000000000000000000000000001fe800000000000000000000000000002""06ff"  # hop-by-hop running past the end
  "${e}81000005"                                                 # a VLAN tag and nothing after it
  "${e}8100000581000006810000070800450000"                       # three tags, then a cut IPv4 header
  "${e}08004500002800002001400600000a0000010a000002""00170050"   # a later IPv4 fragment claiming TCP
  "$(printf 'ff%.0s' $(seq 60))"                                 # 60 bytes of ff
)
for f in "${bad_frames[@]}"; do ovs-appctl netdev-dummy/receive p1 "$f" >/dev/null; done
check "all ${#bad_frames[@]} malformed frames forwarded" wait_for '[ "$(count "$run/p2-tx.pcap")" = "$((before + ${#bad_frames[@]}))" ]'
check "and each one counted by the last rule" bash -c "ovs-appctl vportfilter/show | grep -q 'filter:20=${#bad_frames[@]}'"

# The decision cache: a flow that passes is cached; a drop rule added for it drops its very
# next packet; removed, the next one passes again.
echo '[{"kind": "filter", "id": 30, "bpf": "udp port 9999", "action": "drop"}]' > "$run/cache.json"
echo '[{"kind": "filter", "id": 30, "bpf": "udp port 9999", "action": "drop"},
       {"kind": "filter", "id": 31, "bpf": "tcp dst port 80", "action": "drop"}]' > "$run/cache2.json"
check "cache rules loaded" ovs-appctl vportfilter/rules-load "$run/cache.json"
flow=$(tcp 9c60 0050 out)
before=$(count "$run/p2-tx.pcap")
for _ in 1 2 3; do ovs-appctl netdev-dummy/receive p1 "$flow" >/dev/null; done
check "cached flow: 3 packets pass" wait_for '[ "$(count "$run/p2-tx.pcap")" = "$((before + 3))" ]'
check "cached flow: the cache answered" bash -c "ovs-appctl vportfilter/show | grep -qE 'decision cache: 65536 flows per thread, shapes cached 16/16, hits [1-9]'"
# drop_then_pass WHAT WITH_DROP WITHOUT RULE MARKER: the rules WITH_DROP loaded, the next
# packet of $flow (port 80) is dropped by filter RULE (a UDP frame from port MARKER, which
# passes, shows it); the rules WITHOUT loaded again, the next one passes.
drop_then_pass() {
  check "$1: drop rule added" ovs-appctl vportfilter/rules-load "$2"
  ovs-appctl netdev-dummy/receive p1 "$flow" >/dev/null
  ovs-appctl netdev-dummy/receive p1 "$(udp "$5" 0035)" >/dev/null
  check "$1 flow: the next packet is dropped" wait_for '[ "$(ports "$run/p2-tx.pcap" | awk "{print \$NF}")" = 53 ]'
  check "$1 flow: dropped by the new rule" bash -c "ovs-appctl vportfilter/show | grep -q 'filter:$4=1'"
  check "$1: drop rule removed" ovs-appctl vportfilter/rules-load "$3"
  ovs-appctl netdev-dummy/receive p1 "$flow" >/dev/null
  check "$1 flow: passes again" wait_for '[ "$(ports "$run/p2-tx.pcap" | awk "{print \$NF}")" = 80 ]'
}
drop_then_pass cached "$run/cache2.json" "$run/cache.json" 31 9c61
# A port that no rule names: the switch keeps its batches from the hook (ABI 3) and counts
# them for the adapter, exactly.
echo '{"rules": [{"kind": "filter", "id": 40, "adapter": 5, "action": "drop"}]}' > "$run/other.json"
check "rules for another adapter only" ovs-appctl vportfilter/rules-load "$run/other.json"
counters() {
  ovs-appctl vportfilter/stats | python3 -c 'import json, sys
a = json.load(sys.stdin)["adapters"][0]
print(a["outgoing"]["packets"], a["outgoing"]["bytes"], a["incoming"]["packets"], a["incoming"]["bytes"])'
}
read -r op ob ip ib <<<"$(counters)"
lookups() { ovs-appctl vportfilter/show | grep 'decision cache'; }
lookups_before=$(lookups)
before=$(count "$run/p2-tx.pcap")
for p in 9c60 9c61 9c62; do ovs-appctl netdev-dummy/receive p1 "$(tcp $p 0017 out)" >/dev/null; done
ovs-appctl netdev-dummy/receive p2 "$(tcp 01bb 9c63 in)" >/dev/null
ovs-appctl netdev-dummy/receive p2 "$(tcp 01bb 9c64 in)" >/dev/null
check "unfiltered port: the telnet frames pass" wait_for '[ "$(count "$run/p2-tx.pcap")" = "$((before + 3))" ]'
check "unfiltered port: the switch counted 3 out, 2 in" \
  wait_for '[ "$(counters)" = "$((op + 3)) $((ob + 3 * 54)) $((ip + 2)) $((ib + 2 * 54))" ]'
check "unfiltered port: the hook did not classify them" [ "$(lookups)" = "$lookups_before" ]
# One rule added and removed by command, without reloading the others.
check "rule added" ovs-appctl vportfilter/rule-add '{"kind": "filter", "id": 41, "adapter": 0, "bpf": "tcp dst port 23", "action": "drop"}'
check "a bad rule refused, with the field" bash -c "ovs-appctl vportfilter/rule-add '{\"kind\": \"filter\", \"id\": 42, \"bpf\": \"tcp port x\"}' 2>&1 | grep -q bpf"
before=$(count "$run/p2-tx.pcap")
ovs-appctl netdev-dummy/receive p1 "$(tcp 9c65 0017 out)" >/dev/null
ovs-appctl netdev-dummy/receive p1 "$(tcp 9c66 0050 out)" >/dev/null
check "added rule: telnet dropped, http passes" wait_for '[ "$(ports "$run/p2-tx.pcap" | awk "{print \$NF}")" = 80 ] && [ "$(count "$run/p2-tx.pcap")" = "$((before + 1))" ]'
check "rule removed" ovs-appctl vportfilter/rule-remove filter:41
check "an unknown rule refused" bash -c "! ovs-appctl vportfilter/rule-remove filter:41 2>/dev/null"
ovs-appctl netdev-dummy/receive p1 "$(tcp 9c67 0017 out)" >/dev/null
check "removed rule: telnet passes" wait_for '[ "$(ports "$run/p2-tx.pcap" | awk "{print \$NF}")" = 23 ]'
# A flow table the simple match does not serve, every flow put in the switch's exact match
# cache (EMC): the switch remembers the passes the plugin allows there (hook ABI 6) and
# stops asking the plugin for the flow, counting its packets for the adapter itself; a
# rule change makes every remembered pass stale at once, so the very next packet of the
# flow is decided by the new rules.
ovs-vsctl set Open_vSwitch . other_config:emc-insert-inv-prob=1
ovs-ofctl del-flows br0 in_port=1
ovs-ofctl add-flow br0 in_port=1,ip,nw_src=10.0.0.1,actions=output:2
# (5-tuple rules: a lone BPF rule is run without the decision cache, which decides what
# the switch may remember.)
echo '[{"kind": "filter", "id": 33, "protocol": "udp", "remote_port": 9999, "action": "drop"}]' > "$run/emc.json"
echo '[{"kind": "filter", "id": 33, "protocol": "udp", "remote_port": 9999, "action": "drop"},
       {"kind": "filter", "id": 34, "protocol": "tcp", "remote_port": 80, "action": "drop"}]' > "$run/emc2.json"
check "EMC rules loaded" ovs-appctl vportfilter/rules-load "$run/emc.json"
flow=$(tcp 9c70 0050 out)
read -r op ob ip ib <<<"$(counters)"
before=$(count "$run/p2-tx.pcap")
for _ in 1 2 3; do ovs-appctl netdev-dummy/receive p1 "$flow" >/dev/null; done
check "EMC flow: 3 packets pass" wait_for '[ "$(count "$run/p2-tx.pcap")" = "$((before + 3))" ]'
lookups_before=$(lookups)
for _ in 1 2 3 4 5; do ovs-appctl netdev-dummy/receive p1 "$flow" >/dev/null; done
check "EMC flow: 5 more pass" wait_for '[ "$(count "$run/p2-tx.pcap")" = "$((before + 8))" ]'
check "EMC flow: the plugin was not asked for them" [ "$(lookups)" = "$lookups_before" ]
check "EMC flow: all 8 counted for the adapter" wait_for '[ "$(counters)" = "$((op + 8)) $((ob + 8 * 54)) $ip $ib" ]'
drop_then_pass EMC "$run/emc2.json" "$run/emc.json" 34 9c71
# A rule for adapter 1 only: the flow of adapter 0 passes (and is remembered) until the
# port becomes adapter 1.
echo '[{"kind": "filter", "id": 33, "protocol": "udp", "remote_port": 9999, "action": "drop"},
       {"kind": "filter", "id": 32, "adapter": 1, "protocol": "tcp", "remote_port": 80, "action": "drop"}]' > "$run/adapter1.json"
check "EMC: a rule for adapter 1 loaded" ovs-appctl vportfilter/rules-load "$run/adapter1.json"
before=$(count "$run/p2-tx.pcap")
for _ in 1 2 3; do ovs-appctl netdev-dummy/receive p1 "$flow" >/dev/null; done
check "EMC flow: adapter 0 passes" wait_for '[ "$(count "$run/p2-tx.pcap")" = "$((before + 3))" ]'
check "EMC: the port becomes adapter 1" ovs-appctl vportfilter/adapter-set p1 1 7
ovs-appctl netdev-dummy/receive p1 "$flow" >/dev/null
ovs-appctl netdev-dummy/receive p1 "$(udp 9c72 0035)" >/dev/null
check "EMC flow: dropped as adapter 1" wait_for '[ "$(ports "$run/p2-tx.pcap" | awk "{print \$NF}")" = 53 ] && ovs-appctl vportfilter/show | grep -q "filter:32=1"'
check "bad cache size refused" bash -c "ovs-vsctl set Open_vSwitch . other_config:packet-hook-args='cache=lots' && sleep 0.5 && grep -q 'cache=lots: a number of flows' '$run/ovs-vswitchd.log'"

check "switch alive" ovs-appctl -t ovs-vswitchd version
check "no crash in the log" bash -c "! grep -qE 'EMER|assertion|Segmentation' '$run/ovs-vswitchd.log'"
finish
