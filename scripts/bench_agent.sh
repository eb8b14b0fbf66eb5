#!/usr/bin/env bash
# The agent benchmark, with agent_bench (agent/bench) as the one vpf::NetFilter client:
#   1. notify relay: OVS-DPDK without hugepages, one PMD, pcap0 replaying a mix of 64-byte
#      frames from memory (net_pcap, infinite_rx=1) into null0; a notify rule selects the
#      VPF_BENCH_NOTIFY_SHARE percent (40: over a million events a second) with UDP source
#      port 9; events/s delivered and where the others went; and the rate of another port
#      (pcap1 -> null1, same PMD) with no rule, with the rule and no client, and with the
#      relay to a client running;
#   2. on a dummy-datapath switch (ports p1 and p2, flow p1 -> p2): rule add -> active
#      from no rules (VPF_BENCH_ADDS, 300) and on top of VPF_BENCH_BASE_RULES (10000)
#      imported ACL rules (VPF_BENCH_BASE_ADDS, 1000), those deleted one at a time, and
#      the capture round trip (ends with "capture_round_trip_p99_us").
# VPF_BENCH_ONLY=capture runs only the capture round trip (a few seconds; for tuning),
# VPF_BENCH_ONLY=notify only the notify relay.
# Run by scripts/bench.sh agent (which builds first).  Needs root.
source "$(dirname "$0")/lib.sh"
B="$VPF_BUILD/ovs"
source "$VPF_ROOT/common/testing/ovs_env.sh"
ctl="$VPF_BUILD/agent/src/vpfctl/vpfctl"
bench="$VPF_BUILD/agent/agent_bench"
# The run directory in memory where there is a tmpfs: the dummy ports' pcap files are the
# "wire" of the capture round trip, and a write to a disk file that waits for the journal
# would be measured as the product's latency.
tmpdir=/tmp
[ "$(stat -f -c %T /dev/shm 2>/dev/null)" = tmpfs ] && tmpdir=/dev/shm
run=$(mktemp -d "$tmpdir/vpf-bench-agent.XXXXXX")
ns="vpfbenchag$$" prefix="vpfbenchag$$"
apid=
mkdir -p "$VPF_BUILD/bench"
stop_all() {
  [ -n "$apid" ] && kill "$apid" 2>/dev/null && wait "$apid" 2>/dev/null
  apid=
  cp "$run/agent.log" "$VPF_BUILD/bench/agent-log-$1.txt" 2>/dev/null || true
  ovs_env "$run"
  ovs-vsctl --timeout=10 --if-exists del-br br0 >/dev/null 2>&1 || true
  ovs_stop "$run"
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "/var/run/dpdk/$prefix" "$run"
  mkdir -p "$run"
}
trap 'stop_all last; rm -rf "$run"' EXIT
fail() { echo "bench_agent: $*" >&2; exit 1; }
G="{0000BE0C-0000-0000-0000-000000000001}"
start_agent() {
  ovs-vsctl set Open_vSwitch . other_config:packet-hook-plugin="$VPF_BUILD/ovs_plugin/vportfilter_ovs.so" \
    other_config:packet-hook-args="control=$run/vportfilter.sock"
  wait_for '[ -S "$run/vportfilter.sock" ]' || fail "the plugin did not start"
  "$VPF_BUILD/agent/src/agent/vpf-agent" --socket "$run/agent.sock" --plugin-socket "$run/vportfilter.sock" 2>"$run/agent.log" &
  apid=$!
  export VPF_AGENT_SOCKET="$run/agent.sock" VPF_RUN="$run"
  wait_for '"$ctl" status 2>/dev/null | grep -q "plugin: attached"' || fail "the agent did not attach"
  "$ctl" install --guid "$G" --altitude 1
}

if [ "${VPF_BENCH_ONLY:-}" != capture ]; then
echo "-- notify relay (OVS-DPDK, ${VPF_BENCH_SECS:-5} s)"
"$VPF_BUILD/matcher/vpf-gen" mix --count 1000 --len 64 --drop-share "${VPF_BENCH_NOTIFY_SHARE:-40}" --out "$run/mix10.pcap"
cp "$run/mix10.pcap" /tmp/vpf-bench-agent-mix10.pcap
ovs_start_dpdk "$run" "$ns" "$prefix" 1024 || fail "DPDK did not initialise"
ovs-vsctl --timeout=20 add-br br0 -- set bridge br0 datapath_type=netdev fail-mode=secure \
  -- add-port br0 pcap0 -- set interface pcap0 type=dpdk ofport_request=1 \
       "options:dpdk-devargs=net_pcap0,rx_pcap=/tmp/vpf-bench-agent-mix10.pcap,infinite_rx=1" \
  -- add-port br0 null0 -- set interface null0 type=dpdk ofport_request=2 "options:dpdk-devargs=net_null0,no-rx=1" \
  -- add-port br0 pcap1 -- set interface pcap1 type=dpdk ofport_request=3 \
       "options:dpdk-devargs=net_pcap1,rx_pcap=/tmp/vpf-bench-agent-mix10.pcap,infinite_rx=1" \
  -- add-port br0 null1 -- set interface null1 type=dpdk ofport_request=4 "options:dpdk-devargs=net_null1,no-rx=1"
ovs-ofctl add-flow br0 in_port=1,actions=output:2
ovs-ofctl add-flow br0 in_port=3,actions=output:4
start_agent
# The other port: pcap1 -> null1 on the same PMD, no rules; its rate without and with the
# notify relay running on pcap0.
# The counters are read from the datapath (ovs-ofctl dump-ports asks the netdev now; the
# Interface table's statistics are refreshed only every 5 s, so a 3 s window could read
# the same value twice and report 0).
rx_of() { ovs-ofctl dump-ports br0 "$1" | sed -n 's/.*rx pkts=\([0-9]*\).*/\1/p' | head -1; }
other_rate() {
  local a b t0 t1
  a=$(rx_of 3); t0=$(date +%s.%N)
  sleep 3
  b=$(rx_of 3); t1=$(date +%s.%N)
  [ -n "$a" ] && [ -n "$b" ] && [ "$b" -gt "$a" ] || fail "pcap1 received nothing in 3 s (rx $a -> $b)"
  echo "($b - $a) / ($t1 - $t0) / 1000000" | bc -l
}
# The PMD's core is the PMD's, as OVS-DPDK deployments keep it (isolcpus): every other
# thread of the switch, the agent and the client run on core 0 (VPF_BENCH_SHARE_PMD=1:
# anywhere).
pin0=
if [ -z "${VPF_BENCH_SHARE_PMD:-}" ]; then
  pin0="taskset -c 0"
  vs=$(pgrep -x ovs-vswitchd | head -1)
  for t in $(ps -T -p "$vs" -o spid=,comm= | awk '$2 !~ /^pmd/ {print $1}'); do taskset -p -c 0 "$t" >/dev/null; done
  taskset -a -p -c 0 "$apid" >/dev/null
fi
sleep 2
quiet=$(other_rate)
# The same with the notify rule in force and no client: the datapath's share (classifying
# pcap0, copying 40% of it into the rings) without the relay to a client.
$pin0 "$bench" "$G" notify-rule pcap0 || fail "cannot add the notify rule"
sleep 1
rule_only=$(other_rate)
$pin0 "$bench" "$G" notify pcap0 "${VPF_BENCH_SECS:-5}" >"$run/notify.txt" &
bpid=$!
sleep 2.5
busy=$(other_rate)
wait $bpid || fail "notify phase failed"
cat "$run/notify.txt"
printf "other_port_mpps_without_relay %.3f\nother_port_mpps_rule_only %.3f\nother_port_mpps_with_relay %.3f\n" \
  "$quiet" "$rule_only" "$busy"
printf "ratio other_port_with_relay_vs_rule_only %.3f\nratio other_port_with_relay_vs_without %.3f\n" \
  "$(echo "$busy / $rule_only" | bc -l)" "$(echo "$busy / $quiet" | bc -l)"
stop_all dpdk
rm -f /tmp/vpf-bench-agent-mix10.pcap
fi

[ "${VPF_BENCH_ONLY:-}" = notify ] && exit 0
echo "-- rule add and capture round trip (dummy datapath)"
ovs_start "$run" -- --enable-dummy --disable-system --disable-system-route || fail "cannot start Open vSwitch"
dummy_bridge "$run"
start_agent
if [ "${VPF_BENCH_ONLY:-}" = capture ]; then
  "$bench" "$G" dummy 1 "${VPF_BENCH_CAPTURES:-2000}"
else
  "$VPF_BUILD/matcher/vpf-gen" rules --style acl --count "${VPF_BENCH_BASE_RULES:-10000}" --seed 7 --out "$run/base.json"
  "$bench" "$G" dummy "${VPF_BENCH_ADDS:-300}" "${VPF_BENCH_CAPTURES:-2000}" "$run/base.json" "${VPF_BENCH_BASE_ADDS:-1000}"
fi
