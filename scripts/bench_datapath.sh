#!/usr/bin/env bash
# The datapath benchmark: OVS-DPDK without hugepages, one PMD core, a pcap of 64-byte
# frames replayed from memory (net_pcap, infinite_rx=1) into net_null; the same
# ovs-vswitchd binary without the plugin and with it at 0, 1k and 10k rules that all pass,
# and 1k rules plus one that drops 10%; with an in_port-only flow table ("simple") and
# with L3/L4 flows ("emc"); with traces of 1, 1k and 64k flows; every packet a new flow
# for the decision cache (a 1k-flow cache against 64k flows, against no cache); and 1k
# rules with one rule added and removed 100 times a second (vportfilter/rule-add,
# rule-remove).  The switch's non-PMD threads, ovsdb-server and the rule-change generator
# run on core 0, the PMD alone on core 1, as on a host with isolated PMD cores.  Each
# series (a trace and a flow table) is measured in VPF_DATAPATH_ROUNDS rounds (default 3)
# of VPF_DATAPATH_SECS seconds per case (default 3), every case once per round, so that a
# case and its reference are measured close together on a machine whose speed drifts;
# prints Mpps per measurement, the medians, and
# "ratio datapath_<case>_<table>_vs_stock R": the median over the rounds of the case's
# rate over its reference's rate in the same round.
# Run by scripts/bench.sh datapath (which builds first).  Needs root.
# VPF_DATAPATH_PROFILE=1: also samples the PMD thread with perf (cpu-clock, 5 s) at 1k
# rules with the simple table (=drop10: with the 10%-drop rule and its trace instead),
# (=stock: the switch without the plugin, the same trace and table, to compare with;
# =64k and =stock64k: the same two with the 64k-flow trace),
# prints the 15 hottest symbols and the plugin's cost per
# packet split into the hook, the cache lookup and the classifier; with
# VPF_DATAPATH_PERF_OUT=FILE the samples are kept there (for perf annotate).
# VPF_DATAPATH_QUICK=1: only the 1k-flow trace with the simple table (stock, 0, 1k and 10k
# rules, churn), for iterating on the datapath; the full run is the benchmark.
# VPF_DATAPATH_SERIES="PCAP;TABLE;NAME=ARGS;...": instead, only that series (@ stands for the
# run directory, where the traces and rule sets above are: @mix.pcap is the 1k-flow trace,
# @flows64k.pcap, @rules1k.json), printing each case's Mpps and "ratio series_NAME_vs_FIRST".
# VPF_DATAPATH_AGAINST=SO: instead, this build's plugin against another build's (SO: the
# vportfilter_ovs.so of, say, a worktree of an earlier commit) in the same series, at 1k
# rules: 1k and 64k flows with both tables, the 10%-drop trace, and new flows through a
# 1,024-flow cache against no cache; "ratio against_<case>" and "ratio this_<case>" are
# each build's ratio to the same reference, round by round.  For deciding whether a
# change to the datapath is kept; the full run is the benchmark.  With VPF_DATAPATH_QUICK=1, only
# the 1k-flow trace with the simple table.
source "$(dirname "$0")/lib.sh"
B="$VPF_BUILD/ovs"
plugin="$VPF_BUILD/ovs_plugin/vportfilter_ovs.so"
gen="$VPF_BUILD/matcher/vpf-gen"
secs="${VPF_DATAPATH_SECS:-3}"
source "$VPF_ROOT/common/testing/ovs_env.sh"
run=$(mktemp -d /tmp/vpf-bench-dp.XXXXXX)
ns="vpfbench$$"
prefix="vpfbench$$"
cleanup() {
  ovs_env "$run"
  ovs-vsctl --timeout=10 del-br br0 >/dev/null 2>&1
  ovs_stop "$run"
  ip netns del "$ns" 2>/dev/null
  rm -rf "/var/run/dpdk/$prefix" "$run"
}
trap cleanup EXIT

"$gen" mix --count 1024 --len 64 --out "$run/mix.pcap"
"$gen" mix --count 1024 --flows 1 --len 64 --out "$run/flows1.pcap"
"$gen" mix --count 65536 --len 64 --out "$run/flows64k.pcap"
"$gen" mix --count 1000 --len 64 --drop-share 10 --out "$run/mix10.pcap"
echo '{"rules": []}' > "$run/rules0.json"
"$gen" rules --style acl --count 1000 --seed 5 --out "$run/rules1k.json"
"$gen" rules --style acl --count 10000 --seed 6 --out "$run/rules10k.json"
python3 - "$run/rules1k.json" "$run/rules1k-drop10.json" <<'PY'
import json, sys
rules = json.load(open(sys.argv[1]))["rules"]
rules.insert(0, {"kind": "filter", "id": 1000000, "bpf": "src port 9", "action": "drop"})
json.dump({"rules": rules}, open(sys.argv[2], "w"))
PY

ovs_start_dpdk "$run" "$ns" "$prefix" 1024 || { echo "DPDK did not initialise" >&2; exit 1; }

# add_ports PCAP: (re)creates the bridge with pcap0 replaying PCAP into null0.
add_ports() {
  ovs-vsctl --timeout=20 --if-exists del-br br0
  ovs-vsctl --timeout=20 add-br br0 -- set bridge br0 datapath_type=netdev fail-mode=secure \
    -- add-port br0 pcap0 -- set interface pcap0 type=dpdk ofport_request=1 \
         "options:dpdk-devargs=net_pcap0,rx_pcap=$1,infinite_rx=1" \
    -- add-port br0 null0 -- set interface null0 type=dpdk ofport_request=2 "options:dpdk-devargs=net_null0,no-rx=1"
}
flows() {
  ovs-ofctl del-flows br0
  if [ "$1" = simple ]; then
    ovs-ofctl add-flow br0 in_port=1,actions=output:2
  else
    ovs-ofctl add-flow br0 priority=10,udp,in_port=1,nw_dst=10.0.0.2,tp_dst=5001,actions=output:2
    ovs-ofctl add-flow br0 priority=10,tcp,in_port=1,nw_dst=10.0.0.2,tp_dst=5001,actions=output:2
  fi
}
# plugin none|[against:]ARGS: loads the plugin with ARGS (a rules file, or name=value
# arguments) on pcap0 (adapter 0), or unloads it; "against:": VPF_DATAPATH_AGAINST's.
plugin() {
  if [ "$1" = none ]; then
    ovs-vsctl remove Open_vSwitch . other_config packet-hook-plugin
  else
    local so=$plugin args=$1
    if [ "${args#against:}" != "$args" ]; then so=$VPF_DATAPATH_AGAINST args=${args#against:}; fi
    ovs-vsctl remove Open_vSwitch . other_config packet-hook-plugin
    ovs-vsctl set Open_vSwitch . other_config:packet-hook-args="$args" other_config:packet-hook-plugin="$so"
    for _ in $(seq 100); do ovs-appctl vportfilter/show >/dev/null 2>&1 && break; sleep 0.1; done
    ovs-appctl vportfilter/adapter-set pcap0 0 >/dev/null
  fi
}
# rx_packets: the packets port 1 (pcap0) has received, as its driver counts them.  Not the
# PMD's "packets received": that counts what the port's receive hook left in each batch, so
# the packets a drop rule removed would be missing from the plugin's rate.
rx_packets() { ovs-ofctl dump-ports br0 1 | sed -n 's/.*rx pkts=\([0-9]*\).*/\1/p'; }
# measure NAME: Mpps port 1 received (the PMD's rate) over $secs seconds
declare -A mpps
measure() {
  pin_others
  sleep 1
  local s e pk r0
  r0=$(rx_packets)
  s=$(date +%s.%N)
  sleep "$secs"
  pk=$(( $(rx_packets) - r0 ))
  e=$(date +%s.%N)
  mpps[$1]=$(echo "$pk / ($e - $s) / 1000000" | bc -l)
  printf "%-28s %8.3f Mpps\n" "$1" "${mpps[$1]}"
}

# profile CASE: the PMD thread's hottest symbols over 5 s (perf's cpu-clock sampling),
# CASE just measured.
profile() {
  local pid tid="" t
  command -v perf >/dev/null || { echo "  (no profile: perf is not installed; apt-get install linux-perf)"; return 0; }
  pid=$(cat "$run/ovs-vswitchd.pid")
  for t in $(ls "/proc/$pid/task"); do
    if grep -q pmd "/proc/$pid/task/$t/comm"; then tid=$t; fi
  done
  perf record -q -e cpu-clock -F 4999 -t "$tid" -o "$run/pmd.perf" -- sleep 5 >/dev/null 2>&1
  perf report -i "$run/pmd.perf" --stdio --sort symbol 2>/dev/null | grep '%' | grep -v '^#' > "$run/pmd.txt" || true
  if [ -n "${VPF_DATAPATH_PERF_OUT:-}" ]; then cp "$run/pmd.perf" "$VPF_DATAPATH_PERF_OUT"; fi
  echo "  PMD profile ($1): % of samples, symbol"
  sed 's/^ */    /; s/ *- *- *$//' "$run/pmd.txt" | head -15 || true  # head ends the pipe early
  # The plugin's share per packet: ns/packet at this rate times the share of samples.
  awk -v ns="$(echo "1000 / ${mpps[$1]}" | bc -l)" '
    { p = $1; sub("%", "", p) }
    /run_hook|Plugin::hook|host_packet|Plugin::classify|thread_slot/ { hook += p; next }
    /DecisionCache|make_key|fast_keys/ { lookup += p; next }
    /classify_avx|classify_sse|classify_scalar|classify_tables|parse_frame|parse_l4|parse_ipv|classify_in|classify_batch/ { cls += p }
    END { printf "  per packet (of %.1f ns): hook %.2f ns, cache lookup %.2f ns, classifier on miss %.2f ns\n",
                 ns, hook * ns / 100, lookup * ns / 100, cls * ns / 100 }' "$run/pmd.txt"
}

# paced SECONDS CMD...: runs CMD 50 times a second (on the clock, not after each run)
# for SECONDS; prints how many times it ran.
paced() {
  local n=0 now next end secs=$1
  shift
  next=$(date +%s%N)
  end=$((next + secs * 1000000000))
  while [ "$next" -lt "$end" ]; do
    "$@"
    n=$((n + 1)) next=$((next + 20000000)) now=$(date +%s%N)
    if [ "$now" -lt "$next" ]; then sleep "$(echo "($next - $now) / 1000000000" | bc -l)"; fi
  done
  echo "$n"
}

# churn SECONDS: 100 rule changes a second on the plugin (a rule added, removed, added,
# ...) with the single-rule commands.
churn_once() {
  ovs-appctl vportfilter/rule-add '{"kind": "filter", "id": 2000000, "bpf": "tcp port 7", "action": "drop"}' >/dev/null
  ovs-appctl vportfilter/rule-remove filter:2000000 >/dev/null
}
churn_loop() { echo $(( $(paced "$1" churn_once) * 2 )) > "$run/churn.count"; }

# command_load SECONDS: the same 100 commands a second without changing anything
# (`ovs-appctl version`): what the generator itself costs the PMD on this 2-core machine,
# the reference that isolates what the rule changes cost.
version_twice() { ovs-appctl version >/dev/null && ovs-appctl version >/dev/null; }
command_load() { paced "$1" version_twice >/dev/null; }

# The PMD's core to the PMD alone, as a host isolates its PMD cores: every other thread of
# the switch and of ovsdb-server on core 0 (threads come and go with the plugin and the
# bridge, so this runs before every measurement).
pin_others() {
  local t
  for t in /proc/"$(cat "$run/ovs-vswitchd.pid")"/task/*; do
    grep -q '^pmd' "$t/comm" || taskset -p -c 0 "${t##*/}" >/dev/null 2>&1 || true
  done
  taskset -a -p -c 0 "$(cat "$run/ovsdb-server.pid")" >/dev/null 2>&1 || true
}

# series PCAP TABLE NAME=ARGS...: replays PCAP with the TABLE flows and measures each case
# (ARGS: plugin arguments, "none" for stock, "churn" for 1k rules changed during the run),
# round after round, so that each round holds every case of the series measured close
# together in time; results go to $run/results as "NAME ROUND MPPS".
series() {
  local pcap=$1 table=$2 r c name args gen
  shift 2
  add_ports "$pcap"
  flows "$table"
  for r in $(seq "$rounds"); do
    for c in "$@"; do
      name=${c%%=*} args=${c#*=}
      if [ "$args" = churn ] || [ "$args" = command-load ]; then
        gen=command_load
        if [ "$args" = churn ]; then plugin "$run/rules1k.json"; gen=churn_loop; else plugin none; fi
        $gen $((secs + 2)) &
        taskset -p -c 0 $! >/dev/null
        measure "$name"
        wait
        [ "$gen" = command_load ] ||
          echo "  (rule changes during the run: $(( $(cat "$run/churn.count") / (secs + 2) ))/s)"
      else
        plugin "$args"
        measure "$name"
      fi
      echo "$name $r ${mpps[$name]}" >> "$run/results"
    done
    (ovs-appctl vportfilter/show 2>/dev/null || true) | grep 'decision cache' | sed 's/^/  /' || true
  done
}

rounds="${VPF_DATAPATH_ROUNDS:-3}"
: > "$run/results"
quick=${VPF_DATAPATH_QUICK:-0}
if [ -n "${VPF_DATAPATH_SERIES:-}" ]; then
  # One series of the caller's: "PCAP;TABLE;NAME=ARGS;..." with @ for the run directory
  # (@flows64k.pcap, @rules1k.json), e.g. the same rules under two cache sizes.
  IFS=';' read -r -a cases <<< "${VPF_DATAPATH_SERIES//@/$run/}"
  series "${cases[@]}"
  quick=against
elif [ -n "${VPF_DATAPATH_AGAINST:-}" ]; then
  [ -f "$VPF_DATAPATH_AGAINST" ] || { echo "VPF_DATAPATH_AGAINST=$VPF_DATAPATH_AGAINST: no such plugin" >&2; exit 2; }
  tables="simple emc" traces="1k 64k"
  if [ "$quick" = 1 ]; then tables=simple traces=1k; fi
  for table in $tables; do
    for f in $traces; do
      pcap=$run/flows$f.pcap
      [ $f = 1k ] && pcap=$run/mix.pcap
      series "$pcap" $table "stock_${f}flows_$table=none" "against_${f}flows_$table=against:$run/rules1k.json" \
        "this_${f}flows_$table=$run/rules1k.json"
    done
  done
  if [ "$quick" != 1 ]; then
    series "$run/mix10.pcap" simple stock_drop10_simple=none "against_drop10_simple=against:$run/rules1k-drop10.json" \
      "this_drop10_simple=$run/rules1k-drop10.json"
    series "$run/flows64k.pcap" simple "uncached_newflows_simple=rules=$run/rules1k.json cache=0" \
      "against_newflows_simple=against:rules=$run/rules1k.json cache=1024" \
      "this_newflows_simple=rules=$run/rules1k.json cache=1024"
  fi
  quick=against
else
series "$run/mix.pcap" simple stock_simple=none "plugin_0_rules_simple=$run/rules0.json" \
  "plugin_1k_rules_simple=$run/rules1k.json" "plugin_10k_rules_simple=$run/rules10k.json" \
  plugin_1k_churn_simple=churn stock_commands_simple=command-load
fi
if [ "$quick" = against ]; then
  :
elif [ "${VPF_DATAPATH_PROFILE:-0}" = 1 ]; then
  plugin "$run/rules1k.json"
  measure plugin_1k_rules_simple
  profile plugin_1k_rules_simple
elif [ "${VPF_DATAPATH_PROFILE:-0}" = stock ] || [ "${VPF_DATAPATH_PROFILE:-0}" = stock64k ]; then
  if [ "$VPF_DATAPATH_PROFILE" = stock64k ]; then add_ports "$run/flows64k.pcap"; flows simple; fi
  plugin none
  measure stock_simple
  profile stock_simple
elif [ "${VPF_DATAPATH_PROFILE:-0}" = 64k ]; then
  add_ports "$run/flows64k.pcap"
  flows simple
  plugin "$run/rules1k.json"
  measure plugin_1k_64kflows_simple
  profile plugin_1k_64kflows_simple
elif [ "${VPF_DATAPATH_PROFILE:-0}" = drop10 ]; then
  add_ports "$run/mix10.pcap"
  flows simple
  plugin "$run/rules1k-drop10.json"
  measure plugin_1k_drop10_simple
  profile plugin_1k_drop10_simple
fi
if [ "$quick" = 0 ]; then
  series "$run/mix.pcap" emc stock_emc=none "plugin_0_rules_emc=$run/rules0.json" \
    "plugin_1k_rules_emc=$run/rules1k.json" "plugin_10k_rules_emc=$run/rules10k.json"
  for f in 1 64k; do
    for table in simple emc; do
      series "$run/flows$f.pcap" $table "stock_${f}flows_$table=none" "plugin_1k_${f}flows_$table=$run/rules1k.json" \
        "plugin_10k_${f}flows_$table=$run/rules10k.json"
    done
  done
  # Every packet a new flow: 64k flows through a cache of 1k flows, against no cache.
  series "$run/flows64k.pcap" simple "plugin_1k_newflows_uncached=rules=$run/rules1k.json cache=0" \
    "plugin_1k_newflows_cached=rules=$run/rules1k.json cache=1024"
  for table in simple emc; do
    series "$run/mix10.pcap" $table "stock_drop10_$table=none" "plugin_1k_drop10_$table=$run/rules1k-drop10.json"
    ovs-appctl vportfilter/show | grep outgoing | sed 's/^/  /'
  done
fi
plugin none

# The ratios: per round, the case over its reference of the same round; the median of the
# rounds (and the medians of the rates).
echo
python3 - "$run/results" ${VPF_DATAPATH_SERIES:+series} <<'PY'
import collections, statistics, sys
runs = collections.defaultdict(dict)
for line in open(sys.argv[1]):
    name, r, v = line.split()
    runs[name][r] = float(v)
print("median Mpps over %d rounds:" % max(len(v) for v in runs.values()))
for name, v in runs.items():
    print("  %-30s %8.3f  (%s)" % (name, statistics.median(v.values()), " ".join("%.3f" % x for x in v.values())))
def ratio(label, case, ref):
    if case not in runs or ref not in runs:
        return
    per = [runs[case][r] / runs[ref][r] for r in runs[case] if r in runs[ref]]
    print("ratio %s %.3f" % (label, statistics.median(per)))
for t in ("simple", "emc"):
    for c in ("0", "1k", "10k"):
        ratio("datapath_%s_rules_%s_vs_stock" % (c, t), "plugin_%s_rules_%s" % (c, t), "stock_" + t)
    ratio("datapath_1k_rules_drop10_%s_vs_stock" % t, "plugin_1k_drop10_" + t, "stock_drop10_" + t)
for t in ("simple", "emc"):
    for c in ("1k", "10k"):
        ratio("datapath_%s_rules_1flows_%s_vs_stock" % (c, t), "plugin_%s_1flows_%s" % (c, t), "stock_1flows_" + t)
        ratio("datapath_%s_rules_1kflows_%s_vs_stock" % (c, t), "plugin_%s_rules_%s" % (c, t), "stock_" + t)
        ratio("datapath_%s_rules_64kflows_%s_vs_stock" % (c, t), "plugin_%s_64kflows_%s" % (c, t), "stock_64kflows_" + t)
ratio("datapath_1k_rules_newflows_simple_vs_uncached", "plugin_1k_newflows_cached", "plugin_1k_newflows_uncached")
ratio("datapath_1k_rules_churn_simple_vs_stock", "plugin_1k_churn_simple", "stock_simple")
ratio("datapath_1k_rules_churn_simple_vs_stock_under_the_same_command_load", "plugin_1k_churn_simple",
      "stock_commands_simple")
names = list(runs)
if len(sys.argv) > 2:  # VPF_DATAPATH_SERIES: each case against the first
    for n in names[1:]:
        ratio("series_%s_vs_%s" % (n, names[0]), n, names[0])
for build in ("against", "this"):
    for case in ("1kflows_simple", "64kflows_simple", "1kflows_emc", "64kflows_emc", "drop10_simple"):
        ratio("%s_%s_vs_stock" % (build, case), "%s_%s" % (build, case), "stock_" + case)
    ratio("%s_newflows_simple_vs_uncached" % build, "%s_newflows_simple" % build, "uncached_newflows_simple")
PY
