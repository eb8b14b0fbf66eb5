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
expect "action values" "$(complete_words rule add --action "")" drop capture notify count
# Every offered option exists, and every option --help lists is offered.
# same_options WHAT COMMAND...: compares the offered options with the --help of COMMAND
same_options() {
  local what="$1" o offered help
  shift
  offered=$(complete_words "$@" --)
  help=$("$vpfctl" "$@" --help)
  for o in $offered; do
    grep -q -- "$o" <<<"$help" || { echo "FAIL: $what offers $o, which --help does not list"; fails=$((fails+1)); }
  done
  for o in $(grep -o -- '--[a-z][a-z-]*' <<<"$help" | sort -u); do
    grep -qx -- "$o" <<<"$(tr ' ' '\n' <<<"$offered")" ||
      { echo "FAIL: $what --help lists $o, which completion does not offer"; fails=$((fails+1)); }
  done
}
for c in adapters stats capture notify send insert install uninstall status classify start stop; do
  same_options "$c" "$c"
done
for s in add del list import export; do
  same_options "rule $s" rule "$s"
done
echo "$fails failed"
[ "$fails" = 0 ]
