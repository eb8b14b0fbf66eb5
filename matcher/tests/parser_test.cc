#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "frames.h"
#include "vpf/matcher/parser.h"

using namespace vpf::matcher;
using namespace vpf::test;

namespace {
PacketKey parse(const std::vector<uint8_t>& f, PacketMeta meta = {}) {
  PacketKey k;
  parse_frame(f.data(), uint32_t(f.size()), meta, &k);
  return k;
}
}  // namespace

TEST(Parser, Ipv4Tcp) {
  auto f = FrameBuilder().eth(kMacB, kMacA).ethertype(0x0800).ipv4(ip4(10, 0, 0, 1), ip4(10, 0, 0, 2), 6)
               .tcp(1234, 80, 0x12).payload(10).build();
  auto k = parse(f, {7, Direction::Incoming, 3});
  EXPECT_EQ(k.f[F_ADAPTER], 7u);
  EXPECT_EQ(k.f[F_DIRECTION], 1u);
  EXPECT_EQ(k.f[F_VM], 3u);
  EXPECT_EQ(k.f[F_FRAME_LEN], f.size());
  EXPECT_EQ(k.f[F_ETH_TYPE], 0x0800u);
  EXPECT_EQ(k.f[F_ETH_SRC_HI], 0x5254u);
  EXPECT_EQ(k.f[F_ETH_SRC_LO], 0x00000001u);
  EXPECT_EQ(k.f[F_ETH_DST_LO], 0x00000002u);
  EXPECT_EQ(k.f[F_IP_VER], 4u);
  EXPECT_EQ(k.f[F_IP_PROTO], 6u);
  EXPECT_EQ(k.f[F_SRC_IP0], ip4(10, 0, 0, 1));
  EXPECT_EQ(k.f[F_DST_IP0], ip4(10, 0, 0, 2));
  EXPECT_EQ(k.f[F_SRC_IP1], 0u);
  EXPECT_EQ(k.f[F_SRC_PORT], 1234u);
  EXPECT_EQ(k.f[F_DST_PORT], 80u);
  EXPECT_EQ(k.f[F_TCP_FLAGS], 0x12u);
  EXPECT_EQ(k.f[F_PARSE_FLAGS], PARSE_L2 | PARSE_L3 | PARSE_L4 | PARSE_PORTS);
  EXPECT_EQ(k.l3_offset, 14);
  EXPECT_EQ(k.l3_size, f.size() - 14);
  EXPECT_EQ(k.l4_offset, 34);
}

TEST(Parser, PaddingIsNotPartOfIp) {
  auto f = FrameBuilder().eth(kMacB, kMacA).ethertype(0x0800).ipv4(1, 2, 17).udp(1, 2).build(60);
  auto k = parse(f);
  EXPECT_EQ(k.l3_size, 28);
  EXPECT_EQ(k.f[F_FRAME_LEN], 60u);
}

TEST(Parser, VlanAndQinQ) {
  auto f = FrameBuilder().eth(kMacB, kMacA).vlan(30, 0x88a8).vlan(10).ethertype(0x0800).ipv4(1, 2, 17).udp(53, 53).build();
  auto k = parse(f);
  EXPECT_EQ(k.f[F_VLAN], (2u << 28) | (30u << 16) | 10u);
  EXPECT_EQ(k.f[F_ETH_TYPE], 0x0800u);
  EXPECT_EQ(k.l3_offset, 22);
  EXPECT_EQ(k.f[F_DST_PORT], 53u);
  auto g = FrameBuilder().eth(kMacB, kMacA).vlan(1).vlan(2).vlan(3).ethertype(0x0800).ipv4(1, 2, 17).udp(5, 6).build();
  auto kg = parse(g);
  EXPECT_TRUE(kg.f[F_PARSE_FLAGS] & PARSE_TOO_MANY_TAGS);
  EXPECT_EQ(kg.f[F_VLAN] >> 28, 3u);
  EXPECT_EQ(kg.f[F_DST_PORT], 6u);
}

TEST(Parser, Ipv4OptionsAndFragments) {
  auto f = FrameBuilder().eth(kMacB, kMacA).ethertype(0x0800).ipv4(1, 2, 6, 0x2000, 2).tcp(10, 20).build();
  auto k = parse(f);
  EXPECT_TRUE(k.f[F_PARSE_FLAGS] & PARSE_IP_OPTIONS);
  EXPECT_EQ(k.f[F_IP_FRAG], FRAG_IS_FRAGMENT);
  EXPECT_EQ(k.f[F_SRC_PORT], 10u);
  EXPECT_EQ(k.l4_offset, 14 + 28);
  auto later = FrameBuilder().eth(kMacB, kMacA).ethertype(0x0800).ipv4(1, 2, 6, 0x0010).tcp(10, 20).build();
  auto kl = parse(later);
  EXPECT_EQ(kl.f[F_IP_FRAG], FRAG_IS_FRAGMENT | FRAG_LATER);
  EXPECT_EQ(kl.f[F_SRC_PORT], 0u);
  EXPECT_EQ(kl.f[F_PARSE_FLAGS] & PARSE_L4, 0u);
}

TEST(Parser, Ipv6ExtensionHeaders) {
  Ip6 s{0x20010db8, 0, 0, 1}, d{0x20010db8, 0, 0, 2};
  auto f = FrameBuilder().eth(kMacB, kMacA).ethertype(0x86dd).ipv6(s, d, 0).ext6(0, 43).ext6(43, 44, 1)
               .ext6(44, 60, 0, 0, true).ext6(60, 51).ext6(51, 17, 1).udp(5000, 5001).build();
  auto k = parse(f);
  EXPECT_EQ(k.f[F_IP_VER], 6u);
  EXPECT_EQ(k.f[F_SRC_IP0], 0x20010db8u);
  EXPECT_EQ(k.f[F_DST_IP3], 2u);
  EXPECT_EQ(k.f[F_IP_PROTO], 17u);
  EXPECT_EQ(k.f[F_IP_FRAG], FRAG_IS_FRAGMENT);
  EXPECT_EQ(k.f[F_DST_PORT], 5001u);
  EXPECT_EQ(k.f[F_PARSE_FLAGS] & PARSE_ERROR_MASK, 0u);
  auto esp = FrameBuilder().eth(kMacB, kMacA).ethertype(0x86dd).ipv6(s, d, 50).payload(30).build();
  auto ke = parse(esp);
  EXPECT_TRUE(ke.f[F_PARSE_FLAGS] & PARSE_STOPPED_AT_ESP);
  EXPECT_EQ(ke.f[F_IP_PROTO], 50u);
  auto later = FrameBuilder().eth(kMacB, kMacA).ethertype(0x86dd).ipv6(s, d, 44).ext6(44, 6, 0, 5).payload(20).build();
  auto kl = parse(later);
  EXPECT_EQ(kl.f[F_IP_FRAG], FRAG_IS_FRAGMENT | FRAG_LATER);
  EXPECT_EQ(kl.f[F_IP_PROTO], 6u);
  EXPECT_EQ(kl.f[F_SRC_PORT], 0u);
  auto icmp6 = FrameBuilder().eth(kMacB, kMacA).ethertype(0x86dd).ipv6(s, d, 58).icmp(128, 0).build();
  auto ki = parse(icmp6);
  EXPECT_EQ(ki.f[F_ICMP_TYPE], 128u);
}

TEST(Parser, TruncatedEverywhere) {
  Ip6 s{0x20010db8, 0, 0, 1}, d{0x20010db8, 0, 0, 2};
  const std::vector<std::vector<uint8_t>> full = {
      FrameBuilder().eth(kMacB, kMacA).vlan(5).ethertype(0x0800).ipv4(1, 2, 6, 0, 1).tcp(1, 2).build(),
      FrameBuilder().eth(kMacB, kMacA).ethertype(0x86dd).ipv6(s, d, 0).ext6(0, 44).ext6(44, 17).udp(1, 2).build(),
      FrameBuilder().eth(kMacB, kMacA).ethertype(0x0800).ipv4(1, 2, 1).icmp(8, 0).build(),
  };
  for (const auto& f : full) {
    for (size_t n = 0; n < f.size(); ++n) {
      // Copy into an exact-size heap buffer so ASan catches any read past the end.
      std::vector<uint8_t> cut(f.begin(), f.begin() + long(n));
      auto k = parse(cut);
      EXPECT_EQ(k.f[F_FRAME_LEN], n);
      EXPECT_TRUE(k.f[F_PARSE_FLAGS] & PARSE_TRUNCATED) << "length " << n;
    }
    EXPECT_FALSE(parse(f).f[F_PARSE_FLAGS] & PARSE_TRUNCATED);
  }
  PacketKey k;
  parse_frame(nullptr, 0, {}, &k);
  EXPECT_TRUE(k.f[F_PARSE_FLAGS] & PARSE_TRUNCATED);
}

TEST(Parser, MalformedHeadersAreFlagged) {
  auto bad_ihl = FrameBuilder().eth(kMacB, kMacA).ethertype(0x0800).ipv4(1, 2, 6).tcp(1, 2).build();
  bad_ihl[14] = 0x43;  // IHL 3
  EXPECT_TRUE(parse(bad_ihl).f[F_PARSE_FLAGS] & PARSE_BAD_IP_HEADER);
  auto bad_ver = FrameBuilder().eth(kMacB, kMacA).ethertype(0x0800).ipv4(1, 2, 6).tcp(1, 2).build();
  bad_ver[14] = 0x65;
  EXPECT_TRUE(parse(bad_ver).f[F_PARSE_FLAGS] & PARSE_BAD_IP_HEADER);
  EXPECT_EQ(parse(bad_ver).f[F_IP_VER], 0u);
  auto llc = FrameBuilder().eth(kMacB, kMacA).ethertype(0x0040).payload(46).build();
  EXPECT_EQ(parse(llc).f[F_ETH_TYPE], 0u);
}

TEST(Parser, RandomFramesNeverReadPastTheEnd) {
  std::mt19937_64 rng(99);
  for (int i = 0; i < 20000; ++i) {
    auto f = random_frame(rng);
    auto k = parse(f);
    ASSERT_EQ(k.f[F_FRAME_LEN], f.size());
    ASSERT_LE(uint32_t(k.l3_offset) + k.l3_size, f.size());
    ASSERT_LE(k.l4_offset, f.size());
  }
}

TEST(Parser, L3OffsetIsWhereTheParseFindsIp) {
  // The events' ip_offset: where parse_frame() puts the IP header, 0 when it finds no IP
  // byte; random frames (VLAN, QinQ, ARP, truncated ones) and each cut at every length.
  std::mt19937_64 rng(5);
  size_t with_ip = 0, tagged = 0;
  for (int i = 0; i < 3000; ++i) {
    const auto f = random_frame(rng);
    const uint32_t step = i % 20 == 0 || f.empty() ? 1 : uint32_t(f.size());
    for (uint32_t len = 0; len <= f.size(); len += step) {
      const auto k = parse(std::vector<uint8_t>(f.begin(), f.begin() + len));
      const bool ip = (k.f[F_PARSE_FLAGS] & PARSE_L2) && (k.f[F_ETH_TYPE] == 0x0800 || k.f[F_ETH_TYPE] == 0x86dd) &&
                      k.l3_offset < len;
      const uint32_t want = ip ? k.l3_offset : 0;
      ASSERT_EQ(l3_offset(f.data(), len), want) << "frame " << i << " cut to " << len;
      with_ip += want != 0;
      tagged += want > 14;
    }
  }
  EXPECT_GT(with_ip, 1000u);
  EXPECT_GT(tagged, 100u);
  const auto qinq = FrameBuilder().eth(kMacB, kMacA).vlan(5, 0x88a8).vlan(7).ethertype(0x86dd)
                        .ipv6({1, 2, 3, 4}, {5, 6, 7, 8}, 17).udp(1, 2).build();
  EXPECT_EQ(l3_offset(qinq.data(), uint32_t(qinq.size())), 22u);
  EXPECT_EQ(l3_offset(qinq.data(), 22), 0u);  // no IP byte
  EXPECT_EQ(l3_offset(qinq.data(), 23), 22u);
  EXPECT_EQ(l3_offset(nullptr, 0), 0u);
}

TEST(Parser, CommonFramePathEqualsTheFullWalk) {
  // Common frames, then each with one header byte changed and cut at every length: where
  // the straight-line path takes a frame, its key must be the full walk's; elsewhere it
  // must leave the key alone.
  std::vector<std::vector<uint8_t>> base = {
      FrameBuilder().eth(kMacB, kMacA).ethertype(0x0800).ipv4(ip4(10, 0, 0, 1), ip4(10, 0, 0, 2), 6).tcp(1234, 80, 0x12).build(),
      FrameBuilder().eth(kMacB, kMacA).ethertype(0x0800).ipv4(ip4(192, 168, 1, 9), ip4(8, 8, 8, 8), 17).udp(5353, 53).payload(30).build(),
      FrameBuilder().eth(kMacB, kMacA).ethertype(0x0800).ipv4(1, 2, 17).udp(1, 2).build(),
  };
  auto padded = base[2];
  padded.resize(padded.size() + 18, 0);  // Ethernet padding after the IP packet
  base.push_back(padded);
  std::mt19937_64 rng(7);
  std::vector<std::vector<uint8_t>> frames;
  for (const auto& f : base) {
    frames.push_back(f);
    for (size_t at = 12; at < 14 + 20 + 20 && at < f.size(); ++at) {
      auto g = f;
      g[at] = uint8_t(rng());
      frames.push_back(g);
      g[at] = f[at] ^ 0x40;
      frames.push_back(g);
    }
    for (size_t n = 0; n < f.size(); ++n) frames.emplace_back(f.begin(), f.begin() + long(n));
  }
  for (int i = 0; i < 2000; ++i) frames.push_back(random_frame(rng));
  size_t taken = 0;
  for (const auto& f : frames) {
    const PacketMeta meta{3, Direction::Incoming, 7};
    PacketKey want, got;
    std::memset(&want, 0xab, sizeof want);
    std::memset(&got, 0xab, sizeof got);
    parse_any_frame(f.data(), uint32_t(f.size()), meta, &want);
    if (!parse_common_frame(f.data(), uint32_t(f.size()), meta, &got)) {
      PacketKey untouched;
      std::memset(&untouched, 0xab, sizeof untouched);
      ASSERT_EQ(std::memcmp(&got, &untouched, sizeof got), 0);
      continue;
    }
    ++taken;
    for (int x = 0; x < kFixedFields; ++x) ASSERT_EQ(got.f[x], want.f[x]) << "field " << x;
    ASSERT_EQ(got.l3_offset, want.l3_offset);
    ASSERT_EQ(got.l3_size, want.l3_size);
    ASSERT_EQ(got.l4_offset, want.l4_offset);
  }
  EXPECT_GE(taken, 40u);                 // the common frames and their harmless changes
  EXPECT_LE(taken, frames.size() / 2);  // not the cut or changed headers
}
