// The decision cache (src/decision_cache.h): a reader with a cache must decide
// every packet exactly as a reader without one, whatever the rules and however
// they change.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <random>
#include <set>

#include "frames.h"
#include "random_rules.h"
#include "vpf/matcher/classifier.h"

using namespace vpf::matcher;
using vpf::test::FrameBuilder;
using vpf::test::ip4;
using vpf::test::kMacA;
using vpf::test::kMacB;
using vpf::test::Pkt;
using vpf::test::random_packets;
using vpf::test::random_rule;

namespace {

// Frames of the shapes the cache keeps, several per flow (the same header
// fields with other payload lengths, TTL, TOS, IP id, TCP flags), plus shapes
// it does not keep.
std::vector<Pkt> flow_packets(std::mt19937_64& rng, int flows) {
  std::vector<Pkt> out;
  const uint32_t addrs[] = {ip4(10, 0, 0, 1), ip4(10, 0, 0, 2), ip4(1, 2, 3, 4), ip4(10, 1, 2, 3),
                            ip4(192, 168, 1, 10)};
  const uint16_t ports[] = {22, 80, 443, 53, 5000, 5050, 1024, 40000};
  for (int f = 0; f < flows; ++f) {
    const uint32_t src = addrs[rng() % 5], dst = addrs[rng() % 5];
    const uint16_t sp = ports[rng() % 8], dp = ports[rng() % 8];
    const int shape = int(rng() % 7);
    const PacketMeta meta{uint32_t(rng() % 3), static_cast<Direction>(rng() % 2), uint32_t(rng() % 3)};
    for (int v = 0; v < 4; ++v) {
      FrameBuilder b;
      b.eth(kMacB, kMacA);
      if (shape == 3) b.vlan(uint16_t(10 + rng() % 2));
      const uint8_t ttl = uint8_t(32 + rng() % 64), tos = uint8_t(rng() % 4 << 2);
      switch (shape) {
        case 0:
        case 3:
          b.ethertype(0x0800).ipv4(src, dst, 6, 0, 0, ttl, tos).tcp(sp, dp, uint8_t(v == 0 ? 0x02 : 0x10));
          break;
        case 1:
          b.ethertype(0x0800).ipv4(src, dst, 17, 0, 0, ttl, tos).udp(sp, dp);
          break;
        case 2:
          b.ethertype(0x0800).ipv4(src, dst, 1, 0, 0, ttl, tos).icmp(8, 0);
          break;
        case 4:
          b.ethertype(0x86dd).ipv6({0x20010db8, 0, 0, 1}, {0x20010db8, 0, 0, uint32_t(1 + rng() % 2)}, 17).udp(sp, dp);
          break;
        case 5:
          b.ethertype(0x0800).ipv4(src, dst, 6, 0, 1).tcp(sp, dp);
          break;  // options: not kept
        default:
          b.ethertype(0x0800).ipv4(src, dst, 17, 0x2000).udp(sp, dp);
          break;  // first fragment: not kept
      }
      b.payload(size_t(rng() % 3 == 0 ? rng() % 1200 : rng() % 40), uint8_t(rng()));
      out.push_back({b.build(60), meta});
    }
  }
  return out;
}

std::vector<PacketRef> refs_of(const std::vector<Pkt>& pkts, const std::vector<uint32_t>& pick) {
  std::vector<PacketRef> r;
  for (uint32_t i : pick) r.push_back({pkts[i].data.data(), uint32_t(pkts[i].data.size()), pkts[i].meta});
  return r;
}

// Adds a random rule; when `lowered_only`, one whose BPF runs in the executor
// is taken out again (so that the cache stays on).  Returns false if nothing
// was added.
bool add_random(Classifier& c, std::mt19937_64& rng, uint32_t id, Placement where, bool lowered_only) {
  const Rule r = random_rule(rng, id);
  c.add(r, where);
  const RuleInfo* info = c.find(RuleRef{r.kind, r.id});
  if (lowered_only && !info->bpf_lowered) {
    c.remove(RuleRef{r.kind, r.id});
    return false;
  }
  return true;
}

// A drop rule with a BPF expression and the protocol it names.
Rule drop_rule(uint32_t id, const char* bpf, uint8_t protocol) {
  Rule r;
  r.id = id;
  r.bpf = bpf;
  r.protocol = protocol;
  r.action = Action::Drop;
  return r;
}

bool same_meta(const PacketMeta& a, const PacketMeta& b) {
  return a.adapter == b.adapter && a.direction == b.direction && a.vm == b.vm;
}

}  // namespace

TEST(DecisionCache, EqualsTheTablesWhileRulesChangeBetweenBatches) {
  std::mt19937_64 rng(2026);
  std::vector<Pkt> pkts = flow_packets(rng, 400);
  const size_t nflow = pkts.size();
  for (auto& p : random_packets(rng, 1000)) pkts.push_back(std::move(p));

  Classifier c;
  auto plain = c.reader();
  auto cached = c.reader();
  cached.enable_cache(512);  // small: evictions and full buckets happen too
  std::vector<RuleRef> live;
  uint32_t next_id = 1;
  for (int i = 0; i < 150; ++i) add_random(c, rng, next_id++, Placement::Tail, true);
  for (const RuleInfo& info : c.rules()) live.push_back(RuleRef{info.rule.kind, info.rule.id});

  uint64_t compared = 0, matched = 0;
  int cache_on_rounds = 0;
  const int kRounds = 1200;
  for (int round = 0; round < kRounds; ++round) {
    // The last sixth of the rounds also admits rules whose BPF the cache cannot
    // follow.
    const bool lowered_only = round < kRounds * 5 / 6;
    switch (rng() % 4) {
      case 0:  // add
        add_random(c, rng, next_id++, rng() % 4 ? Placement::Tail : Placement::Head, lowered_only);
        break;
      case 1:  // delete
        if (!live.empty()) c.remove(live[rng() % live.size()]);
        break;
      case 2: {  // edit: the same id, other fields
        if (live.empty()) break;
        const RuleRef ref = live[rng() % live.size()];
        c.remove(ref);
        Rule r = random_rule(rng, ref.id);
        for (int tries = 0; tries < 50 && r.kind != ref.kind; ++tries) r = random_rule(rng, ref.id);
        c.add(r);
        if (lowered_only && !c.find(RuleRef{r.kind, r.id})->bpf_lowered) c.remove(RuleRef{r.kind, r.id});
        break;
      }
      default: {  // reorder: to the head of its priority
        if (live.empty()) break;
        const RuleRef ref = live[rng() % live.size()];
        const Rule r = c.find(ref)->rule;
        c.remove(ref);
        c.add(r, Placement::Head);
        break;
      }
    }
    live.clear();
    for (const RuleInfo& info : c.rules()) live.push_back(RuleRef{info.rule.kind, info.rule.id});
    cache_on_rounds += c.stats().cache_shapes != 0;
    // Between two changes, batches from a window of the flows (so that flows repeat and
    // the cache answers: it steps aside from traffic where few packets hit) and some
    // random frames.
    const uint32_t window = uint32_t(rng() % (nflow - 16));
    for (int b = 0; b < 8; ++b) {
      // Half of the batches as a switch port gives them (one adapter, direction and VM:
      // the cache's vector key path), the others mixed.
      const bool one_port = b % 2 == 0;
      std::vector<uint32_t> pick;
      for (uint32_t i = 0, k = uint32_t(rng() % 33); i < k; ++i) {
        uint32_t p = 0;
        for (int tries = 0; tries < 40; ++tries) {
          p = rng() % 4 ? window + uint32_t(rng() % 16) : uint32_t(nflow + rng() % (pkts.size() - nflow));
          if (!one_port || same_meta(pkts[p].meta, pkts[window].meta)) break;
        }
        if (!one_port || same_meta(pkts[p].meta, pkts[window].meta)) pick.push_back(p);
      }
      const uint32_t n = uint32_t(pick.size());
      const auto refs = refs_of(pkts, pick);
      Decision want[kMaxBatch], got[kMaxBatch];
      plain.classify(refs.data(), n, want);
      cached.classify(refs.data(), n, got);
      for (uint32_t i = 0; i < n; ++i) {
        ++compared;
        matched += want[i].matched();
        ASSERT_EQ(got[i], want[i]) << "round " << round << " packet " << pick[i] << ": cached rule " << got[i].rule_id
                                   << "/" << to_string(got[i].action) << ", tables " << want[i].rule_id << "/"
                                   << to_string(want[i].action);
      }
    }
  }
  const auto st = cached.cache_stats();
  EXPECT_GE(compared, 100000u);
  EXPECT_GT(matched * 5, compared) << "too few packets matched a rule for the comparison to mean much";
  EXPECT_GT(cache_on_rounds, kRounds / 2);
  EXPECT_GT(st.hits, compared / 4) << "the cache hardly ever answered";
  EXPECT_GT(st.misses, 0u);
  EXPECT_GT(st.bypassed, 0u);
  EXPECT_EQ(st.hits + st.misses + st.bypassed, compared);
}

TEST(DecisionCache, ManyPacketsOfFewFlowsUnderSizeAndBpfRules) {
  // >= 100k packets, both directions, three adapters; size ranges and lowered
  // BPF.
  std::mt19937_64 rng(99);
  const std::vector<Pkt> pkts = flow_packets(rng, 300);
  Classifier c;
  auto plain = c.reader();
  auto cached = c.reader();
  cached.enable_cache();
  const char* bpf[] = {"tcp dst port 80",      "src port 53", "udp and dst net 10.0.0.0/8",
                       "vlan 10 and tcp",      "icmp",        "tcp[13] & 2 != 0",
                       "ip6 and udp port 5000"};
  uint32_t id = 1;
  for (const char* e : bpf) {
    Rule r;
    r.id = id++;
    r.bpf = e;
    r.action = Action(1 + id % 3);
    r.direction = Direction(id % 3);
    c.add(r);
  }
  for (int i = 0; i < 40; ++i) {
    Rule r;
    r.id = id++;
    r.min_size = int32_t(rng() % 400);
    r.max_size = r.min_size + int32_t(rng() % 600);
    r.adapter = int32_t(rng() % 4) - 1;
    r.action = Action::Notify;
    r.protocol = rng() % 2 ? 6 : 17;
    r.remote_port = {uint16_t(rng() % 2 ? 80 : 5000), uint16_t(5050)};
    c.add(r);
  }
  ASSERT_EQ(c.stats().cache_shapes, 0xffffu);
  uint64_t n = 0;
  while (n < 100000) {
    std::vector<uint32_t> pick;
    for (uint32_t i = 0; i < kMaxBatch; ++i) pick.push_back(uint32_t(rng() % pkts.size()));
    const auto refs = refs_of(pkts, pick);
    Decision want[kMaxBatch], got[kMaxBatch];
    plain.classify(refs.data(), kMaxBatch, want);
    cached.classify(refs.data(), kMaxBatch, got);
    for (uint32_t i = 0; i < kMaxBatch; ++i) ASSERT_EQ(got[i], want[i]) << "packet " << pick[i];
    n += kMaxBatch;
  }
  const auto st = cached.cache_stats();
  EXPECT_GT(st.hits, n / 2);
}

TEST(DecisionCache, RuleChangeAppliesToTheNextPacketOfACachedFlow) {
  Classifier c;
  auto r = c.reader();
  r.enable_cache();
  const auto frame = FrameBuilder()
                         .eth(kMacB, kMacA)
                         .ethertype(0x0800)
                         .ipv4(ip4(10, 0, 0, 1), ip4(10, 0, 0, 2), 17)
                         .udp(4000, 5001)
                         .build(64);
  const PacketRef p{frame.data(), uint32_t(frame.size()), PacketMeta{0, Direction::Outgoing, 0}};
  c.add(drop_rule(1, "tcp port 22", 6));
  Decision d;
  for (int i = 0; i < 3; ++i) {
    r.classify(&p, 1, &d);
    EXPECT_FALSE(d.matched());
  }
  EXPECT_EQ(r.cache_stats().hits, 2u);
  c.add(drop_rule(2, "udp dst port 5001", 17));
  r.classify(&p, 1, &d);
  EXPECT_EQ(d, (Decision{2, RuleKind::Filter, Action::Drop}));
  r.classify(&p, 1, &d);
  EXPECT_EQ(d, (Decision{2, RuleKind::Filter, Action::Drop}));
  c.remove(RuleRef{RuleKind::Filter, 2});
  r.classify(&p, 1, &d);
  EXPECT_FALSE(d.matched());
  EXPECT_EQ(r.cache_stats().hits, 3u);
  EXPECT_EQ(r.cache_stats().misses, 3u);
}

TEST(DecisionCache, OnlyTheTestedFieldsMakeTheKey) {
  Classifier c;
  auto r = c.reader();
  r.enable_cache();
  Rule rule;
  rule.id = 1;
  rule.protocol = 17;
  rule.direction = Direction::Outgoing;
  rule.remote_port = {53, 53};
  rule.action = Action::Drop;
  c.add(rule);
  // Source ports, addresses, TTL and payload differ; only the destination port
  // (and the shape) count: one miss, then hits.
  std::vector<std::vector<uint8_t>> frames;
  for (int i = 0; i < 20; ++i)
    frames.push_back(FrameBuilder()
                         .eth(kMacB, kMacA)
                         .ethertype(0x0800)
                         .ipv4(ip4(10, 0, 0, uint8_t(i)), ip4(10, 0, 1, 2), 17, 0, 0, uint8_t(10 + i))
                         .udp(uint16_t(1000 + i), 53)
                         .payload(size_t(i * 7))
                         .build(60));
  for (const auto& f : frames) {
    const PacketRef p{f.data(), uint32_t(f.size()), PacketMeta{1, Direction::Outgoing, 0}};
    Decision d;
    r.classify(&p, 1, &d);
    EXPECT_EQ(d.rule_id, 1u);
  }
  EXPECT_EQ(r.cache_stats().misses, 1u);
  EXPECT_EQ(r.cache_stats().hits, 19u);
}

TEST(DecisionCache, ShapesItCannotFollowGoToTheTables) {
  Classifier c;
  auto r = c.reader();
  r.enable_cache();
  Rule rule;
  rule.id = 1;
  rule.bpf = "udp";
  rule.protocol = 17;
  rule.action = Action::Drop;
  c.add(rule);
  ASSERT_EQ(c.stats().cache_shapes, 0xffffu);
  const std::vector<std::vector<uint8_t>> frames = {
      FrameBuilder().eth(kMacB, kMacA).ethertype(0x0800).ipv4(1, 2, 17, 0, 2).udp(1, 2).build(60),    // options
      FrameBuilder().eth(kMacB, kMacA).ethertype(0x0800).ipv4(1, 2, 17, 0x2000).udp(1, 2).build(60),  // fragment
      FrameBuilder().eth(kMacB, kMacA).vlan(1).vlan(2).ethertype(0x0800).ipv4(1, 2, 17).udp(1, 2).build(60),  // QinQ
      FrameBuilder()
          .eth(kMacB, kMacA)
          .ethertype(0x86dd)
          .ipv6({1, 2, 3, 4}, {5, 6, 7, 8}, 0)
          .ext6(0, 17)
          .udp(1, 2)
          .build(),  // ext header
      FrameBuilder().eth(kMacB, kMacA).arp(1, kMacA, 1, kMacB, 2).build(60),
  };
  for (const auto& f : frames) {
    for (uint32_t len : {uint32_t(f.size()), uint32_t(20), uint32_t(40)}) {  // whole and cut short
      const PacketRef p{f.data(), std::min(len, uint32_t(f.size())), PacketMeta{}};
      Decision got;
      r.classify(&p, 1, &got);
      EXPECT_EQ(got, c.classify_one(p.data, p.len));
    }
  }
  EXPECT_EQ(r.cache_stats().hits + r.cache_stats().misses, 0u);
  EXPECT_EQ(r.cache_stats().bypassed, 15u);
}

TEST(DecisionCache, ARuleRunInTheExecutorTurnsTheCacheOff) {
  Classifier c;
  auto r = c.reader();
  r.enable_cache();
  Rule rule;
  rule.id = 1;
  rule.bpf = "ip[2:2] - ((ip[0]&0xf)<<2) > 100";  // arithmetic on packet data:
                                                  // not lowered
  rule.protocol = 17;
  rule.action = Action::Drop;
  c.add(rule);
  ASSERT_FALSE(c.find(RuleRef{RuleKind::Filter, 1})->bpf_lowered);
  // The rule (UDP, behind a prefilter on the IPv4 ethertype) can only match untagged IPv4
  // packets that are not TCP: shapes 1, 2 and 3 are off, the others stay cached.
  EXPECT_EQ(c.stats().cache_shapes, 0xfff1u);
  const auto big = FrameBuilder().eth(kMacB, kMacA).ethertype(0x0800).ipv4(1, 2, 17).udp(1, 2).payload(200).build();
  const auto small = FrameBuilder().eth(kMacB, kMacA).ethertype(0x0800).ipv4(1, 2, 17).udp(1, 2).payload(20).build();
  for (int i = 0; i < 3; ++i) {
    for (const auto* f : {&big, &small}) {
      const PacketRef p{f->data(), uint32_t(f->size()), PacketMeta{}};
      Decision d;
      r.classify(&p, 1, &d);
      EXPECT_EQ(d.matched(), f == &big);
    }
  }
  EXPECT_EQ(r.cache_stats().bypassed, 6u);
  c.remove(RuleRef{RuleKind::Filter, 1});
  EXPECT_EQ(c.stats().cache_shapes, 0xffffu);
}

TEST(DecisionCache, AFloodOfNewFlowsIsMostlyBypassedUntilFlowsRepeat) {
  Classifier c;
  c.add(drop_rule(1, "udp dst portrange 1000-1999", 17));
  auto r = c.reader();
  r.enable_cache(4096);
  auto frame = [](uint32_t flow, uint16_t dport) {
    return FrameBuilder()
        .eth(kMacB, kMacA)
        .ethertype(0x0800)
        .ipv4(ip4(10, 0, uint8_t(flow >> 8), uint8_t(flow)), ip4(10, 1, 0, 1), 17)
        .udp(uint16_t(1000 + flow % 50000), dport)
        .build(64);
  };
  // 64 batches of 32 packets, every packet a new flow (a new destination port, the field
  // the rule tests); those to ports 1000-1999 are dropped.
  std::vector<std::vector<uint8_t>> frames;
  for (uint32_t f = 0; f < 64 * 32; ++f) frames.push_back(frame(f, uint16_t(100 + f)));
  std::vector<PacketRef> refs;
  for (const auto& f : frames) refs.push_back({f.data(), uint32_t(f.size()), PacketMeta{0, Direction::Outgoing, 0}});
  Decision out[32];
  for (size_t b = 0; b < refs.size(); b += 32) {
    r.classify(&refs[b], 32, out);
    for (size_t i = 0; i < 32; ++i) {
      const size_t port = 100 + b + i;
      ASSERT_EQ(out[i].matched(), port >= 1000 && port <= 1999) << port;  // exact all along
    }
  }
  auto st = r.cache_stats();
  EXPECT_EQ(st.hits, 0u);
  // 16 batches looked up before the cache steps aside, then one batch in 16.
  EXPECT_EQ(st.misses, (16u + 3u) * 32u);
  EXPECT_EQ(st.bypassed, (64u - 16u - 3u) * 32u);
  // The flows of one batch now repeat: the next probe hits, and the cache is back.
  const PacketRef* again = &refs[refs.size() - 32];
  for (int i = 0; i < 40; ++i) r.classify(again, 32, out);
  const auto st2 = r.cache_stats();
  EXPECT_GT(st2.hits, 20u * 32u);

  // A flood where a few packets a batch are flows the cache holds: hits that rare save
  // about what the batch's lookups cost, and the cache still steps aside.
  auto r2 = c.reader();
  r2.enable_cache(4096);
  r2.classify(&refs[0], 32, out);  // flows 0..31 cached
  for (size_t b = 32; b < refs.size(); b += 32) {
    std::vector<PacketRef> batch(refs.begin() + long(b), refs.begin() + long(b) + 32);
    for (size_t i = 0; i < 32; i += 4) batch[i] = refs[(b / 32 + i) % 32];  // 8 cached flows
    r2.classify(batch.data(), 32, out);
    for (size_t i = 0; i < 32; ++i) {
      const size_t port = i % 4 == 0 ? 100 + (b / 32 + i) % 32 : 100 + b + i;
      ASSERT_EQ(out[i].matched(), port >= 1000 && port <= 1999) << port;
    }
  }
  const auto st3 = r2.cache_stats();
  EXPECT_GT(st3.bypassed, 63u * 32u / 2) << "most batches of the flood went straight to the tables";
}

// Copies of a frame that a switch's exact flow key does not tell apart from it: another IP
// identification, checksum and DF bit, another IP total length within the frame (the
// rest becomes Ethernet padding), other transport lengths, checksums, sequence numbers,
// window and data offset, other payload bytes, padding added.
std::vector<std::vector<uint8_t>> same_flow_key(const std::vector<uint8_t>& f, std::mt19937_64& rng) {
  std::vector<std::vector<uint8_t>> out;
  auto with = [&](auto&& change) {
    std::vector<uint8_t> g = f;
    change(g);
    out.push_back(std::move(g));
  };
  const uint32_t tot = uint32_t(f[16] << 8 | f[17]);
  const uint8_t proto = f[23];
  const uint32_t l4 = proto == 6 ? 20 : proto == 17 || proto == 1 ? 8 : proto == 132 ? 12 : 0;  // transport header
  with([&](auto& g) { g[18] = uint8_t(rng()), g[19] = uint8_t(rng()); });
  with([&](auto& g) { g[24] = uint8_t(rng()), g[25] = uint8_t(rng()); });
  with([&](auto& g) { g[20] ^= 0x40; });
  with([&](auto& g) { g.resize(g.size() + 1 + rng() % 200, uint8_t(rng())); });
  if (tot > 20 + l4)  // a shorter IP packet: the rest of the frame is padding
    with([&](auto& g) {
      const uint32_t t = 20 + l4 + uint32_t(rng() % (tot - 20 - l4));
      g[16] = uint8_t(t >> 8), g[17] = uint8_t(t);
    });
  for (uint32_t o = 34 + l4; o < f.size(); o += 1 + uint32_t(rng() % 7))  // payload and padding
    with([&](auto& g) { g[o] = uint8_t(rng()); });
  if (proto == 6)
    for (uint32_t o : {38u, 41u, 42u, 45u, 46u, 48u, 49u, 50u, 52u})  // seq, ack, offset, window, checksum
      with([&](auto& g) { g[o] = uint8_t(o == 46 ? (g[o] & 0x0f) | (rng() & 0xf0) : rng()); });
  if (proto == 17)
    for (uint32_t o : {38u, 39u, 40u, 41u}) with([&](auto& g) { g[o] = uint8_t(rng()); });  // length, checksum
  if (proto == 1)
    for (uint32_t o : {36u, 37u, 38u, 40u}) with([&](auto& g) { g[o] = uint8_t(rng()); });  // checksum, id, seq
  // The switch parses no ports of UDP-Lite and no ICMPv6 type in IPv4.
  if (proto == 136 || proto == 58)
    for (uint32_t o : {34u, 35u, 36u, 37u}) with([&](auto& g) { g[o] = uint8_t(rng()); });
  return out;
}

TEST(DecisionCache, AMemoHoldsForEveryPacketOfTheSwitchsFlowKey) {
  // PacketBatch::memo (hook ABI 6: a switch remembers the pass per exact flow): a packet
  // it marks and no rule matched must have no rule match any packet the switch's flow key
  // does not tell apart from it.  Random rule sets (BPF that reads IP and UDP lengths,
  // size ranges, TCP flags, ...), random flows.
  uint64_t memos = 0, checked = 0, refused = 0;
  for (uint64_t seed = 1; seed <= 200; ++seed) {
    std::mt19937_64 rng(seed);
    std::vector<Pkt> pkts = flow_packets(rng, 60);
    for (uint8_t proto : {136, 58}) {  // UDP-Lite, ICMPv6 numbers in IPv4
      for (int k = 0; k < 8; ++k) {
        Pkt p = pkts[rng() % pkts.size()];
        p.data = FrameBuilder().eth(kMacB, kMacA).ethertype(0x0800).ipv4(ip4(10, 0, 0, 1), ip4(10, 0, 0, 2), proto)
                     .udp(uint16_t(rng() % 3 ? 80 : 5000), 53).build(60);
        pkts.push_back(p);
      }
    }
    Classifier c;
    auto cached = c.reader();
    cached.enable_cache();
    // Random rules; for odd seeds none with a size range, and for every fourth seed one
    // beside them that reads a field the flow key does not hold.
    const int nrules = int(1 + rng() % (seed % 4 == 1 ? 4 : 30));
    for (uint32_t id = 1; id <= uint32_t(nrules) + 4; ++id) {
      const Rule r = random_rule(rng, id);
      if (seed % 2 && (r.min_size != Rule{}.min_size || r.max_size != Rule{}.max_size)) continue;
      c.add(r);
      if (!c.find(RuleRef{r.kind, r.id})->bpf_lowered) c.remove(RuleRef{r.kind, r.id});
    }
    const char* beside[] = {"ip[4:2] > 30000", "ip[2:2] > 60",     "ip[6] & 0x40 != 0", "udp[4:2] > 20",
                            "tcp[4:4] > 1000", "tcp[12] > 0x50",   "icmp[6:2] > 100",   "ip[10:2] > 1000",
                            "tcp[14:2] > 100", "udp[6:2] > 30000", "tcp[13] & 2 != 0",  "ip[8] > 60"};
    if (seed % 4 == 1) {
      Rule r;
      r.id = 1000;
      r.bpf = beside[(seed / 4) % (sizeof beside / sizeof *beside)];
      r.action = Action::Drop;
      c.add(r);
      ASSERT_TRUE(c.find(RuleRef{r.kind, r.id})->bpf_lowered) << r.bpf;
    }
    for (int round = 0; round < 60; ++round) {
      std::vector<uint32_t> pick;
      const PacketMeta meta = pkts[rng() % pkts.size()].meta;
      std::vector<uint32_t> port;  // the packets of one port and direction
      for (uint32_t k = 0; k < pkts.size(); ++k)
        if (same_meta(pkts[k].meta, meta)) port.push_back(k);
      while (pick.size() < kMaxBatch) pick.push_back(port[rng() % port.size()]);
      std::vector<const uint8_t*> data;
      std::vector<uint32_t> len;
      for (uint32_t k : pick) {
        data.push_back(pkts[k].data.data());
        len.push_back(uint32_t(pkts[k].data.size()));
      }
      uint32_t memo = 0;
      PacketBatch b{data.data(), len.data(), uint32_t(pick.size()), meta};
      b.memo = &memo;
      Decision got[kMaxBatch];
      const uint32_t matched = cached.classify(b, got);
      memo &= ~matched;
      for (uint32_t i = 0; i < pick.size(); ++i) {
        if (!(memo >> i & 1)) {
          refused += !(matched >> i & 1);
          continue;
        }
        ++memos;
        const auto& f = pkts[pick[i]].data;
        ASSERT_EQ(f[14], 0x45);
        for (const auto& g : same_flow_key(f, rng)) {
          const Decision d = c.classify_one(g.data(), uint32_t(g.size()), meta);
          ASSERT_FALSE(d.matched()) << "seed " << seed << ": packet " << pick[i] << " rule " << d.rule_id;
          ++checked;
        }
      }
    }
  }
  std::printf("memos %llu, refused %llu, copies checked %llu\n", (unsigned long long)memos, (unsigned long long)refused, (unsigned long long)checked);
  // Most passes of this mix are remembered; many are not (options, fragments, IPv6,
  // VLAN tags, rules that read lengths).
  EXPECT_GT(memos, 5000u);
  EXPECT_GT(refused, 40000u);
  EXPECT_GT(checked, 300000u);
}
