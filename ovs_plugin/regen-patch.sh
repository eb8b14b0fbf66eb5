#!/usr/bin/env bash
# Working on the patch series, in Open vSwitch's own form (git format-patch, checkpatch).
#
#   regen-patch.sh start DIR   DIR becomes a git tree of Debian's openvswitch-source with
#                              the series applied as commits (git am): edit there, then
#                              `git commit --amend` (or add commits: one patch each)
#   regen-patch.sh save DIR    writes DIR's commits since the pristine one back to
#                              patches/ (git format-patch) and runs utilities/checkpatch.py
#
# Build and test in a copy that is not a git checkout: OVS's makefile runs git-aware
# checks that the tarball's own files fail (build-aux/ltmain.sh includes assert.h).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tarball=${VPF_OVS_TARBALL:-/usr/src/openvswitch/openvswitch.tar.gz}
cmd="${1:-}" dir="${2:-}"
[ -n "$dir" ] || { sed -n '2,11p' "$0"; exit 2; }
git_id=(-c user.name=vportfilter -c user.email=vportfilter@localhost)
case "$cmd" in
  start)
    mkdir -p "$dir"
    tar -xzf "$tarball" -C "$dir" --strip-components=1
    git -C "$dir" init -q
    git -C "$dir" add -A
    git "${git_id[@]}" -C "$dir" commit -q -m "pristine: Debian openvswitch-source"
    git -C "$dir" tag pristine
    git "${git_id[@]}" -C "$dir" am -q "$here"/patches/*.patch
    git -C "$dir" log --oneline pristine..HEAD
    ;;
  save)
    rm -f "$here"/patches/*.patch
    git -C "$dir" format-patch -q -o "$here/patches" pristine..HEAD
    for p in "$here"/patches/*.patch; do
      python3 "$dir/utilities/checkpatch.py" "$p"
    done
    ;;
  *)
    sed -n '2,11p' "$0"
    exit 2
    ;;
esac
