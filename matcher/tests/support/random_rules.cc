// Test support: random rules and packets (random_rules.h).
#include "random_rules.h"

#include <string>

#include "frames.h"

namespace vpf::test {

using namespace vpf::matcher;

namespace {

const char* kBpfPool[] = {
    "tcp port 80", "udp", "host 10.0.0.1", "net 10.0.0.0/8 and tcp", "vlan 10", "ip6 and udp portrange 5000-5100",
    "tcp[tcpflags] & tcp-syn != 0", "len <= 128", "icmp or icmp6", "not ip", "arp", "ip6 protochain 6",
    "ip[2:2] - ((ip[0]&0xf)<<2) > 100", "ether broadcast", "src port 443", "ip6 host 2001:db8::1",
    "udp and udp[4:2] > 100", "tcp and not port 22", "vlan 10 and host 1.2.3.4", "greater 1000"};

uint32_t pool_addr(std::mt19937_64& rng) {
  const uint32_t a[] = {0x0a000001, 0x0a000002, 0x01020304, 0x0a010203, 0xc0a8010a, 0xac100504, 0x08080808};
  return a[rng() % 7];
}

}  // namespace

const char* random_bpf(std::mt19937_64& rng) { return kBpfPool[rng() % (sizeof kBpfPool / sizeof *kBpfPool)]; }

Rule random_rule(std::mt19937_64& rng, uint32_t id) {
  Rule r;
  r.id = id;
  const int kind = int(rng() % 10);
  r.kind = kind < 2 ? RuleKind::Passthrough : kind < 7 ? RuleKind::Filter : RuleKind::Connection;
  if (r.kind == RuleKind::Passthrough) r.action = Action::Pass;
  if (r.kind == RuleKind::Filter) r.action = static_cast<Action>(1 + rng() % 3);
  if (r.kind == RuleKind::Connection) {
    const uint32_t flags[] = {0, 1, 2, 128, 128 | 256, 128 | 2048};
    r.nf_flags = flags[rng() % 6];
  }
  if (rng() % 3 == 0) r.adapter = int32_t(rng() % 3);
  r.direction = static_cast<Direction>(rng() % 3);
  if (rng() % 5 == 0) r.min_size = int32_t(rng() % 200);
  if (rng() % 5 == 0) r.max_size = int32_t(60 + rng() % 1000);
  if (r.min_size > 0 && r.max_size > 0 && r.min_size > r.max_size) std::swap(r.min_size, r.max_size);
  if (rng() % 3 == 0) r.bpf = random_bpf(rng);
  if (rng() % 4 == 0) r.priority = uint16_t(rng() % 4);
  if (rng() % 10 == 0) r.vm = uint32_t(1 + rng() % 2);
  if (rng() % 2 == 0) {
    const uint8_t protos[] = {0, 6, 17, 132};
    r.protocol = protos[rng() % 4];
    if (rng() % 2) {
      const uint16_t p[] = {22, 80, 443, 53, 5000};
      const uint16_t lo = p[rng() % 5];
      r.remote_port = {lo, uint16_t(rng() % 2 ? lo : lo + rng() % 200)};
    }
    if (rng() % 3 == 0) r.local_port = {1024, 65535};
    if (rng() % 2) {
      r.ip_family = 4;
      r.remote_ip.w[0] = pool_addr(rng);
      const int plen = int(rng() % 4) * 8 + 8;
      r.remote_mask.w[0] = ~0u << (32 - plen);
      r.remote_ip.w[0] &= r.remote_mask.w[0];
      if (rng() % 2) r.local_ip.w[0] = pool_addr(rng);  // exact (mask zero)
    } else if (rng() % 4 == 0) {
      r.ip_family = 6;
      r.remote_ip.w = {0x20010db8, 0, 0, uint32_t(1 + rng() % 2)};
    }
  }
  if (rng() % 25 == 0) r.enabled = false;
  return r;
}

std::vector<Rule> hundred_bpf_rules() {
  std::vector<Rule> rules;
  for (uint32_t k = 0; k < 100; ++k) {
    Rule r;
    r.id = k + 1;
    r.bpf = "tcp dst port " + std::to_string(3000 + k) + " and net 10." + std::to_string(k + 1) + ".0.0/16";
    rules.push_back(r);
  }
  return rules;
}

std::vector<Pkt> random_packets(std::mt19937_64& rng, int n) {
  std::vector<Pkt> out;
  for (int i = 0; i < n; ++i)
    out.push_back({random_frame(rng), PacketMeta{uint32_t(rng() % 3), static_cast<Direction>(rng() % 2),
                                                 uint32_t(rng() % 3)}});
  return out;
}

}  // namespace vpf::test
