// Test support: builds Ethernet frames of every kind the parser knows, and random ones.
#pragma once

#include <array>
#include <cstdint>
#include <random>
#include <vector>

namespace vpf::test {

using Mac = std::array<uint8_t, 6>;
using Ip6 = std::array<uint32_t, 4>;

class FrameBuilder {
 public:
  FrameBuilder& eth(const Mac& dst, const Mac& src);
  FrameBuilder& vlan(uint16_t vid, uint16_t tpid = 0x8100, uint8_t pcp = 0);
  FrameBuilder& ethertype(uint16_t t);
  // IPv4 header; frag is the 16-bit flags+offset field; opt_words 32-bit words of options.
  FrameBuilder& ipv4(uint32_t src, uint32_t dst, uint8_t proto, uint16_t frag = 0,
                     uint8_t opt_words = 0, uint8_t ttl = 64, uint8_t tos = 0);
  FrameBuilder& ipv6(const Ip6& src, const Ip6& dst, uint8_t next_header, uint8_t hop_limit = 64);
  // IPv6 extension header of type `type` (0, 43, 60: 8*(len8+1) bytes; 51: AH; 44: fragment).
  FrameBuilder& ext6(uint8_t type, uint8_t next_header, uint8_t len8 = 0, uint16_t frag_off = 0,
                     bool more = false);
  FrameBuilder& tcp(uint16_t sport, uint16_t dport, uint8_t flags = 0x10);
  FrameBuilder& udp(uint16_t sport, uint16_t dport);
  FrameBuilder& sctp(uint16_t sport, uint16_t dport);
  FrameBuilder& icmp(uint8_t type, uint8_t code);
  FrameBuilder& arp(uint16_t op, const Mac& sha, uint32_t spa, const Mac& tha, uint32_t tpa);
  FrameBuilder& payload(size_t n, uint8_t fill = 0xab);
  FrameBuilder& bytes(const std::vector<uint8_t>& b);
  // Fixes IP length fields and the IPv4 header checksum, pads to `min_len`.
  std::vector<uint8_t> build(size_t min_len = 0) const;

 private:
  void put16(uint16_t v);
  void put32(uint32_t v);
  std::vector<uint8_t> b_;
  long ip_off_ = -1;
  int ip_ver_ = 0;
};

inline constexpr Mac kMacA{0x52, 0x54, 0x00, 0x00, 0x00, 0x01};
inline constexpr Mac kMacB{0x52, 0x54, 0x00, 0x00, 0x00, 0x02};

uint32_t ip4(uint8_t a, uint8_t b, uint8_t c, uint8_t d);

// A random frame from a mix of templates (IPv4/IPv6, VLAN, QinQ, extension headers,
// options, fragments, ARP, odd ethertypes) with addresses and ports drawn from small pools
// so that filters hit; a share of frames are truncated or have bytes flipped.
std::vector<uint8_t> random_frame(std::mt19937_64& rng);

// 118 bytes of IPv6 whose AH header's length leads back to itself, then to `next` (51: AH
// again, so `ip6 protochain` would walk it forever; 6: TCP).
std::vector<uint8_t> looping_ah_frame(uint8_t next = 51);

}  // namespace vpf::test
