#!/usr/bin/env bash
# The plugin on OVS-DPDK ports (DPDK without hugepages, the switch in a namespace of its
# own): 1000 frames injected through the channel as if received on a DPDK port (net_null,
# polled by a PMD thread) go through a vhost-user port (dpdkvhostuserclient) whose peer is
# DPDK's virtio_user in the same switch, then out of net_null.  Exact counts on the
# vhost-user port's tx hook (a rule drops the 100 frames from source port 9 on their way
# to that "VM") and the virtio_user port's rx hook.  (Injection, not a net_pcap replay: a
# replay starts before the bridge can take upcalls and loses its first frames.)
# Exit 77 (skipped) without root.
# usage: dpdk_plugin_test.sh OVS_TREE vportfilter_ovs.so vpf-chan-tool
set -u
B="$1" plugin="$2" tool="$3"
if [ "$(id -u)" != 0 ] || ! ip netns list >/dev/null 2>&1; then
  echo "SKIP: needs root and network namespaces"
  exit 77
fi
source "$(dirname "$0")/../../common/testing/ovs_env.sh"
run=$(mktemp -d /tmp/vpf-dpdk.XXXXXX)
ns="vpfdpdk$$" prefix="vpfdpdk$$"
cleanup() {
  ovs_env "$run"
  ovs-vsctl --timeout=10 --if-exists del-port br0 vhu0 >/dev/null 2>&1
  ovs-vsctl --timeout=10 --if-exists del-port br0 vu0 >/dev/null 2>&1
  ovs_stop "$run"
  ip netns del "$ns" 2>/dev/null
  rm -rf "/var/run/dpdk/$prefix" "$run"
}
trap cleanup EXIT
stat() { ovs-appctl vportfilter/stats | python3 -c "import json,sys; d=json.load(sys.stdin); a={x['adapter']: x for x in d['adapters']}; print($1)"; }

cat > "$run/rules.json" <<'JSON'
[{"kind": "filter", "id": 1, "bpf": "src port 9", "action": "drop", "adapter": 1, "direction": "incoming"},
 {"kind": "filter", "id": 2, "bpf": "src port 7", "action": "capture", "adapter": 3, "direction": "incoming"}]
JSON
check "DPDK initialised" ovs_start_dpdk "$run" "$ns" "$prefix" 512 \
  other_config:packet-hook-plugin="$plugin" other_config:packet-hook-args="rules=$run/rules.json control=$run/vpf.sock"
check "plugin started" wait_for 'grep -q "vportfilter: started" "$run/ovs-vswitchd.log"'
ovs-vsctl --timeout=20 add-br br0 -- set bridge br0 datapath_type=netdev fail-mode=secure \
  -- add-port br0 null0 -- set interface null0 type=dpdk ofport_request=2 "options:dpdk-devargs=net_null0,no-rx=1"
# vhost-user first, then its virtio_user peer (OVS.md: the other order blocks the switch).
ovs-vsctl --timeout=20 add-port br0 vhu0 -- set interface vhu0 type=dpdkvhostuserclient ofport_request=3 \
  options:vhost-server-path="$run/vhu0.sock"
ovs-vsctl --timeout=20 add-port br0 vu0 -- set interface vu0 type=dpdk ofport_request=4 \
  "options:dpdk-devargs=net_virtio_user0,path=$run/vhu0.sock,server=1,queues=1"
check "vhost-user connected" wait_for 'ovs-vsctl get interface vhu0 status | grep -q "status=connected"'
ovs-ofctl add-flow br0 in_port=1,actions=output:3
ovs-ofctl add-flow br0 in_port=4,actions=output:2
check "adapter 1: vhost-user" ovs-appctl vportfilter/adapter-set vhu0 1 >/dev/null
check "adapter 2: virtio_user" ovs-appctl vportfilter/adapter-set vu0 2 >/dev/null
ovs-vsctl --timeout=20 add-port br0 src0 -- set interface src0 type=dpdk ofport_request=1 \
  "options:dpdk-devargs=net_null1,no-rx=1"
check "adapter 0: the source port" ovs-appctl vportfilter/adapter-set src0 0 >/dev/null
# UDP frames from port 1024 and from port 9, 64 bytes with padding.
U=5254000000025254000000010800450000200000000040110000c0a80001c0a80002
pad=000000000000000000000000000000000000
check "inject 900" "$tool" "$run/vpf.sock" inject 0 0 900 "${U}04000005000c0000a1a2a3a4${pad}"
check "inject 100 from port 9" "$tool" "$run/vpf.sock" inject 0 0 100 "${U}00090005000c0000a1a2a3a4${pad}"
check "all 1000 frames reached the vhost-user port's tx hook" wait_for '[ "$(stat "a[1][\"incoming\"][\"packets\"]")" = 1000 ]'
check "100 dropped on their way to the VM" [ "$(stat 'a[1]["incoming"]["dropped"]')" = 100 ]
check "900 came back through virtio_user's rx hook" wait_for '[ "$(stat "a[2][\"outgoing\"][\"packets\"]")" = 900 ]'
check "none dropped there" [ "$(stat 'a[2]["outgoing"]["dropped"]')" = 0 ]
check "null0 sent 900" wait_for 'ovs-ofctl dump-ports br0 2 | grep -q "tx pkts=900"'
# A captured DPDK packet (an mbuf received by virtio_user) held and released toward null0:
# the release goes through the switch's packet-out path, which needs a copy of the mbuf.
check "adapter 3: null0" ovs-appctl vportfilter/adapter-set null0 3 >/dev/null
"$tool" "$run/vpf.sock" serve 5 marker 20 >"$run/serve.out" 2>&1 &
sp=$!
wait_for 'ovs-appctl vportfilter/show | grep -q "agent: attached"'
for _ in 1 2 3 4 5; do
  ovs-ofctl packet-out br0 LOCAL output:3 "${U}00070005000c0000a1a2a3a4${pad}"
done
wait "$sp"
check "5 mbufs captured on their way to null0" [ "$(grep -c '^capture adapter=3' "$run/serve.out")" = 5 ]
check "and sent on after the verdict" wait_for 'ovs-ofctl dump-ports br0 2 | grep -q "tx pkts=905"'
check "switch alive" ovs-appctl -t ovs-vswitchd version
check "no crash in the log" bash -c "! grep -qE 'EMER|assertion|Segmentation' '$run/ovs-vswitchd.log'"
finish
