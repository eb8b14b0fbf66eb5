#!/usr/bin/env bash
# Builds Open vSwitch from Debian's openvswitch-source tarball with the project's patch
# series applied, into DEST (a cache directory keyed by the hash of tarball, patches and
# configure flags; see CMakeLists.txt).  Idempotent: a finished DEST (DEST/.built) is kept.
# usage: build-ovs.sh DEST TARBALL PATCH_DIR JOBS
set -euo pipefail
dest="$1" tarball="$2" patches="$3" jobs="${4:-2}"
if [ -f "$dest/.built" ]; then
  echo "build-ovs: using cached build in $dest"
  exit 0
fi
work="$dest.tmp.$$"
rm -rf "$work"
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
echo "build-ovs: extracting $tarball"
tar -xzf "$tarball" -C "$work" --strip-components=1
shopt -s nullglob
for p in "$patches"/*.patch; do
  echo "build-ovs: applying $(basename "$p")"
  patch -d "$work" -p1 --forward --quiet < "$p"
done
echo "build-ovs: configure (--with-dpdk=shared --disable-ssl)"
(cd "$work" && ./configure --with-dpdk=shared --disable-ssl --enable-silent-rules \
     > configure.log 2>&1) || { tail -30 "$work/configure.log" >&2; exit 1; }
echo "build-ovs: make -j$jobs"
(cd "$work" && make -j"$jobs" > make.log 2>&1) || { tail -40 "$work/make.log" >&2; exit 1; }
# The switch's own testsuite script (the patch adds tests/packet-hook.at to it).
(cd "$work" && make tests/testsuite >> make.log 2>&1) || { tail -40 "$work/make.log" >&2; exit 1; }
touch "$work/.built"
rm -rf "$dest"
mv "$work" "$dest"
trap - EXIT
echo "build-ovs: done in $(( $(date +%s) - start )) s"
