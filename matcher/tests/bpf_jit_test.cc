// The JIT against the project's interpreter, and both against libpcap's where the program
// has no loop, on hand-built programs that pcap_compile never emits (arithmetic corner
// cases, scratch memory, loops, out-of-bounds loads).
#include <gtest/gtest.h>

#include <pcap/pcap.h>

#include <random>

#include "frames.h"
#include "vpf/matcher/bpf.h"

using namespace vpf::matcher;

namespace {
uint32_t both(const std::vector<bpf_insn>& prog, const std::vector<uint8_t>& pkt) {
  auto jit = BpfJit::compile(prog);
  const uint32_t want = bpf_interpret(prog, pkt.data(), uint32_t(pkt.size()), uint32_t(pkt.size()));
  const uint32_t got = jit->run(pkt.data(), uint32_t(pkt.size()), uint32_t(pkt.size()));
  EXPECT_EQ(got, want);
  bool loop = false;
  for (size_t pc = 0; pc < prog.size(); ++pc)
    loop |= prog[pc].code == (BPF_JMP | BPF_JA) && uint32_t(pc + 1 + prog[pc].k) <= pc;
  if (!loop) {
    EXPECT_EQ(want, bpf_filter(prog.data(), pkt.data(), u_int(pkt.size()), u_int(pkt.size())));
  }
  return got;
}
}  // namespace

TEST(BpfJit, ArithmeticCornerCases) {
  std::vector<uint8_t> pkt(64, 0x5a);
  for (uint32_t x : {0u, 1u, 7u, 31u, 32u, 33u, 0xffffffffu}) {
    for (uint16_t op : {BPF_ADD, BPF_SUB, BPF_MUL, BPF_DIV, BPF_MOD, BPF_AND, BPF_OR, BPF_XOR, BPF_LSH, BPF_RSH}) {
      std::vector<bpf_insn> p = {BPF_STMT(BPF_LD | BPF_IMM, 0x87654321), BPF_STMT(BPF_LDX | BPF_IMM, x),
                                 BPF_STMT(uint16_t(BPF_ALU | op | BPF_X), 0), BPF_STMT(BPF_RET | BPF_A, 0)};
      both(p, pkt);
      if (!((op == BPF_DIV || op == BPF_MOD) && x == 0) && !((op == BPF_LSH || op == BPF_RSH) && x >= 32)) {
        std::vector<bpf_insn> k = {BPF_STMT(BPF_LD | BPF_IMM, 0x87654321), BPF_STMT(uint16_t(BPF_ALU | op | BPF_K), x),
                                   BPF_STMT(BPF_RET | BPF_A, 0)};
        both(k, pkt);
      }
    }
  }
  std::vector<bpf_insn> neg = {BPF_STMT(BPF_LD | BPF_IMM, 5), BPF_STMT(BPF_ALU | BPF_NEG, 0), BPF_STMT(BPF_RET | BPF_A, 0)};
  EXPECT_EQ(both(neg, pkt), 0u - 5u);
}

TEST(BpfJit, LoadsAndBounds) {
  std::vector<uint8_t> pkt(40);
  for (size_t i = 0; i < pkt.size(); ++i) pkt[i] = uint8_t(i * 7 + 1);
  for (uint32_t off = 0; off < 44; ++off) {
    for (uint16_t sz : {BPF_W, BPF_H, BPF_B}) {
      both({BPF_STMT(uint16_t(BPF_LD | sz | BPF_ABS), off), BPF_STMT(BPF_RET | BPF_A, 0)}, pkt);
      both({BPF_STMT(BPF_LDX | BPF_B | BPF_MSH, 0), BPF_STMT(uint16_t(BPF_LD | sz | BPF_IND), off),
            BPF_STMT(BPF_RET | BPF_A, 0)},
           pkt);
      both({BPF_STMT(BPF_LDX | BPF_IMM, 0xfffffff0u), BPF_STMT(uint16_t(BPF_LD | sz | BPF_IND), off),
            BPF_STMT(BPF_RET | BPF_A, 0)},
           pkt);
    }
  }
  both({BPF_STMT(BPF_LD | BPF_W | BPF_LEN, 0), BPF_STMT(BPF_RET | BPF_A, 0)}, pkt);
  both({BPF_STMT(BPF_LDX | BPF_W | BPF_LEN, 0), BPF_STMT(BPF_MISC | BPF_TXA, 0), BPF_STMT(BPF_RET | BPF_A, 0)}, pkt);
  both({BPF_STMT(BPF_LDX | BPF_B | BPF_MSH, 100), BPF_STMT(BPF_RET | BPF_K, 1)}, pkt);
  both({BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 0), BPF_STMT(BPF_RET | BPF_K, 1)}, {});
}

TEST(BpfJit, ScratchJumpsAndReturnX) {
  std::vector<uint8_t> pkt(60, 3);
  std::vector<bpf_insn> p = {
      BPF_STMT(BPF_LD | BPF_IMM, 11), BPF_STMT(BPF_ST, 3), BPF_STMT(BPF_LD | BPF_IMM, 0),
      BPF_STMT(BPF_LDX | BPF_MEM, 3), BPF_STMT(BPF_MISC | BPF_TXA, 0),
      BPF_JUMP(BPF_JMP | BPF_JGT | BPF_K, 10, 0, 2), BPF_STMT(BPF_STX, 5), BPF_STMT(BPF_LD | BPF_MEM, 5),
      BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, 1, 0, 2), BPF_STMT(BPF_MISC | BPF_TXA, 0), BPF_STMT(BPF_RET | BPF_A, 0), BPF_STMT(BPF_RET | BPF_K, 99)};
  EXPECT_EQ(both(p, pkt), 11u);
}

TEST(BpfJit, LibpcapLoopTerminates) {
  // ip6 protochain compiles to a backward jump; it must run and agree.
  auto prog = compile_bpf("ip6 protochain 6");
  std::vector<uint8_t> pkt(120, 0);
  pkt[12] = 0x86; pkt[13] = 0xdd; pkt[14] = 0x60; pkt[20] = 0;  // hop-by-hop
  pkt[54] = 6; pkt[55] = 0;                                      // -> tcp, 8 bytes
  auto jit = BpfJit::compile(prog);
  EXPECT_EQ(jit->run(pkt.data(), 120, 120), bpf_interpret(prog, pkt.data(), 120, 120));
  EXPECT_NE(jit->run(pkt.data(), 120, 120), 0u);
}

// An IPv6 packet whose AH header's length leads back to itself: libpcap's interpreter runs
// `ip6 protochain` on it forever.  Both executors here give up after kBpfMaxBackJumps.
TEST(BpfJit, LoopOnACraftedPacketEnds) {
  const std::vector<uint8_t> pkt = vpf::test::looping_ah_frame();
  auto prog = compile_bpf("ip6 protochain 6");
  auto jit = BpfJit::compile(prog);
  EXPECT_EQ(jit->run(pkt.data(), 118, 118), 0u);
  EXPECT_EQ(bpf_interpret(prog, pkt.data(), 118, 118), 0u);
  // A hand-made loop: jump back while A < 1000 (A += 1): the bound ends it, 0.
  std::vector<bpf_insn> p = {BPF_STMT(BPF_ALU | BPF_ADD | BPF_K, 1), BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 1000, 1, 0),
                             BPF_STMT(BPF_JMP | BPF_JA, uint32_t(-3)), BPF_STMT(BPF_RET | BPF_A, 0)};
  EXPECT_EQ(BpfJit::compile(p)->run(pkt.data(), 118, 118), 0u);
  EXPECT_EQ(bpf_interpret(p, pkt.data(), 118, 118), 0u);
  // Within the bound it runs as libpcap would: 100 turns.
  p[1].k = 100;
  EXPECT_EQ(BpfJit::compile(p)->run(pkt.data(), 118, 118), 100u);
  EXPECT_EQ(bpf_interpret(p, pkt.data(), 118, 118), 100u);
}

TEST(BpfJit, RandomProgramsAgreeWithInterpreter) {
  std::mt19937_64 rng(7);
  std::vector<uint8_t> pkt(80);
  for (auto& b : pkt) b = uint8_t(rng());
  const uint16_t ops[] = {BPF_ADD, BPF_SUB, BPF_MUL, BPF_AND, BPF_OR, BPF_XOR, BPF_RSH, BPF_LSH};
  for (int n = 0; n < 300; ++n) {
    std::vector<bpf_insn> p;
    const int len = 4 + int(rng() % 12);
    for (int i = 0; i < len; ++i) {
      switch (rng() % 6) {
        case 0: p.push_back(BPF_STMT(uint16_t(BPF_LD | BPF_H | BPF_ABS), uint32_t(rng() % 90))); break;
        case 1: p.push_back(BPF_STMT(BPF_LDX | BPF_B | BPF_MSH, uint32_t(rng() % 82))); break;
        case 2: p.push_back(BPF_STMT(uint16_t(BPF_ALU | ops[rng() % 8] | BPF_K), uint32_t(rng() % 31))); break;
        case 3: p.push_back(BPF_STMT(uint16_t(BPF_LD | BPF_B | BPF_IND), uint32_t(rng() % 40))); break;
        case 4: {
          const uint8_t rest = uint8_t(len - i);
          p.push_back(BPF_JUMP(BPF_JMP | BPF_JGT | BPF_K, uint32_t(rng() % 200), uint8_t(rng() % rest), uint8_t(rng() % rest)));
          break;
        }
        default: p.push_back(BPF_STMT(BPF_MISC | BPF_TAX, 0));
      }
    }
    p.push_back(BPF_STMT(BPF_RET | BPF_A, 0));
    for (int k = 0; k < 8; ++k) {
      std::vector<uint8_t> q(pkt.begin(), pkt.begin() + long(rng() % pkt.size()));
      both(p, q);
    }
  }
}
