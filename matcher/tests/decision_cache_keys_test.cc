// The decision cache's internals.  Its vector key path (src/decision_cache_avx512.cc)
// against its one-packet path (DecisionCache::make_key): for random plans and random,
// often malformed, frames and metadata, both must key the same packets with the same key
// (a short key's row and lines; a long key's words, word count, bucket and signature), and
// the vector path must report exactly the plain IPv4 frames.  A difference would split one
// flow over two cache entries or, worse, give a packet a key its shape does not define (or
// tell a switch to trust a header nobody checked).  Then the short-key table: its vector
// probe against its scalar one, an overfull table under changing rule sets, and the tags'
// wrap.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

#include "classbench.h"
#include "decision_cache.h"
#include "frames.h"
#include "vpf/matcher/isa.h"

namespace {

using namespace vpf::matcher;
using namespace vpf::matcher::cache;

void put16(uint8_t* p, uint32_t v) {
  p[0] = uint8_t(v >> 8);
  p[1] = uint8_t(v);
}

// A random plan: most shapes enabled, up to three words (three: not for the vector path),
// sometimes size classes, a raw length or the VM.
Plan random_plan(std::mt19937& rng) {
  Plan p;
  p.enabled = true;
  auto pick = [&](uint32_t n) { return uint32_t(rng() % n); };
  for (auto& sh : p.shape) {
    sh.enabled = pick(10) < 8;
    sh.nwords = uint8_t(pick(4));
    uint16_t off = uint16_t(pick(24));
    uint32_t end = 0;
    for (int w = 0; w < sh.nwords; ++w) {
      sh.off[w] = off;
      uint64_t m = 0;
      for (int b = 0; b < 8; ++b)
        if (pick(3)) m |= uint64_t(0xff & rng()) << 8 * b;
      sh.mask[w] = m;
      end = off + 8u;
      off = uint16_t(off + 8 + pick(12));
    }
    sh.end = uint16_t(end);
    sh.uses_vm = pick(4) == 0;
    if (pick(6) == 0) sh.bounds = {60, 100};
    sh.raw_len = pick(10) == 0;
  }
  make_fast_plan(&p);
  return p;
}

// A frame near the shapes' boundaries: IPv4 with the common protocols, sometimes tagged
// or IPv6 or another ethertype, a wrong IHL, a fragment, a total length off by a little,
// and lengths from 20 to 120 bytes.
std::vector<uint8_t> random_frame(std::mt19937& rng) {
  auto pick = [&](uint32_t n) { return uint32_t(rng() % n); };
  std::vector<uint8_t> f(20 + pick(101));
  for (auto& b : f) b = uint8_t(rng());
  std::vector<uint8_t> full(128);
  for (auto& b : full) b = uint8_t(rng());
  const uint32_t ets[] = {0x0800, 0x0800, 0x0800, 0x0800, 0x86dd, 0x8100, 0x0806};
  put16(&full[12], ets[pick(7)]);
  full[14] = pick(8) ? 0x45 : uint8_t(0x40 | pick(16));
  const uint32_t len = uint32_t(f.size());
  const uint32_t tot = len >= 14 ? len - 14 : 0;
  const int32_t skew[] = {0, 0, 0, -1, 1, -20, -30};
  put16(&full[16], uint32_t(std::max<int32_t>(0, int32_t(tot) + skew[pick(7)])) & 0xffff);
  put16(&full[20], pick(6) ? 0x4000 * pick(2) : uint32_t(rng()) & 0xffff);
  const uint8_t protos[] = {6, 17, 136, 132, 1, 58, 47, 6, 17};
  full[23] = protos[pick(9)];
  std::copy(full.begin(), full.begin() + f.size(), f.begin());
  return f;
}

// Packet i has the same key in both: the row and lines of a short key, the words, bucket
// and signature of a long one.
bool same_key(const BatchKeys& a, const BatchKeys& b, int i) {
  if (a.short_keys >> i & 1)
    return std::equal(a.row[i], a.row[i] + 4, b.row[i]) && a.line[0][i] == b.line[0][i] && a.line[1][i] == b.line[1][i];
  if (a.nwords[i] != b.nwords[i] || a.bucket[i] != b.bucket[i] || a.sig[i] != b.sig[i]) return false;
  for (int w = 0; w <= a.nwords[i]; ++w)
    if (a.w[w][i] != b.w[w][i]) return false;
  return true;
}

// A full batch of frames[base..base + kMaxBatch) as a switch hands it over.
struct FrameArrays {
  FrameArrays(const std::vector<std::vector<uint8_t>>& frames, size_t base) {
    for (uint32_t i = 0; i < kMaxBatch; ++i) {
      data[i] = frames[base + i].data();
      len[i] = uint32_t(frames[base + i].size());
    }
  }
  const uint8_t* data[kMaxBatch];
  uint32_t len[kMaxBatch];
};

TEST(DecisionCacheKeys, VectorPathEqualsOnePacketPath) {
  if (!isa_supported(Isa::Avx512)) GTEST_SKIP() << "this CPU has no AVX-512: the vector path is never used";
  std::mt19937 rng(11);
  DecisionCache dc(4096);
  uint64_t vector_keyed = 0, keyed = 0, plain = 0, total = 0;
  for (int round = 0; round < 3000; ++round) {
    const Plan plan = random_plan(rng);
    const uint32_t n = 1 + rng() % kMaxBatch;
    std::vector<std::vector<uint8_t>> frames;
    const uint8_t* data[kMaxBatch];
    uint32_t len[kMaxBatch];
    uint32_t want_plain = 0;  // PacketBatch::plain_ipv4's definition, one frame at a time
    for (uint32_t i = 0; i < n; ++i) {
      frames.push_back(random_frame(rng));
      data[i] = frames.back().data();
      len[i] = uint32_t(frames.back().size());
      want_plain |= uint32_t(is_plain_ipv4(data[i], len[i])) << i;
    }
    const uint32_t adapter = uint32_t(rng() % 4 ? rng() % 64 : rng()), vm = uint32_t(rng() % 4 ? rng() % 64 : rng());
    const PacketBatch batch{data, len, n, PacketMeta{adapter, Direction(rng() % 2), vm}};
    BatchKeys a{}, b{}, scratch{};
    const uint32_t ka = dc.make_keys(plan, batch, a, true);
    const uint32_t kb = dc.make_keys(plan, batch, b, false);
    ASSERT_EQ(ka, kb) << "round " << round;
    // What the vector path hands a switch (hook ABI 5): exactly the definition, under
    // every plan it runs for; the one-packet path checks nothing for the switch.
    ASSERT_EQ(a.plain_ipv4, plan.fast.enabled ? want_plain : 0u) << "round " << round;
    ASSERT_EQ(b.plain_ipv4, 0u);
    plain += uint32_t(std::popcount(a.plain_ipv4));
    total += n;
    keyed += uint32_t(std::popcount(ka));
    vector_keyed += uint32_t(std::popcount(plan.fast.enabled ? fast_keys_avx512(plan.fast, batch, LineHash(14), scratch) : 0));
    ASSERT_EQ(a.short_keys, b.short_keys) << "round " << round;
    for (uint32_t m = ka; m; m &= m - 1) {
      const int i = std::countr_zero(m);
      ASSERT_TRUE(same_key(a, b, i)) << "round " << round << " packet " << i;
    }
  }
  // Both paths were exercised: most keyed packets through the vector path, and some not.
  EXPECT_GT(vector_keyed, keyed / 4);
  EXPECT_LT(vector_keyed, keyed);
  EXPECT_GT(plain, total / 10);
  EXPECT_LT(plain, total / 2);
}

TEST(DecisionCacheKeys, ABpfPortRuleKeepsTheKeyToTheFiveTuple) {
  // "src port 9" compiles to loads of the ethertype, the protocol, the fragment field and
  // the port.  On an IPv4 shape (which admits no fragment) the ethertype and fragment bits
  // are the same for every packet: the key keeps only the port beside the 5-tuple rules'
  // fields, so the vector path still serves the shape and the DF bit makes no new flow.
  Classifier c;
  Rule bpf;
  bpf.id = 1;
  bpf.bpf = "src port 9";
  bpf.action = Action::Drop;
  c.add(bpf);
  ASSERT_TRUE(c.find(RuleRef{RuleKind::Filter, 1})->bpf_lowered);
  Rule five;
  five.id = 2;
  five.protocol = 17;
  five.remote_port = {5000, 5100};
  five.action = Action::Notify;
  c.add(five);
  auto plain = c.reader();
  auto cached = c.reader();
  cached.enable_cache(4096);
  std::vector<std::vector<uint8_t>> frames;
  for (int i = 0; i < 64; ++i) {
    const uint16_t frag = i % 4 == 0 ? 0x4000 : i % 4 == 1 ? 0x2000 : 0;  // DF; MF (a fragment); none
    const bool udp = i % 2;
    const uint16_t sport = uint16_t(i % 8 == 3 || i % 8 == 6 ? 9 : 4000 + i % 5), dport = uint16_t(5000 + 50 * (i % 3));
    vpf::test::FrameBuilder f;
    f.eth(vpf::test::kMacB, vpf::test::kMacA)
        .ethertype(0x0800)
        .ipv4(vpf::test::ip4(10, 0, 0, 1), vpf::test::ip4(10, 0, 0, uint8_t(2 + i % 3)), udp ? 17 : 6, frag);
    if (udp) {
      f.udp(sport, dport);
    } else {
      f.tcp(sport, dport);
    }
    frames.push_back(f.build(64));
  }
  uint32_t handed_over = 0;
  for (int pass = 0; pass < 4; ++pass)
    for (size_t base = 0; base < frames.size(); base += kMaxBatch) {
      const FrameArrays fa(frames, base);
      PacketBatch b{fa.data, fa.len, kMaxBatch, PacketMeta{0, Direction::Outgoing, 0}};
      uint32_t checked = 0;
      b.plain_ipv4 = &checked;
      Decision want[kMaxBatch], got[kMaxBatch];
      plain.classify(b, want);
      cached.classify(b, got);
      for (uint32_t i = 0; i < kMaxBatch; ++i) ASSERT_EQ(got[i], want[i]) << "pass " << pass << " frame " << base + i;
      handed_over |= checked;
    }
  // The frames that are not fragments (3 in 4) went through the vector path.
  if (isa_supported(Isa::Avx512)) {
    EXPECT_EQ(handed_over, 0xddddddddu);
  }
  // Flows: addresses x protocol x ports, not the DF bit: 8 source ports x 3 destinations
  // x 2 protocols at most among the non-fragments, each missed once.
  EXPECT_LE(cached.cache_stats().misses, 48u);
  EXPECT_GT(cached.cache_stats().hits, 100u);
}

// The same through a reader: ClassBench-like 5-tuple rules (the plan the vector path
// serves) and a trace of their headers, batches of one port, decisions against a reader
// without a cache, pass after pass so that the cache answers.
TEST(DecisionCacheKeys, FiveTupleTrafficGetsTheTablesDecisions) {
  vpf::bench::GenOptions g;
  g.count = 400;
  g.seed = 77;
  const auto rules = vpf::bench::generate_rules(g);
  Classifier c;
  c.apply({}, rules);
  std::vector<std::vector<uint8_t>> frames;
  // Each header twice: as generated, and with other ports (the same addresses: a key
  // that lost its port bytes would give both one decision).
  std::mt19937 rng(3);
  for (auto h : vpf::bench::generate_trace(rules, 1024, 5)) {
    frames.push_back(vpf::bench::header_frame(h));
    h.sport = uint16_t(rng());
    h.dport = uint16_t(rng() % 2 ? rng() % 1024 : rng());
    frames.push_back(vpf::bench::header_frame(h));
  }
  auto plain = c.reader();
  auto cached = c.reader();
  cached.enable_cache(1024);  // fewer flows than the trace holds: evictions too
  uint64_t matched = 0, handed_over = 0;
  for (int pass = 0; pass < 3; ++pass)
    for (size_t base = 0; base < frames.size(); base += kMaxBatch) {
      const FrameArrays fa(frames, base);
      PacketBatch b{fa.data, fa.len, kMaxBatch, PacketMeta{3, Direction::Outgoing, 0}};
      Decision want[kMaxBatch], got[kMaxBatch];
      uint32_t checked_plain = 0xdeadbeef, checked_cached = 0xdeadbeef;
      b.plain_ipv4 = &checked_plain;
      const uint32_t mw = plain.classify(b, want);
      b.plain_ipv4 = &checked_cached;
      const uint32_t mg = cached.classify(b, got);
      ASSERT_EQ(mg, mw);
      // Without a cache nothing is checked for the switch; with one (and AVX-512), every
      // generated frame is a plain IPv4 frame, unless the cache let the batch bypass it.
      ASSERT_EQ(checked_plain, 0u);
      if (isa_supported(Isa::Avx512)) {
        ASSERT_TRUE(checked_cached == 0xffffffffu || checked_cached == 0u) << checked_cached;
        handed_over += checked_cached != 0;
      } else {
        ASSERT_EQ(checked_cached, 0u);
      }
      for (uint32_t i = 0; i < kMaxBatch; ++i) ASSERT_EQ(got[i], want[i]) << "pass " << pass << " packet " << base + i;
      matched += uint32_t(std::popcount(mw));
    }
  // A batch larger than a bit set can report is refused, not cut short.
  std::vector<const uint8_t*> many(kMaxBatch + 1, frames[0].data());
  std::vector<uint32_t> lens(kMaxBatch + 1, uint32_t(frames[0].size()));
  Decision big[kMaxBatch + 1];
  EXPECT_THROW(cached.classify(PacketBatch{many.data(), lens.data(), kMaxBatch + 1, {}}, big), std::length_error);
  const auto st = cached.cache_stats();
  EXPECT_GT(matched, 3u * 2048 / 4) << "too few packets matched a rule for the comparison to mean much";
  EXPECT_GT(st.hits, 2048u) << "the cache hardly answered";
  if (isa_supported(Isa::Avx512)) {
    EXPECT_GT(handed_over, 3u * 64 / 2) << "batches whose headers were handed over";
  }
}

// ---- the short-key table ----

// A plan keying untagged IPv4 by the protocol, addresses and ports in two words (as the
// 5-tuple rule sets do): short keys, for both key paths.
Plan five_tuple_lines_plan() {
  Plan p;
  p.enabled = true;
  for (int i = 0; i < 4; ++i) {
    Shape& sh = p.shape[i];
    sh.enabled = true;
    sh.nwords = 2;
    sh.off[0] = 23;
    sh.mask[0] = 0xffffffffff0000ffull;  // protocol, source address
    sh.off[1] = 30;
    sh.mask[1] = ~uint64_t(0);  // destination address, ports
    sh.end = 38;
  }
  make_fast_plan(&p);
  return p;
}

// A UDP frame of flow `f`.
std::vector<uint8_t> udp_frame(uint32_t f) {
  vpf::test::FrameBuilder b;
  b.eth(vpf::test::kMacB, vpf::test::kMacA).ethertype(0x0800).ipv4(f, f * 7, 17).udp(uint16_t(1000 + f % 5000), 53);
  return b.build(64);
}

// What the "tables" decide for a frame under generation `gen` in the tests below: a pure
// function of the keyed bytes (the protocol, the addresses, the ports) and the
// generation, and never the same for two generations (no rule matches only under even
// ones; the rule ids carry the generation), so that a decision of another flow or of
// another rule set is always seen.
Decision decide(const uint8_t* d, uint64_t gen) {
  uint64_t h = (gen * 0x9e3779b97f4a7c15ull ^ d[23]) * 0x100000001b3ull;
  for (int o = 26; o < 38; ++o) h = (h ^ d[o]) * 0x100000001b3ull;
  if (gen % 2 == 0 && h % 3 == 0) return Decision{};
  return Decision{uint32_t(gen * 100 + h % 100), RuleKind(h % 3), Action(h >> 40 & 3)};
}

TEST(DecisionCacheLines, VectorProbeEqualsScalarProbe) {
  if (!isa_supported(Isa::Avx512)) GTEST_SKIP() << "this CPU has no AVX-512: the vector probe is never used";
  std::mt19937_64 rng(5);
  std::vector<Line> lines(64);
  uint64_t hits = 0, probes = 0;
  for (int round = 0; round < 2000; ++round) {
    // Entries drawn from a few key rows, so that probes hit, miss by one word, or hit an
    // entry of another tag.
    uint64_t rows[3][4];
    for (auto& r : rows) r[0] = rng() % 4, r[1] = rng() % 3, r[2] = rng(), r[3] = 0;
    for (Line& l : lines)
      for (uint64_t* e : l.e) {
        const uint64_t* r = rows[rng() % 3];
        std::copy(r, r + 3, e);
        if (rng() % 4 == 0) e[rng() % 3] ^= uint64_t(1) << rng() % 64;
        e[3] = pack_decision(Decision{uint32_t(rng() % 3 ? rng() % 1000 : kNoRule), RuleKind(rng() % 3), Action(rng() % 4)},
                             1 + rng() % 2);
      }
    BatchKeys k{};
    for (uint32_t i = 0; i < kMaxBatch; ++i) {
      const uint64_t* r = rows[rng() % 3];
      std::copy(r, r + 4, k.row[i]);
      k.line[0][i] = uint32_t(rng() % 64);
      k.line[1][i] = uint32_t(rng() % 64);
    }
    const uint32_t todo = uint32_t(rng());
    const uint64_t tag = 1 + rng() % 2;
    Decision a[kMaxBatch], b[kMaxBatch];
    uint32_t ma = 0, mb = 0;
    const uint32_t ha = probe_lines(lines.data(), k, todo, tag, a, &ma);
    const uint32_t hb = probe_lines_avx512(lines.data(), k, todo, tag, b, &mb);
    ASSERT_EQ(ha, hb) << "round " << round;
    ASSERT_EQ(ma, mb) << "round " << round;
    ASSERT_EQ(ha & ~todo, 0u);
    for (uint32_t m = ha; m; m &= m - 1) ASSERT_EQ(a[std::countr_zero(m)], b[std::countr_zero(m)]) << "round " << round;
    hits += uint32_t(std::popcount(ha));
    probes += uint32_t(std::popcount(todo));
  }
  EXPECT_GT(hits, probes / 10);  // both outcomes were exercised
  EXPECT_LT(hits, probes * 9 / 10);
}

// More flows than the table holds (entries moved to their other line, or replaced), and
// rule sets that change: every decision is the one of the packet's own flow under the
// current generation, never another flow's or an older rule set's.
TEST(DecisionCacheLines, AFullTableAndChangingRuleSetsGiveOnlyCurrentDecisions) {
  const Plan plan = five_tuple_lines_plan();
  DecisionCache dc(16);  // the smallest table: 64 lines, 128 entries
  std::vector<std::vector<uint8_t>> frames;
  for (uint32_t f = 0; f < 300; ++f) frames.push_back(udp_frame(f));
  std::mt19937 rng(3);
  uint64_t gen = 1, served = 0, classified = 0;
  for (int batch = 0; batch < 20000; ++batch) {
    if (rng() % 50 == 0) ++gen;
    const uint32_t pool = batch % 3 == 0 ? 300 : 60;  // a working set that fits, and one that does not
    const uint8_t* data[kMaxBatch];
    uint32_t len[kMaxBatch];
    const uint32_t n = 1 + rng() % kMaxBatch;
    for (uint32_t i = 0; i < n; ++i) {
      data[i] = frames[rng() % pool].data();
      len[i] = 64;
    }
    Decision out[kMaxBatch];
    uint32_t asked = 0;
    const uint32_t matched = dc.classify(plan, gen, PacketBatch{data, len, n, PacketMeta{1, Direction::Outgoing, 0}}, out,
                                         [&](const PacketRef* p, uint32_t m, Decision* o) {
                                           for (uint32_t j = 0; j < m; ++j) o[j] = decide(p[j].data, gen);
                                           asked += m;
                                         });
    for (uint32_t i = 0; i < n; ++i) {
      ASSERT_EQ(out[i], decide(data[i], gen)) << "batch " << batch << " packet " << i;
      ASSERT_EQ(matched >> i & 1, uint32_t(out[i].matched()));
    }
    served += n - asked;
    classified += asked;
  }
  EXPECT_GT(served, classified);  // the table served most packets
  EXPECT_GT(classified, 20000u);  // and the overfull working set kept missing
}

// The tags of rule sets run out after 65,535 changes: the table is cleared then, so an
// entry of the first rule set is not taken for one of the rule set that gets its tag again.
// Flow x is decided under generation 1 and then not seen until generation `last`; flow y
// (in other lines) goes through every generation between, twice (its second packet a hit, so that no batch
// is passed by as a flood of new flows).
TEST(DecisionCacheLines, AReusedTagFindsNoEntryOfItsFormerRuleSet) {
  const Plan plan = five_tuple_lines_plan();
  // y shares no line with x, so that y's insertions never take x's entry.
  auto lines_of = [&](const std::vector<uint8_t>& f) {
    const uint8_t* data[1] = {f.data()};
    const uint32_t len[1] = {uint32_t(f.size())};
    BatchKeys k{};
    DecisionCache(16).make_keys(plan, PacketBatch{data, len, 1, PacketMeta{1, Direction::Outgoing, 0}}, k, false);
    return std::vector<uint32_t>{k.line[0][0], k.line[1][0]};
  };
  const auto x = udp_frame(1);
  const auto lx = lines_of(x);
  uint32_t yf = 2;
  for (auto ly = lines_of(udp_frame(yf)); std::find_first_of(lx.begin(), lx.end(), ly.begin(), ly.end()) != lx.end();
       ly = lines_of(udp_frame(++yf))) {
  }
  const auto y = udp_frame(yf);
  for (uint64_t last = 65533; last <= 65540; ++last) {
    DecisionCache dc(16);
    auto run = [&](const std::vector<uint8_t>& f, uint64_t gen) {
      const uint8_t* data[1] = {f.data()};
      const uint32_t len[1] = {64};
      Decision out[1];
      dc.classify(plan, gen, PacketBatch{data, len, 1, PacketMeta{1, Direction::Outgoing, 0}}, out,
                  [&](const PacketRef* p, uint32_t m, Decision* o) {
                    for (uint32_t j = 0; j < m; ++j) o[j] = decide(p[j].data, gen);
                  });
      return out[0];
    };
    ASSERT_EQ(run(x, 1), decide(x.data(), 1));
    ASSERT_EQ(run(x, 1), decide(x.data(), 1));  // now from the table
    for (uint64_t gen = 2; gen < last; ++gen) {
      ASSERT_EQ(run(y, gen), decide(y.data(), gen)) << "generation " << gen;
      ASSERT_EQ(run(y, gen), decide(y.data(), gen)) << "generation " << gen;
    }
    ASSERT_EQ(run(x, last), decide(x.data(), last)) << "generation " << last;
  }
}

}  // namespace
