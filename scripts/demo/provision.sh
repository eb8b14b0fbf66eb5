#!/usr/bin/env bash
# A provisioning script as a hypervisor's tooling would run it when VMs are placed:
#   provision.sh VM1_ADAPTER VM2_ADAPTER VM2_ADDRESS
# Policy: ARP always passes; nobody reaches telnet; VM2 takes no UDP on 9999; VM1 may
# send no large UDP datagrams (over 1000 bytes); connection attempts (TCP SYN) and
# pings to VM2 are reported; DNS from VM1 to anything but VM2 is blocked (NF_RULE style).
set -euo pipefail
vpfctl="${VPFCTL:-vpfctl}"
vm1="$1" vm2="$2" vm2_ip="$3"
"$vpfctl" rule del --all                                   # start from a known state
"$vpfctl" rule add --kind passthrough --id 1 --bpf arp
"$vpfctl" rule add --id 10 --bpf "tcp dst port 23" --action drop
"$vpfctl" rule add --id 11 --adapter "$vm2" --direction incoming --protocol udp --local-port 9999 --action drop
"$vpfctl" rule add --id 12 --adapter "$vm1" --direction outgoing --protocol udp --min-size 1000 --action drop
"$vpfctl" rule add --id 20 --bpf "tcp[tcpflags] & tcp-syn != 0 and tcp[tcpflags] & tcp-ack == 0" --action notify
"$vpfctl" rule add --id 21 --adapter "$vm2" --direction incoming --bpf "icmp[icmptype] == icmp-echo" --action notify
"$vpfctl" rule add --kind connection --id 30 --adapter "$vm1" --direction outgoing --protocol udp --remote-port 53 \
  --flags block
"$vpfctl" rule add --kind passthrough --id 2 --adapter "$vm1" --direction outgoing --bpf "udp dst port 53 and dst host $vm2_ip"
