#!/usr/bin/env bash
# Regenerates the patch from a pristine and a modified Open vSwitch tree (developer tool).
# usage: regen-patch.sh ORIG_TREE DEV_TREE PATCH
# The patch keeps its mail header (everything before the first file diff); the files it
# touches are the ones it already lists.
set -euo pipefail
orig="$1" dev="$2" patch="$3"
files=$(grep '^+++ b/' "$patch" | sed 's|^+++ b/||')
tmp=$(mktemp)
sed -n '1,/^---$/p' "$patch" > "$tmp"
for f in $files; do
  if [ -e "$orig/$f" ]; then
    diff -u --label "a/$f" --label "b/$f" "$orig/$f" "$dev/$f" >> "$tmp" || true
  else
    diff -u --label /dev/null --label "b/$f" /dev/null "$dev/$f" >> "$tmp" || true
  fi
done
mv "$tmp" "$patch"
