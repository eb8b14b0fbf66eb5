#!/usr/bin/env bash
# Assembles the QEMU tier's guest from Debian packages: the kernel of Debian's cloud kernel
# package (fetched with `apt-get download`, never installed on the host) and an initramfs
# with busybox-static, the kernel's virtio network modules and an /init that
#  - brings eth0 up with the address given on the kernel command line (vpf.ip=A/P),
#  - prints "vpf-guest: ready" on the console (ttyS0),
#  - serves a shell on a virtio console (hvc0), which the test drives
#    (vm_tests/qemu/guest_ctl.py).
# usage: make-guest.sh DIR   (writes DIR/vmlinuz and DIR/initrd.gz; kept when present)
set -euo pipefail
dir="$1"
[ -s "$dir/vmlinuz" ] && [ -s "$dir/initrd.gz" ] && exit 0
busybox=/bin/busybox
if [ ! -x "$busybox" ] || ldd "$busybox" >/dev/null 2>&1; then
  echo "make-guest: $busybox is missing or not static (apt-get install busybox-static)" >&2
  exit 1
fi
kernel_pkg() { apt-cache depends linux-image-cloud-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[^ ]*\)$/\1/p' | head -1; }
pkg=$(kernel_pkg)
[ -n "$pkg" ] || { apt-get update -qq && pkg=$(kernel_pkg); }
[ -n "$pkg" ] || { echo "make-guest: apt-cache knows no linux-image-cloud-amd64" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$dir"
(cd "$work" && apt-get download "$pkg" >/dev/null 2>"$work/apt.err") ||
  { echo "make-guest: apt-get download $pkg failed:" >&2; cat "$work/apt.err" >&2; exit 1; }
dpkg-deb -x "$work"/"$pkg"_*.deb "$work/k"
kver=${pkg#linux-image-}
mods="$work/k/lib/modules/$kver/kernel"
root="$work/root"
mkdir -p "$root"/{bin,dev,proc,sys,tmp,lib/modules}
cp "$busybox" "$root/bin/busybox"
# The virtio network driver and what it needs, each after its dependencies (the package
# has no modules.dep; each module names its own in its .modinfo "depends=").
mod_path() { find "$mods" -name "$1.ko" | head -1; }
mod_deps() { tr '\0' '\n' <"$(mod_path "$1")" | sed -n 's/^depends=//p' | tr ',' ' '; }
declare -A added=()
add_mod() {
  local m="$1" d
  [ -n "${added[$m]:-}" ] && return 0
  [ -n "$(mod_path "$m")" ] || { echo "make-guest: no module $m in $pkg" >&2; exit 1; }
  for d in $(mod_deps "$m"); do add_mod "$d"; done
  cp "$(mod_path "$m")" "$root/lib/modules/"
  echo "$m" >>"$root/lib/modules/order"
  added[$m]=1
}
add_mod virtio_pci
add_mod virtio_net
add_mod virtio_console
cat >"$root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /lib/modules/order); do insmod "/lib/modules/$m.ko" || echo "vpf-guest: insmod $m failed"; done
addr=$(sed -n 's/.*vpf\.ip=\([^ ]*\).*/\1/p' /proc/cmdline)
ip link set lo up
ip addr add "$addr" dev eth0 && ip link set eth0 up || echo "vpf-guest: no eth0"
ctl=/dev/hvc0
for _ in $(seq 50); do [ -e $ctl ] && break; sleep 0.1; done
echo "vpf-guest: ready $addr $(cat /sys/class/net/eth0/address 2>/dev/null)"
# stdin a pipe, not the tty: a non-interactive shell (no prompt, no echo)
# (the console's settings are reset when it is opened: set them on the open descriptor)
while true; do { stty raw -echo; cat; } <$ctl | sh >$ctl 2>&1; done
INIT
chmod 755 "$root/init"
(cd "$root" && find . | "$busybox" cpio -o -H newc 2>/dev/null | gzip -1) >"$dir/initrd.gz.tmp"
cp "$work/k/boot/vmlinuz-$kver" "$dir/vmlinuz.tmp"
mv "$dir/initrd.gz.tmp" "$dir/initrd.gz"
mv "$dir/vmlinuz.tmp" "$dir/vmlinuz"
echo "make-guest: $pkg with busybox $("$busybox" | head -1 | cut -d' ' -f2) in $dir"
