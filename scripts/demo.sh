#!/usr/bin/env bash
# Installs what is needed, builds vportfilter and runs the demo: a provisioning-style rules
# file applied offline to a sample capture of one VM's traffic, with a readable report.
source "$(dirname "$0")/lib.sh"
cd "$VPF_ROOT"
bash "$VPF_ROOT/scripts/install-deps.sh"
bash "$VPF_ROOT/scripts/build.sh"

out="$VPF_BUILD/demo"
mkdir -p "$out"
vpfctl="$VPF_BUILD/agent/src/vpfctl/vpfctl"
"$VPF_BUILD/matcher/vpf-gen" demo --out "$out/vm1-outgoing.pcap"
rules="$VPF_ROOT/scripts/demo/rules.json"

vpf_log "the capture: what VM 10.0.0.1 sends ($out/vm1-outgoing.pcap)"
tcpdump -nr "$out/vm1-outgoing.pcap" 2>/dev/null | nl -v0 -w6 -s'  '

vpf_log "the rules ($rules)"
sed 's/^/    /' "$rules"

vpf_log "vpfctl classify: the decision for every packet, outgoing on adapter 0"
"$vpfctl" classify --rules "$rules" --pcap "$out/vm1-outgoing.pcap" --adapter 0 --direction out

"$vpfctl" classify --rules "$rules" --pcap "$out/vm1-outgoing.pcap" --format json > "$out/decisions.jsonl"
vpf_log "JSON lines for scripts: $out/decisions.jsonl"
head -3 "$out/decisions.jsonl"
