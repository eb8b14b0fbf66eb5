#!/usr/bin/env bash
# vpfctl classify end to end: expected decisions, JSON output, and every kind of bad input
# (each must fail with its documented exit code and a message naming what was wrong).
# usage: vpfctl_classify_test.sh VPFCTL VPF_GEN RULES_DIR
set -u
vpfctl="$1" gen="$2" demo_rules="$3"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0 passes=0
check() {  # check NAME CONDITION...
  local name="$1"; shift
  if "$@"; then passes=$((passes + 1)); else echo "FAIL: $name"; fails=$((fails + 1)); fi
}
# run EXPECTED_RC STDERR_PATTERN ARGS... : runs vpfctl, checks exit code and stderr
run() {
  local want="$1" pattern="$2"; shift 2
  "$vpfctl" "$@" >"$tmp/out" 2>"$tmp/err"
  local rc=$?
  if [ "$rc" != "$want" ]; then
    echo "FAIL: vpfctl $* -> rc $rc, wanted $want; stderr: $(cat "$tmp/err")"; fails=$((fails + 1)); return
  fi
  if [ -n "$pattern" ] && ! grep -q -- "$pattern" "$tmp/err"; then
    echo "FAIL: vpfctl $* -> stderr lacks '$pattern': $(cat "$tmp/err")"; fails=$((fails + 1)); return
  fi
  passes=$((passes + 1))
}

"$gen" demo --out "$tmp/demo.pcap" || { echo "FAIL: vpf-gen demo"; exit 1; }
rules="$demo_rules/rules.json"

# Expected decisions of the demo capture.
run 0 "" classify --rules "$rules" --pcap "$tmp/demo.pcap"
check "ssh captured by rule 2" grep -Eq '^ +0 +74 +outgoing +2 +filter +capture$' "$tmp/out"
check "telnet dropped by rule 1" grep -Eq '^ +7 +74 +outgoing +1 +filter +drop$' "$tmp/out"
check "icmp passed by passthrough 1" grep -Eq '^ +4 +98 +outgoing +1 +passthrough +pass$' "$tmp/out"
check "mysql blocked by connection 10" grep -Eq '^ +5 +74 +outgoing +10 +connection +drop$' "$tmp/out"
check "big udp dropped by priority rule 4" grep -Eq '^ +6 +1400 +outgoing +4 +filter +drop$' "$tmp/out"
check "summary" grep -q '^10 packets: 3 dropped, 1 captured, 2 notified, 4 passed (3 by no rule)$' "$tmp/out"

# Direction matters: the same frames seen as incoming hit nothing but the passthrough.
run 0 "" classify --rules "$rules" --pcap "$tmp/demo.pcap" --direction in
check "incoming: capture rule does not apply" grep -Eq '^ +0 +74 +incoming +- ' "$tmp/out"
check "incoming: bpf without direction still applies" grep -Eq '^ +7 +74 +incoming +1 +filter +drop$' "$tmp/out"

# JSON lines, one per packet, parseable.
run 0 "" classify --rules "$rules" --pcap "$tmp/demo.pcap" --format json
check "json: 10 lines" test "$(wc -l < "$tmp/out")" = 10
check "json: valid and right" python3 -c '
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert rows[7] == {"index": 7, "length": 74, "direction": "outgoing", "rule": 1, "kind": "filter", "action": "drop"}, rows[7]
assert rows[1]["rule"] is None and rows[1]["action"] == "pass"
' "$tmp/out"

# Every kernel gives the same answer.
for isa in scalar sse42 avx2 avx512; do
  if grep -qw "$( [ $isa = sse42 ] && echo sse4_2 || echo $isa | sed 's/avx512/avx512f/')" /proc/cpuinfo; then
    "$vpfctl" classify --rules "$rules" --pcap "$tmp/demo.pcap" --isa "$isa" --format json > "$tmp/isa-$isa"
    check "isa $isa agrees" cmp -s "$tmp/isa-$isa" "$tmp/out"
  fi
done

# Bad command lines: exit 2.
run 2 "unknown command 'clasify'" clasify
run 2 "rules" classify --pcap "$tmp/demo.pcap"
run 2 "--direction: 'sideways'" classify --rules "$rules" --pcap "$tmp/demo.pcap" --direction sideways
run 2 "--format: 'xml'" classify --rules "$rules" --pcap "$tmp/demo.pcap" --format xml
run 2 "--isa: 'neon'" classify --rules "$rules" --pcap "$tmp/demo.pcap" --isa neon
run 2 "adapter" classify --rules "$rules" --pcap "$tmp/demo.pcap" --adapter minus-one
run 0 "" classify --help

# Files that cannot be read: exit 1.
run 1 "cannot open" classify --rules "$tmp/missing.json" --pcap "$tmp/demo.pcap"
run 1 "" classify --rules "$rules" --pcap "$tmp/missing.pcap"
head -c 100 "$tmp/demo.pcap" > "$tmp/cut.pcap"   # header + part of the first record
run 1 "cut.pcap" classify --rules "$rules" --pcap "$tmp/cut.pcap"
echo "not a capture" > "$tmp/text.pcap"
run 1 "" classify --rules "$rules" --pcap "$tmp/text.pcap"

# Input refused as invalid: exit 3, naming the rule and the field.
echo '{"rules": [ {"id": 1 ]}' > "$tmp/badjson.json"
run 3 "not valid JSON" classify --rules "$tmp/badjson.json" --pcap "$tmp/demo.pcap"
echo '[{"id": 4, "bpf": "tcp port eighty"}]' > "$tmp/badbpf.json"
run 3 "filter rule 4: field 'bpf':.*eighty" classify --rules "$tmp/badbpf.json" --pcap "$tmp/demo.pcap"
echo '[{"id": 1}, {"id": 2, "direction": "up"}]' > "$tmp/baddir.json"
run 3 "rule #2 (id 2): field 'direction'" classify --rules "$tmp/baddir.json" --pcap "$tmp/demo.pcap"
echo '[{"kind": "connection", "id": 3, "flags": ["offline"]}]' > "$tmp/badflag.json"
run 3 "TCP connection inside the switch" classify --rules "$tmp/badflag.json" --pcap "$tmp/demo.pcap"
python3 - "$tmp/raw.pcap" <<'PY'
import struct, sys
# A valid pcap whose link type is raw IP (101), not Ethernet.
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<IHHiIII", 0xa1b2c3d4, 2, 4, 0, 0, 65535, 101))
    pkt = bytes.fromhex("4500001c000000004011000a0a0000010a000002")
    f.write(struct.pack("<IIII", 0, 0, len(pkt), len(pkt)) + pkt)
PY
run 3 "not Ethernet" classify --rules "$rules" --pcap "$tmp/raw.pcap"

echo "$passes passed, $fails failed"
[ "$fails" = 0 ]
