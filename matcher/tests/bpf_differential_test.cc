// Differential test: our lowering and our JIT against libpcap's own interpreter
// (pcap_offline_filter / bpf_filter) over many expressions and frames.
#include <gtest/gtest.h>
#include <pcap/pcap.h>

#include <random>
#include <string>
#include <vector>

#include "bpf_vector.h"
#include "frames.h"
#include "vpf/matcher/bpf.h"
#include "vpf/matcher/classifier.h"
#include "vpf/matcher/packet_key.h"
#include "vpf/matcher/isa.h"

using namespace vpf::matcher;

namespace {

std::vector<std::string> expressions() {
  std::vector<std::string> e = {
      "", "ip", "ip6", "arp", "rarp", "tcp", "udp", "icmp", "icmp6", "sctp", "vlan", "vlan 10",
      "vlan 20", "vlan 10 and vlan 20", "vlan and ip", "vlan 10 and host 1.2.3.4", "vlan 100 or vlan 4095",
      "host 1.2.3.4", "host 10.0.0.1", "src host 10.0.0.1", "dst host 10.0.0.2", "not host 10.0.0.1",
      "ip host 10.0.0.1", "arp host 10.0.0.2", "host 10.0.0.1 and host 10.0.0.2",
      "host 10.0.0.1 or host 8.8.8.8", "net 10.0.0.0/8", "net 10.0.0.0/24", "src net 192.168.0.0/16",
      "dst net 172.16.0.0/12", "net 10.1.0.0 mask 255.255.0.0", "not net 10.0.0.0/8", "net 224.0.0.0/4",
      "port 22", "port 80", "tcp port 80", "udp port 53", "tcp dst port 80", "tcp src port 80",
      "src port 443", "dst port 8080", "port 0", "port 65535", "not port 22", "tcp and not port 22",
      "portrange 5000-5100", "udp portrange 5000-5100", "tcp dst portrange 1-1023",
      "src portrange 1024-65535", "ip6 and udp portrange 5000-5100", "ip6 and tcp", "ip6 and udp",
      "ip6 and tcp port 80", "ip6 host 2001:db8::1", "ip6 src host 2001:db8::1",
      "ip6 dst host 2001:db8::2", "ip6 net 2001:db8::/32", "ip6 src net fe80::/10", "ip6 and not host ::1",
      "host 2001:db8::1 or host 2001:db8::2", "net ff00::/8", "ip6 multicast", "ip multicast",
      "ether broadcast", "ether multicast", "ether host 52:54:00:00:00:01",
      "ether src 52:54:00:00:00:01", "ether dst 52:54:00:00:00:02", "not ether host 52:54:00:00:00:01",
      "ether proto 0x88cc", "ether proto 0x0806", "ether proto \\ip", "ether proto \\ip6",
      "ether[0] & 1 != 0", "ether[12:2] = 0x800", "ether[12:2] > 0x600", "ether[12:2] < 0x600",
      "icmp[icmptype] = icmp-echo", "icmp[icmptype] == icmp-echoreply", "icmp[0] = 3",
      "icmp and icmp[1] = 1", "icmp6 and ip6[40] = 128", "icmp6[icmp6type] = icmp6-echo",
      "icmp6[icmp6type] = icmp6-neighborsolicit", "tcp[tcpflags] & tcp-syn != 0",
      "tcp[tcpflags] & (tcp-syn|tcp-fin) != 0", "tcp[tcpflags] & tcp-syn != 0 and tcp[tcpflags] & tcp-ack = 0",
      "tcp[tcpflags] = tcp-syn", "tcp[tcpflags] & tcp-rst != 0", "tcp[13] & 0x12 = 0x12",
      "tcp[13] = 0x18", "tcp[0:2] = 22", "tcp[2:2] > 1023", "udp[0:2] = 53", "udp[2:2] = 123",
      "len <= 128", "len > 128", "len >= 60", "len < 100", "len = 60", "greater 100", "less 64",
      "greater 1000", "ip[0] & 0xf > 5", "ip[0] & 0xf != 5", "ip[1] != 0", "ip[8] < 10", "ip[8] = 255",
      "ip[6:2] & 0x1fff != 0", "ip[6:2] & 0x3fff != 0", "ip[6] & 0x20 != 0", "ip[6] & 0x40 != 0",
      "ip[9] = 47", "ip proto 47", "ip proto \\tcp", "ip proto 50", "ip6 proto 50", "proto 47",
      "ip[2:2] > 576", "ip[2:2] - ((ip[0]&0xf)<<2) > 100", "ip[12:4] = 0x0a000001",
      "ip[16] = 10", "ip6[6] = 44", "ip6[6] = 0", "ip6[0:4] & 0xfff00000 != 0x60000000",
      "ip6 protochain 6", "ip6 protochain 17", "ip protochain 6", "ip6 and ip6[40] = 6",
      "tcp and (port 80 or port 443)", "udp and (port 53 or port 123)",
      "(tcp or udp) and port 5000", "tcp port 80 and net 10.0.0.0/8", "tcp dst port 80 and net 10.0.0.0/8",
      "not (tcp port 22 or udp port 53)", "not tcp and not udp", "not ip and not ip6", "not arp",
      "ip and not tcp", "tcp or icmp", "host 1.2.3.4 and (tcp or udp)", "(host 10.0.0.1 and port 22) or (host 10.0.0.2 and port 80)",
      "src 10.0.0.1 and dst 10.0.0.2", "src 10.0.0.1 or dst 10.0.0.1", "src 10.0.0.1 and not dst port 22",
      "ip and len > 100 and udp", "vlan 10 and tcp port 80", "vlan and ip6", "vlan 10 and udp portrange 5000-5100",
      "vlan 30 and vlan 10", "vlan and vlan and ip", "ip and ip[8] > 128 and tcp", "udp and udp[4:2] > 100",
      "tcp and tcp[12] & 0xf0 > 0x50", "icmp or icmp6", "sctp port 80", "sctp and dst port 22",
      "ip6 and sctp", "ether src 52:54:00:00:00:01 and ip", "ether dst ff:ff:ff:ff:ff:ff and arp",
      "arp[6:2] = 1", "arp[6:2] = 2", "rarp or arp", "ip and (ip[6:2] & 0x1fff = 0)",
      "ip and ip[6:2] & 0x1fff = 0 and udp", "portrange 1-100 or portrange 60000-65535",
      "tcp portrange 10-20 and not tcp port 15", "host 8.8.8.8 and udp port 53", "not net 10.0.0.0/8 and ip",
      "ip6 and net 2001:db8::/48", "ip6 and src net 2001:db8:1::/48", "ip6 and not ip6 multicast",
      "udp and len < 80", "tcp and len between_placeholder",
  };
  // Remove the one invalid placeholder above (bad-expression tests live elsewhere).
  e.pop_back();
  // Combinations of primitives with and/or/not.
  const std::vector<std::string> prim = {"tcp", "udp", "icmp", "ip6", "vlan 10", "port 80", "host 10.0.0.1",
                                         "net 10.0.0.0/8", "len > 200", "tcp[tcpflags] & tcp-syn != 0",
                                         "ether broadcast", "udp portrange 5000-5100"};
  for (size_t i = 0; i < prim.size(); ++i)
    for (size_t j = i + 1; j < prim.size(); j += 2) {
      e.push_back("(" + prim[i] + ") and not (" + prim[j] + ")");
      e.push_back("(" + prim[i] + ") or (" + prim[j] + ")");
    }
  return e;
}

std::vector<std::vector<uint8_t>> frames() {
  std::mt19937_64 rng(20261123);
  std::vector<std::vector<uint8_t>> f;
  for (int i = 0; i < 12000; ++i) f.push_back(vpf::test::random_frame(rng));
  return f;
}

}  // namespace

TEST(BpfDifferential, LoweringAndJitEqualLibpcap) {
  const auto exprs = expressions();
  const auto pkts = frames();
  ASSERT_GE(exprs.size(), 200u);
  ASSERT_GE(pkts.size(), 10000u);
  size_t lowered = 0, vectored = 0, mismatches = 0, prefilter_violations = 0, accepted = 0;
  for (const auto& expr : exprs) {
    std::vector<bpf_insn> prog;
    ASSERT_NO_THROW(prog = compile_bpf(expr)) << expr;
    const BpfLowering low = lower_bpf(prog);
    if (low.lowered) ++lowered;
    const auto vec = make_bpf_vector(low);
    if (vec) ++vectored;
    auto jit = BpfJit::compile(prog);
    bpf_program bp{static_cast<u_int>(prog.size()), prog.data()};
    for (const auto& p : pkts) {
      pcap_pkthdr h{};
      h.caplen = h.len = static_cast<bpf_u_int32>(p.size());
      const uint32_t want = pcap_offline_filter(&bp, &h, p.data());
      accepted += want != 0;
      const uint32_t got_jit = jit->run(p.data(), h.len, h.caplen);
      if (got_jit != want) {
        ++mismatches;
        ADD_FAILURE() << "JIT '" << expr << "' len " << p.size() << ": " << got_jit << " != " << want;
      }
      const bool got_low = eval_lowering(low, p.data(), h.caplen);
      if (low.lowered && got_low != (want != 0)) {
        ++mismatches;
        ADD_FAILURE() << "lowered '" << expr << "' len " << p.size() << ": " << got_low << " != " << want;
      }
      if (!low.lowered && want != 0 && !got_low) ++prefilter_violations;
      if (vec && bpf_vector_match(*vec, p.data(), h.caplen) != (want != 0)) {
        ++mismatches;
        ADD_FAILURE() << "vector '" << expr << "' len " << p.size() << ": " << !(want != 0) << " != " << (want != 0);
      }
    }
    if (mismatches > 20) break;
  }
  EXPECT_EQ(mismatches, 0u);
  EXPECT_EQ(prefilter_violations, 0u) << "a prefilter rejected a packet the program accepts";
  // Most real filters must lower; the rest run in the JIT.
  EXPECT_GE(lowered * 10, exprs.size() * 8) << lowered << " of " << exprs.size() << " lowered";
  EXPECT_GT(accepted, 0u);
  // Most lowered filters also fit the vector evaluator where the CPU has it.
  if (cpu_has_avx512_vbmi()) EXPECT_GE(vectored * 10, lowered * 7) << vectored << " of " << lowered << " lowered fit";
  else EXPECT_EQ(vectored, 0u);
  RecordProperty("vectored", int(vectored));
  RecordProperty("expressions", int(exprs.size()));
  RecordProperty("frames", int(pkts.size()));
  RecordProperty("lowered", int(lowered));
  std::printf("differential: %zu expressions x %zu frames, %zu lowered, %zu in vector form, %zu accepts, "
              "0 mismatches expected, %zu found\n",
              exprs.size(), pkts.size(), lowered, vectored, accepted, mismatches);
}

// The vector evaluator reads a window of 128 bytes with masks at the packet's length: a
// frame cut at every length, and frames longer than the window, give libpcap's answer.
TEST(BpfVector, EveryLengthAndLongFrames) {
  if (!cpu_has_avx512_vbmi()) GTEST_SKIP() << "this CPU has no AVX-512 VBMI: the evaluator is not used";
  std::mt19937_64 rng(7);
  const std::vector<std::string> exprs = {"tcp dst port 80 and net 10.0.0.0/8", "udp and len > 100", "tcp[13] = 0x18",
                                          "vlan 10 and tcp", "ip6 and tcp port 80", "ip[6:2] & 0x1fff != 0"};
  for (const auto& expr : exprs) {
    const auto prog = compile_bpf(expr);
    const auto vec = make_bpf_vector(lower_bpf(prog));
    ASSERT_TRUE(vec) << expr;
    bpf_program bp{static_cast<u_int>(prog.size()), const_cast<bpf_insn*>(prog.data())};
    for (int k = 0; k < 300; ++k) {
      std::vector<uint8_t> f = vpf::test::random_frame(rng);
      f.resize(f.size() + rng() % 200);  // some frames beyond the window
      for (uint32_t len = 0; len <= f.size(); ++len) {
        // The bytes past `len` are in a separate buffer: reading them would be caught by ASan.
        std::vector<uint8_t> cut(f.begin(), f.begin() + len);
        const bool want = bpf_filter(bp.bf_insns, cut.data(), len, len) != 0;
        ASSERT_EQ(bpf_vector_match(*vec, cut.data(), len), want) << expr << " len " << len;
      }
    }
  }
}

// The slot loader fills a snapshot's dynamic slots as bpf_load() does, one by one.
TEST(BpfVector, SlotLoaderEqualsScalarLoads) {
  if (!cpu_has_avx512_vbmi()) GTEST_SKIP() << "this CPU has no AVX-512 VBMI: the loader is not used";
  std::mt19937_64 rng(11);
  for (int round = 0; round < 200; ++round) {
    BpfLoad loads[kDynamicSlots];
    uint32_t mask = 0;
    for (int k = 0; k < 1 + int(rng() % 10); ++k) {
      const unsigned slot = unsigned(rng() % 16);
      BpfLoad& l = loads[slot];
      l.kind = static_cast<BpfLoad::Kind>(rng() % 3);
      l.size = uint8_t(1u << (rng() % 3));
      l.off = uint32_t(rng() % (l.kind == BpfLoad::Ind ? 64 : 124));
      l.msh_off = 14;
      mask |= 1u << slot;
    }
    const auto v = make_bpf_slot_loader(loads, mask);
    ASSERT_TRUE(v) << "round " << round;
    for (int k = 0; k < 20; ++k) {
      std::vector<uint8_t> f = vpf::test::random_frame(rng);
      f.resize(f.size() + rng() % 100);
      const uint32_t len = uint32_t(rng() % (f.size() + 1));
      std::vector<uint8_t> cut(f.begin(), f.begin() + len);
      PacketRef p{cut.data(), len, {}};
      alignas(64) uint32_t got[24] = {};
      bpf_vector_load_slots(*v, &p, 1, got, &got[16], 24);
      uint32_t valid = 0;
      for (uint32_t m = mask; m; m &= m - 1) {
        const int slot = __builtin_ctz(m);
        uint32_t want = 0;
        const bool ok = bpf_load(loads[slot], cut.data(), len, &want);
        valid |= uint32_t(ok) << slot;
        if (ok) {
          ASSERT_EQ(got[slot], want) << "round " << round << " slot " << slot << " len " << len;
        }
      }
      ASSERT_EQ(got[16], valid) << "round " << round << " len " << len;
    }
  }
  // No slot, more than 16 slots, or a load past the window: no loader.
  BpfLoad far[kDynamicSlots];
  far[0].off = 200;
  EXPECT_FALSE(make_bpf_slot_loader(far + 1, 0));
  EXPECT_FALSE(make_bpf_slot_loader(far, 1));
  EXPECT_FALSE(make_bpf_slot_loader(far + 1, 1u << 20));
}

TEST(BpfVector, RefusesWhatDoesNotFit) {
  // A load past the 128-byte window; more than 16 distinct tests; a program that is not
  // lowered: the classifier runs these programs' machine code instead.
  EXPECT_FALSE(make_bpf_vector(lower_bpf(compile_bpf("ip[200] = 1"))));
  std::string many = "port 1";
  for (int i = 2; i <= 20; ++i) many += " or port " + std::to_string(i);
  EXPECT_FALSE(make_bpf_vector(lower_bpf(compile_bpf(many))));
  BpfLowering not_lowered;
  EXPECT_FALSE(make_bpf_vector(not_lowered));
}

TEST(BpfCompile, BadExpressionCarriesLibpcapMessage) {
  try {
    compile_bpf("tcp port eighty");
    FAIL() << "accepted a bad expression";
  } catch (const BpfError& e) {
    EXPECT_NE(std::string(e.what()).find("eighty"), std::string::npos) << e.what();
  }
  EXPECT_THROW(compile_bpf("host 999.1.1.1"), BpfError);
  EXPECT_THROW(compile_bpf("(tcp"), BpfError);
  EXPECT_THROW(compile_bpf("portrange 10-"), BpfError);
}

TEST(BpfLower, KnownShapesLower) {
  for (const char* e : {"tcp dst port 80 and net 10.0.0.0/8", "ip6 and udp portrange 5000-5100",
                        "vlan 10 and host 1.2.3.4", "tcp[tcpflags] & tcp-syn != 0", "len <= 128"}) {
    auto low = lower_bpf(compile_bpf(e));
    EXPECT_TRUE(low.lowered) << e << ": " << low.why_not;
  }
  auto chain = lower_bpf(compile_bpf("ip6 protochain 6"));
  EXPECT_FALSE(chain.lowered);
  EXPECT_FALSE(chain.why_not.empty());
  EXPECT_FALSE(chain.prefilter.terms.empty()) << "prefilter should at least test the ethertype";
}
