#!/usr/bin/env bash
# The demo itself (scripts/demo.sh installs and builds first; the demo_run test runs this
# against the build): the switch, two namespace VMs, the agent, provisioning, traffic,
# the report.
source "$(dirname "$0")/../lib.sh"
export B="$VPF_BUILD/ovs" PLUGIN="$VPF_BUILD/ovs_plugin/vportfilter_ovs.so"
export AGENT="$VPF_BUILD/agent/src/agent/vpf-agent" VPFCTL="$VPF_BUILD/agent/src/vpfctl/vpfctl"
out="$VPF_BUILD/demo"
mkdir -p "$out"
set +eu  # the helpers below test and report; they do not stop the demo
source "$VPF_ROOT/vm_tests/lib/vmenv.sh"
VMTAG=vpfdemo
vm_env_start 2 || { echo "demo: could not start the switch and the VMs" >&2; exit 1; }
ip1=$(vm_ip 1) ip2=$(vm_ip 2)
a1=$(adapter_of 1) a2=$(adapter_of 2)

vpf_log "the VMs: vm1 $ip1 (adapter $a1) and vm2 $ip2 (adapter $a2) on a private Open vSwitch"
"$VPFCTL" adapters

vpf_log "provisioning: scripts/demo/provision.sh $a1 $a2 $ip2"
bash "$VPF_ROOT/scripts/demo/provision.sh" "$a1" "$a2" "$ip2" || { echo "demo: provisioning failed" >&2; exit 1; }
"$VPFCTL" rule list

vpf_log "recording what the rules report to $out/demo.pcapng (vpfctl capture)"
"$VPFCTL" capture --pcapng -w "$out/demo.pcapng" --duration 30 2>"$out/capture.log" &
cap=$!
wait_for 'grep -q listening "$out/capture.log"'

report() { printf '  %-52s %s\n' "$1" "$2"; }
vpf_log "traffic, and what the receiving VM got"
vmx 2 timeout 20 nc -l -k -p 7000 >/dev/null 2>&1 &
vmx 2 timeout 20 nc -l -k -p 23 >/dev/null 2>&1 &
ip netns exec "$VMTAG-vm2" timeout 20 tcpdump --immediate-mode -U -n -i eth0 -w "$out/vm2-received.pcap" udp 2>/dev/null &
tcpd=$!
sleep 0.5
n=$(vmx 1 ping -c 5 -i 0.2 -W 1 "$ip2" 2>/dev/null | grep -c "bytes from")
report "ping vm1 -> vm2 (5)" "$n replies"
head -c 300000 /dev/urandom >"$VMRUN/blob"
vmx 1 timeout 5 nc -N "$ip2" 7000 <"$VMRUN/blob" && r="transferred (300 kB)" || r="FAILED"
report "TCP vm1 -> vm2:7000" "$r"
vmx 1 timeout 3 nc -z -w 2 "$ip2" 23 && r="connected (unexpected)" || r="blocked: the SYNs were dropped"
report "telnet vm1 -> vm2:23" "$r"
# Datagrams: sendto() sends each one (nc -u -w 0 may quit before it has, on a busy host).
# sendudp HOST PORT SIZE COUNT
sendudp() {
  vmx 1 python3 -c "import socket, sys; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(int(sys.argv[4])): s.sendto(b'x' * int(sys.argv[3]), (sys.argv[1], int(sys.argv[2])))" "$@"
}
sendudp "$ip2" 9999 6 3
sendudp "$ip2" 9998 6 3
sendudp "$ip2" 9998 1400 1
sendudp "$ip2" 9998 100 1
# A resolver that is not vm2 (a neighbour entry, so that vm1 sends without asking ARP).
vmx 1 ip neigh replace "10.$VMNET.$VMSUB.77" lladdr 52:54:00:00:00:77 dev eth0
sendudp "$ip2" 53 2 2
sendudp "10.$VMNET.$VMSUB.77" 53 2 2
sleep 1
kill "$tcpd" 2>/dev/null; wait "$tcpd" 2>/dev/null
got() { tcpdump -nr "$out/vm2-received.pcap" "$1" 2>/dev/null | wc -l; }
report "UDP vm1 -> vm2:9999 (3 datagrams)" "$(got 'udp dst port 9999') received (rule 11 drops them)"
report "UDP vm1 -> vm2:9998 (3 small, 1 of 1400 B, 1 of 100 B)" "$(got 'udp dst port 9998') received (rule 12 drops the large one)"
report "DNS vm1 -> vm2:53 (2)" "$(got 'udp dst port 53') received (passthrough 2 lets DNS to vm2 through)"
report "DNS vm1 -> elsewhere:53 (2)" "$("$VPFCTL" stats --format json | python3 -c "import json,sys; print(sum(r['hits'] for r in json.load(sys.stdin)['rules'] if r['kind']=='connection' and r['id']==30))") dropped by the NF_RULE-style rule 30"

vpf_log "counters (vpfctl stats)"
"$VPFCTL" stats
kill "$cap" 2>/dev/null; wait "$cap" 2>/dev/null
vpf_log "what the rules reported: $out/demo.pcapng ($(tcpdump -nr "$out/demo.pcapng" 2>/dev/null | wc -l) packets)"
tcpdump -nr "$out/demo.pcapng" 2>/dev/null | head -8
echo "  ... open it with: tshark -r $out/demo.pcapng   or   wireshark $out/demo.pcapng"
vpf_log "the switch, the VMs and the agent are stopped and removed; the demo's files stay in $out"
