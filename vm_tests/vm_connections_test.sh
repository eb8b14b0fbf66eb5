#!/usr/bin/env bash
# Connection rules on real traffic between namespace VMs (vm_tests/lib/vmenv.sh;
# docs/connections.md): TCP over IPv4 and IPv6 and UDP between VM1 and a server in VM2,
# through the patched ovs-vswitchd.  A filter rule drops what VM1 receives from the
# server's port; a connection rule allowing VM1's connections to it lets their replies in
# (reflexive allow), and without it the same connection fails.  The connection's counters
# equal what the VMs sent (tcpdump in VM2), a suspended connection's packets raise no
# notify events, a connection rule removed while a connection is open stops its replies,
# and pended connect requests (a vpf::NetFilter application, vm_capture_client) completed
# allow, block, or left pending and completed by hand with vpfctl conn complete.
# usage: vm_connections_test.sh OVS_TREE vportfilter_ovs.so vpf-agent vpfctl vm_capture_client
set -u
if [ "$(id -u)" != 0 ] || ! ip netns list >/dev/null 2>&1; then
  echo "SKIP: needs root and network namespaces"; exit 77
fi
export B="$1" PLUGIN="$2" AGENT="$3" VPFCTL="$4" client="$5"
source "$(dirname "$0")/lib/vmenv.sh"
vm_env_start 2 || { echo "FAIL: could not start the switch and the VMs"; exit 1; }
ip2=$(vm_ip 2) ip6_2=$(vm_ip6 2)
a1=$(adapter_of 1)
ctl() { "$VPFCTL" "$@"; }
vmx 1 ping -c 1 -W 2 "$ip2" >/dev/null
vmx 1 ping -6 -c 1 -W 2 "$ip6_2" >/dev/null

# An upper-casing TCP server and a UDP echo server in VM2, on both address families; they
# live as long as the test (killed with the VMs' namespaces).
for fam in 4 6 8090; do
  port=8080; [ $fam = 8090 ] && { port=8090; fam=4; }
  vmx 2 python3 -c "
import socket
s = socket.socket(socket.AF_INET$([ $fam = 6 ] && echo 6))
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('$([ $fam = 6 ] && echo "$ip6_2" || echo "$ip2")', $port)); s.listen(8)
while True:
    c, _ = s.accept(); c.settimeout(3)
    try:
        d = c.recv(1000)
        c.sendall(d.upper())
    except OSError:
        pass
    c.close()" >/dev/null 2>&1 &
done
vmx 2 python3 -c "
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('$ip2', 5353))
while True:
    d, a = s.recvfrom(2000); s.sendto(d.upper(), a)" >/dev/null 2>&1 &
sleep 0.5
# ask HOST PORT TEXT [TIMEOUT]: VM1's TCP client; prints the server's answer (empty on failure).
ask() {
  vmx 1 python3 -c "
import socket
try:
    s = socket.create_connection(('$1', $2), timeout=${4:-2}); s.sendall(b'$3'); print(s.recv(100).decode())
except OSError:
    pass" 2>/dev/null
}
# udp_ask PORT TEXT [SRCPORT]: VM1's UDP client; prints the answer (empty if none in 2 s).
udp_ask() {
  vmx 1 python3 -c "
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2); s.bind(('0.0.0.0', ${3:-0}))
s.sendto(b'$2', ('$ip2', $1))
try:
    print(s.recvfrom(100)[0].decode())
except OSError:
    pass" 2>/dev/null
}
check "no rules: the server answers" [ "$(ask "$ip2" 8080 hello)" = HELLO ]

echo "-- reflexive allow, TCP over IPv4 and IPv6, and UDP"
# What VM1 receives from the servers' ports is dropped...
ctl rule add --id 1 --adapter "$a1" --direction incoming --protocol tcp --remote-port 8080 --action drop >/dev/null
ctl rule add --id 2 --adapter "$a1" --direction incoming --protocol udp --remote-port 5353 --action drop >/dev/null
check "the filter rule drops the server's replies: no answer" [ -z "$(ask "$ip2" 8080 hello)" ]
check "nor over IPv6" [ -z "$(ask "$ip6_2" 8080 hello)" ]
check "nor over UDP" [ -z "$(udp_ask 5353 dns)" ]
# ...but VM1's own connections to them are allowed, replies included.
ctl rule add --kind connection --id 10 --protocol tcp --remote-port 8080 --direction outgoing --flags allow >/dev/null
ctl rule add --kind connection --id 11 --protocol udp --remote-port 5353 --direction outgoing --flags allow >/dev/null
check "reflexive allow: the TCP connection works both ways" [ "$(ask "$ip2" 8080 hello)" = HELLO ]
check "over IPv6 too" [ "$(ask "$ip6_2" 8080 hello6)" = HELLO6 ]
check "and the UDP flow's answer comes in" [ "$(udp_ask 5353 dns)" = DNS ]
check "the connections are listed, opened by the VM" bash -c "ctl() { '$VPFCTL' \"\$@\"; }; ctl conn list --format json -i $a1 | python3 -c \"
import json,sys
c = [json.loads(l) for l in sys.stdin]
assert any(x['protocol'] == 'tcp' and x['ip_version'] == 6 and x['remote_port'] == 8080 for x in c), c
assert any(x['protocol'] == 'udp' and x['remote_port'] == 5353 and x['state'] == 'replied' for x in c), c
assert all(x['direction'] == 'outgoing' for x in c), c
\""

echo "-- a connection's counters equal what the VMs sent"
ip netns exec "$VMTAG-vm2" timeout 20 tcpdump --immediate-mode -U -n -i eth0 -w "$VMRUN/count.pcap" "tcp port 8080 and host $ip2" >/dev/null 2>&1 &
tp=$!
wait_for "[ -s '$VMRUN/count.pcap' ]"; sleep 0.2
vmx 1 python3 -c "
import socket
s = socket.create_connection(('$ip2', 8080), timeout=2)
s.sendall(b'counted'); s.recv(100); s.close()" 2>/dev/null
sleep 1
kill $tp 2>/dev/null; wait $tp 2>/dev/null
# The frames and bytes each way of the connection whose payload was "counted".
read -r sent_n sent_b recv_n recv_b cport < <(python3 - "$VMRUN/count.pcap" "$ip2" <<'PY'
import struct, sys
d = open(sys.argv[1], 'rb').read()
pos, flows = 24, {}
while pos + 16 <= len(d):
    incl, orig = struct.unpack_from('<II', d, pos + 8)
    f = d[pos + 16:pos + 16 + incl]
    pos += 16 + incl
    if len(f) < 54 or f[12:14] != b'\x08\x00':
        continue
    ihl = (f[14] & 15) * 4
    src = '.'.join(map(str, f[26:30]))
    sp, dp = struct.unpack_from('>HH', f, 14 + ihl)
    cport = dp if src == sys.argv[2] else sp
    fl = flows.setdefault(cport, [0, 0, 0, 0, False])
    if src == sys.argv[2]:
        fl[2] += 1; fl[3] += orig
    else:
        fl[0] += 1; fl[1] += orig
        fl[4] = fl[4] or b'counted' in f
# The connection that carried "counted" (the server may still be retransmitting to the
# ports of the connections whose replies were dropped above).
cport, fl = [(p, fl) for p, fl in flows.items() if fl[4]][0]
print(*fl[:4], cport)
PY
)
conn_json=$(ctl conn list --format json -i "$a1" | grep "\"local_port\":$cport,")
[ -n "$conn_json" ] || { echo "  no connection from port $cport (capture: $sent_n/$sent_b out, $recv_n/$recv_b in):"; ctl conn list -i "$a1"; }
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])['$1'])" "$conn_json"; }
check "packets the VM sent ($sent_n)" [ "$(field packets_sent)" = "$sent_n" ]
check "bytes the VM sent ($sent_b)" [ "$(field bytes_sent)" = "$sent_b" ]
check "packets the VM received ($recv_n)" [ "$(field packets_received)" = "$recv_n" ]
check "bytes the VM received ($recv_b)" [ "$(field bytes_received)" = "$recv_b" ]
check "closed in order" bash -c "[ \"\$(python3 -c \"import json,sys; print(json.loads(sys.argv[1])['state'])\" '$conn_json')\" = time_wait ]"

echo "-- a rule change reaches an open connection"
# A UDP flow stays open: its answers pass; the connection rule removed, they are dropped.
check "UDP from port 40100: answered" [ "$(udp_ask 5353 one 40100)" = ONE ]
ctl rule del --kind connection --id 11 >/dev/null
check "the rule removed: the same flow's answer is dropped" [ -z "$(udp_ask 5353 two 40100)" ]
ctl rule add --kind connection --id 11 --protocol udp --remote-port 5353 --direction outgoing --flags allow >/dev/null
check "added back: answered again" [ "$(udp_ask 5353 three 40100)" = THREE ]

echo "-- suspended connections raise no packet events"
ctl rule add --kind connection --id 12 --protocol udp --remote-port 5353 --direction outgoing \
  --flags filter_as_ip_packets,readonly,suspended --at head >/dev/null
ctl notify --duration 6 --format json >"$VMRUN/notify.txt" 2>"$VMRUN/notify.err" &
np=$!
wait_for "grep -q listening '$VMRUN/notify.err'"
check "a notified flow, suspended: answered" [ "$(udp_ask 5353 quiet 40200)" = QUIET ]
cid=$(ctl conn list --format json -i "$a1" | grep '"local_port":40200,' | python3 -c "import json,sys; print(json.load(sys.stdin)['id'])")
check "listed as suspended" bash -c "'$VPFCTL' conn show $cid --format json | grep -q '\"suspended\":true'"
ctl conn set-state "$cid" resumed
check "resumed: answered" [ "$(udp_ask 5353 loud 40200)" = LOUD ]
wait $np
check "notify: the flow's udp_created, then the two datagrams of the resumed flow only" python3 -c "
import json
ev = [json.loads(l) for l in open('$VMRUN/notify.txt')]
kinds = [e['event'] for e in ev]
assert kinds.count('udp_created') == 1, kinds
assert kinds.count('notify') == 2, kinds   # the datagram out and its answer, after resuming
"

echo "-- pended connect requests"
G="{0000CAFE-0000-0000-0000-000000000017}"
ctl install --guid "$G" --altitude 10
pend_client() {  # HOW: an application pending VM1's connections to port 8090, completing them HOW
  "$client" "$G" "$a1" 30 pend 8090 "$1" >"$VMRUN/pend.out" 2>&1 &
  pc=$!
  wait_for 'grep -qx ready "$VMRUN/pend.out"'
}
pend_client allow
check "completed allow in the handler: the connection works" [ "$(ask "$ip2" 8090 pended)" = PENDED ]
check "one request" [ "$(grep -c '^request ' "$VMRUN/pend.out")" = 1 ]
kill $pc; wait $pc 2>/dev/null
pend_client block
check "completed block: no connection" [ -z "$(ask "$ip2" 8090 blocked)" ]
check "its SYN (and the retransmission) raised one request" [ "$(grep -c '^request ' "$VMRUN/pend.out")" = 1 ]
kill $pc; wait $pc 2>/dev/null
pend_client hold
ask "$ip2" 8090 later 6 >"$VMRUN/ask.out" &
ap=$!
wait_for 'grep -q "^request " "$VMRUN/pend.out"'
rid=$(awk '/^request /{print $2; exit}' "$VMRUN/pend.out")
sleep 0.5
check "left pending: listed so" bash -c "'$VPFCTL' conn list -i $a1 | grep -q ' pending\$'"
check "no answer while pending" [ ! -s "$VMRUN/ask.out" ]
check "vpfctl conn complete allow" ctl conn complete "$rid" allow
wait $ap
check "completed by hand: the connection works" [ "$(cat "$VMRUN/ask.out")" = LATER ]
check "nothing waits any more: exit 3" bash -c "'$VPFCTL' conn complete $rid allow 2>/dev/null; [ \$? = 3 ]"
kill $pc; wait $pc 2>/dev/null
ctl uninstall --guid "$G" >/dev/null

check "switch alive" swx ovs-appctl -t ovs-vswitchd version
finish
