// vportfilter matcher: BPF expressions.
//
// Compile: compile_bpf() hands the expression to libpcap's own compiler
// (pcap_open_dead(DLT_EN10MB, vpf::kMaxSnaplen) + pcap_compile, optimizer on), so the language and
// its meaning are exactly libpcap's, and so are its error messages — with one exception:
// names libpcap would look up (`host NAME`, a bare NAME) are looked up in /etc/hosts only,
// never in DNS (a lookup sends queries off the host and can block for seconds, and a rule
// must not change with a DNS answer); an unknown name is refused, saying so.
//
// Lower: lower_bpf() symbolically executes the compiled program.  Every path from the
// entry to a non-zero `ret` becomes one conjunction of tests "(load & mask) in [lo, hi]",
// where a load is a packet load the program makes (`ld/ldh/ldb [k]`, `[x + k]` with
// x = 4*([m]&0xf), or the packet length).  A load beyond the end of the packet makes a
// cBPF program reject the packet, so every conjunction also requires each load on its path
// to be in bounds.  The disjunction of the conjunctions is equivalent to the program on
// every packet.  A program that does arithmetic on packet data, keeps loaded values in
// scratch memory across tests in ways the lowering cannot follow, or whose path count
// exceeds the expansion bound is not lowered; it runs in the executor instead, behind a
// prefilter made of the tests every accepting path shares.
//
// Execute: BpfJit compiles a program to x86-64 machine code with asmjit.  Its result is
// the program's return value, computed exactly as libpcap's bpf_filter() computes it.  A
// build without asmjit (VPF_HAVE_ASMJIT undefined: the Open vSwitch plugin, since Debian
// ships asmjit only as a non-PIC static archive) runs the project's interpreter instead,
// behind the same interface; jitted() tells which.
//
// Thread-safety: compile_bpf() and BpfJit::compile() may be called from any thread (they
// serialise internally).  A compiled BpfJit is immutable and may run on many threads.
#pragma once

#include <sys/types.h>  // pcap/bpf.h uses u_int and friends

#include <pcap/bpf.h>

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "vpf/limits.h"

namespace vpf::matcher {

// Thrown by compile_bpf(); what() is libpcap's message.
class BpfError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Compiles `expr` for Ethernet frames.  Throws BpfError with libpcap's text.
std::vector<bpf_insn> compile_bpf(const std::string& expr);

// While it lives, this thread's resolver has no name servers: host names resolve from
// /etc/hosts (and the other local sources of nsswitch.conf) only.  For every pcap_compile.
class LocalNamesOnly {
 public:
  LocalNamesOnly();
  ~LocalNamesOnly();
  LocalNamesOnly(const LocalNamesOnly&) = delete;
  LocalNamesOnly& operator=(const LocalNamesOnly&) = delete;
  // libpcap's error text, with why an unknown host was not asked for.
  static std::string explain(const std::string& pcap_error);

 private:
  int saved_ = -1;
};

// A packet load made by a program.
struct BpfLoad {
  enum Kind : uint8_t { Abs = 0, Ind = 1, Len = 2 };
  Kind kind = Abs;
  uint8_t size = 4;      // 1, 2 or 4 bytes, big-endian
  uint32_t off = 0;      // Abs: offset; Ind: offset added to x
  uint32_t msh_off = 0;  // Ind: x = 4 * (pkt[msh_off] & 0xf)
  friend bool operator==(const BpfLoad&, const BpfLoad&) = default;
  friend auto operator<=>(const BpfLoad&, const BpfLoad&) = default;
};

// Reads `size` (1, 2 or 4) bytes at `off`, big-endian.  False if they are not all within
// the `len` bytes of the packet.
inline bool bpf_read(const uint8_t* pkt, uint32_t len, uint64_t off, uint32_t size, uint32_t* value) {
  if (off + size > len) return false;
  const uint8_t* p = pkt + off;
  switch (size) {
    case 1: *value = p[0]; break;
    case 2: *value = uint32_t(p[0]) << 8 | p[1]; break;
    default: *value = uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3];
  }
  return true;
}

// Loads `l` from a packet.  Returns false if it is out of bounds (the program would
// reject the packet).
// (Inline: the classifier runs it for every dynamic slot of every packet.)
inline bool bpf_load(const BpfLoad& l, const uint8_t* pkt, uint32_t len, uint32_t* value) {
  uint64_t off = l.off;
  if (l.kind == BpfLoad::Len) {
    *value = len;
    return true;
  }
  if (l.kind == BpfLoad::Ind) {
    if (l.msh_off >= len) return false;
    off += 4u * (pkt[l.msh_off] & 0xfu);
  }
  return bpf_read(pkt, len, off, l.size, value);
}

// One test: (value of loads[load] & mask) in [lo, hi].
struct BpfTerm {
  uint16_t load = 0;
  uint32_t mask = ~0u;
  uint32_t lo = 0;
  uint32_t hi = ~0u;
  friend bool operator==(const BpfTerm&, const BpfTerm&) = default;
};

struct BpfConjunction {
  std::vector<BpfTerm> terms;
  std::vector<uint16_t> required;  // loads that must be in bounds (sorted, unique)
};

struct BpfLowering {
  bool lowered = false;               // true: `conjunctions` is equivalent to the program
  std::string why_not;                // when not lowered: the reason (for logs and docs)
  std::vector<BpfLoad> loads;
  std::vector<BpfConjunction> conjunctions;  // lowered: OR of these; empty = matches nothing
  BpfConjunction prefilter;           // not lowered: tests every accepting path makes
};

struct BpfLoweringLimits {
  unsigned max_paths = 512;        // DFS paths explored
  unsigned max_conjunctions = 64;  // accepting paths kept
  unsigned max_loads = 24;         // distinct loads
};

BpfLowering lower_bpf(const std::vector<bpf_insn>& prog, const BpfLoweringLimits& lim = {});

// Evaluates a lowering on a packet (reference for tests; the classifier does this with
// its own tables).
bool eval_lowering(const BpfLowering& low, const uint8_t* pkt, uint32_t len);

// A program compiled to machine code.
class BpfJit {
 public:
  // The executor's calling convention: Call::ctx is passed back as the first argument.
  using Fn = uint32_t (*)(const void* ctx, const uint8_t* pkt, uint32_t wirelen, uint32_t buflen);

  // Throws BpfError if the program is invalid or code generation fails.
  static std::shared_ptr<const BpfJit> compile(const std::vector<bpf_insn>& prog);
  ~BpfJit();
  BpfJit(const BpfJit&) = delete;
  BpfJit& operator=(const BpfJit&) = delete;

  // The function and its first argument together, as plain data: a classifier entry
  // holds one pointer to it (the ISA kernels read it without calling anything here).
  struct Call {
    Fn fn = nullptr;
    const void* ctx = nullptr;
  };

  uint32_t run(const uint8_t* pkt, uint32_t wirelen, uint32_t buflen) const {
    return call_.fn(call_.ctx, pkt, wirelen, buflen);
  }
  const Call* call() const { return &call_; }
  bool jitted() const { return code_size_ > 0; }

 private:
  BpfJit() = default;
  Call call_;
  size_t code_size_ = 0;
  std::vector<bpf_insn> prog_;  // the interpreter's program (builds without asmjit)
};

// Backward jumps a program may take on one packet (libpcap compiles `ip6 protochain` into a
// loop over the extension headers); past them the packet is rejected.  libpcap's own
// interpreter has no bound: a crafted 118-byte IPv6 packet keeps it in that loop forever.
inline constexpr uint32_t kBpfMaxBackJumps = 256;

// The project's interpreter (bpf_interpret.cc): libpcap's bpf_filter() semantics, with the
// bound above.  The executor of builds without asmjit, and the reference of the tests.
uint32_t bpf_interpret(const bpf_insn* prog, size_t n, const uint8_t* pkt, uint32_t wirelen, uint32_t buflen);
uint32_t bpf_interpret(const std::vector<bpf_insn>& prog, const uint8_t* pkt, uint32_t wirelen,
                       uint32_t buflen);

}  // namespace vpf::matcher
