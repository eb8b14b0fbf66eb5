#!/usr/bin/env bash
# The bash completion of vpfctl: commands, subcommands, options and option values; and
# every option it offers is one the command accepts (checked against --help).
# usage: vpfctl_completion_test.sh COMPLETION_FILE vpfctl
set -u
source "$1"
vpfctl="$2"
fails=0
complete_words() {  # complete_words WORD... -> the candidates for the last word
  COMP_WORDS=(vpfctl "$@"); COMP_CWORD=$#; COMPREPLY=()
  _vpfctl
  echo "${COMPREPLY[*]}"
}
expect() {  # expect NAME GOT WANTED-WORD...
  local name="$1" got="$2"; shift 2
  for w in "$@"; do
    [[ " $got " == *" $w "* ]] || { echo "FAIL: $name: '$w' not in '$got'"; fails=$((fails+1)); }
  done
}
expect "commands" "$(complete_words "")" adapters rule capture classify install
expect "st prefix" "$(complete_words st)" start stop stats status
expect "rule subcommands" "$(complete_words rule "")" add del list import export
expect "rule add options" "$(complete_words rule add --b)" --bpf
expect "format values" "$(complete_words adapters --format "")" table json
expect "direction values" "$(complete_words capture --direction "")" in out any
# Every offered option exists.
for c in adapters stats capture notify send insert install uninstall status classify start stop; do
  help=$("$vpfctl" $c --help)
  for o in $(complete_words $c --); do
    grep -q -- "$o" <<<"$help" || { echo "FAIL: $c offers $o, which --help does not list"; fails=$((fails+1)); }
  done
done
for s in add del list import export; do
  help=$("$vpfctl" rule $s --help)
  for o in $(complete_words rule $s --); do
    grep -q -- "$o" <<<"$help" || { echo "FAIL: rule $s offers $o, which --help does not list"; fails=$((fails+1)); }
  done
done
echo "$fails failed"
[ "$fails" = 0 ]
