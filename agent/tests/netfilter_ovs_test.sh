#!/usr/bin/env bash
# Runs netfilter_ovs_tests (GoogleTest, the vpf::NetFilter library) against a real
# ovsdb-server, the patched ovs-vswitchd with the plugin (dummy datapath: ports p1 and p2,
# flows p1 <-> p2, tx pcaps) and vpf-agent, all in a private run dir.
# usage: netfilter_ovs_test.sh OVS_TREE vportfilter_ovs.so vpf-agent netfilter_ovs_tests [gtest args]
set -u
B="$1" plugin="$2" agent="$3" tests="$4"; shift 4
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../../ovs_plugin/tests/ovs_env.sh"
run=$(mktemp -d /tmp/vpf-nf.XXXXXX)
chmod 755 "$run"
apid=
trap '[ -n "$apid" ] && kill $apid 2>/dev/null; ovs_stop "$run"; rm -rf "$run"' EXIT
ovs_start "$run" -- --enable-dummy --disable-system --disable-system-route || { echo "FAIL: start"; exit 1; }
ovs-vsctl set Open_vSwitch . other_config:packet-hook-plugin="$plugin" \
  other_config:packet-hook-args="control=$run/vportfilter.sock"
dummy_bridge "$run" || { echo "FAIL: bridge"; exit 1; }
ovs-vsctl set interface p1 external_ids:vm-name=web1 external_ids:vm-id=7 external_ids:attached-mac=52:54:00:00:00:01
ovs-ofctl add-flow br0 in_port=2,actions=output:1
wait_for '[ -S "$run/vportfilter.sock" ]' || { echo "FAIL: plugin"; exit 1; }
# A small per-client queue, so that the slow-client test fills it quickly.
"$agent" --socket "$run/agent.sock" --plugin-socket "$run/vportfilter.sock" --client-queue-bytes 65536 >>"$run/agent.log" 2>&1 &
apid=$!
wait_for '[ -S "$run/agent.sock" ] && python3 "$here/rpc.py" "$run/agent.sock" status | grep -q "\"plugin_attached\": true"' ||
  { echo "FAIL: agent"; cat "$run/agent.log"; exit 1; }
VPF_RUN="$run" VPF_AGENT_SOCKET="$run/agent.sock" "$tests" "$@"
rc=$?
# The agent stops cleanly on SIGTERM; a crash, a sanitizer report or a leak fails the test.
kill "$apid"; wait "$apid"; arc=$?; apid=
[ "$arc" = 0 ] || { echo "FAIL: the agent exited with status $arc"; rc=1; }
if grep -q "terminate called\|Assertion\|Sanitizer\|runtime error" "$run/agent.log"; then
  echo "FAIL: the agent crashed"; grep -B2 -A12 "terminate called\|Assertion\|Sanitizer\|runtime error" "$run/agent.log"; rc=1
fi
[ $rc = 0 ] || { echo "--- agent log:"; tail -30 "$run/agent.log"; }
exit $rc
