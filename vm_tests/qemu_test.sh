#!/usr/bin/env bash
# The QEMU tier: two real QEMU VMs (Debian's cloud kernel and a busybox initramfs,
# assembled by vm_tests/qemu/make-guest.sh from Debian packages) on vhost-user ports
# (dpdkvhostuserclient) of OVS-DPDK running without hugepages, with the vportfilter plugin
# and the agent.  VM1 pings VM2; a drop rule stops it; a capture rule through
# vpf::NetFilter sees each echo request and its verdict decides whether it arrives.
# Runs under QEMU's software emulation (TCG) unless VPF_QEMU_ACCEL=kvm.
# usage: qemu_test.sh OVS_TREE vportfilter_ovs.so vpf-agent vpfctl vm_capture_client [GUEST_DIR]
#   GUEST_DIR: where the guest is kept (default: a cache dir named after make-guest.sh's
#   content, so a change to it makes a new guest)
set -u
if [ "$(id -u)" != 0 ] || ! ip netns list >/dev/null 2>&1; then
  echo "SKIP: needs root and network namespaces"; exit 77
fi
export B="$1" PLUGIN="$2" AGENT="$3" VPFCTL="$4"
client="$5"
here="$(cd "$(dirname "$0")" && pwd)"
guest="${6:-${XDG_CACHE_HOME:-$HOME/.cache}/vportfilter/guest-$(sha256sum "$here/qemu/make-guest.sh" | cut -c1-16)}"
for tool in qemu-system-x86_64 busybox; do
  command -v "$tool" >/dev/null || { echo "FAIL: $tool is missing (scripts/install-deps.sh installs it)"; exit 1; }
done
"$here/qemu/make-guest.sh" "$guest" || { echo "FAIL: could not assemble the guest"; exit 1; }
source "$here/lib/vmenv.sh"

VMRUN=$(mktemp -d /tmp/vpf-qemu.XXXXXX)
chmod 755 "$VMRUN"
VMSUB=$(( $$ % 200 + 10 ))
prefix="$VMTAG"
qemu_pids=()
cleanup() {
  agent_kill
  local p
  for p in "${qemu_pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${qemu_pids[@]}"; do wait "$p" 2>/dev/null; done
  ovs_env "$VMRUN"
  # vhost-user ports away first: a switch exiting with them may hang (OVS.md).
  for p in 1 2; do ovs-vsctl --timeout=10 --if-exists del-port br0 "$VMTAG-p$p" >/dev/null 2>&1; done
  ovs_stop "$VMRUN"
  ip netns del "$VMTAG-sw" 2>/dev/null
  rm -rf "/var/run/dpdk/$prefix"
  [ -z "${VM_KEEP:-}" ] && rm -rf "$VMRUN"
  return 0
}
trap cleanup EXIT
trap "exit 143" TERM INT

# Software emulation unless VPF_QEMU_ACCEL=kvm: nested KVM may be there and still fail
# (here /dev/kvm exists, but QEMU aborts setting an MSR with -cpu host and a qemu64 guest
# never prints), while the guest boots under TCG in about 3 s.
accel="${VPF_QEMU_ACCEL:-tcg}"

# gctl I TIMEOUT COMMAND: COMMAND in VM I's shell (its output; its exit status)
gctl() { "$here/qemu/guest_ctl.py" "$VMRUN/vm$1.ctl" "$2" "$3"; }

# vm_boot I: QEMU for VM I; its virtio-net device is the server end of a vhost-user
# socket that the switch's dpdkvhostuserclient port connects to.  Guest memory is a
# shared memfd (vhost-user maps it; no hugepages).  vectors=0: legacy interrupts, since
# QEMU 7.2 under TCG crashes in vhost_net_start setting up MSI-X vector notifiers.
vm_boot() {
  local i="$1"
  qemu-system-x86_64 -accel "$accel" -M pc -cpu max -smp 1 -m 192 -nodefaults -display none -no-reboot \
    -object memory-backend-memfd,id=mem,size=192M,share=on -machine memory-backend=mem \
    -kernel "$guest/vmlinuz" -initrd "$guest/initrd.gz" \
    -append "console=ttyS0 quiet panic=-1 vpf.ip=$(vm_ip "$i")/24" \
    -serial "file:$VMRUN/vm$i.console" \
    -chardev "socket,id=ctl,path=$VMRUN/vm$i.ctl,server=on,wait=off" \
    -device virtio-serial-pci -device virtconsole,chardev=ctl \
    -chardev "socket,id=vhu,path=$VMRUN/vm$i.vhost,server=on,wait=off" \
    -netdev vhost-user,id=net0,chardev=vhu -device "virtio-net-pci,netdev=net0,mac=$(vm_mac "$i"),vectors=0" \
    >"$VMRUN/vm$i.qemu.log" 2>&1 &
  qemu_pids+=($!)
}

check "OVS-DPDK without hugepages, with the plugin" ovs_start_dpdk "$VMRUN" "$VMTAG-sw" "$prefix" 512 \
  other_config:packet-hook-plugin="$PLUGIN" other_config:packet-hook-args="control=$VMRUN/vportfilter.sock" \
  other_config:pmd-maxsleep=1000 other_config:per-port-memory=true
ovs-vsctl --timeout=20 add-br br0 -- set bridge br0 datapath_type=netdev
for i in 1 2; do
  vm_boot "$i"
  wait_for "[ -S '$VMRUN/vm$i.vhost' ]"
  ovs-vsctl --timeout=20 add-port br0 "$VMTAG-p$i" -- set interface "$VMTAG-p$i" type=dpdkvhostuserclient \
    options:vhost-server-path="$VMRUN/vm$i.vhost" $(vm_port_ids "$i" "qvm$i")
done
for i in 1 2; do
  check "VM$i: vhost-user connected" wait_for "ovs-vsctl get interface $VMTAG-p$i status | grep -q 'status=connected'"
done
booted() { for _ in $(seq 120); do grep -q "vpf-guest: ready" "$VMRUN/vm$1.console" && return 0; sleep 0.5; done; return 1; }
for i in 1 2; do
  check "VM$i booted ($accel)" booted "$i"
  check "VM$i: eth0 up with its address" bash -c "grep -q 'vpf-guest: ready $(vm_ip "$i")/24 $(vm_mac "$i")' '$VMRUN/vm$i.console'"
done
[ "$fails" = 0 ] || { cat "$VMRUN"/vm*.console "$VMRUN"/vm*.qemu.log; finish; exit 1; }
export VPF_AGENT_SOCKET="$VMRUN/agent.sock"
check "agent attached" agent_start
a1=$(adapter_of 1) a2=$(adapter_of 2)
check "both vhost-user ports are adapters" [ -n "$a1" -a -n "$a2" ]
ip2=$(vm_ip 2)

# ping_count N: VM1 sends N echo requests to VM2 (1 s apart, N + 2 s at most); prints how
# many came back
ping_count() { gctl 1 $(($1 + 15)) "ping -c $1 -w $(($1 + 2)) $ip2" | sed -n 's/.* \([0-9]*\) packets received.*/\1/p'; }

echo "-- ping through the switch"
n=$(ping_count 3)
check "VM1 pings VM2: 3 of 3 answered" [ "$n" = 3 ]

echo "-- a drop rule stops it"
"$VPFCTL" rule add --id 1 --bpf "icmp[icmptype] == icmp-echo" --action drop --adapter "$a2" --direction incoming
n=$(ping_count 3)
check "with the drop rule: 0 of 3 answered" [ "$n" = 0 ]
dropped=$("$VPFCTL" stats --format json -i "$a2" | python3 -c "import json,sys; print(json.load(sys.stdin)['adapters'][0]['total']['packets_dropped_inbound'])")
check "VM2's adapter dropped the 3 inbound" [ "$dropped" = 3 ]
"$VPFCTL" rule del --kind filter --id 1
n=$(ping_count 2)
check "rule deleted: 2 of 2 answered" [ "$n" = 2 ]

echo "-- a notify rule copies it (vpfctl capture, read by tshark)"
"$VPFCTL" rule add --id 2 --bpf "icmp[icmptype] == icmp-echo" --action notify --adapter "$a1" --direction outgoing
"$VPFCTL" capture -w "$VMRUN/ping.pcap" -c 3 --duration 30 2>"$VMRUN/capture.err" &
cap=$!
check "capture listening" wait_for 'grep -q listening "$VMRUN/capture.err"'
n=$(ping_count 3)
wait "$cap"
check "notify: 3 of 3 still answered" [ "$n" = 3 ]
check "the pcap holds VM1's 3 echo requests" [ "$(tshark -r "$VMRUN/ping.pcap" -Y "icmp.type == 8 && ip.src == $(vm_ip 1) && ip.dst == $ip2" 2>/dev/null | wc -l)" = 3 ]
"$VPFCTL" rule del --kind filter --id 2

echo "-- a capture rule sees it (vpf::NetFilter)"
G="{0000CAFE-0000-0000-0000-00000000000A}"
"$VPFCTL" install --guid "$G" --altitude 10
# verdict V EXPECTED: a client giving every echo request verdict V while VM1 pings 3 times;
# EXPECTED answers come back, and the client saw the 3 requests (98 bytes each)
verdict() {
  "$client" "$G" "$a2" 20 capture "icmp[icmptype] == icmp-echo" "$1" >"$VMRUN/$1.out" 2>&1 &
  local cp=$!
  check "capture client ready" wait_for "grep -qx ready '$VMRUN/$1.out'"
  n=$(ping_count 3)
  kill "$cp" 2>/dev/null; wait "$cp" 2>/dev/null
  check "verdict $1: $2 of 3 answered" [ "$n" = "$2" ]
  check "the application saw the 3 echo requests (98 bytes each)" [ "$(grep -c "^event $1 size 98$" "$VMRUN/$1.out")" = 3 ]
}
verdict send 3
verdict drop 0
"$VPFCTL" uninstall --guid "$G" >/dev/null
n=$(ping_count 2)
check "client gone, instance uninstalled: 2 of 2 answered" [ "$n" = 2 ]
check "switch alive" ovs-appctl -t ovs-vswitchd version
check "no crash in the switch's log" bash -c "! grep -qE 'EMER|assertion|Segmentation' '$VMRUN/ovs-vswitchd.log'"
[ "$fails" = 0 ] || { echo "-- VM1 console:"; cat "$VMRUN/vm1.console"; echo "-- agent log:"; tail -20 "$VMRUN/agent.log"; }
finish
