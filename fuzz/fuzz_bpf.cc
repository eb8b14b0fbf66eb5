// libFuzzer harness: a filter expression built from the input (atoms joined with and, or,
// not and parentheses) and a frame (the rest of the input), through libpcap's compiler;
// then libpcap's interpreter, ours, our JIT, our lowering, its vector form (bpf_vector.h, where
// the CPU has it) and the classifier (with and without a decision cache) must agree on the
// frame.  Any difference aborts: a finding.  An expression's compiled forms are kept while
// its frames vary (compiled()).
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "bpf_vector.h"
#include "vpf/matcher/bpf.h"
#include "vpf/matcher/classifier.h"

using namespace vpf::matcher;

namespace {

const char* const kAtoms[] = {
    "ip", "ip6", "arp", "tcp", "udp", "icmp", "icmp6", "sctp", "vlan", "vlan 10", "host 10.0.0.1",
    "src host 10.0.0.1", "dst host 10.0.0.2", "net 10.0.0.0/8", "src net 192.168.0.0/16", "port 80",
    "tcp port 80", "udp port 53", "tcp dst port 80", "src port 443", "portrange 5000-5100",
    "tcp dst portrange 1-1023", "ip6 host 2001:db8::1", "ip6 net 2001:db8::/32", "ether broadcast",
    "ether multicast", "ether src 52:54:00:00:00:01", "ether proto 0x88cc", "ether[0] & 1 != 0",
    "ether[12:2] = 0x800", "icmp[icmptype] = icmp-echo", "tcp[tcpflags] & tcp-syn != 0",
    "tcp[13] & 0x12 = 0x12", "ip[8] < 64", "ip[6:2] & 0x1fff = 0", "len < 100", "len >= 60",
    "greater 80", "less 70", "ip proto 47", "ip6 proto 17", "udp[8] = 0xee", "tcp[20:4] = 0x47455420",
    "ip[0] & 0xf > 5", "ip and ip[2:2] > 40", "ip broadcast", "ip multicast", "ip6 multicast",
};
constexpr size_t kNumAtoms = sizeof(kAtoms) / sizeof(kAtoms[0]);

// Consumes bytes from *at to build an expression of at most `depth` levels.
std::string expr(const uint8_t* d, size_t size, size_t* at, int depth) {
  const uint8_t op = *at < size ? d[(*at)++] : 0;
  const std::string atom = kAtoms[(*at < size ? d[(*at)++] : 0) % kNumAtoms];
  if (depth == 0) return atom;
  switch (op % 5) {
    case 0:
      return atom + " and (" + expr(d, size, at, depth - 1) + ")";
    case 1:
      return atom + " or (" + expr(d, size, at, depth - 1) + ")";
    case 2:
      return "not (" + expr(d, size, at, depth - 1) + ")";
    default:
      return atom;
  }
}

void check(bool ok) {
  if (!ok) std::abort();
}

// What one expression compiles to, kept while libFuzzer mutates the frame after it: the
// compilers run once per expression, the programs on every frame (and a reader's decision
// cache then meets many frames of one rule set).
struct Compiled {
  bool refused = false;  // by libpcap or by the classifier
  std::vector<bpf_insn> prog;
  std::shared_ptr<const BpfJit> jit;
  BpfLowering low;
  std::shared_ptr<const BpfVector> vec;
  Classifier c;
  std::optional<Classifier::Reader> cached;
};

// `fresh`: compiled now (not kept from an earlier input).
Compiled& compiled(const std::string& e, bool* fresh) {
  static std::unordered_map<std::string, std::unique_ptr<Compiled>> memo;
  *fresh = false;
  if (auto it = memo.find(e); it != memo.end()) return *it->second;
  *fresh = true;
  if (memo.size() >= 1024) memo.clear();
  auto& k = *memo.emplace(e, std::make_unique<Compiled>()).first->second;
  try {
    k.prog = compile_bpf(e);
  } catch (const BpfError&) {
    k.refused = true;  // libpcap refused it (e.g. "greater" with "less" nonsense): nothing to compare
    return k;
  }
  k.jit = BpfJit::compile(k.prog);
  k.low = lower_bpf(k.prog);
  k.vec = make_bpf_vector(k.low);
  Rule r;
  r.id = 1;
  r.bpf = e;
  r.action = Action::Drop;
  try {
    k.c.add(r);
  } catch (const RuleError&) {
    k.refused = true;
    return k;
  }
  k.cached.emplace(k.c.reader());
  k.cached->enable_cache(256);
  return k;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2 || size > 2048) return 0;
  size_t at = 0;
  const std::string e = expr(data, size, &at, 3);
  std::vector<uint8_t> frame(data + at, data + size);  // its own exact buffer
  const uint32_t len = uint32_t(frame.size());
  const uint8_t* pkt = frame.empty() ? nullptr : frame.data();
  bool fresh = false;
  Compiled& k = compiled(e, &fresh);
  if (k.refused) return 0;
  // libpcap's interpreter is the oracle (no atom compiles to a loop: no protochain); the
  // project's interpreter, the plugin's executor, must agree with it.
  const uint32_t want = bpf_filter(k.prog.data(), pkt, len, len);
  check(bpf_interpret(k.prog, pkt, len, len) == want);
  check(k.jit->run(pkt, len, len) == want);
  if (k.low.lowered) check(eval_lowering(k.low, pkt, len) == (want != 0));
  if (k.vec) check(bpf_vector_match(*k.vec, pkt, len) == (want != 0));
  const PacketMeta meta{0, Direction::Outgoing, 0};
  check(k.c.classify_one(pkt, len, meta).matched() == (want != 0));
  const PacketBatch b{&pkt, &len, 1, meta};
  Decision d;
  check(((k.cached->classify(b, &d) & 1) != 0) == (want != 0));
  if (fresh) {  // one classifier whose rule changes with every new expression: its cache must follow
    static Classifier shared;
    static auto shared_cached = [] {
      auto r = shared.reader();
      r.enable_cache(256);
      return r;
    }();
    shared.clear();
    Rule r;
    r.id = 1;
    r.bpf = e;
    r.action = Action::Drop;
    shared.add(r);
    check(((shared_cached.classify(b, &d) & 1) != 0) == (want != 0));
  }
  return 0;
}
