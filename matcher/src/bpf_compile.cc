// BPF: compilation with libpcap, packet loads, and the libpcap interpreter.
#include <pcap/pcap.h>
#include <resolv.h>

#include <mutex>

#include "vpf/matcher/bpf.h"

namespace vpf::matcher {

LocalNamesOnly::LocalNamesOnly() {
  // glibc's resolver state is per thread (_res); with no name server it sends nothing.
  if (res_init() != 0) return;
  saved_ = _res.nscount;
  _res.nscount = 0;
}

LocalNamesOnly::~LocalNamesOnly() {
  if (saved_ >= 0) _res.nscount = saved_;
}

std::string LocalNamesOnly::explain(const std::string& pcap_error) {
  if (pcap_error.find("unknown host") == std::string::npos) return pcap_error;
  return pcap_error + " (host names are looked up in /etc/hosts only, never in DNS: write the address)";
}

std::vector<bpf_insn> compile_bpf(const std::string& expr) {
  // libpcap's grammar keeps global state in older releases; one compile at a time.
  static std::mutex mu;
  std::lock_guard lock(mu);
  pcap_t* p = pcap_open_dead(DLT_EN10MB, int(vpf::kMaxSnaplen));
  if (!p) throw BpfError("pcap_open_dead failed");
  bpf_program prog{};
  LocalNamesOnly local;
  if (pcap_compile(p, &prog, expr.c_str(), 1, PCAP_NETMASK_UNKNOWN) != 0) {
    std::string err = LocalNamesOnly::explain(pcap_geterr(p));
    pcap_close(p);
    throw BpfError(err);
  }
  std::vector<bpf_insn> out(prog.bf_insns, prog.bf_insns + prog.bf_len);
  pcap_freecode(&prog);
  pcap_close(p);
  return out;
}

}  // namespace vpf::matcher
