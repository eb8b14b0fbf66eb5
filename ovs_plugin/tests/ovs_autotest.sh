#!/usr/bin/env bash
# ovs_autotest.sh OVS_TREE KEYWORD: runs the tests of Open vSwitch's own testsuite (the
# patched tree's tests/testsuite, which build-ovs.sh makes) whose keywords match KEYWORD, in a
# private directory.  The patch's tests/packet-hook.at is one.
set -u
B="$1" keyword="$2"
work=$(mktemp -d /tmp/vpf-ovs-autotest.XXXXXX)
trap 'rm -rf "$work"' EXIT
[ -x "$B/tests/testsuite" ] || { echo "no $B/tests/testsuite (build-ovs.sh makes it)"; exit 1; }
# The testsuite reads the build's settings (atconfig, atlocal) from its directory; they
# name the directory the tree was built in, which build-ovs.sh renamed afterwards.
real=$(readlink -f "$B")
built=$(sed -n "s/^abs_top_builddir='\(.*\)'$/\1/p" "$B/tests/atconfig")
for f in atconfig atlocal; do
  sed "s|$built|$real|g" "$B/tests/$f" > "$work/$f"
done
cd "$work"
"$B/tests/testsuite" -C "$work" AUTOTEST_PATH="$B/utilities:$B/vswitchd:$B/ovsdb:$B/vtep:$B/tests:$B/ipsec:" \
    -k "$keyword" >"$work/out.log" 2>&1
rc=$?
cat "$work/out.log"
if [ $rc -ne 0 ]; then
  for log in "$work"/testsuite.dir/*/testsuite.log; do [ -f "$log" ] && tail -60 "$log"; done
fi
grep -q "tests were successful\|test was successful" "$work/out.log" || rc=1
exit $rc
