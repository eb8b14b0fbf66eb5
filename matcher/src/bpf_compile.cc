// BPF: compilation with libpcap, packet loads, and the libpcap interpreter.
#include <pcap/pcap.h>

#include <mutex>

#include "vpf/matcher/bpf.h"

namespace vpf::matcher {

std::vector<bpf_insn> compile_bpf(const std::string& expr) {
  // libpcap's grammar keeps global state in older releases; one compile at a time.
  static std::mutex mu;
  std::lock_guard lock(mu);
  pcap_t* p = pcap_open_dead(DLT_EN10MB, int(vpf::kMaxSnaplen));
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

uint32_t bpf_interpret(const std::vector<bpf_insn>& prog, const uint8_t* pkt, uint32_t wirelen,
                       uint32_t buflen) {
  return bpf_filter(prog.data(), pkt, wirelen, buflen);
}

}  // namespace vpf::matcher
