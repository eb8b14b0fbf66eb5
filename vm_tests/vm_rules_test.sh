#!/usr/bin/env bash
# End to end with namespace VMs (vm_tests/lib/vmenv.sh): rules applied with vpfctl act on
# real traffic through the patched ovs-vswitchd; every check looks at what the receiving
# VM got (tcpdump inside its namespace, or the application's answer) and at counters.
# usage: vm_rules_test.sh OVS_TREE vportfilter_ovs.so vpf-agent vpfctl vm_capture_client
set -u
if [ "$(id -u)" != 0 ] || ! ip netns list >/dev/null 2>&1; then
  echo "SKIP: needs root and network namespaces"; exit 77
fi
export B="$1" PLUGIN="$2" AGENT="$3" VPFCTL="$4"
client="$5"
source "$(dirname "$0")/lib/vmenv.sh"
vm_env_start 3 || { echo "FAIL: could not start the switch and the VMs"; exit 1; }
ip1=$(vm_ip 1) ip2=$(vm_ip 2) ip3=$(vm_ip 3) ip6_2=$(vm_ip6 2)
a1=$(adapter_of 1) a2=$(adapter_of 2) a3=$(adapter_of 3)
ctl() { "$VPFCTL" "$@"; }
rules_reset() { ctl rule del --all >/dev/null; }
# hits ID: the hits of filter rule ID, "-" when it is not listed
hits() { ctl stats --format json | python3 -c "import json,sys; h=[r['hits'] for r in json.load(sys.stdin)['rules'] if r['kind']=='filter' and r['id']==$1]; print(h[0] if h else '-')"; }
# udp_to I PORT [SIZE] [COUNT]: VM1 sends COUNT datagrams of SIZE payload bytes to VM I.
udp_to() {
  vmx 1 python3 -c "import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range($4): s.sendto(b'x'*$3, ('$(vm_ip "$1")', $2))" 2>/dev/null
}
udp6_to() {  # udp6_to PORT COUNT: to VM2's IPv6 address
  vmx 1 python3 -c "import socket; s=socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
for _ in range($2): s.sendto(b'y'*50, ('$ip6_2', $1))" 2>/dev/null
}
# listen I NAME FILTER: tcpdump in VM I (everything into $VMRUN/NAME.pcap); got NAME
# counts the frames that match FILTER (applied when reading, so that the kernel's VLAN
# handling on the capture side does not matter).
listen() {
  ip netns exec "$VMTAG-vm$1" timeout 30 tcpdump --immediate-mode -U -n -i eth0 -w "$VMRUN/$2.pcap" >/dev/null 2>&1 &
  echo $! >"$VMRUN/$2.pid"
  echo "$3" >"$VMRUN/$2.filter"
  wait_for "[ -s '$VMRUN/$2.pcap' ]"
  sleep 0.2
}
got() {
  sleep 0.5
  kill "$(cat "$VMRUN/$1.pid")" 2>/dev/null; wait "$(cat "$VMRUN/$1.pid")" 2>/dev/null
  tcpdump -enr "$VMRUN/$1.pcap" "$(cat "$VMRUN/$1.filter")" 2>/dev/null >"$VMRUN/$1.txt"
  wc -l <"$VMRUN/$1.txt"
}
# received NAME N: VM got exactly N frames (shows them when not).
received() {
  local n
  n=$(got "$1")
  [ "$n" = "$2" ] && return 0
  echo "  $1: $n frames, not $2:"; sed 's/^/    /' "$VMRUN/$1.txt"
  [ -n "${VM_DEBUG:-}" ] && { echo "  all frames:"; tcpdump -enr "$VMRUN/$1.pcap" 2>&1 | head -5; ls -la "$VMRUN/$1.pcap"; ovs-appctl vportfilter/show | grep -B1 -A2 "^adapter"; ovs-appctl vportfilter/show | grep -A12 "rule hits"; }
  return 1
}
# Let ARP and neighbour discovery settle so that later counts are of data only.
vmx 1 ping -c 1 -W 2 "$ip2" >/dev/null; vmx 1 ping -c 1 -W 2 "$ip3" >/dev/null
vmx 1 ping -6 -c 1 -W 2 "$ip6_2" >/dev/null

# -- VLAN-tagged traffic: 802.1Q frames written raw by VM1 (AF_PACKET), a rule on the tag
echo "-- VLAN-tagged traffic"
rules_reset
ctl rule add --id 8 --bpf "vlan 42 and udp dst port 4040" --action drop
listen 2 vlan "vlan 42"
vmx 1 python3 -c "
import socket, struct
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); s.bind(('eth0', 0))
dst = bytes.fromhex('525400${VMNET}0002'); src = bytes.fromhex('525400${VMNET}0001')
for port in (4040, 4040, 4041):
    udp = struct.pack('!HHHH', 5000, port, 9, 0) + b'v'
    ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, bytes([192,168,42,1]), bytes([192,168,42,2]))
    s.send(dst + src + struct.pack('!HH', 0x8100, 42) + b'\x08\x00' + ip + udp)"
check "VLAN 42: port 4040 dropped, 4041 delivered" received vlan 1

# -- send and insert, seen by tcpdump inside the VMs
echo "-- send and insert, seen by tcpdump inside the VMs"
rules_reset
mac1=$(vm_mac 1) mac2=$(vm_mac 2)
frame=$(python3 -c "
import struct
def csum(b):
    s=sum(struct.unpack('!%dH'%(len(b)//2), b)); s=(s>>16)+(s&0xffff); s+=s>>16; return ~s&0xffff
src=bytes(map(int,'$ip1'.split('.'))); dst=bytes(map(int,'$ip2'.split('.')))
udp=struct.pack('!HHHH',5555,4060,12,0)+b'inje'
ip=struct.pack('!BBHHHBBH4s4s',0x45,0,20+len(udp),0,0,64,17,0,src,dst)
ip=ip[:10]+struct.pack('!H',csum(ip))+ip[12:]
eth=bytes.fromhex('$mac2'.replace(':',''))+bytes.fromhex('$mac1'.replace(':',''))+b'\x08\x00'
print((eth+ip+udp).hex())")
listen 2 inject "udp dst port 4060"
ctl send -i "$a1" --hex "$frame" --times 3       # as if VM1 sent it: the switch takes it to VM2
ctl insert -i "$a2" --hex "$frame" --times 2     # straight to VM2
check "send x3 and insert x2 seen by tcpdump in VM2" received inject 5
# the same through vpf::NetFilter: the send buffer holds 2 until it is flushed
listen 2 nfinject "udp dst port 4060"
GI="{0000CAFE-0000-0000-0000-000000000009}"
ctl install --guid "$GI" --altitude 5
"$client" "$GI" "$a1" 1 inject "$frame" "$a2" >"$VMRUN/inject.out" 2>&1 &
ip_=$!
wait_for 'grep -qx buffered "$VMRUN/inject.out"'
sleep 0.5
check "NetFilter send_packet(buffer_only): nothing sent before the flush" \
  [ "$(tcpdump -r "$VMRUN/nfinject.pcap" "udp dst port 4060" 2>/dev/null | wc -l)" = 0 ]
wait "$ip_"
check "NetFilter: flush_send_buffer (2), send_packet num_times 3, insert_incoming_packet (1) all reached VM2" \
  received nfinject 6
ctl uninstall --guid "$GI" >/dev/null

# -- drop by BPF
echo "-- drop by BPF"
rules_reset
ctl rule add --id 1 --bpf "udp dst port 4001" --action drop
listen 2 bpf "udp"
udp_to 2 4001 20 5; udp_to 2 4002 20 5
check "BPF: port 4001 dropped, 4002 delivered" received bpf 5
check "BPF: the rule counted 5" [ "$(hits 1)" = 5 ]

# -- drop by 5-tuple, IPv4 and IPv6
echo "-- drop by 5-tuple, IPv4 and IPv6"
rules_reset
ctl rule add --id 2 --protocol udp --remote "$ip2" --remote-port 4003 --direction outgoing --action drop
ctl rule add --id 3 --protocol udp --remote "$(vm_ip6 2)/128" --remote-port 4004 --direction outgoing --action drop
listen 2 tuple "udp"
udp_to 2 4003 20 4; udp_to 2 4005 20 2; udp6_to 4004 3; udp6_to 4006 2
check "5-tuple v4 and v6: only the other ports delivered" received tuple 4

# -- size range
echo "-- size range"
rules_reset
ctl rule add --id 4 --min-size 600 --max-size 900 --protocol udp --action drop
listen 2 size "udp"
udp_to 2 4010 100 3; udp_to 2 4010 700 3; udp_to 2 4010 1000 3
check "size 600..900 dropped, 142 and 1042-byte frames delivered" received size 6

# -- direction and adapter
echo "-- direction and adapter"
rules_reset
ctl rule add --id 5 --adapter "$a2" --direction incoming --protocol udp --action drop  # to VM2 only
listen 2 dir2 "udp"; listen 3 dir3 "udp"
udp_to 2 4020 20 3; udp_to 3 4020 20 3
check "adapter-specific incoming drop: VM2 got nothing" received dir2 0
check "and VM3 got all" received dir3 3
rules_reset
ctl rule add --id 6 --adapter -1 --direction outgoing --protocol udp --action drop   # from every VM
listen 3 all3 "udp"
udp_to 3 4021 20 3
vmx 2 python3 -c "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); [s.sendto(b'z', ('$ip3', 4021)) for _ in range(2)]"
check "adapter -1 outgoing: nothing from any VM" received all3 0

# -- passthrough beats a drop rule
echo "-- passthrough beats a drop rule"
rules_reset
ctl rule add --id 7 --protocol udp --action drop
ctl rule add --kind passthrough --id 1 --bpf "udp dst port 4030"
listen 2 pass "udp"
udp_to 2 4030 20 3; udp_to 2 4031 20 3
check "passthrough beats the drop rule" received pass 3

# -- notify copies counted, statistics equal the traffic
echo "-- notify copies counted, statistics equal the traffic"
rules_reset
ctl rule add --id 9 --bpf "udp dst port 4050" --action notify --direction outgoing --adapter "$a1"
ctl notify -c 10 --duration 20 --format json >"$VMRUN/notify.jsonl" 2>"$VMRUN/notify.err" &
np=$!
wait_for 'grep -q listening "$VMRUN/notify.err"'
sent() { ctl stats --format json -i "$a1" | python3 -c "import json,sys; a=json.load(sys.stdin)['adapters'][0]; print(a['$1']['packets_sent'])"; }
before=$(sent filter) before_total=$(sent total)
# 20 ms apart, so that each datagram is a receive batch of its own (the datapath stamps
# a batch once).
vmx 1 python3 -c "import socket,time; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(10): s.sendto(b'n'*20, ('$ip2', 4050)); time.sleep(0.02)"
wait "$np"
after=$(sent filter) after_total=$(sent total)
check "10 notify events for 10 datagrams" [ "$(wc -l <"$VMRUN/notify.jsonl")" = 10 ]
check "notify timestamps (ns) increase" python3 -c "
import json,sys; t=[json.loads(l)['time_ns'] for l in open('$VMRUN/notify.jsonl')]; ok=all(a < b for a, b in zip(t, t[1:])); print(t) if not ok else None; sys.exit(not ok)"
check "statistics: filter-specific count of VM1's frames is exactly 10" [ $((after - before)) = 10 ]
check "notify copies whole (62 bytes) while VM1's snaplen is 0" python3 -c "
import json,sys; e=[json.loads(l) for l in open('$VMRUN/notify.jsonl')]; sys.exit(not all(x['packet_size'] == 62 and x['data_size'] == 62 for x in e))"
# snaplen 50: the copies are cut, the frames are not
ctl adapters --set "$a1" --snaplen 50
listen 2 snap "udp dst port 4050"
ctl notify -c 3 --duration 20 --format json >"$VMRUN/snap.jsonl" 2>"$VMRUN/snap.err" &
np=$!
wait_for 'grep -q listening "$VMRUN/snap.err"'
udp_to 2 4050 20 3
wait "$np"
check "snaplen 50: 3 copies of 50 of the 62 bytes" python3 -c "
import json,sys; e=[json.loads(l) for l in open('$VMRUN/snap.jsonl')]; sys.exit(not (len(e) == 3 and all(x['packet_size'] == 62 and x['data_size'] == 50 for x in e)))"
got snap >/dev/null
check "and VM2 got the 3 frames whole" bash -c "[ \"\$(tcpdump -r '$VMRUN/snap.pcap' 'udp dst port 4050 and greater 62' 2>/dev/null | wc -l)\" = 3 ]"
ctl adapters --set "$a1" --snaplen 0
d=$((after_total - before_total))
# The total also counts what the VM's kernel sends by itself meanwhile (ARP, IPv6
# neighbour discovery): a few frames at most.
check "statistics: the total counted them too (plus at most a few background frames)" [ "$d" -ge 10 -a "$d" -le 16 ]

# -- capture through vpf::NetFilter: SEND, DROP, SEND_MODIFIED (payload, port, larger),
#    seen by VM2's kernel, which checks the IP and UDP checksums
rules_reset
G="{0000CAFE-0000-0000-0000-000000000001}"
ctl install --guid "$G" --altitude 10
"$client" "$G" "$a2" 8 >"$VMRUN/client.out" 2>&1 &
cp=$!
wait_for 'grep -qx ready "$VMRUN/client.out"'
vmx 2 timeout 8 python3 -c "
import select, socket, time
socks = []
for port in (4100, 4101):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('0.0.0.0', port)); socks.append(s)
end = time.time() + 4
while time.time() < end:
    for s in select.select(socks, [], [], 0.2)[0]:
        data = s.recv(65535)
        print(s.getsockname()[1], len(data), data[:6].decode())
" >"$VMRUN/recv.txt" &
rp=$!
sleep 0.5
vmx 1 python3 -c "
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for p in (b'ssssss', b'dddddd', b'mmmmmm', b'pppppp', b'bbbbbb'):
    s.sendto(p, ('$ip2', 4100)); time.sleep(0.05)"
wait "$rp"
kill "$cp" 2>/dev/null; wait "$cp" 2>/dev/null
check "SEND: delivered as it was" grep -qx "4100 6 ssssss" "$VMRUN/recv.txt"
check "DROP: not delivered" bash -c "! grep -q dddddd '$VMRUN/recv.txt'"
check "SEND_MODIFIED payload: delivered rewritten (checksum right)" grep -qx "4100 6 MMMMMM" "$VMRUN/recv.txt"
check "SEND_MODIFIED port: delivered to port 4101" grep -qx "4101 6 pppppp" "$VMRUN/recv.txt"
check "SEND_MODIFIED larger: 106 bytes delivered" grep -qx "4100 106 bbbbbb" "$VMRUN/recv.txt"
check "the larger one asked for a bigger buffer first" grep -q "^refire" "$VMRUN/client.out"
check "exactly four datagrams delivered" [ "$(wc -l <"$VMRUN/recv.txt")" = 4 ]
ctl uninstall --guid "$G" >/dev/null

# -- statistics mode through vpf::NetFilter: the capture rule only counts (every datagram
#    is delivered, no packet event), the drop rule drops; the filter-specific figures are
#    the traffic the rules matched, the total all of it
echo "-- statistics mode"
rules_reset
ctl install --guid "$G" --altitude 10
"$client" "$G" "$a2" 8 stat >"$VMRUN/stat.out" 2>&1 &
cp=$!
wait_for 'grep -q "^stat filter" "$VMRUN/stat.out"'
# stat_last KIND FIELD: the last on_statistics figure (2 received, 3 sent, 4 dropped in)
stat_last() { grep "^stat $1 " "$VMRUN/stat.out" | tail -1 | cut -d' ' -f"$2"; }
f0=$(stat_last filter 3) t0=$(stat_last total 3) d0=$(stat_last filter 5) td0=$(stat_last total 5)
listen 2 statm "udp dst portrange 4100-4102"
udp_to 2 4100 30 10; udp_to 2 4101 30 3; udp_to 2 4102 30 4
sleep 2.5  # two statistics events at least
f1=$(stat_last filter 3) t1=$(stat_last total 3) d1=$(stat_last filter 5) td1=$(stat_last total 5)
kill "$cp" 2>/dev/null; wait "$cp" 2>/dev/null
check "statistics mode: VM2 got the 13 datagrams not dropped" received statm 13
check "no packet event in statistics mode" bash -c "! grep -q '^event' '$VMRUN/stat.out'"
check "filter-specific: the 14 frames the rules matched (10 counted, 4 dropped)" [ $((f1 - f0)) = 14 ]
check "filter-specific dropped inbound: 4" [ $((d1 - d0)) = 4 ]
check "total dropped inbound: 4" [ $((td1 - td0)) = 4 ]
# the total also counts what the VM receives by itself meanwhile (ARP, neighbour discovery)
check "total received: the 17 frames (plus at most a few background frames)" [ $((t1 - t0)) -ge 17 -a $((t1 - t0)) -le 23 ]
ctl uninstall --guid "$G" >/dev/null

# -- a count rule (vpfctl): every frame delivered, each one a hit
rules_reset
ctl rule add --id 6 --bpf "udp dst port 4060" --action count --direction incoming
listen 2 count "udp dst port 4060"
udp_to 2 4060 30 5
check "count: VM2 got all 5" received count 5
check "count: the rule counted 5" [ "$(hits 6)" = 5 ]

# -- two instances: the higher altitude decides first; when it stops, the lower one does
rules_reset
GH="{0000CAFE-0000-0000-0000-000000000002}" GL="{0000CAFE-0000-0000-0000-000000000003}"
ctl install --guid "$GH" --altitude 200
ctl install --guid "$GL" --altitude 100
"$client" "$GL" "$a2" 12 >"$VMRUN/lo.out" 2>&1 &
lo=$!
"$client" "$GH" "$a2" 4 >"$VMRUN/hi.out" 2>&1 &
hi=$!
wait_for 'grep -qx ready "$VMRUN/lo.out" && grep -qx ready "$VMRUN/hi.out"'
listen 2 alt "udp dst port 4100"
send_s() { vmx 1 python3 -c "import socket,time; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(3): s.sendto(b'ssssss', ('$ip2', 4100)); time.sleep(0.05)"; }
send_s
sleep 0.5
check "the higher instance got the 3 captures" [ "$(grep -c '^event s' "$VMRUN/hi.out")" = 3 ]
check "the lower one none" [ "$(grep -c '^event s' "$VMRUN/lo.out")" = 0 ]
wait "$hi"  # its filter stops: its rules leave the datapath
send_s
sleep 0.5
check "then the lower instance got the next 3" [ "$(grep -c '^event s' "$VMRUN/lo.out")" = 3 ]
check "VM2 received all 6 (SEND)" received alt 6
kill "$lo" 2>/dev/null; wait "$lo" 2>/dev/null
ctl uninstall --guid "$GH" >/dev/null; ctl uninstall --guid "$GL" >/dev/null

# -- adapters come and go
echo "-- adapters come and go"
vm_add 4
check "a new VM port becomes an adapter" wait_for '"$VPFCTL" adapters | grep -q "$VMTAG-p4"'
id4=$(adapter_of 4)
vm_del 4
check "and leaves" wait_for '! "$VPFCTL" adapters | grep -q "$VMTAG-p4"'
vm_add 4
check "its id comes back with it" wait_for '[ "$(adapter_of 4)" = "$id4" ]'

# -- rules changed during transfers: no loss on the flows the change does not touch
echo "-- rules changed during transfers: no loss on the flows the change does not touch"
rules_reset
churn() {  # 40 rules on other flows added one by one, then all removed
  for i in $(seq 40); do ctl rule add --id $((100 + i)) --protocol udp --remote-port $((6000 + i)) --action drop >/dev/null; done
  ctl rule del --all >/dev/null
}
vmx 2 iperf3 -s -1 -p 5201 >/dev/null 2>&1 &
isrv=$!
sleep 0.5
churn &
chg=$!
vmx 1 iperf3 -c "$ip2" -p 5201 -u -b 8M -l 1000 -t 4 -J >"$VMRUN/iperf.json" 2>&1
wait "$chg"; wait "$isrv" 2>/dev/null
check "iperf3 UDP (8 Mbit/s, 4 s) while 40 rules come and go: no datagram lost" python3 -c "
import json,sys; d=json.load(open('$VMRUN/iperf.json')); s=d['end']['sum']; print('  iperf3 UDP: %d datagrams, %d lost' % (s['packets'], s['lost_packets'])); sys.exit(s['lost_packets'] != 0 or s['packets'] < 3000)"
vmx 2 timeout 30 nc -l -p 5001 >"$VMRUN/recv" 2>/dev/null &
srv=$!
sleep 0.3
head -c 20000000 /dev/urandom >"$VMRUN/blob"
churn &
chg=$!
vmx 1 timeout 30 nc -N "$ip2" 5001 <"$VMRUN/blob"
wait "$chg"; wait "$srv"
check "20 MB over TCP intact while 40 rules come and go" cmp -s "$VMRUN/blob" "$VMRUN/recv"

# -- the agent SIGKILLed during traffic: forwarding goes on, held packets are released,
#    capture rules follow the configured policy, rules stay; a restart resyncs
echo "-- the agent SIGKILLed during traffic: forwarding goes on, rules stay; a restart resyncs"
ctl rule add --id 11 --protocol udp --local-port 4070 --direction incoming --adapter "$a2" --action drop
ctl install --guid "$G" --altitude 10
"$client" "$G" "$a2" 60 capture "udp dst port 4080" hold >"$VMRUN/hold.out" 2>&1 &
hp=$!
wait_for 'grep -qx ready "$VMRUN/hold.out"'
listen 2 held "udp dst port 4080"
udp_to 2 4080 20 3
check "3 datagrams held by a hung application" wait_for '[ "$(grep -c "^event hold" "$VMRUN/hold.out")" = 3 ]'
sleep 0.5
check "and not delivered while held" [ "$(tcpdump -r "$VMRUN/held.pcap" "udp dst port 4080" 2>/dev/null | wc -l)" = 0 ]
vmx 1 ping -q -i 0.05 -c 60 "$ip2" >"$VMRUN/ping.txt" 2>&1 &
pp=$!
sleep 0.5
agent_kill KILL
check "agent killed: the held datagrams released (sent: DenyExpiredRequests is off)" received held 3
listen 2 noagent "udp"
udp_to 2 4070 20 3; udp_to 2 4071 20 3; udp_to 2 4080 20 2
check "without the agent: the drop rule still drops, the rest (and capture, fail-open) delivered" received noagent 5
swx ovs-appctl vportfilter/policy fail-closed >/dev/null
listen 2 closed "udp"
udp_to 2 4080 20 2; udp_to 2 4071 20 3
check "policy fail-closed: the capture rule's datagrams dropped, the rest delivered" received closed 3
swx ovs-appctl vportfilter/policy fail-open >/dev/null
wait "$pp"
check "pings during the agent's death all answered" grep -q " 0% packet loss" "$VMRUN/ping.txt"
kill -9 "$hp" 2>/dev/null; wait "$hp" 2>/dev/null
agent_start
check "agent back and reattached" "$VPFCTL" status
ctl uninstall --guid "$G" >/dev/null
check "rules unchanged" [ "$("$VPFCTL" rule list --format json | wc -l)" = 1 ]

# -- ovs-vswitchd restarted: the agent reattaches and the rules come back
echo "-- ovs-vswitchd restarted: the agent reattaches and the rules come back"
ovs-appctl -t ovs-vswitchd exit >/dev/null 2>&1
wait_for '! [ -S "$VMRUN/vportfilter.sock" ]'
vswitchd_start
check "plugin reattached" wait_for '"$VPFCTL" status | grep -q "plugin: attached"'
check "rule back in the datapath" wait_for 'ovs-appctl vportfilter/show | grep -q "^rules: 1 "'
vmx 1 ping -c 1 -W 2 "$ip2" >/dev/null
listen 2 restarted "udp"
udp_to 2 4070 20 3; udp_to 2 4072 20 2
check "after the switch restart: dropped and delivered as before" received restarted 2

# -- a non-root controller is refused
echo "-- a non-root controller is refused"
for_nobody "$VMRUN/nobody-bin" "$VPFCTL"
check "non-root vpfctl refused" bash -c "as_nobody '$NOBODY_DIR/$(basename "$VPFCTL")' status 2>&1 | grep -q 'not root'"

check "switch alive" ovs-appctl -t ovs-vswitchd version
finish
