# A private Open vSwitch with the vportfilter plugin, vpf-agent, and namespace VMs attached
# by veth pairs to a datapath_type=netdev bridge.  Source it with these set:
#   B       the Open vSwitch build tree      PLUGIN  vportfilter_ovs.so
#   AGENT   vpf-agent                        VPFCTL  vpfctl
# then:
#   VM_PORT_TYPE             the VMs' Interface type: "" (AF_PACKET, the default) or afxdp
#   vm_env_start [N_VMS=2]   the switch (in its own namespace), N VMs vm1..vmN with
#                            10.79.T.i/24 and fd00:79:T::i/64 on eth0, the agent; exports
#                            VPF_AGENT_SOCKET.  VM i's port is "$VMTAG-p$i".
#   vm_env_stop              everything away (also run on EXIT)
#   vmx I CMD...             runs CMD inside VM I
#   vm_ip I / vm_ip6 I       its addresses; vm_mac I its MAC
#   vm_port_ids I NAME       the Interface external_ids a cloud manager sets for VM I
#   adapter_of I             VM I's adapter id
#   vm_add I / vm_del I      adds / removes VM I's port (a VM that comes and goes)
#   agent_start / agent_kill AGENT_ARGS...
# Everything lives under $VMRUN (a private run dir) and namespaces named $VMTAG-*.
source "$(dirname "${BASH_SOURCE[0]}")/../../common/testing/ovs_env.sh"

VMTAG="${VMTAG:-vpv$$}"
VMNET="${VMNET:-79}"
VMRUN=""
VM_AGENT_PID=""
VM_COUNT=0

vm_ip() { echo "10.$VMNET.$VMSUB.$1"; }
vm_ip6() { echo "fd00:$VMNET:$VMSUB::$1"; }
vm_mac() { echo "52:54:00:$VMNET:00:0$1"; }
vm_port_ids() {
  echo "external_ids:vm-name=$2 external_ids:vm-id=$1 external_ids:iface-id=$VMTAG-vm$1 external_ids:attached-mac=$(vm_mac "$1")"
}
vmx() { local i="$1"; shift; ip netns exec "$VMTAG-vm$i" "$@"; }
swx() { ip netns exec "$VMTAG-sw" "$@"; }

vm_add() {
  local i="$1" vm="$VMTAG-vm$1" port="$VMTAG-p$1"
  ip netns add "$vm" 2>/dev/null; ip -n "$vm" link set lo up
  ip link add "$port" type veth peer name "v$1$VMTAG" || return 1
  ip link set "v$1$VMTAG" netns "$vm"
  ip link set "$port" netns "$VMTAG-sw"
  ip -n "$vm" link set "v$1$VMTAG" name eth0
  ip netns exec "$vm" ethtool -K eth0 tx off >/dev/null 2>&1   # no partial checksums over AF_PACKET
  ip -n "$vm" link set eth0 address "$(vm_mac "$i")"
  ip -n "$vm" addr add "$(vm_ip "$i")/24" dev eth0
  ip -n "$vm" -6 addr add "$(vm_ip6 "$i")/64" dev eth0 nodad
  ip -n "$vm" link set eth0 up
  ip -n "$VMTAG-sw" link set "$port" up
  # shellcheck disable=SC2046  # vm_port_ids: several words
  ovs-vsctl add-port br0 "$port" -- set interface "$port" type="${VM_PORT_TYPE:-system}" $(vm_port_ids "$i" "vm$i")
}

vm_del() {
  ovs-vsctl --if-exists del-port br0 "$VMTAG-p$1"
  ip -n "$VMTAG-sw" link del "$VMTAG-p$1" 2>/dev/null
  ip netns del "$VMTAG-vm$1" 2>/dev/null
}

agent_start() {
  "$AGENT" --socket "$VMRUN/agent.sock" --plugin-socket "$VMRUN/vportfilter.sock" "$@" >>"$VMRUN/agent.log" 2>&1 &
  VM_AGENT_PID=$!
  wait_for '"$VPFCTL" status 2>/dev/null | grep -q "plugin: attached"'
}
agent_kill() { [ -n "$VM_AGENT_PID" ] && kill "-${1:-TERM}" "$VM_AGENT_PID" 2>/dev/null; wait "$VM_AGENT_PID" 2>/dev/null; VM_AGENT_PID=""; }

adapter_of() {
  "$VPFCTL" adapters --format json | python3 -c "import json,sys; print([json.loads(l)['id'] for l in sys.stdin if json.loads(l)['name']=='$VMTAG-p$1'][0])"
}

vswitchd_start() {
  ip netns exec "$VMTAG-sw" "$B/vswitchd/ovs-vswitchd" --disable-system --detach --no-chdir --pidfile --log-file \
    -vconsole:off 2>/dev/null
}

vm_env_start() {
  local n="${1:-2}" i
  VMSUB=$(( $$ % 200 + 10 ))
  VMRUN=$(mktemp -d /tmp/vpf-vm.XXXXXX)
  chmod 755 "$VMRUN"
  trap vm_env_stop EXIT
  trap "exit 143" TERM INT  # the EXIT trap cleans up
  ip netns add "$VMTAG-sw" || return 1
  ip -n "$VMTAG-sw" link set lo up
  ovs_env "$VMRUN"
  ovsdb-tool create "$VMRUN/conf.db" "$B/vswitchd/vswitch.ovsschema" || return 1
  ovsdb-server --detach --no-chdir --pidfile --log-file -vconsole:off --remote=punix:"$VMRUN/db.sock" "$VMRUN/conf.db" 2>/dev/null || return 1
  ovs-vsctl --no-wait init
  ovs-vsctl --no-wait set Open_vSwitch . other_config:packet-hook-plugin="$PLUGIN" \
    other_config:packet-hook-args="control=$VMRUN/vportfilter.sock"
  vswitchd_start || return 1
  ovs-vsctl add-br br0 -- set bridge br0 datapath_type=netdev || return 1
  for i in $(seq "$n"); do vm_add "$i" || return 1; done
  VM_COUNT=$n
  wait_for '[ -S "$VMRUN/vportfilter.sock" ]' || return 1
  export VPF_AGENT_SOCKET="$VMRUN/agent.sock"
  agent_start
}

vm_env_stop() {
  local i
  agent_kill
  [ -n "$VMRUN" ] && ovs_stop "$VMRUN"
  for i in $(seq 9); do ip netns del "$VMTAG-vm$i" 2>/dev/null; done
  ip netns del "$VMTAG-sw" 2>/dev/null
  [ -n "$VMRUN" ] && [ -z "${VM_KEEP:-}" ] && rm -rf "$VMRUN"
  return 0
}
