#!/usr/bin/env bash
# Installs every Debian package vportfilter needs to build, test and run its demo.
# Debian 12 (bookworm), as root. Nothing is fetched from anywhere but Debian's archive.
set -euo pipefail

PACKAGES=(
  # toolchain and test frameworks
  build-essential cmake ninja-build pkg-config git python3
  libgtest-dev libgmock-dev libbenchmark-dev
  # the libFuzzer harnesses (fuzz/, scripts/fuzz.sh)
  clang libclang-rt-14-dev
  # matcher
  libpcap-dev libasmjit-dev libdpdk-dev dpdk libnuma-dev
  # Open vSwitch, built from Debian's source package by the project
  openvswitch-source autoconf automake libtool libcap-ng-dev libssl-dev
  libxdp-dev libbpf-dev libelf-dev zlib1g-dev
  # agent and CLI
  nlohmann-json3-dev libboost-dev libboost-program-options-dev
  # console
  qt6-base-dev qt6-charts-dev libqt6opengl6-dev libgl-dev libxkbcommon-dev xvfb xauth x11-apps imagemagick
  # traffic and inspection in the end-to-end tests and the demo
  iproute2 ethtool iputils-ping netcat-openbsd iperf3 tcpdump tshark procps psmisc bc
  # the QEMU tier of vm_tests (its guest kernel is fetched by vm_tests/qemu/make-guest.sh
  # with apt-get download, not installed)
  qemu-system-x86 busybox-static
)

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps.sh: must run as root (apt-get install)" >&2
  exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps.sh: all ${#PACKAGES[@]} packages present"
  exit 0
fi
echo "install-deps.sh: installing ${#missing[@]} packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# tshark asks whether non-root users may capture; answer "no" without a prompt.
echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps.sh: done"
