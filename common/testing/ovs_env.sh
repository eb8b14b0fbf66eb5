# Source me with B set to an Open vSwitch build tree.  Helpers for a private OVS instance:
# every path under one run directory, nothing in /etc, /var or /usr.
export PATH="$B/vswitchd:$B/ovsdb:$B/utilities:$PATH"

ovs_env() {
  mkdir -p "$1"
  export OVS_RUNDIR="$1" OVS_DBDIR="$1" OVS_LOGDIR="$1" OVS_PKGDATADIR="$1" OVS_SYSCONFDIR="$1"
}

# ovs_start RUNDIR [-- vswitchd args...]
ovs_start() {
  local run="$1"; shift
  [ "${1:-}" = "--" ] && shift
  ovs_env "$run"
  ovsdb-tool create "$run/conf.db" "$B/vswitchd/vswitch.ovsschema" || return 1
  ovsdb-server --detach --no-chdir --pidfile --log-file -vconsole:off \
      --remote=punix:"$run/db.sock" "$run/conf.db" 2>/dev/null || return 1
  ovs-vsctl --no-wait init || return 1
  ovs-vswitchd --detach --no-chdir --pidfile --log-file -vconsole:off "$@" 2>/dev/null || return 1
}

# for_nobody DIR FILE...: copies the programs and scripts FILE... into DIR (set as
# NOBODY_DIR), with the shared libraries they load from outside the system's directories,
# all readable by every user: tests run them as uid 65534, which may not be able to reach
# the checkout (a clone in root's home directory).  as_nobody CMD... runs CMD as uid and
# gid 65534 without groups, with those libraries (also inside `bash -c`).
for_nobody() {
  local f lib
  export NOBODY_DIR="$1"; shift
  mkdir -p "$NOBODY_DIR"
  for f in "$@"; do
    cp "$f" "$NOBODY_DIR/"
    for lib in $(ldd "$f" 2>/dev/null | awk '$3 ~ /^\// && $3 !~ /^\/(usr\/)?lib\// {print $3}'); do
      cp -L "$lib" "$NOBODY_DIR/"
    done
  done
  chmod -R a+rX "$NOBODY_DIR"
}
as_nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups env LD_LIBRARY_PATH="$NOBODY_DIR" "$@"; }
export -f as_nobody

# ovs_stop RUNDIR: stop both daemons and wait for them; SIGKILL after 10 s.
ovs_stop() {
  ovs_env "$1"
  local d p
  for d in ovs-vswitchd ovsdb-server; do
    [ -f "$1/$d.pid" ] || continue
    p=$(cat "$1/$d.pid")
    kill -0 "$p" 2>/dev/null || continue
    timeout 10 ovs-appctl -t "$d" exit >/dev/null 2>&1
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$p" 2>/dev/null && kill -9 "$p"
  done
  return 0
}

# Test helpers: check NAME COMMAND... counts a pass or prints FAIL; wait_for COND [SECONDS]
# polls a shell condition for up to SECONDS (5); finish prints the tally and fails if
# anything failed.
fails=0 passes=0
check() {
  local name="$1"; shift
  if "$@"; then passes=$((passes + 1)); else echo "FAIL: $name"; fails=$((fails + 1)); fi
}
wait_for() {
  for _ in $(seq $((${2:-5} * 10))); do eval "$1" && return 0; sleep 0.1; done
  return 1
}
finish() {
  echo "$passes passed, $fails failed"
  [ "$fails" = 0 ]
}

# dummy_bridge RUNDIR: br0 on the dummy datapath with ports p1 and p2 (dp ports 1 and 2),
# each recording what the switch sends on it in RUNDIR/pN-tx.pcap, and the flow p1 -> p2.
dummy_bridge() {
  ovs-vsctl add-br br0 -- set bridge br0 datapath_type=dummy fail-mode=secure \
    -- add-port br0 p1 -- set interface p1 type=dummy ofport_request=1 options:tx_pcap="$1/p1-tx.pcap" \
    -- add-port br0 p2 -- set interface p2 type=dummy ofport_request=2 options:tx_pcap="$1/p2-tx.pcap" &&
  ovs-ofctl add-flow br0 in_port=1,actions=output:2
}

# ovs_start_dpdk RUNDIR NETNS PREFIX MEM_MB [other_config:KEY=VALUE...]: ovsdb-server, then
# ovs-vswitchd in network namespace NETNS (created here) with DPDK and no hugepages
# (OVS.md: --legacy-mem keeps OVS from adding --in-memory), one PMD on core 1, EAL files
# under /var/run/dpdk/PREFIX.  Returns non-zero unless DPDK initialised.
ovs_start_dpdk() {
  local run="$1" ns="$2" prefix="$3" mem="$4"; shift 4
  ip netns add "$ns" && ip -n "$ns" link set lo up || return 1
  ovs_env "$run"
  ovsdb-tool create "$run/conf.db" "$B/vswitchd/vswitch.ovsschema" || return 1
  ovsdb-server --detach --no-chdir --pidfile --log-file -vconsole:off --remote=punix:"$run/db.sock" "$run/conf.db" 2>/dev/null || return 1
  ovs-vsctl --no-wait init
  ovs-vsctl --no-wait set Open_vSwitch . other_config:dpdk-init=true other_config:pmd-cpu-mask=0x2 \
    "other_config:dpdk-extra=--no-huge -m $mem --no-pci --legacy-mem --no-shconf --no-telemetry --file-prefix=$prefix" "$@"
  ip netns exec "$ns" "$B/vswitchd/ovs-vswitchd" --disable-system --detach --no-chdir --pidfile --log-file -vconsole:off 2>/dev/null
  [ "$(ovs-vsctl get Open_vSwitch . dpdk_initialized)" = true ]
}

# pcap_markers FILE / pcap_lengths FILE: per frame of a capture, one per line, the byte at
# offset 42 (the first UDP payload byte of the tests' frames) / the frame's length.
pcap_markers() { tcpdump -nr "$1" -xx 2>/dev/null | awk '/0x0020:/ {print substr($7, 1, 2)}'; }
pcap_lengths() { tcpdump -nr "$1" -e 2>/dev/null | sed -n 's/.* length \([0-9]*\): .*/\1/p'; }
joined() { tr '\n' ' '; }
