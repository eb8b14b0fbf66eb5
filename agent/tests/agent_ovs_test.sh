#!/usr/bin/env bash
# vpf-agent against a real ovsdb-server and the patched ovs-vswitchd with the plugin
# (dummy datapath, private run dir): the vportfilter database created and added, VM ports
# become adapters with stable ids (not internal or patch ports), rules added through the
# API and through the database reach the datapath, bad requests and bad rows change
# nothing, a non-root client is refused, statistics, and an agent restart keeps ids and
# rules while forwarding goes on.
# usage: agent_ovs_test.sh OVS_TREE vportfilter_ovs.so vpf-agent
set -u
B="$1" plugin="$2" agent="$3"
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../../common/testing/ovs_env.sh"
source "$here/agent_env.sh"
agent_test_dir vpf-agent

ovs_start "$run" -- --enable-dummy --disable-system --disable-system-route || { echo "FAIL: start"; exit 1; }
ovs-vsctl set Open_vSwitch . other_config:packet-hook-plugin="$plugin" \
  other_config:packet-hook-args="control=$run/vportfilter.sock"
ovs-vsctl add-br br0 -- set bridge br0 datapath_type=dummy fail-mode=secure \
  -- add-port br0 p1 -- set interface p1 type=dummy ofport_request=1 options:tx_pcap="$run/p1-tx.pcap" \
       external_ids:iface-id=vm1-if external_ids:vm-name=web1 external_ids:attached-mac=52:54:00:00:00:01 \
       external_ids:vm-id=7 \
  -- add-port br0 p2 -- set interface p2 type=dummy ofport_request=2 options:tx_pcap="$run/p2-tx.pcap" \
  -- add-port br0 int0 -- set interface int0 type=internal \
  -- add-port br0 patch0 -- set interface patch0 type=patch options:peer=patch1
ovs-ofctl add-flow br0 in_port=1,actions=output:2
check "plugin up" wait_for '[ -S "$run/vportfilter.sock" ]'

start_agent
check "agent up" rpc status || { echo "--- agent log:"; cat "$run/agent.log"; exit 1; }
check "vportfilter database created and added" bash -c "ovsdb-client list-dbs unix:$run/db.sock | grep -qx vportfilter"
check "plugin attached" wait_for 'rpc status | grep -q "\"plugin_attached\": true"'
ads=$(rpc list_adapters)
check "two adapters (not internal, not patch)" [ "$(field 'len(d)' <<<"$ads")" = 2 ]
check "ids 0 and 1" [ "$(field 'sorted(a["id"] for a in d)' <<<"$ads")" = "[0, 1]" ]
check "p1: friendly name, MAC, VM, key" [ "$(field '[(a["friendly_name"],a["mac"],a["vm"],a["key"]) for a in d if a["name"]=="p1"][0]' <<<"$ads")" = "('web1', '52-54-00-00-00-01', 7, 'vm1-if')" ]
id1=$(field '[a["id"] for a in d if a["name"]=="p1"][0]' <<<"$ads")
id2=$(field '[a["id"] for a in d if a["name"]=="p2"][0]' <<<"$ads")
check "plugin knows both adapters" wait_for 'ovs-appctl vportfilter/show | grep -q "adapter $id2: p2" && ovs-appctl vportfilter/show | grep -q "adapter $id1: p1"'

# Rules through the API: acknowledged after commit, in the datapath right after.
check "add rule" rpc add_rule '{"rule": {"kind": "filter", "id": 1, "bpf": "udp and udp[8] == 0xd1", "action": "drop"}}'
check "rule in the plugin" wait_for 'ovs-appctl vportfilter/show | grep -q "^rules: 1 "'
for m in d1 00; do ovs-appctl netdev-dummy/receive p1 "$(frame $m)" >/dev/null; done
check "dropped on the wire" wait_for '[ "$(markers "$run/p2-tx.pcap")" = "00 " ]'
# Bad requests: errors that name the problem, nothing changes.
out=$(rpc add_rule '{"rule": {"kind": "filter", "id": 2, "bpf": "udp[", "action": "drop"}}')
check "bad BPF refused with libpcap's message" grep -q "syntax error" <<<"$out"
out=$(rpc add_rule '{"rule": {"kind": "filter", "id": 1, "action": "drop"}}')
check "duplicate id refused" grep -q "exists already" <<<"$out"
out=$(rpc add_rule '{"rule": {"kind": "filter", "id": 3, "action": "explode"}}')
check "bad action refused" grep -q "action" <<<"$out"
check "malformed JSON" bash -c "python3 '$here/rpc.py' '$S' --raw '{nope' | grep -q -- -32700"
check "unknown method" bash -c "python3 '$here/rpc.py' '$S' reboot | grep -q -- -32601"
check "delete of a missing rule" bash -c "python3 '$here/rpc.py' '$S' delete_rule '{\"kind\":\"filter\",\"id\":99}' | grep -q 'no such rule'"
check "still one rule" [ "$(rpc list_rules | field 'len(d)')" = 1 ]
for_nobody "$run/nobody-bin" "$here/rpc.py"
check "non-root client refused" bash -c "as_nobody /usr/bin/python3 '$NOBODY_DIR/rpc.py' '$S' status | grep -q 'not root'"
# An allowed controller (the reference's AllowedControllers): a non-root executable listed
# by an instance may connect and act on that instance only; ForceAppPermissionCheck
# takes that back.
nobody() { as_nobody /usr/bin/python3 "$NOBODY_DIR/rpc.py" "$S" "$@"; }
G="{00000000-0000-0000-0000-0000000000A1}"
check "install with an allowed controller" rpc install "{\"guid\": \"$G\", \"allowed_controllers\": [\"$(readlink -f /usr/bin/python3)\"]}"
check "allowed controller connects" nobody status
check "allowed controller adds a rule to its instance" nobody add_rule "{\"instance\": \"$G\", \"rule\": {\"id\": 1}}"
check "but not to another instance" bash -c "as_nobody /usr/bin/python3 '$NOBODY_DIR/rpc.py' '$S' add_rule '{\"rule\": {\"id\": 77}}' | grep -q 'not an allowed controller of instance'"
check "and may not install" bash -c "as_nobody /usr/bin/python3 '$NOBODY_DIR/rpc.py' '$S' install '{\"guid\": \"x\"}' | grep -q 'needs root'"
check "ForceAppPermissionCheck" rpc config "{\"instance\": \"$G\", \"name\": \"ForceAppPermissionCheck\", \"value\": \"true\"}"
check "then root only" bash -c "as_nobody /usr/bin/python3 '$NOBODY_DIR/rpc.py' '$S' delete_all_rules '{\"instance\": \"$G\"}' | grep -q 'requires root'"
check "uninstall" rpc uninstall "{\"guid\": \"$G\"}"

# Rules through the database (any client, any host): they apply too; a bad row is
# reported and skipped, the rest stays in force.
ovsdb-client transact unix:$run/db.sock '["vportfilter", {"op": "insert", "table": "Rule", "row": {"instance": "default", "kind": "filter", "rule_id": 5, "position": 10, "spec": "{\"bpf\": \"udp and udp[8] == 0xd5\", \"action\": \"drop\"}"}}]' >/dev/null
check "database rule in the plugin" wait_for 'ovs-appctl vportfilter/show | grep -q "^rules: 2 "'
ovsdb-client transact unix:$run/db.sock '["vportfilter", {"op": "insert", "table": "Rule", "row": {"instance": "default", "kind": "filter", "rule_id": 6, "position": 11, "spec": "{\"bpf\": \"udp[\"}"}}]' >/dev/null
check "bad row reported" wait_for 'grep -q "rule row filter 6 of instance default ignored" "$run/agent.log"'
check "good rules stay" ovs-appctl vportfilter/show | grep -q "^rules: 2 "
for m in d5 01; do ovs-appctl netdev-dummy/receive p1 "$(frame $m)" >/dev/null; done
check "database rule drops" wait_for '[ "$(markers "$run/p2-tx.pcap")" = "00 01 " ]'

st=$(rpc get_statistics)
check "statistics: p1 sent 4, dropped 2 outbound" [ "$(field "[(a['total']['packets_sent'], a['total']['packets_dropped_outbound']) for a in d['adapters'] if a['adapter_id']==$id1][0]" <<<"$st")" = "(4, 2)" ]

# Agent killed: forwarding and rules go on; a restart keeps ids and rules.
kill -9 $apid; wait $apid 2>/dev/null; apid=
for m in d1 02; do ovs-appctl netdev-dummy/receive p1 "$(frame $m)" >/dev/null; done
check "forwarding and rules without the agent" wait_for '[ "$(markers "$run/p2-tx.pcap")" = "00 01 02 " ]'
start_agent
check "agent back" rpc status
check "ids kept across the restart" [ "$(rpc list_adapters | field 'sorted((a["name"], a["id"]) for a in d)')" = "[('p1', $id1), ('p2', $id2)]" ]
ovs-vsctl del-port br0 p2
check "adapter removal seen" wait_for 'grep -q "adapter removed: p2" "$run/agent.log"'
ovs-vsctl add-port br0 p2 -- set interface p2 type=dummy ofport_request=2 options:tx_pcap="$run/p2b-tx.pcap"
check "p2 keeps its id when re-created" wait_for '[ "$(rpc list_adapters | field "[a[\"id\"] for a in d if a[\"name\"]==\"p2\"]")" = "[$id2]" ]'
check "rules unchanged" [ "$(rpc list_rules | field 'len(d)')" = 3 ]
check "plugin reattached" wait_for 'rpc status | grep -q "\"plugin_attached\": true"'
check "delete all" rpc delete_all_rules
check "no rules in the plugin" wait_for 'ovs-appctl vportfilter/show | grep -q "^rules: 0 "'
# Editing in place and reordering (the console's rule editor): one transaction each.
rpc add_rule '{"rule": {"id": 60, "action": "drop", "bpf": "udp and udp[8] == 0xd9"}}' >/dev/null
rpc add_rule '{"rule": {"id": 61, "action": "notify"}}' >/dev/null
order() { rpc list_rules | field '[r["id"] for r in d]'; }
check "move up" bash -c "python3 '$here/rpc.py' '$S' move_rule '{\"kind\": \"filter\", \"id\": 61, \"to\": \"up\"}' >/dev/null"
check "order after move" [ "$(order)" = "[61, 60]" ]
check "move up at the top: no change" bash -c "python3 '$here/rpc.py' '$S' move_rule '{\"kind\": \"filter\", \"id\": 61, \"to\": \"up\"}' | grep -q false"
out=$(rpc update_rule '{"kind": "filter", "id": 60, "rule": {"id": 60, "bpf": "udp[", "action": "drop"}}')
check "update with a bad rule refused" grep -q "syntax error" <<<"$out"
check "update to a taken id refused" bash -c "python3 '$here/rpc.py' '$S' update_rule '{\"kind\": \"filter\", \"id\": 60, \"rule\": {\"id\": 61}}' | grep -q 'exists already'"
check "update in place" rpc update_rule '{"kind": "filter", "id": 60, "rule": {"id": 62, "action": "drop", "bpf": "udp and udp[8] == 0xda"}}'
check "updated, position kept" [ "$(order)" = "[61, 62]" ]
check "the plugin has the edit" wait_for 'ovs-appctl vportfilter/show | grep -q "^rules: 2 "'
check "update of a missing rule" bash -c "python3 '$here/rpc.py' '$S' update_rule '{\"kind\": \"filter\", \"id\": 99, \"rule\": {\"id\": 99}}' | grep -q 'does not exist'"
# Two adds of one id in one write, at the head (before rule 61, which matches everything),
# the second with another priority (another place): the agent checks both before the
# first row is back, so the database refuses the second, which never reaches the plugin;
# the first is in force.
out=$(python3 - "$S" <<'PY'
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
req = lambda i, m, prio: json.dumps({"jsonrpc": "2.0", "id": i, "method": "add_rule", "params": {"at": "head",
    "rule": {"kind": "filter", "id": 5, "priority": prio, "bpf": "udp and udp[8] == 0x%s" % m, "action": "drop"}}})
s.sendall((req(1, "d5", 0) + "\n" + req(2, "d6", 9) + "\n").encode())
f = s.makefile()
outcome = lambda r: "ok" if "result" in r else "refused by the database" if "database refused" in r["error"]["message"] else r["error"]["message"]
print(", ".join(sorted(outcome(json.loads(f.readline())) for _ in range(2))))
PY
)
check "two adds of one id: one refused by the database ($out)" [ "$out" = "ok, refused by the database" ]
check "the plugin holds the first" wait_for 'ovs-appctl vportfilter/show | grep -q "^rules: 3 "'
for m in d5 d6; do ovs-appctl netdev-dummy/receive p1 "$(frame $m)" >/dev/null; done
check "the first drops, the second was taken back" wait_for '[ "$(markers "$run/p2b-tx.pcap")" = "d6 " ]'
check "delete it" rpc delete_rule '{"kind": "filter", "id": 5}'
rpc delete_all_rules >/dev/null
check "switch alive" ovs-appctl -t ovs-vswitchd version
[ "$fails" = 0 ] || { echo "--- agent log:"; tail -20 "$run/agent.log"; }
check "the agent exits cleanly" stop_agent

# One policy for many hosts: the vportfilter database on another ovsdb-server (--db).
ovsdb-tool create "$run/policy.db" "$here/../schema/vportfilter.ovsschema"
ovsdb-server --detach --no-chdir --pidfile="$run/policy.pid" --log-file="$run/policy.log" -vconsole:off \
  --unixctl="$run/policy.ctl" --remote=punix:"$run/policy.sock" "$run/policy.db"
ovsdb-client transact unix:$run/policy.sock '["vportfilter", {"op": "insert", "table": "Rule", "row": {"instance": "default", "kind": "filter", "rule_id": 50, "position": 0, "spec": "{\"bpf\": \"udp and udp[8] == 0xd7\", \"action\": \"drop\"}"}}]' >/dev/null
ovsdb-client transact unix:$run/db.sock '["vportfilter", {"op": "delete", "table": "Rule", "where": []}]' >/dev/null
start_agent --db "unix:$run/policy.sock"
check "rules from the remote policy" wait_for 'ovs-appctl vportfilter/show | grep -q "^rules: 1 "'
for m in d7 07; do ovs-appctl netdev-dummy/receive p1 "$(frame $m)" >/dev/null; done
check "remote rule drops" wait_for '[ "$(pcap_markers "$run/p2b-tx.pcap" | joined)" = "d6 07 " ]'
check "add_rule goes to the remote policy" rpc add_rule '{"rule": {"id": 51, "action": "drop", "bpf": "udp and udp[8] == 0xd8"}}'
check "the row is there" bash -c "ovsdb-client dump unix:$run/policy.sock vportfilter Rule | grep -c 'filter' | grep -qx 2"
check "adapter ids kept in the remote policy" bash -c "ovsdb-client dump unix:$run/policy.sock vportfilter Adapter | grep -q vm1-if"
check "the agent exits cleanly (remote policy)" stop_agent
kill "$(cat "$run/policy.pid")" 2>/dev/null
finish
