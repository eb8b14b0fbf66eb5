// BPF: compilation with libpcap, packet loads, and the libpcap interpreter.
#include <pcap/pcap.h>

#include <mutex>

#include "vpf/matcher/bpf.h"

namespace vpf::matcher {

std::vector<bpf_insn> compile_bpf(const std::string& expr) {
  // libpcap's grammar keeps global state in older releases; one compile at a time.
  static std::mutex mu;
  std::lock_guard lock(mu);
  pcap_t* p = pcap_open_dead(DLT_EN10MB, kBpfSnaplen);
  if (!p) throw BpfError("pcap_open_dead failed");
  bpf_program prog{};
  if (pcap_compile(p, &prog, expr.c_str(), 1, PCAP_NETMASK_UNKNOWN) != 0) {
    std::string err = pcap_geterr(p);
    pcap_close(p);
    throw BpfError(err);
  }
  std::vector<bpf_insn> out(prog.bf_insns, prog.bf_insns + prog.bf_len);
  pcap_freecode(&prog);
  pcap_close(p);
  return out;
}

bool bpf_load(const BpfLoad& l, const uint8_t* pkt, uint32_t len, uint32_t* value) {
  uint64_t off = l.off;
  if (l.kind == BpfLoad::Len) {
    *value = len;
    return true;
  }
  if (l.kind == BpfLoad::Ind) {
    if (l.msh_off >= len) return false;
    off += 4u * (pkt[l.msh_off] & 0xfu);
  }
  if (off + l.size > len) return false;
  const uint8_t* p = pkt + off;
  switch (l.size) {
    case 1: *value = p[0]; break;
    case 2: *value = uint32_t(p[0]) << 8 | p[1]; break;
    default: *value = uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3];
  }
  return true;
}

uint32_t bpf_interpret(const std::vector<bpf_insn>& prog, const uint8_t* pkt, uint32_t wirelen,
                       uint32_t buflen) {
  return bpf_filter(prog.data(), pkt, wirelen, buflen);
}

}  // namespace vpf::matcher
