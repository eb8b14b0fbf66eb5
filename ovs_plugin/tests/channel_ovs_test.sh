#!/usr/bin/env bash
# The plugin's agent channel in the real, patched ovs-vswitchd (dummy datapath, private run
# dir), driven by a minimal channel client: adapters and rules set over the control
# socket, capture verdicts (send, drop, send modified, larger) and notify copies seen on
# the wire in both directions, injection both ways, hold expiry, a client killed while
# holding a packet, a non-root client refused, counters and rule hits.
# usage: channel_ovs_test.sh OVS_TREE vportfilter_ovs.so vpf-chan-tool
set -u
B="$1" plugin="$2" tool="$3"
source "$(dirname "$0")/../../common/testing/ovs_env.sh"
run=$(mktemp -d /tmp/vpf-ovs-chan.XXXXXX)
chmod 755 "$run"  # the non-root client must reach the socket to be refused by it
trap 'kill $(jobs -p) 2>/dev/null; ovs_stop "$run"; rm -rf "$run"' EXIT
sock="$run/vpf.sock"
T() { "$tool" "$sock" "$@"; }
# marker bytes (byte 42: first UDP payload byte) of the frames a port sent, sorted
markers() { pcap_markers "$1" | sort | joined; }
stat() { ovs-appctl vportfilter/stats | python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

ovs_start "$run" -- --enable-dummy --disable-system --disable-system-route || { echo "FAIL: start"; exit 1; }
dummy_bridge "$run"
ovs-ofctl add-flow br0 in_port=2,actions=output:1
cat > "$run/rules.json" <<'JSON'
[{"kind": "filter", "id": 1, "adapter": 0, "bpf": "udp and udp[8] >= 0xc1 and udp[8] <= 0xc4", "action": "capture"},
 {"kind": "filter", "id": 2, "adapter": 0, "bpf": "udp and udp[8] == 0xa1", "action": "notify"},
 {"kind": "filter", "id": 3, "bpf": "udp and udp[8] == 0xd1", "action": "drop"}]
JSON
ovs-vsctl set Open_vSwitch . other_config:packet-hook-plugin="$plugin" \
  other_config:packet-hook-args="control=$sock"
check "plugin started with its control socket" wait_for '[ -S "$sock" ]'
check "show: no agent" bash -c "ovs-appctl vportfilter/show | grep -q 'agent: not attached'"

F=52540000000252540000000108004500002000000000401100000a0000010a0000020400050000080000
R=52540000000152540000000208004500002000000000401100000a0000020a0000010400050000080000
frame() { echo "${F}${1}000000"; }   # p1's VM -> p2
rframe() { echo "${R}${1}000000"; }  # p2 -> p1's VM

# 1. Configuration over the channel; bad requests refused whole.
check "adapters" bash -c "T() { \"$tool\" \"$sock\" \"\$@\"; }; T call set_adapters '{\"adapters\":[{\"port\":\"p1\",\"adapter\":0,\"vm\":7,\"snaplen\":30},{\"port\":\"p2\",\"adapter\":1}]}' | grep -q '\"present\":2'"
check "rules" bash -c "\"$tool\" \"$sock\" call set_rules \"{\\\"rules\\\": \$(cat $run/rules.json)}\" | grep -q '\"rules\":3'"
check "bad rule refused" bash -c "\"$tool\" \"$sock\" call set_rules '{\"rules\":[{\"id\":1,\"bpf\":\"udp[\"}]}' 2>&1 | grep -q 'filter rule 1'"
check "unknown method refused" bash -c "! \"$tool\" \"$sock\" call reboot 2>/dev/null"
check "rules unchanged" bash -c "ovs-appctl vportfilter/show | grep -q '^rules: 3'"
for_nobody "$run/nobody-bin" "$tool"
check "non-root client refused" bash -c "as_nobody \"$NOBODY_DIR/$(basename "$tool")\" \"$sock\" call stats 2>&1 | grep -q 'uid 65534 is not root'"

# 2. Captures answered by marker, a notify, a drop, a plain packet: outgoing from p1.
T serve 5 marker 10 > "$run/events1.txt" &
srv=$!
check "agent attached" wait_for 'ovs-appctl vportfilter/show | grep -q "agent: attached"'
for m in c1 c2 c3 c4 a1 d1 00; do ovs-appctl netdev-dummy/receive p1 "$(frame $m)" >/dev/null; done
check "client saw 4 captures and 1 notify" wait $srv
check "verdicts on the wire: send, modified, larger; notify passes; drops gone" \
  wait_for '[ "$(markers "$run/p2-tx.pcap")" = "00 a1 c1 c4 ee " ]'
check "the larger replacement went out whole" [ "$(pcap_lengths "$run/p2-tx.pcap" | sort -n | tail -1)" = 246 ]
check "notify copy cut to the snaplen" grep -q "notify adapter=0 dir=0 rule=filter:2 len=46 cap=30" "$run/events1.txt"
check "capture carries the whole frame" grep -q "capture adapter=0 dir=0 rule=filter:1 len=46 cap=46 marker=c3" "$run/events1.txt"

# 3. The other direction: from p2 (adapter 1, which no capture rule names) to p1's VM,
#    captured on its way to the VM (adapter 0, incoming), sent, delivered once.
T serve 1 marker 10 > "$run/events2.txt" &
srv=$!
check "agent attached again" wait_for 'ovs-appctl vportfilter/show | grep -q "agent: attached"'
ovs-appctl netdev-dummy/receive p2 "$(rframe c1)" >/dev/null
check "one capture" wait $srv
check "incoming to adapter 0" grep -q 'capture adapter=0 dir=1 rule=filter:1' "$run/events2.txt"
check "delivered to the VM once" wait_for '[ "$(markers "$run/p1-tx.pcap")" = "c1 " ]'

# 4. Injection: three copies toward p1's VM, one as if p2's VM sent it (flows to p1).
check "inject to the VM" T inject 0 1 3 "$(rframe b1)"
check "inject from a VM" T inject 1 0 1 "$(rframe b2)"
check "injected frames on the wire" wait_for '[ "$(markers "$run/p1-tx.pcap")" = "b1 b1 b1 b2 c1 " ]'

# 5. Expiry: a 200 ms hold timeout with expired packets sent; the client never answers.
T call set_config '{"hold_timeout_ms": 200, "deny_expired": false}' >/dev/null
T serve 1 none 10 1000 >/dev/null &
srv=$!
check "attached for expiry" wait_for 'ovs-appctl vportfilter/show | grep -q "agent: attached"'
ovs-appctl netdev-dummy/receive p1 "$(frame c1)" >/dev/null
check "expired capture sent while the client is still attached" \
  wait_for '[ "$(markers "$run/p2-tx.pcap")" = "00 a1 c1 c1 c4 ee " ]'
check "client still attached when it expired" kill -0 $srv
wait $srv
check "expired counted" [ "$(stat 'd["channel"]["expired"]')" = 1 ]

# 6. A client killed while it holds a packet: released with the expiry action (drop).
T call set_config '{"hold_timeout_ms": 0, "deny_expired": true}' >/dev/null
"$tool" "$sock" serve 100 none 30 > "$run/events3.txt" &  # not through T: $! must be the client
srv=$!
check "attached for the kill" wait_for 'ovs-appctl vportfilter/show | grep -q "agent: attached"'
ovs-appctl netdev-dummy/receive p1 "$(frame c2)" >/dev/null
check "held" wait_for 'grep -q capture "$run/events3.txt"'
check "one packet held" [ "$(stat 'd["held"]')" = 1 ]
kill -9 $srv; wait $srv 2>/dev/null
check "released on detach" wait_for '[ "$(stat "d[\"channel\"][\"released_on_detach\"]")" = 1 ]'
check "nothing held" [ "$(stat 'd["held"]')" = 0 ]
check "show: detached" bash -c "ovs-appctl vportfilter/show | grep -q 'agent: not attached'"
check "dropped, not sent" [ "$(markers "$run/p2-tx.pcap")" = "00 a1 c1 c1 c4 ee " ]

# 7. Counters and rule hits.
check "rule hits: 7 captures, 1 notify, 1 drop" \
  [ "$(stat '" ".join("%s=%s" % (r["id"], r["hits"]) for r in d["rules"])')" = "1=7 2=1 3=1" ]
check "adapter 0 outgoing drops: c2 and d1 and the released c2" [ "$(stat '[a for a in d["adapters"] if a["adapter"]==0][0]["outgoing"]["dropped"]')" = 3 ]
check "ring counters shown" bash -c "ovs-appctl vportfilter/show | grep -q 'commands used 0/'"
check "switch alive" ovs-appctl -t ovs-vswitchd version
check "no crash in the log" bash -c "! grep -qE 'EMER|assertion|Segmentation' '$run/ovs-vswitchd.log'"
finish
