#!/usr/bin/env bash
# 64 concurrent clients against vpf-agent on the real switch (dummy datapath, private run
# dir) for VPF_LOAD_SECONDS (60): readers, rule changers, a controller and monitors reading
# events, clients that never read and clients that hang up in the middle of a request or a
# frame (client_load.py).  Every well-behaved client is served (no failed call, every
# answer within 5 s), events reach the controller and the monitors, the datapath never
# stalls (every frame sent arrives; no `netdev-dummy/receive` takes 2 s), the events of the
# clients that never read are dropped beyond their queue's bound (256 KiB here) instead of
# piling up, and the agent's heap stays bounded (its anonymous resident memory grows by
# less than 2 MB after the first 20 s, when the silent clients' queues are full; peak
# resident size < 256 MB).
# usage: client_load_test.sh OVS_TREE vportfilter_ovs.so vpf-agent
set -u
B="$1" plugin="$2" agent="$3"
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../../common/testing/ovs_env.sh"
source "$here/agent_env.sh"
agent_test_dir vpf-load

plugin_switch || exit 1
measure_memory
start_agent --client-queue-bytes 262144 || { echo "FAIL: agent"; cat "$run/agent.log"; exit 1; }
python3 "$here/client_load.py" "$S" "$apid" "${VPF_LOAD_SECONDS:-60}" >"$run/load.txt" ||
  { echo "FAIL: the load did not finish"; cat "$run/load.txt"; exit 1; }
head -n -1 "$run/load.txt"
sum=$(tail -1 "$run/load.txt")
get() { field "$1" <<<"$sum"; }
check "no failed call ($(get 'd["failures"]'))" [ "$(get 'sum(s["failures"] for s in d["stats"].values())')" = 0 ]
check "readers and rule changers served" [ "$(get 'd["stats"]["reader"]["calls"] > 1000 and d["stats"]["changer"]["calls"] > 200')" = True ]
check "every answer within 5 s" [ "$(get 'max(s["slowest_ms"] for s in d["stats"].values()) < 5000')" = True ]
check "events reached the controller and the monitors" [ "$(get 'd["events"]["controller"] > 0 and d["events"]["monitors"] > 0')" = True ]
check "the datapath never stalled (no receive took 2 s)" [ "$(get 'd["misc"]["receive_slowest_ms"] < 2000')" = True ]
sent=$(get 'd["misc"]["frames_sent"]')
check "every frame sent arrived ($sent)" wait_for "[ \"\$(tcpdump -nr '$run/p2-tx.pcap' 2>/dev/null | wc -l)\" = $sent ]" 10
check "the agent's memory is bounded" [ "$(get 'd["rss_peak_kb"] < 262144 and d["anon_peak_kb"] - d["anon_at_20s_kb"] < 2048')" = True ]
check "the silent clients' events were dropped at their bound" [ "$(rpc status | field 'd["events"]["client_events_dropped"] > 0')" = True ]
check "the agent still answers" rpc status
check "agent stops cleanly" stop_agent
finish
