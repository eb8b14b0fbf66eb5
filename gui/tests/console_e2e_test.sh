#!/usr/bin/env bash
# vpf-console end to end, in a real X server (Xvfb): a private Open vSwitch with the plugin,
# two namespace VMs pinging each other through it, vpf-agent, a notify rule for ICMP; the
# console runs, plots and lists packets; screenshots of the statistics and packets tabs
# are kept in OUT_DIR (console-{statistics,packets,adapters,rules,connections,request,capture}.png) and the window's state
# (JSON) is checked: connected, both adapters listed, plots with data, packets listed.
# Also runs console_agent_tests (the widgets against this agent).
# usage: console_e2e_test.sh OVS_TREE vportfilter_ovs.so vpf-agent vpfctl vpf-console OUT_DIR console_agent_tests
set -u
if [ "$(id -u)" != 0 ] || ! ip netns list >/dev/null 2>&1; then
  echo "SKIP: needs root and network namespaces"; exit 77
fi
export B="$1" PLUGIN="$2" AGENT="$3" VPFCTL="$4"
console="$5" out="$6" agent_tests="$7"
plugin="$PLUGIN" agent="$AGENT" vpfctl="$VPFCTL"
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../../vm_tests/lib/vmenv.sh"
mkdir -p "$out"
vm_env_start 2 || { echo "FAIL: could not start the switch and the VMs"; exit 1; }
run="$VMRUN" tag="$VMTAG" vm1="$VMTAG-vm1"
ip2=$(vm_ip 2)
check "widgets against the agent" env VPF_VM1="$vm1" VPF_VM2_IP="$ip2" "$agent_tests" -platform offscreen
"$vpfctl" rule add --id 1 --bpf icmp --action notify --direction outgoing
check "the VMs reach each other" ip netns exec "$vm1" ping -c 2 -W 2 "$ip2" >/dev/null
# Traffic for the plots, bounded: 5 pings a second for 80 s at most.
ip netns exec "$vm1" ping -q -i 0.2 -c 400 -s 1000 "$ip2" >/dev/null 2>&1 &
ppid_=$!
trap 'kill $ppid_ 2>/dev/null; vm_env_stop' EXIT

shot() {  # shot TAB NAME SECONDS [console args...]
  local tab="$1" name="$2" secs="$3"; shift 3
  rm -f "$out/console-$name.png" "$run/$name.json"
  HOME="$run" QT_QPA_PLATFORM=xcb timeout 60 xvfb-run -a -s "-screen 0 1280x800x24" \
    ${VPF_GDB:+gdb -batch -ex run -ex bt --args} "$console" --socket "$run/agent.sock" --tab "$tab" --after "$secs" \
    --screenshot "$out/console-$name.png" --state "$run/$name.json" "$@" >"$run/console-$name.log" 2>&1
}
field() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print($2)" "$1"; }
check "console ran (statistics tab)" shot 2 statistics 8
check "screenshot saved" [ -s "$out/console-statistics.png" ]
check "connected" [ "$(field "$run/statistics.json" 'd["connected"]')" = True ]
check "both adapters listed" [ "$(field "$run/statistics.json" 'sorted(d["adapter_names"])')" = "['$tag-p1', '$tag-p2']" ]
check "four series (2 adapters x in/out)" [ "$(field "$run/statistics.json" 'len(d["series_points"])')" = 4 ]
check "every series has data" [ "$(field "$run/statistics.json" 'min(d["series_points"].values()) >= 4')" = True ]
check "the rule is listed" [ "$(field "$run/statistics.json" 'd["rules"]["filter"]')" = 1 ]
check "rule hits listed" [ "$(field "$run/statistics.json" 'd["rule_hit_rows"] >= 1')" = True ]
check "console ran (packets tab)" shot 3 packets 4
check "packets listed" [ "$(field "$run/packets.json" 'd["packets"] >= 5')" = True ]
check "console ran (adapters tab)" shot 0 adapters 4
check "adapters tab: both adapters" [ "$(field "$run/adapters.json" 'd["adapters"]')" = 2 ]
check "console ran (rules tab)" shot 1 rules 3
# A connection rule: the plugin follows the VMs' UDP flows to port 5000, the connections
# tab lists them.
"$vpfctl" rule add --kind connection --id 3 --protocol udp --remote-port 5000 --flags allow
for i in 1 2 3; do ip netns exec "$vm1" bash -c "echo $i >/dev/udp/$ip2/5000"; done
check "console ran (connections tab)" shot 4 connections 3
check "connections listed" [ "$(field "$run/connections.json" 'd["tracking"] and d["connections"] >= 1')" = True ]
"$vpfctl" rule del --kind connection --id 3
# A pended connect request (a connection rule with pend_connect_request), held in the
# console's capture mode for the user to pass or drop (console_agent_tests clicks Pass).
"$vpfctl" rule add --kind connection --id 4 --protocol tcp --remote-port 5002 --flags allow,pend_connect_request
( sleep 3; ip netns exec "$vm1" python3 -c "
import socket
try:
    socket.create_connection(('$ip2', 5002), timeout=4)
except OSError:
    pass" ) &
vmc=$!
check "console ran (a connect request held)" shot 3 request 6 --hold default --hold-timeout 30000
check "the request is held" [ "$(field "$run/request.json" 'd["held_requests"]')" = 1 ]
wait $vmc
"$vpfctl" rule del --kind connection --id 4
# The agent goes away and comes back while the console runs: it reconnects by itself.
( sleep 1; kill "$VM_AGENT_PID"; sleep 1.5
  "$agent" --socket "$run/agent.sock" --plugin-socket "$run/vportfilter.sock" >>"$run/agent.log" 2>&1 &
  echo $! >"$run/agent2.pid" ) &
restarter=$!
check "console ran (agent restarted meanwhile)" shot 0 reconnect 7
wait "$restarter"
VM_AGENT_PID=$(cat "$run/agent2.pid")
check "reconnected after the agent restart" [ "$(field "$run/reconnect.json" 'd["connected"]')" = True ]
check "adapters back" [ "$(field "$run/reconnect.json" 'd["adapters"]')" = 2 ]
# A user the agent refuses sees the agent's reason.
mkdir -p "$run/nobody" && chmod 777 "$run/nobody"
for_nobody "$run/nobody-bin" "$console"
check "console ran as nobody" as_nobody env HOME=/tmp QT_QPA_PLATFORM=xcb \
  timeout 60 xvfb-run -a -s "-screen 0 1280x800x24" "$NOBODY_DIR/$(basename "$console")" --socket "$run/agent.sock" --after 3 \
  --screenshot "$run/nobody/refused.png" --state "$run/nobody/refused.json"
check "refused, with the agent's reason" bash -c "python3 -c \"import json; d=json.load(open('$run/nobody/refused.json')); print(d['connection'])\" | grep -q 'refused by vpf-agent: permission denied'"
# Capture mode: a capture rule for the pings reaching vm2; the console holds them.
o2=$(adapter_of 2)
"$vpfctl" rule add --id 2 --bpf icmp --action capture --direction incoming --adapter "$o2"
check "console ran (capture mode)" shot 3 capture 5 --hold default --hold-timeout 30000
check "holding" [ "$(field "$run/capture.json" 'd["holding"]')" = True ]
check "captured packets held" [ "$(field "$run/capture.json" 'd["held"] >= 3')" = True ]
check "released when the console went (sent on: the default expiry)" ip netns exec "$vm1" ping -c 2 -W 3 "$ip2" >/dev/null
# The screenshots are not blank: many colours (text, plot lines).
check "statistics screenshot has content" [ "$(identify -format %k "$out/console-statistics.png")" -gt 50 ]
check "packets screenshot has content" [ "$(identify -format %k "$out/console-packets.png")" -gt 20 ]
[ "$fails" = 0 ] || { cat "$run"/console-*.log "$run"/capture.json; tail -15 "$run/agent.log"; }
finish
