# bash completion for vpfctl: source this file, or install it as
# /usr/share/bash-completion/completions/vpfctl.
_vpfctl() {
  local cur prev cmd sub
  cur="${COMP_WORDS[COMP_CWORD]}"
  prev="${COMP_WORDS[COMP_CWORD-1]}"
  cmd="${COMP_WORDS[1]:-}"
  sub="${COMP_WORDS[2]:-}"
  local commands="adapters rule start stop stats conn capture notify send insert install uninstall status classify"
  if [ "$COMP_CWORD" -eq 1 ]; then
    COMPREPLY=($(compgen -W "$commands --help --version" -- "$cur"))
    return
  fi
  case "$prev" in
    --format) COMPREPLY=($(compgen -W "table json" -- "$cur")); return ;;
    --direction) COMPREPLY=($(compgen -W "in out any incoming outgoing" -- "$cur")); return ;;
    --kind) COMPREPLY=($(compgen -W "filter passthrough connection" -- "$cur")); return ;;
    --action) COMPREPLY=($(compgen -W "drop capture notify count" -- "$cur")); return ;;
    --collect-statistics) COMPREPLY=($(compgen -W "yes no" -- "$cur")); return ;;
    --at) COMPREPLY=($(compgen -W "head tail" -- "$cur")); return ;;
    --isa) COMPREPLY=($(compgen -W "scalar sse42 avx2 avx512" -- "$cur")); return ;;
    --protocol) COMPREPLY=($(compgen -W "tcp udp icmp icmp6 sctp udplite any" -- "$cur")); return ;;
    --flags) COMPREPLY=($(compgen -W "allow block filter filter_as_ip_packets readonly bypass_ip_packets" -- "$cur")); return ;;
    --rules|--pcap|--socket|-o|--output|-w|--write|--plugin|--allow) COMPREPLY=($(compgen -f -- "$cur")); return ;;
  esac
  local opts=""
  case "$cmd" in
    adapters) opts="--set --snaplen --collect-statistics --format --socket --help" ;;
    status) opts="--format --socket --help" ;;
    rule)
      if [ "$COMP_CWORD" -eq 2 ]; then
        COMPREPLY=($(compgen -W "add del list import export --help" -- "$cur"))
        return
      fi
      case "$sub" in
        add) opts="--json --at --kind --id --adapter --direction --min-size --max-size --bpf --action --priority --protocol --local --remote --local-port --remote-port --vm --flags --instance --socket --help" ;;
        del) opts="--kind --id --all --instance --socket --help" ;;
        list) opts="--kind --format --instance --socket --help" ;;
        import) opts="--file --replace --instance --socket --help"; COMPREPLY=($(compgen -f -- "$cur")) ;;
        export) opts="--output --kind --instance --socket --help" ;;
      esac ;;
    start|stop) opts="--instance --socket --help" ;;
    stats) opts="--adapter --watch --interval --count --format --socket --help" ;;
    conn)
      if [ "$COMP_CWORD" -eq 2 ]; then
        COMPREPLY=($(compgen -W "list show set-state complete --help" -- "$cur"))
        return
      fi
      case "$sub" in
        list) opts="--adapter --format --socket --help" ;;
        show) opts="--format --socket --help" ;;
        set-state) opts="suspended resumed --socket --help" ;;
        complete) opts="allow block --socket --help" ;;
      esac ;;
    capture) opts="--write --pcapng --adapter --direction --count --duration --expression --instance --socket --help" ;;
    notify) opts="--adapter --direction --count --duration --expression --instance --format --socket --help" ;;
    send|insert) opts="--adapter --hex --pcap --times --socket --help" ;;
    install) opts="--guid --altitude --allow --force-permission-check --plugin --socket --help" ;;
    uninstall) opts="--guid --socket --help" ;;
    classify) opts="--rules --pcap --adapter --direction --vm --format --isa --help" ;;
  esac
  COMPREPLY+=($(compgen -W "$opts" -- "$cur"))
}
complete -F _vpfctl vpfctl
