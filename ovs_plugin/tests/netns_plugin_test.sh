#!/usr/bin/env bash
# Real traffic through the plugin: two network namespaces as VMs on veth (AF_PACKET) ports
# of a datapath_type=netdev bridge, the switch in a namespace of its own.  Ping and TCP
# pass; a rule drops new TCP connections to one port (the VM's connect times out) and,
# later, pings toward one VM; counters follow.  Everything the test creates is removed,
# also on failure.  Exit 77 (skipped) without root or network namespaces.
# usage: netns_plugin_test.sh OVS_TREE vportfilter_ovs.so
set -u
B="$1" plugin="$2"
if [ "$(id -u)" != 0 ] || ! ip netns list >/dev/null 2>&1; then
  echo "SKIP: needs root and network namespaces"
  exit 77
fi
source "$(dirname "$0")/ovs_env.sh"
tag="vpf$$"
sw="$tag-sw" vm1="$tag-vm1" vm2="$tag-vm2"
run=$(mktemp -d /tmp/vpf-netns.XXXXXX)
cleanup() {
  ovs_stop "$run"
  for ns in "$vm1" "$vm2" "$sw"; do ip netns del "$ns" 2>/dev/null; done
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
