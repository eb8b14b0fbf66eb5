# Helpers for the agent's tests on the real switch.  Source after ovs_env.sh, with `here`
# (this folder), `plugin` (vportfilter_ovs.so) and `agent` (vpf-agent) set.

# agent_test_dir NAME: the private run dir ($run, under /tmp, readable by the unprivileged
# clients some tests start), the agent's socket ($S), and an EXIT trap that stops the
# agent ($apid) and the switch and removes the dir.
agent_test_dir() {
  run=$(mktemp -d "/tmp/$1.XXXXXX")
  chmod 755 "$run"
  apid=
  S="$run/agent.sock"
  trap '[ -n "$apid" ] && kill $apid 2>/dev/null; ovs_stop "$run"; rm -rf "$run"' EXIT
}
# rpc METHOD [PARAMS]: one call to the agent; field EXPR: EXPR of the JSON on stdin (as d).
rpc() { python3 "$here/rpc.py" "$S" "$@"; }
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

# The tests' UDP frame (10.0.0.1:1024 -> 10.0.0.2:1280); frame XX puts the marker XX at
# byte 42 (markers reads them back from a tx pcap).
F=52540000000252540000000108004500002000000000401100000a0000010a0000020400050000080000
frame() { echo "${F}${1}000000"; }
markers() { pcap_markers "$1" | joined; }

# plugin_switch: ovsdb-server and ovs-vswitchd (dummy datapath) loading the plugin, br0
# with p1 and p2 (tx pcaps) and flows both ways; returns when the plugin listens.
plugin_switch() {
  ovs_start "$run" -- --enable-dummy --disable-system --disable-system-route || { echo "FAIL: start"; return 1; }
  ovs-vsctl set Open_vSwitch . other_config:packet-hook-plugin="$plugin" \
    other_config:packet-hook-args="control=$run/vportfilter.sock"
  dummy_bridge "$run" || { echo "FAIL: bridge"; return 1; }
  ovs-ofctl add-flow br0 in_port=2,actions=output:1
  wait_for '[ -S "$run/vportfilter.sock" ]' || { echo "FAIL: plugin"; return 1; }
}

# start_agent [ARGS...]: vpf-agent on $run/agent.sock (log: $run/agent.log), pid in apid;
# returns when it has attached to the plugin.
start_agent() {
  "$agent" --socket "$run/agent.sock" --plugin-socket "$run/vportfilter.sock" "$@" >>"$run/agent.log" 2>&1 &
  apid=$!
  wait_for '[ -S "$run/agent.sock" ] && python3 "$here/rpc.py" "$run/agent.sock" status 2>/dev/null | grep -q "\"plugin_attached\": true"'
}

# measure_memory: for the tests that bound the agent's resident size.  In the sanitizer
# build, ASan keeps freed blocks in a quarantine (256 MB by default) that fills as the test
# runs and would read as growth; a 1 MB quarantine leaves the heap's own growth to measure.
measure_memory() { export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=1"; }

# stop_agent: SIGTERM; fails (printing why) unless the agent exits with 0 and its log has
# no crash, sanitizer report or leak.
stop_agent() {
  local arc ok=0
  kill "$apid"; wait "$apid"; arc=$?; apid=
  [ "$arc" = 0 ] || { echo "FAIL: the agent exited with status $arc"; ok=1; }
  if grep -q "terminate called\|Assertion\|Sanitizer\|runtime error" "$run/agent.log"; then
    echo "FAIL: the agent crashed:"; grep -A12 "terminate called\|Assertion\|Sanitizer\|runtime error" "$run/agent.log"; ok=1
  fi
  return $ok
}
