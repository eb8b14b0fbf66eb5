// The project's cBPF interpreter (bpf.h): libpcap's bpf_filter() semantics, with one
// difference: a program may jump backwards (libpcap compiles `ip6 protochain` so) at most
// kBpfMaxBackJumps times, then the packet is rejected.  libpcap's own interpreter runs
// such a program forever on a crafted packet (an IPv6 AH header whose length leads back
// to itself, 118 bytes); in a switch's datapath that would stop the port.
#include <sys/types.h>

#include <pcap/bpf.h>

#include "vpf/matcher/bpf.h"

namespace vpf::matcher {
namespace {

uint32_t alu(uint32_t op, uint32_t a, uint32_t b, bool* ok) {
  switch (op) {
    case BPF_ADD: return a + b;
    case BPF_SUB: return a - b;
    case BPF_MUL: return a * b;
    case BPF_DIV: *ok = b != 0; return b ? a / b : 0;
    case BPF_MOD: *ok = b != 0; return b ? a % b : 0;
    case BPF_AND: return a & b;
    case BPF_OR: return a | b;
    case BPF_XOR: return a ^ b;
    case BPF_LSH: return b < 32 ? a << b : 0;
    case BPF_RSH: return b < 32 ? a >> b : 0;
    case BPF_NEG: return uint32_t(-int64_t(a));
    default: *ok = false; return 0;
  }
}

}  // namespace

uint32_t bpf_interpret(const bpf_insn* prog, size_t n, const uint8_t* pkt, uint32_t wirelen, uint32_t buflen) {
  uint32_t a = 0, x = 0, mem[BPF_MEMWORDS] = {}, back = kBpfMaxBackJumps;
  for (size_t pc = 0; pc < n; ++pc) {
    const bpf_insn& in = prog[pc];
    const uint32_t k = in.k;
    switch (BPF_CLASS(in.code)) {
      case BPF_RET: return BPF_RVAL(in.code) == BPF_A ? a : k;
      case BPF_LD:
      case BPF_LDX: {
        const bool to_x = BPF_CLASS(in.code) == BPF_LDX;
        const uint32_t size = BPF_SIZE(in.code) == BPF_W ? 4 : BPF_SIZE(in.code) == BPF_H ? 2 : 1;
        uint32_t v = 0;
        switch (BPF_MODE(in.code)) {
          case BPF_IMM: v = k; break;
          case BPF_LEN: v = wirelen; break;
          case BPF_MEM:
            if (k >= BPF_MEMWORDS) return 0;
            v = mem[k];
            break;
          case BPF_ABS:
            if (!bpf_read(pkt, buflen, k, size, &v)) return 0;
            break;
          case BPF_IND:
            if (!bpf_read(pkt, buflen, uint64_t(x) + k, size, &v)) return 0;
            break;
          case BPF_MSH:
            if (!bpf_read(pkt, buflen, k, 1, &v)) return 0;
            v = (v & 0xf) << 2;
            break;
          default: return 0;
        }
        (to_x ? x : a) = v;
        break;
      }
      case BPF_ST:
      case BPF_STX:
        if (k >= BPF_MEMWORDS) return 0;
        mem[k] = BPF_CLASS(in.code) == BPF_ST ? a : x;
        break;
      case BPF_ALU: {
        bool ok = true;
        a = alu(BPF_OP(in.code), a, BPF_SRC(in.code) == BPF_X ? x : k, &ok);
        if (!ok) return 0;
        break;
      }
      case BPF_JMP: {
        size_t to;
        if (BPF_OP(in.code) == BPF_JA) {
          to = pc + 1 + size_t(int64_t(int32_t(k)));  // sign-extended, as libpcap does
        } else {
          const uint32_t b = BPF_SRC(in.code) == BPF_X ? x : k;
          bool taken = false;
          switch (BPF_OP(in.code)) {
            case BPF_JEQ: taken = a == b; break;
            case BPF_JGT: taken = a > b; break;
            case BPF_JGE: taken = a >= b; break;
            case BPF_JSET: taken = (a & b) != 0; break;
            default: return 0;
          }
          to = pc + 1 + (taken ? in.jt : in.jf);
        }
        if (to >= n) return 0;
        if (to <= pc && back-- == 0) return 0;
        pc = to - 1;
        break;
      }
      case BPF_MISC:
        if (BPF_MISCOP(in.code) == BPF_TAX) x = a;
        else a = x;
        break;
      default: return 0;
    }
  }
  return 0;
}

uint32_t bpf_interpret(const std::vector<bpf_insn>& prog, const uint8_t* pkt, uint32_t wirelen, uint32_t buflen) {
  return bpf_interpret(prog.data(), prog.size(), pkt, wirelen, buflen);
}

}  // namespace vpf::matcher
