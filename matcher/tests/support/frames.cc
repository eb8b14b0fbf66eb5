#include "frames.h"

namespace vpf::test {

uint32_t ip4(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
  return uint32_t(a) << 24 | uint32_t(b) << 16 | uint32_t(c) << 8 | d;
}

void FrameBuilder::put16(uint16_t v) {
  b_.push_back(uint8_t(v >> 8));
  b_.push_back(uint8_t(v));
}
void FrameBuilder::put32(uint32_t v) {
  put16(uint16_t(v >> 16));
  put16(uint16_t(v));
}

FrameBuilder& FrameBuilder::eth(const Mac& dst, const Mac& src) {
  b_.insert(b_.end(), dst.begin(), dst.end());
  b_.insert(b_.end(), src.begin(), src.end());
  return *this;
}
FrameBuilder& FrameBuilder::vlan(uint16_t vid, uint16_t tpid, uint8_t pcp) {
  put16(tpid);
  put16(uint16_t(pcp << 13 | (vid & 0xfff)));
  return *this;
}
FrameBuilder& FrameBuilder::ethertype(uint16_t t) {
  put16(t);
  return *this;
}
FrameBuilder& FrameBuilder::ipv4(uint32_t src, uint32_t dst, uint8_t proto, uint16_t frag,
                                 uint8_t opt_words, uint8_t ttl, uint8_t tos) {
  ip_off_ = long(b_.size());
  ip_ver_ = 4;
  b_.push_back(uint8_t(0x40 | (5 + opt_words)));
  b_.push_back(tos);
  put16(0);  // total length, fixed in build()
  put16(0x1234);
  put16(frag);
  b_.push_back(ttl);
  b_.push_back(proto);
  put16(0);
  put32(src);
  put32(dst);
  for (int i = 0; i < opt_words; ++i) put32(0x01010101);  // NOPs
  return *this;
}
FrameBuilder& FrameBuilder::ipv6(const Ip6& src, const Ip6& dst, uint8_t nh, uint8_t hop) {
  ip_off_ = long(b_.size());
  ip_ver_ = 6;
  put32(0x60000000);
  put16(0);  // payload length, fixed in build()
  b_.push_back(nh);
  b_.push_back(hop);
  for (uint32_t w : src) put32(w);
  for (uint32_t w : dst) put32(w);
  return *this;
}
FrameBuilder& FrameBuilder::ext6(uint8_t type, uint8_t nh, uint8_t len8, uint16_t frag_off, bool more) {
  if (type == 44) {
    b_.push_back(nh);
    b_.push_back(0);
    put16(uint16_t(frag_off << 3 | (more ? 1 : 0)));
    put32(0xdeadbeef);
  } else if (type == 51) {
    b_.push_back(nh);
    b_.push_back(len8);  // AH length in 4-byte units minus 2
    b_.resize(b_.size() + (len8 + 2) * 4 - 2, 0);
  } else {
    b_.push_back(nh);
    b_.push_back(len8);
    b_.resize(b_.size() + (len8 + 1) * 8 - 2, 0);
  }
  return *this;
}
FrameBuilder& FrameBuilder::tcp(uint16_t sport, uint16_t dport, uint8_t flags) {
  put16(sport);
  put16(dport);
  put32(1000);
  put32(0);
  b_.push_back(0x50);
  b_.push_back(flags);
  put16(65535);
  put16(0);
  put16(0);
  return *this;
}
FrameBuilder& FrameBuilder::udp(uint16_t sport, uint16_t dport) {
  put16(sport);
  put16(dport);
  put16(8);
  put16(0);
  return *this;
}
FrameBuilder& FrameBuilder::sctp(uint16_t sport, uint16_t dport) {
  put16(sport);
  put16(dport);
  put32(0x11223344);
  put32(0);
  return *this;
}
FrameBuilder& FrameBuilder::icmp(uint8_t type, uint8_t code) {
  b_.push_back(type);
  b_.push_back(code);
  put16(0);
  put32(0x00010001);
  return *this;
}
FrameBuilder& FrameBuilder::arp(uint16_t op, const Mac& sha, uint32_t spa, const Mac& tha, uint32_t tpa) {
  put16(1);
  put16(0x0800);
  b_.push_back(6);
  b_.push_back(4);
  put16(op);
  b_.insert(b_.end(), sha.begin(), sha.end());
  put32(spa);
  b_.insert(b_.end(), tha.begin(), tha.end());
  put32(tpa);
  return *this;
}
FrameBuilder& FrameBuilder::payload(size_t n, uint8_t fill) {
  b_.insert(b_.end(), n, fill);
  return *this;
}
FrameBuilder& FrameBuilder::bytes(const std::vector<uint8_t>& b) {
  b_.insert(b_.end(), b.begin(), b.end());
  return *this;
}

std::vector<uint8_t> FrameBuilder::build(size_t min_len) const {
  std::vector<uint8_t> out = b_;
  if (ip_off_ >= 0 && ip_ver_ == 4 && size_t(ip_off_) + 20 <= out.size()) {
    const size_t tot = out.size() - size_t(ip_off_);
    uint8_t* ip = out.data() + ip_off_;
    ip[2] = uint8_t(tot >> 8);
    ip[3] = uint8_t(tot);
    const size_t ihl = (ip[0] & 0xf) * 4u;
    uint32_t sum = 0;
    for (size_t i = 0; i < ihl && i + 1 < tot; i += 2) sum += uint32_t(ip[i] << 8 | ip[i + 1]);
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    const uint16_t c = uint16_t(~sum);
    ip[10] = uint8_t(c >> 8);
    ip[11] = uint8_t(c);
  } else if (ip_off_ >= 0 && ip_ver_ == 6 && size_t(ip_off_) + 40 <= out.size()) {
    const size_t plen = out.size() - size_t(ip_off_) - 40;
    out[size_t(ip_off_) + 4] = uint8_t(plen >> 8);
    out[size_t(ip_off_) + 5] = uint8_t(plen);
  }
  if (out.size() < min_len) out.resize(min_len, 0);
  return out;
}

namespace {
template <typename T>
T pick(std::mt19937_64& rng, std::initializer_list<T> xs) {
  std::uniform_int_distribution<size_t> d(0, xs.size() - 1);
  return *(xs.begin() + d(rng));
}
uint32_t rnd(std::mt19937_64& rng, uint32_t lo, uint32_t hi) {
  return std::uniform_int_distribution<uint32_t>(lo, hi)(rng);
}

uint32_t pool_ip4(std::mt19937_64& rng) {
  if (rnd(rng, 0, 9) == 0) return uint32_t(rng());
  return pick<uint32_t>(rng, {ip4(10, 0, 0, 1), ip4(10, 0, 0, 2), ip4(1, 2, 3, 4), ip4(10, 1, 2, 3),
                              ip4(192, 168, 1, 10), ip4(172, 16, 5, 4), ip4(8, 8, 8, 8),
                              ip4(10, 255, 0, 1), ip4(224, 0, 0, 5), ip4(255, 255, 255, 255)});
}
Ip6 pool_ip6(std::mt19937_64& rng) {
  if (rnd(rng, 0, 9) == 0) return {uint32_t(rng()), uint32_t(rng()), uint32_t(rng()), uint32_t(rng())};
  return pick<Ip6>(rng, {Ip6{0x20010db8, 0, 0, 1}, Ip6{0x20010db8, 0, 0, 2}, Ip6{0, 0, 0, 1},
                         Ip6{0xfe800000, 0, 0x02005eff, 0xfe000001}, Ip6{0x20010db8, 0x00010000, 0, 0x10},
                         Ip6{0xff020000, 0, 0, 1}});
}
uint16_t pool_port(std::mt19937_64& rng) {
  switch (rnd(rng, 0, 5)) {
    case 0: return uint16_t(rnd(rng, 0, 65535));
    case 1: return uint16_t(rnd(rng, 4990, 5110));
    default: return pick<uint16_t>(rng, {22, 80, 443, 53, 123, 8080, 1024, 1023, 0, 65535, 5000, 5100});
  }
}
Mac pool_mac(std::mt19937_64& rng) {
  return pick<Mac>(rng, {kMacA, kMacB, Mac{0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
                         Mac{0x01, 0x00, 0x5e, 0x00, 0x00, 0x05}, Mac{0x00, 0x11, 0x22, 0x33, 0x44, 0x55}});
}

void l4(FrameBuilder& f, std::mt19937_64& rng, uint8_t proto) {
  switch (proto) {
    case 6: f.tcp(pool_port(rng), pool_port(rng), uint8_t(pick<int>(rng, {0x02, 0x12, 0x10, 0x11, 0x04, 0x18, int(rnd(rng, 0, 255))}))); break;
    case 17: f.udp(pool_port(rng), pool_port(rng)); break;
    case 132: f.sctp(pool_port(rng), pool_port(rng)); break;
    case 1: case 58: f.icmp(uint8_t(pick<int>(rng, {0, 3, 8, 11, 128, 129, 135, 136, int(rnd(rng, 0, 255))})), uint8_t(rnd(rng, 0, 3))); break;
    default: break;
  }
}
}  // namespace

std::vector<uint8_t> random_frame(std::mt19937_64& rng) {
  FrameBuilder f;
  f.eth(pool_mac(rng), pool_mac(rng));
  switch (rnd(rng, 0, 9)) {
    case 0: f.vlan(pick<uint16_t>(rng, {10, 20, 100, 4095})); break;
    case 1: f.vlan(pick<uint16_t>(rng, {10, 30}), 0x88a8).vlan(pick<uint16_t>(rng, {10, 20})); break;
    case 2: f.vlan(10, 0x9100); break;
    default: break;
  }
  const uint8_t proto = pick<uint8_t>(rng, {6, 6, 17, 17, 1, 58, 132, 47, 50});
  switch (rnd(rng, 0, 9)) {
    case 0: case 1: case 2: case 3: {
      const uint8_t p = proto == 58 ? 1 : proto;
      uint16_t frag = pick<uint16_t>(rng, {0, 0, 0, 0x4000, 0x2000, 0x0010, 0x2010});
      f.ethertype(0x0800).ipv4(pool_ip4(rng), pool_ip4(rng), p, frag, uint8_t(rnd(rng, 0, 5) == 0 ? rnd(rng, 1, 3) : 0),
                              uint8_t(rnd(rng, 1, 255)), uint8_t(rnd(rng, 0, 3) == 0 ? rnd(rng, 0, 255) : 0));
      l4(f, rng, p);
      break;
    }
    case 4: case 5: case 6: {
      const uint8_t p = proto == 1 ? 58 : proto;
      const int ext = int(rnd(rng, 0, 7));
      Ip6 s = pool_ip6(rng), d = pool_ip6(rng);
      switch (ext) {
        case 0: f.ethertype(0x86dd).ipv6(s, d, 0).ext6(0, p, uint8_t(rnd(rng, 0, 1))); break;
        case 1: f.ethertype(0x86dd).ipv6(s, d, 44).ext6(44, p, 0, 0, true); break;
        case 2: f.ethertype(0x86dd).ipv6(s, d, 44).ext6(44, p, 0, uint16_t(rnd(rng, 1, 100)), false); break;
        case 3: f.ethertype(0x86dd).ipv6(s, d, 43).ext6(43, 60, 1).ext6(60, p, 0); break;
        case 4: f.ethertype(0x86dd).ipv6(s, d, 51).ext6(51, p, 1); break;
        default: f.ethertype(0x86dd).ipv6(s, d, p); break;
      }
      if (!(ext == 2)) l4(f, rng, p);
      break;
    }
    case 7:
      f.ethertype(pick<uint16_t>(rng, {0x0806, 0x8035})).arp(uint16_t(rnd(rng, 1, 2)), kMacA, pool_ip4(rng), kMacB, pool_ip4(rng));
      break;
    case 8:
      f.ethertype(pick<uint16_t>(rng, {0x88cc, 0x8863, 0x0060, 0x0800, 0x86dd}));
      break;
    default:
      f.ethertype(0x0800).ipv4(pool_ip4(rng), pool_ip4(rng), 6).tcp(pool_port(rng), pool_port(rng), 0x02);
  }
  f.payload(rnd(rng, 0, 3) == 0 ? rnd(rng, 0, 1400) : rnd(rng, 0, 40), uint8_t(rng()));
  std::vector<uint8_t> out = f.build(rnd(rng, 0, 1) ? 60 : 0);
  const uint32_t mut = rnd(rng, 0, 9);
  if (mut <= 1 && !out.empty()) out.resize(rnd(rng, 0, uint32_t(out.size())));  // truncate
  else if (mut == 2 && !out.empty())
    for (int i = 0; i < 3; ++i) out[rnd(rng, 0, uint32_t(out.size() - 1))] = uint8_t(rng());
  return out;
}

std::vector<uint8_t> looping_ah_frame(uint8_t next) {
  std::vector<uint8_t> pkt(118, 0);
  pkt[12] = 0x86, pkt[13] = 0xdd, pkt[14] = 0x60, pkt[19] = 64;
  pkt[20] = 51;                   // next header: AH
  pkt[54] = next, pkt[55] = 8;    // AH: next header, length (8 + 2) * 4 = 40 -> itself
  return pkt;
}

}  // namespace vpf::test
