#!/usr/bin/env bash
# Runs netfilter_ovs_tests (GoogleTest, the vpf::NetFilter library) against a real
# ovsdb-server, the patched ovs-vswitchd with the plugin (dummy datapath: ports p1 and p2,
# flows p1 <-> p2, tx pcaps) and vpf-agent, all in a private run dir.
# usage: netfilter_ovs_test.sh OVS_TREE vportfilter_ovs.so vpf-agent netfilter_ovs_tests [gtest args]
set -u
B="$1" plugin="$2" agent="$3" tests="$4"; shift 4
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../../common/testing/ovs_env.sh"
source "$here/agent_env.sh"
agent_test_dir vpf-nf
plugin_switch || exit 1
ovs-vsctl set interface p1 external_ids:vm-name=web1 external_ids:vm-id=7 external_ids:attached-mac=52:54:00:00:00:01
# A small per-client queue, so that the slow-client test fills it quickly.
start_agent --client-queue-bytes 65536 || { echo "FAIL: agent"; cat "$run/agent.log"; exit 1; }
VPF_RUN="$run" VPF_AGENT_SOCKET="$run/agent.sock" "$tests" "$@"
rc=$?
stop_agent || rc=1
[ $rc = 0 ] || { echo "--- agent log:"; tail -30 "$run/agent.log"; }
exit $rc
