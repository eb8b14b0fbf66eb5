#!/usr/bin/env bash
# vpfctl against a real ovsdb-server, the patched ovs-vswitchd with the plugin (dummy
# datapath, ports p1 and p2, flows both ways, tx pcaps) and vpf-agent, in a private run
# dir: every agent command, its exit codes and its errors.
# usage: vpfctl_agent_test.sh OVS_TREE vportfilter_ovs.so vpf-agent vpfctl
set -u
B="$1" plugin="$2" agent="$3" vpfctl="$4"
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../../common/testing/ovs_env.sh"
run=$(mktemp -d /tmp/vpf-ctl.XXXXXX)
chmod 755 "$run"
apid= cpid=
trap '[ -n "$cpid" ] && kill $cpid 2>/dev/null; [ -n "$apid" ] && kill $apid 2>/dev/null; ovs_stop "$run"; rm -rf "$run"' EXIT
export VPF_AGENT_SOCKET="$run/agent.sock"
source "$here/agent_env.sh"
rc() { "$@" >/dev/null 2>&1; echo $?; }

plugin_switch || exit 1
check "agent unreachable: exit 1 and a message" bash -c "[ \$($vpfctl adapters 2>$run/err >/dev/null; echo \$?) = 1 ] && grep -q 'cannot reach vpf-agent' $run/err"
check "agent up" start_agent

for c in adapters rule start stop stats conn capture notify send insert install uninstall status classify; do
  check "$c --help" [ "$(rc "$vpfctl" $c --help)" = 0 ]
done
check "rule add --help" bash -c "$vpfctl rule add --help | grep -q -- --bpf"
check "unknown command: 2" [ "$(rc "$vpfctl" frobnicate)" = 2 ]
check "unknown option: 2" [ "$(rc "$vpfctl" adapters --colour)" = 2 ]
check "bad format: 2" [ "$(rc "$vpfctl" adapters --format yaml)" = 2 ]

check "adapters table" bash -c "$vpfctl adapters | grep -q ' p1 '"
check "adapters json" [ "$("$vpfctl" adapters --format json | wc -l)" = 2 ]
p1=$("$vpfctl" adapters --format json | python3 -c 'import json,sys; print([json.loads(l)["id"] for l in sys.stdin if json.loads(l)["name"]=="p1"][0])')

# Rules: added by the CLI, in force on the wire; bad ones refused whole with exit 3.
check "rule add" "$vpfctl" rule add --id 1 --bpf "udp and udp[8] == 0xd1" --action drop
for m in d1 01; do ovs-appctl netdev-dummy/receive p1 "$(frame $m)" >/dev/null; done
check "CLI rule drops on the wire" wait_for '[ "$(markers "$run/p2-tx.pcap")" = "01 " ]'
"$vpfctl" rule add --id 2 --bpf "udp[" 2>"$run/err"; r=$?
check "bad BPF: exit 3" [ $r = 3 ]
check "bad BPF: libpcap's message" grep -q "syntax error" "$run/err"
check "duplicate id: exit 3" [ "$(rc "$vpfctl" rule add --id 1 --action drop)" = 3 ]
check "bad direction: exit 3" [ "$(rc "$vpfctl" rule add --id 3 --direction sideways)" = 3 ]
check "rule without id: exit 2" [ "$(rc "$vpfctl" rule add --action drop)" = 2 ]
check "rule add --json" "$vpfctl" rule add --json '{"kind":"passthrough","id":1,"bpf":"icmp"}'
check "connection rule with flag names" "$vpfctl" rule add --kind connection --id 5 --protocol udp --remote 10.9.0.0/16 --flags block
check "rule list: 3" [ "$("$vpfctl" rule list --format json | wc -l)" = 3 ]
check "rule list table" bash -c "$vpfctl rule list | grep -q 'udp\[8\] == 0xd1'"
"$vpfctl" rule export -o "$run/rules.json"
check "export is a rules file" "$vpfctl" classify --rules "$run/rules.json" --pcap "$run/p2-tx.pcap"
echo '{"rules": [{"id": 7, "action": "drop"}, {"id": 8, "bpf": "tcp port eighty"}]}' >"$run/bad.json"
"$vpfctl" rule import "$run/bad.json" 2>"$run/err"; r=$?
check "bad import: exit 3" [ $r = 3 ]
check "bad import names the rule" grep -q "rule #2" "$run/err"
check "bad import changed nothing" [ "$("$vpfctl" rule list --format json | wc -l)" = 3 ]
check "import of a missing file: exit 1" [ "$(rc "$vpfctl" rule import "$run/missing.json")" = 1 ]
echo '{"rules": [{"id": 9, "action": "drop", "protocol": "cannot"}]}' >"$run/cannot.json"
check "a refusal whose text says cannot: exit 3" [ "$(rc "$vpfctl" rule import "$run/cannot.json")" = 3 ]
check "unknown rule subcommand: exit 2" [ "$(rc "$vpfctl" rule frobnicate)" = 2 ]
check "rule --help lists the subcommands" bash -c "$vpfctl rule --help | grep -q '^  import '"
check "import existing ids: exit 3" [ "$(rc "$vpfctl" rule import "$run/rules.json")" = 3 ]
check "import --replace" "$vpfctl" rule import --replace "$run/rules.json"
check "round trip" [ "$("$vpfctl" rule list --format json | wc -l)" = 3 ]
check "del of a missing rule: exit 3" [ "$(rc "$vpfctl" rule del --kind filter --id 99)" = 3 ]
check "del" "$vpfctl" rule del --kind connection --id 5
check "del --id without --kind: 2" [ "$(rc "$vpfctl" rule del --id 1)" = 2 ]

# stop / start: the default instance's rules leave and return.
check "stop" "$vpfctl" stop
ovs-appctl netdev-dummy/receive p1 "$(frame d1)" >/dev/null
check "stopped: passes" wait_for '[ "$(markers "$run/p2-tx.pcap")" = "01 d1 " ]'
check "status shows stopped" bash -c "$vpfctl status | grep -q '^default .*stopped'"
check "start" "$vpfctl" start
ovs-appctl netdev-dummy/receive p1 "$(frame d1)" >/dev/null
sleep 0.3
check "started: dropped again" [ "$(markers "$run/p2-tx.pcap")" = "01 d1 " ]

# stats
before=$("$vpfctl" stats --format json | python3 -c "import json,sys; d=json.load(sys.stdin); print([a['total']['packets_sent'] for a in d['adapters'] if a['adapter_id']==$p1][0])")
for m in 11 12 13; do ovs-appctl netdev-dummy/receive p1 "$(frame $m)" >/dev/null; done
after=$("$vpfctl" stats --format json -i "$p1" | python3 -c "import json,sys; d=json.load(sys.stdin); print(d['adapters'][0]['total']['packets_sent'])")
check "stats count what was sent" [ $((after - before)) = 3 ]
check "stats --watch --count 2" [ "$("$vpfctl" stats --watch --count 2 --interval 0.1 | grep -c '^adapter')" = 2 ]
check "stats table has rule hits" bash -c "$vpfctl stats | grep -q '^default .*filter .* 1 '"
# conn: the connections a connection rule makes the plugin follow.
check "conn list: none yet" [ "$("$vpfctl" conn list --format json | wc -l)" = 0 ]
check "a connection rule" "$vpfctl" rule add --kind connection --id 6 --protocol udp --remote-port 1280 --flags allow
for m in 14 15; do ovs-appctl netdev-dummy/receive p1 "$(frame $m)" >/dev/null; done
check "conn list: the VM's UDP flow" wait_for "$vpfctl conn list | grep -q ' udp  *10.0.0.1:1024  *10.0.0.2:1280  *outgoing unreplied  *2 '"
cid=$("$vpfctl" conn list --format json -i "$p1" | field "d['id']")
check "conn show" bash -c "$vpfctl conn show $cid | grep -q '^packets_sent: *2\$'"
check "conn show --format json" bash -c "$vpfctl conn show $cid --format json | grep -q '\"remote_port\":1280'"
check "conn list of another adapter: none" [ "$("$vpfctl" conn list --format json -i 999 | wc -l)" = 0 ]
"$vpfctl" conn show 99999 2>"$run/err"; r=$?
check "conn show of no connection: exit 3, says so" bash -c "[ $r = 3 ] && grep -q 'no connection with id 99999' '$run/err'"
check "conn show 0: exit 2" [ "$(rc "$vpfctl" conn show 0)" = 2 ]
check "conn show abc: exit 2" [ "$(rc "$vpfctl" conn show abc)" = 2 ]
check "conn show without an id: exit 2" [ "$(rc "$vpfctl" conn show)" = 2 ]
check "conn list --adapter -2: exit 2" [ "$(rc "$vpfctl" conn list --adapter -2)" = 2 ]
check "unknown conn subcommand: exit 2" [ "$(rc "$vpfctl" conn frobnicate)" = 2 ]
check "conn set-state suspended" "$vpfctl" conn set-state "$cid" suspended
check "listed as suspended" bash -c "$vpfctl conn list | grep -q ' suspended\$' && $vpfctl conn show $cid --format json | grep -q '\"suspended\":true'"
check "conn set-state resumed" "$vpfctl" conn set-state "$cid" resumed
check "conn set-state of no connection: exit 3" [ "$(rc "$vpfctl" conn set-state 99999 suspended)" = 3 ]
check "conn set-state sleeping: exit 2" [ "$(rc "$vpfctl" conn set-state "$cid" sleeping)" = 2 ]
check "conn set-state without a state: exit 2" [ "$(rc "$vpfctl" conn set-state "$cid")" = 2 ]
"$vpfctl" conn complete "$cid" allow 2>"$run/err"; r=$?
check "conn complete of a connection with no request waiting: exit 3, says so" bash -c "[ $r = 3 ] && grep -q 'no connect request waiting' '$run/err'"
check "conn complete maybe: exit 2" [ "$(rc "$vpfctl" conn complete "$cid" maybe)" = 2 ]
check "conn complete 0: exit 2" [ "$(rc "$vpfctl" conn complete 0 allow)" = 2 ]
"$vpfctl" rule del --kind connection --id 6
# adapter settings
check "adapters --set: snaplen" "$vpfctl" adapters --set "$p1" --snaplen 60 --collect-statistics no
check "the table shows it" bash -c "$vpfctl adapters | grep -q ' p1 .* 60\$'"
check "and the JSON" bash -c "$vpfctl adapters --format json | grep '\"p1\"' | grep -q '\"collect_statistics\":false'"
check "adapters --set without a setting: exit 2" [ "$(rc "$vpfctl" adapters --set "$p1")" = 2 ]
check "adapters --snaplen without --set: exit 2" [ "$(rc "$vpfctl" adapters --snaplen 3)" = 2 ]
check "adapters --collect-statistics maybe: exit 2" [ "$(rc "$vpfctl" adapters --set "$p1" --collect-statistics maybe)" = 2 ]
check "adapters --set of a missing adapter: exit 3" [ "$(rc "$vpfctl" adapters --set 999 --snaplen 60)" = 3 ]
check "adapters --snaplen -1: refused" [ "$(rc "$vpfctl" adapters --set "$p1" --snaplen -1)" != 0 ]
check "adapters --set back" "$vpfctl" adapters --set "$p1" --snaplen 0 --collect-statistics yes
# hits of one rule (kind filter, id $1), "-" when the rule is not listed
hits() { "$vpfctl" stats --format json | python3 -c "import json,sys; h=[r['hits'] for r in json.load(sys.stdin)['rules'] if r['kind']=='filter' and r['id']==$1]; print(h[0] if h else '-')"; }
check "count rule" "$vpfctl" rule add --id 30 --bpf "udp and udp[8] == 0x30" --action count --direction outgoing
for i in 1 2; do ovs-appctl netdev-dummy/receive p1 "${F}30000000" >/dev/null; done
check "count: both pass" wait_for '[ "$(markers "$run/p2-tx.pcap" | grep -o 30 | wc -l)" = 2 ]'
check "count: two hits" [ "$(hits 30)" = 2 ]
"$vpfctl" rule del --kind filter --id 30
check "a deleted rule is not listed" [ "$(hits 30)" = - ]
"$vpfctl" rule add --id 30 --bpf "udp and udp[8] == 0x30" --action drop --direction outgoing
ovs-appctl netdev-dummy/receive p1 "${F}30000000" >/dev/null
check "a new rule with the old id starts from zero" wait_for '[ "$(hits 30)" = 1 ]'
"$vpfctl" rule del --kind filter --id 30

# capture and notify: packets the rules notify.
check "notify rule" "$vpfctl" rule add --id 20 --bpf "udp and udp[8] == 0xa0" --action notify
"$vpfctl" capture -w "$run/cap.pcap" -c 2 --duration 20 -i "$p1" --direction out "udp[9] == 0x55" 2>"$run/capture.err" &
cpid=$!
wait_for 'grep -q listening "$run/capture.err"'
for m in a0000000 a0550000 a0550000 a0000000; do ovs-appctl netdev-dummy/receive p1 "${F}${m}" >/dev/null; done
wait $cpid; r=$?; cpid=
check "capture exits after -c packets" [ $r = 0 ] || cat "$run/capture.err"
check "capture file: 2 selected packets, read by tcpdump" [ "$(tcpdump -r "$run/cap.pcap" 2>/dev/null | wc -l)" = 2 ]
check "capture -w - | tshark" bash -c "(sleep 1; ovs-appctl netdev-dummy/receive p1 ${F}a0000000 >/dev/null) & $vpfctl capture -w - -c 1 --duration 20 | tshark -r - 2>/dev/null | grep -q UDP"
check "pcapng read by tshark" bash -c "(sleep 1; ovs-appctl netdev-dummy/receive p1 ${F}a0000000 >/dev/null) & $vpfctl capture --pcapng -w $run/cap.pcapng -c 1 --duration 20 2>/dev/null && capinfos -t $run/cap.pcapng | grep -q pcapng && [ \$(tshark -r $run/cap.pcapng 2>/dev/null | wc -l) = 1 ]"
check "capture: bad expression is exit 2" [ "$(rc "$vpfctl" capture -w "$run/x.pcap" "udp port eighty")" = 2 ]
out=$(bash -c "(sleep 1; ovs-appctl netdev-dummy/receive p1 ${F}a0000000 >/dev/null) & $vpfctl notify -c 1 --duration 20 --format json 2>/dev/null")
check "notify prints the event" python3 -c "import json,sys; e=json.loads(sys.argv[1]); assert e['rule']==20 and e['event']=='notify' and e['direction']=='out' and e['packet_size']==46" "$out"

# notify shows connection events: a connection rule that notifies a UDP flow's datagrams
# (filter_as_ip_packets + readonly) raises udp_created for it (another source port than
# the flows above: a new flow).
check "a notifying connection rule" "$vpfctl" rule add --kind connection --id 8 --protocol udp --remote-port 1280 --flags filter_as_ip_packets,readonly
F2=${F/0a0000020400/0a0000020411}
out=$(bash -c "(sleep 1; ovs-appctl netdev-dummy/receive p1 ${F2}a0000000 >/dev/null) & $vpfctl notify -c 2 --duration 20 --format json 2>/dev/null")
check "notify: the datagram and its flow's udp_created" python3 -c "
import json,sys
ev = [json.loads(l) for l in sys.argv[1].splitlines()]
kinds = sorted(e['event'] for e in ev)
assert kinds == ['notify', 'udp_created'], kinds
c = [e for e in ev if e['event'] == 'udp_created'][0]
assert c['local'] == '10.0.0.1:1041' and c['remote'] == '10.0.0.2:1280' and c['rule'] == 8 and c['packets_sent'] == 1, c
" "$out"
out=$(bash -c "(sleep 1; ovs-appctl netdev-dummy/receive p1 ${F2/0a0000020411/0a0000020412}a0000000 >/dev/null) & $vpfctl notify -c 2 --duration 20 2>/dev/null")
check "notify table: a line for the connection event" bash -c "grep -q 'udp_created connection rule 8, connection [0-9]* 10.0.0.1:1042 -> 10.0.0.2:1280, sent 1/46 received 0/0' <<<'$out'"
out=$(bash -c "(sleep 1; ovs-appctl netdev-dummy/receive p1 ${F2/0a0000020411/0a0000020413}a0000000 >/dev/null) & $vpfctl notify -c 1 --duration 20 --format json udp 2>/dev/null")
check "notify with an expression: frames only" python3 -c "import json,sys; assert json.loads(sys.argv[1])['event'] == 'notify'" "$out"
"$vpfctl" rule del --kind connection --id 8

# send / insert
check "send --hex x2" "$vpfctl" send -i "$p1" --hex "$(frame 61)" --times 2
p2=$("$vpfctl" adapters --format json | python3 -c 'import json,sys; print([json.loads(l)["id"] for l in sys.stdin if json.loads(l)["name"]=="p2"][0])')
check "insert --hex" "$vpfctl" insert -i "$p2" --hex "$(frame 62)"
check "sent and inserted frames on the wire" wait_for '[ "$(pcap_markers "$run/p2-tx.pcap" | grep -c "^61$")" = 2 ] && pcap_markers "$run/p2-tx.pcap" | grep -q "^62$"'
check "send --pcap" "$vpfctl" send -i "$p1" --pcap "$run/cap.pcap"
check "bad hex: exit 3" [ "$(rc "$vpfctl" send -i "$p1" --hex 52zz)" = 3 ]
check "short frame: exit 3" [ "$(rc "$vpfctl" send -i "$p1" --hex 5254)" = 3 ]
check "unknown adapter: exit 3" [ "$(rc "$vpfctl" send -i 999 --hex "$(frame 61)")" = 3 ]
check "neither hex nor pcap: exit 2" [ "$(rc "$vpfctl" send -i "$p1")" = 2 ]

# install / uninstall / status
G="{12345678-1234-1234-1234-123456789ABC}"
check "install" "$vpfctl" install --guid "$G" --altitude 300 --allow /usr/bin/true
check "status lists it, stopped" bash -c "$vpfctl status | grep -q '^$G *300 stopped'"
check "rule in the instance" "$vpfctl" rule add --instance "$G" --id 1 --action drop --bpf "udp and udp[8] == 0xe1"
check "install --plugin registers the plugin" bash -c "$vpfctl install --guid '$G' --plugin '$plugin' && [ \"\$(ovs-vsctl get Open_vSwitch . other_config:packet-hook-plugin)\" = '\"$plugin\"' ]"
check "install --plugin of a missing file: exit 1" [ "$(rc "$vpfctl" install --guid "$G" --plugin /nonexistent.so)" = 1 ]
check "install of a bad controller path: exit 3" [ "$(rc "$vpfctl" install --guid "$G" --allow relative/exe)" = 3 ]
check "uninstall" "$vpfctl" uninstall --guid "$G"
check "gone with its rules" bash -c "! $vpfctl status | grep -q '$G' && [ \$($vpfctl rule list --instance '$G' --format json | wc -l) = 0 ]"
check "uninstall of an unknown instance: exit 1" [ "$(rc "$vpfctl" uninstall --guid "$G")" = 1 ]
for_nobody "$run/nobody-bin" "$vpfctl"
check "non-root: refused" bash -c "as_nobody '$NOBODY_DIR/$(basename "$vpfctl")' status 2>&1 | grep -q 'not root'"

check "switch alive" ovs-appctl -t ovs-vswitchd version
check "the agent exits cleanly" stop_agent
[ "$fails" = 0 ] || { echo "--- agent log:"; tail -20 "$run/agent.log"; }
finish
