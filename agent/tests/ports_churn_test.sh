#!/usr/bin/env bash
# 500 VM ports added and removed in bursts of 50 on the real switch (dummy datapath,
# private run dir) while traffic with a drop rule flows between two other ports: adapter
# ids stay unique and stable (a port that comes back gets its id back), the plugin frees
# the ports that went away, the agent's and the switch's memory stay bounded, and every
# frame of the steady traffic gets its verdict (the passed ones all arrive, the dropped
# ones never do).  Prints the resident sizes it measured.
# usage: ports_churn_test.sh OVS_TREE vportfilter_ovs.so vpf-agent
set -u
B="$1" plugin="$2" agent="$3"
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../../common/testing/ovs_env.sh"
source "$here/agent_env.sh"
agent_test_dir vpf-churn
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
plugin_ports() { ovs-appctl vportfilter/stats | field "d['ports']['$1']"; }

plugin_switch || exit 1
measure_memory
start_agent || { echo "FAIL: agent"; cat "$run/agent.log"; exit 1; }
check "two steady adapters" wait_for '[ "$(rpc list_adapters | field "len(d)")" = 2 ]' 10
steady_ids=$(rpc list_adapters | field 'sorted((a["name"], a["id"]) for a in d)')
check "drop rule" rpc add_rule '{"rule": {"kind": "filter", "id": 1, "bpf": "udp and udp[8] == 0xd1", "action": "drop"}}'
check "rule in the plugin" wait_for 'ovs-appctl vportfilter/show | grep -q "^rules: 1 "'
open0=$(plugin_ports open)
vswitchd=$(cat "$run/ovs-vswitchd.pid")

declare -A id_of
passed=0
for burst in $(seq 0 9); do
  # Two sets of 50 names take turns, as VMs that stop and start again.
  set=$((burst % 2))
  add=() del=()
  for i in $(seq 0 49); do
    n="c$set-$i"
    add+=(-- add-port br0 "$n" -- set interface "$n" type=dummy "external_ids:iface-id=vm-$n")
    del+=(-- del-port br0 "$n")
  done
  ovs-vsctl "${add[@]}"
  check "burst $burst: 52 adapters" wait_for '[ "$(rpc list_adapters | field "len(d)")" = 52 ]' 60
  ads=$(rpc list_adapters)
  check "burst $burst: ids unique" [ "$(field 'len(set(a["id"] for a in d))' <<<"$ads")" = 52 ]
  check "burst $burst: no id missing" [ "$(field 'min(a["id"] for a in d) >= 0' <<<"$ads")" = True ]
  check "burst $burst: the steady ports keep theirs" \
    [ "$(field 'sorted((a["name"], a["id"]) for a in d if a["name"] in ("p1", "p2"))' <<<"$ads")" = "$steady_ids" ]
  stable=1
  while read -r name id; do
    if [ -n "${id_of[$name]:-}" ] && [ "${id_of[$name]}" != "$id" ]; then stable=0; echo "  $name: id ${id_of[$name]} then $id"; fi
    id_of[$name]=$id
  done < <(field '"\n".join("%s %s" % (a["name"], a["id"]) for a in d if a["name"].startswith("c"))' <<<"$ads")
  check "burst $burst: a port that comes back has its id" [ "$stable" = 1 ]
  check "burst $burst: the plugin has every port" wait_for "[ \"\$(plugin_ports open)\" = $((open0 + 50)) ]" 10
  # Traffic on the steady ports while the others come and go.
  for m in 00 d1 00 00 d1 00; do ovs-appctl netdev-dummy/receive p1 "$(frame $m)" >/dev/null; done
  passed=$((passed + 4))
  ovs-vsctl "${del[@]}"
  check "burst $burst: back to 2 adapters" wait_for '[ "$(rpc list_adapters | field "len(d)")" = 2 ]' 60
  check "burst $burst: the plugin freed the ports" wait_for "[ \"\$(plugin_ports open)\" = $open0 ]" 10
  if [ "$burst" = 1 ]; then agent_rss1=$(rss_kb "$apid"); switch_rss1=$(rss_kb "$vswitchd"); fi
done
agent_rss2=$(rss_kb "$apid"); switch_rss2=$(rss_kb "$vswitchd")
echo "  resident after burst 2 / after burst 10: agent $agent_rss1 / $agent_rss2 kB, ovs-vswitchd $switch_rss1 / $switch_rss2 kB"
check "no port left closing in the plugin" [ "$(plugin_ports closing)" = 0 ]
check "no gone adapter kept (none is mapped any more)" [ "$(plugin_ports gone_adapters)" = 0 ]
check "every passed frame arrived, no dropped one" \
  wait_for "[ \"\$(markers \"$run/p2-tx.pcap\")\" = \"$(printf '00 %.0s' $(seq $passed))\" ]" 10
check "the agent's memory is bounded (grew < 4 MB over 8 bursts)" [ $((agent_rss2 - agent_rss1)) -lt 4096 ]
check "the switch's memory is bounded (grew < 8 MB over 8 bursts)" [ $((switch_rss2 - switch_rss1)) -lt 8192 ]
check "agent stops cleanly" stop_agent
finish
