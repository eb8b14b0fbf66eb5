#!/usr/bin/env bash
# Crash consistency of rule changes on the real switch and ovsdb-server (dummy datapath,
# private run dir): four clients make 1000 rule changes while vpf-agent is SIGKILLed 5
# times and ovsdb-server once (crash_clients.py); then every acknowledged change is in the
# database and in the datapath (the rule count of `ovs-appctl vportfilter/show`, and real
# packets: a present rule drops its port's frames, an absent one does not), a change whose
# outcome the client could not know is either applied whole or not at all, and no packet
# is left held.
# usage: crash_consistency_test.sh OVS_TREE vportfilter_ovs.so vpf-agent
set -u
B="$1" plugin="$2" agent="$3"
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../../common/testing/ovs_env.sh"
source "$here/agent_env.sh"
agent_test_dir vpf-crash

plugin_switch || exit 1
python3 "$here/crash_clients.py" "$run" "$agent" --socket "$S" --plugin-socket "$run/vportfilter.sock" ||
  { echo "FAIL: the clients did not finish"; tail -30 "$run/agent.log"; exit 1; }
apid=$(field 'd["agent_pid"]' <"$run/journal.json")
check "the agent was killed 5 times, ovsdb-server once" \
  [ "$(field '(d["counts"]["agent_kills"], d["counts"]["ovsdb_kills"])' <"$run/journal.json")" = "(5, 1)" ]
check "the agent is attached again" wait_for 'rpc status | grep -q "\"plugin_attached\": true"' 30

# What the database holds (through the agent), against the journal.
rpc list_rules '{"kind": "filter"}' >"$run/rules.json" || { echo "FAIL: list_rules"; exit 1; }
python3 - "$run/journal.json" "$run/rules.json" >"$run/verdict.txt" <<'PY'
import json, sys
journal = json.load(open(sys.argv[1]))["rules"]
listed = json.load(open(sys.argv[2]))
rules = listed["rules"] if isinstance(listed, dict) else listed
have = {str(r["id"]): r for r in rules}
bad = []
for rid, j in journal.items():
    r = have.get(rid)
    if j["state"] == "present" and r is None:
        bad.append("acknowledged add of %s is missing" % rid)
    elif j["state"] == "absent" and r is not None:
        bad.append("acknowledged delete of %s is undone" % rid)
    elif r is not None and (r.get("bpf") != j["rule"]["bpf"] or r.get("action") != "drop"):
        bad.append("rule %s is not whole: %s" % (rid, json.dumps(r)))
extra = [rid for rid in have if rid not in journal]
if extra:
    bad.append("rules nobody asked for: %s" % extra[:5])
print(len(have))
print("\n".join(bad))
PY
in_db=$(head -1 "$run/verdict.txt")
check "every acknowledged change is in the database, nothing half applied" [ "$(sed 1d "$run/verdict.txt" | grep -c .)" = 0 ] ||
  sed 1d "$run/verdict.txt" | head
check "the datapath has the database's $in_db rules" wait_for "ovs-appctl vportfilter/show | grep -q '^rules: $in_db '" 10

# Real packets: for up to 40 rules of each state, one frame from p1 to the rule's port
# (marker = its place in the list); the present rules' frames are dropped, the others
# reach p2.
python3 - "$run/journal.json" "$run/rules.json" >"$run/frames.txt" <<'PY'
import json, sys
journal = json.load(open(sys.argv[1]))["rules"]
listed = json.load(open(sys.argv[2]))
have = {str(r["id"]) for r in (listed["rules"] if isinstance(listed, dict) else listed)}
present = [r for r in journal if r in have][:40]
absent = [r for r in journal if r not in have][:40]
eth_ip = "52540000000252540000000108004500002000000000401100000a0000010a000002"
for i, rid in enumerate(present + absent):
    port = journal[rid]["port"]
    print("%s %02x %s%s%04x00080000%02x000000" % ("drop" if rid in have else "pass", i, eth_ip, "0400", port, i))
PY
want=""
while read -r what m hex; do
  ovs-appctl netdev-dummy/receive p1 "$hex" >/dev/null
  [ "$what" = pass ] && want="$want$m "
done <"$run/frames.txt"
check "present rules drop their frames, absent ones do not ($(grep -c ^drop "$run/frames.txt") / $(grep -c ^pass "$run/frames.txt") frames)" \
  wait_for "[ \"\$(markers \"$run/p2-tx.pcap\")\" = \"$want\" ]" 10
check "no packet left held" [ "$(ovs-appctl vportfilter/stats | field 'd["held"]')" = 0 ]
kill "$apid"
for _ in $(seq 100); do kill -0 "$apid" 2>/dev/null || break; sleep 0.1; done
check "the agent stopped on SIGTERM" bash -c "! kill -0 $apid 2>/dev/null"
apid=
check "no crash or sanitizer report in the agent's log" bash -c "! grep -q 'terminate called\|Assertion\|Sanitizer\|runtime error' '$run/agent.log'"
finish
