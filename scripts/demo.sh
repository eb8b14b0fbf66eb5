#!/usr/bin/env bash
# Installs what is needed, builds vportfilter and runs the demo: a private Open vSwitch
# with the vportfilter plugin, two namespace VMs, vpf-agent; a provisioning script applies
# rules with vpfctl; traffic flows; a report says what was dropped, what was reported and
# counted, and where the capture file went.  Needs root (namespaces); cleans up after.
source "$(dirname "$0")/lib.sh"
cd "$VPF_ROOT"
bash "$VPF_ROOT/scripts/install-deps.sh"
bash "$VPF_ROOT/scripts/build.sh"

bash "$VPF_ROOT/scripts/demo/run.sh"
