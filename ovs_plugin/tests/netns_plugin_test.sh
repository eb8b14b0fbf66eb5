#!/usr/bin/env bash
# Real traffic through the plugin: network namespaces as VMs on a datapath_type=netdev
# bridge, the switch in a namespace of its own; two VMs on veth (AF_PACKET) ports, one on
# a tap port, one on an AF_XDP port.  Ping and TCP pass and every port type's hook counts
# both directions; a rule drops new TCP connections to one port (the VM's connect times
# out) and, later, pings toward one VM; counters follow.  Everything the test creates is removed,
# also on failure.  Exit 77 (skipped) without root or network namespaces.
# usage: netns_plugin_test.sh OVS_TREE vportfilter_ovs.so
set -u
B="$1" plugin="$2"
if [ "$(id -u)" != 0 ] || ! ip netns list >/dev/null 2>&1; then
  echo "SKIP: needs root and network namespaces"
  exit 77
fi
source "$(dirname "$0")/../../common/testing/ovs_env.sh"
tag="vpf$$"
sw="$tag-sw" vm1="$tag-vm1" vm2="$tag-vm2" vm3="$tag-vm3" vm4="$tag-vm4"
run=$(mktemp -d /tmp/vpf-netns.XXXXXX)
cleanup() {
  ovs_stop "$run"
  for ns in "$vm1" "$vm2" "$vm3" "$vm4" "$sw"; do ip netns del "$ns" 2>/dev/null; done
  rm -rf "$run"
}
trap cleanup EXIT

for ns in "$sw" "$vm1" "$vm2"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
for i in 1 2; do
  vm="$tag-vm$i"
  ip link add "v$i-$tag" type veth peer name "o$i-$tag"
  ip link set "v$i-$tag" netns "$vm"
  ip link set "o$i-$tag" netns "$sw"
  ip -n "$vm" link set "v$i-$tag" name eth0
  ip netns exec "$vm" ethtool -K eth0 tx off >/dev/null   # no partial checksums over AF_PACKET
  ip -n "$vm" addr add "10.77.0.$i/24" dev eth0
  ip -n "$vm" link set eth0 up
  ip -n "$sw" link set "o$i-$tag" up
done

ovs_env "$run"
ovsdb-tool create "$run/conf.db" "$B/vswitchd/vswitch.ovsschema"
ovsdb-server --detach --no-chdir --pidfile --log-file -vconsole:off --remote=punix:"$run/db.sock" "$run/conf.db" 2>/dev/null
ovs-vsctl --no-wait init
ovs-vsctl --no-wait set Open_vSwitch . other_config:packet-hook-plugin="$plugin"
ip netns exec "$sw" "$B/vswitchd/ovs-vswitchd" --disable-system --detach --no-chdir --pidfile --log-file -vconsole:off 2>/dev/null
ovs-vsctl add-br br0 -- set bridge br0 datapath_type=netdev \
  -- add-port br0 "o1-$tag" -- add-port br0 "o2-$tag"
check "plugin started" grep -q "vportfilter: started" "$run/ovs-vswitchd.log"
check "adapter 0" ovs-appctl vportfilter/adapter-set "o1-$tag" 0 1 >/dev/null
check "adapter 1" ovs-appctl vportfilter/adapter-set "o2-$tag" 1 2 >/dev/null

check "ping through the plugin" ip netns exec "$vm1" ping -c 3 -i 0.2 -W 2 10.77.0.2 >/dev/null
head -c 200000 /dev/urandom > "$run/blob"
ip netns exec "$vm2" timeout 10 nc -n -l -p 5001 > "$run/got" &
sleep 0.3
ip netns exec "$vm1" timeout 10 nc -n -N 10.77.0.2 5001 < "$run/blob"
wait
check "TCP transfer intact" cmp -s "$run/blob" "$run/got"

# A tap port (OVS makes the device; it moves into the VM's namespace) and an AF_XDP port.
ip netns add "$vm3"; ip netns add "$vm4"
ovs-vsctl add-port br0 "t3-$tag" -- set interface "t3-$tag" type=tap
ip -n "$sw" link set "t3-$tag" netns "$vm3"
ip -n "$vm3" addr add 10.77.0.3/24 dev "t3-$tag"
ip -n "$vm3" link set "t3-$tag" up
ip link add "v4-$tag" type veth peer name "o4-$tag"
ip link set "v4-$tag" netns "$vm4"
ip link set "o4-$tag" netns "$sw"
ip netns exec "$vm4" ethtool -K "v4-$tag" tx off txvlan off >/dev/null
ip -n "$vm4" addr add 10.77.0.4/24 dev "v4-$tag"
ip -n "$vm4" link set "v4-$tag" up
ip -n "$sw" link set "o4-$tag" up
ovs-vsctl add-port br0 "o4-$tag" -- set interface "o4-$tag" type=afxdp
check "adapter 2: tap" ovs-appctl vportfilter/adapter-set "t3-$tag" 2 3 >/dev/null
check "adapter 3: afxdp" ovs-appctl vportfilter/adapter-set "o4-$tag" 3 4 >/dev/null
check "ping to the tap VM" ip netns exec "$vm1" ping -c 3 -i 0.2 -W 2 10.77.0.3 >/dev/null
check "ping to the AF_XDP VM" ip netns exec "$vm1" ping -c 3 -i 0.2 -W 2 10.77.0.4 >/dev/null
show=$(ovs-appctl vportfilter/show)
for a in 2 3; do
  check "adapter $a counted both directions" bash -c "grep -A2 'adapter $a:' <<<'$show' | grep -c 'packets [1-9]' | grep -qx 2"
done
ovs-vsctl del-port br0 "o4-$tag"  # frees the core its PMD thread spins on

cat > "$run/rules.json" <<'JSON'
[{"kind": "filter", "id": 1, "bpf": "tcp dst port 5002 and tcp[tcpflags] & tcp-syn != 0", "action": "drop",
  "direction": "outgoing", "adapter": 0}]
JSON
check "rules loaded" ovs-appctl vportfilter/rules-load "$run/rules.json" >/dev/null
ip netns exec "$vm2" timeout 5 nc -n -l -p 5002 > /dev/null &
sleep 0.3
check "connect to the blocked port fails" bash -c "! ip netns exec '$vm1' timeout 3 nc -n -N -w 2 10.77.0.2 5002 < /dev/null"
kill %1 2>/dev/null; wait 2>/dev/null
check "ping still passes" ip netns exec "$vm1" ping -c 2 -i 0.2 -W 2 10.77.0.2 >/dev/null

cat > "$run/rules2.json" <<'JSON'
[{"kind": "filter", "id": 2, "bpf": "icmp", "action": "drop", "direction": "incoming", "adapter": 1}]
JSON
check "new rules loaded" ovs-appctl vportfilter/rules-load "$run/rules2.json" >/dev/null
check "pings toward vm2 dropped" bash -c "! ip netns exec '$vm1' ping -c 2 -i 0.2 -W 1 10.77.0.2 >/dev/null"
show=$(ovs-appctl vportfilter/show)
check "drops counted on adapter 1, incoming" bash -c "grep -A2 'adapter 1:' <<<'$show' | grep 'incoming' | grep -qv 'dropped 0 '"
check "switch alive" ovs-appctl -t ovs-vswitchd version
finish
