// The split tree (src/split_tree.h): entry intervals, and the classifier with a tree
// against the linear reference, through builds, changes between builds (entries in the
// tables, entries dead in the tree) and the background builder.
#include <gtest/gtest.h>

#include <atomic>
#include <array>
#include <chrono>
#include <cstring>
#include <random>
#include <thread>

#include "classbench.h"
#include "classifier_layout.h"
#include "random_rules.h"
#include "split_tree.h"
#include "vpf/matcher/classifier.h"

using namespace vpf;
using namespace vpf::matcher;
using vpf::test::random_packets;
using vpf::test::random_rule;
using vpf::test::Pkt;

namespace {

struct OneBlockEntry {
  layout::Entry e;
  layout::EntryBlock b;
};

// An entry whose lanes are the given tests (field, mask, lo, hi); the rest always pass.
std::unique_ptr<OneBlockEntry> entry_of(std::initializer_list<std::array<uint32_t, 4>> tests) {
  auto x = std::make_unique<OneBlockEntry>();
  std::memset(x.get(), 0, sizeof *x);
  x->e.nblocks = 1;
  for (int i = 0; i < layout::kTestsPerBlock; ++i) {
    x->b.idx[i] = F_RESERVED_31;
    x->b.hi[i] = ~0u;
  }
  int lane = 0;
  for (const auto& t : tests) {
    x->b.idx[lane] = uint8_t(t[0]);
    x->b.mask[lane] = t[1];
    x->b.lo[lane] = t[2] & t[1];
    x->b.hi[lane] = t[3];
    ++lane;
  }
  return x;
}

Pkt pkt_of(const std::vector<uint8_t>& frame) { return Pkt{frame, PacketMeta{}}; }

// Every packet decided as the reference decides it, on every kernel; returns how many matched.
size_t expect_same(Classifier& c, const LinearClassifier& ref, const std::vector<Pkt>& pkts, const std::string& what) {
  std::vector<PacketRef> refs;
  for (const auto& p : pkts) refs.push_back({p.data.data(), uint32_t(p.data.size()), p.meta});
  std::vector<Decision> want(pkts.size());
  size_t matched = 0;
  for (size_t i = 0; i < pkts.size(); ++i) {
    want[i] = ref.classify(pkts[i].data.data(), uint32_t(pkts[i].data.size()), pkts[i].meta);
    matched += want[i].matched();
  }
  for (Isa isa : supported_isas()) {
    c.set_isa(isa);
    std::vector<Decision> got(pkts.size());
    c.classify(refs.data(), uint32_t(refs.size()), got.data());
    int bad = 0;
    for (size_t i = 0; i < pkts.size() && bad < 5; ++i)
      if (!(got[i] == want[i])) {
        ++bad;
        ADD_FAILURE() << what << " isa " << isa_name(isa) << " packet " << i << ": got rule " << got[i].rule_id
                      << " want " << want[i].rule_id;
      }
  }
  return matched;
}

std::vector<Pkt> trace_packets(const std::vector<Rule>& rules, size_t n, uint64_t seed) {
  std::vector<Pkt> out;
  for (const auto& h : bench::generate_trace(rules, n, seed)) out.push_back(pkt_of(bench::header_frame(h)));
  return out;
}

}  // namespace

TEST(SplitTree, EntryIntervalsFollowPrefixesAndRanges) {
  const auto x = entry_of({{F_SRC_IP0, 0xffffff00u, 0x0a000100u, 0x0a000100u},
                           {F_DST_PORT, ~0u, 80, 90},
                           {F_DST_IP0, 0x00ff0000u, 0x00010000u, 0x00010000u},  // not a prefix
                           {F_SRC_PORT, ~0u, 1000, 2000},
                           {F_SRC_PORT, 0xffffff00u, 0x0500u, 0x0600u},  // a second test: intersected
                           {F_ICMP_TYPE, 0xff00u, 0x0500u, 0x0600u}});  // ones not from the top: no interval
  const tree::Box b = tree::entry_box(&x->e);
  EXPECT_EQ(b.lo[F_SRC_IP0], 0x0a000100u);
  EXPECT_EQ(b.hi[F_SRC_IP0], 0x0a0001ffu);
  EXPECT_EQ(b.lo[F_DST_PORT], 80u);
  EXPECT_EQ(b.hi[F_DST_PORT], 90u);
  EXPECT_EQ(b.lo[F_DST_IP0], 0u);
  EXPECT_EQ(b.hi[F_DST_IP0], ~0u);
  EXPECT_EQ(b.lo[F_SRC_PORT], 0x0500u);
  EXPECT_EQ(b.hi[F_SRC_PORT], 0x06ffu);
  EXPECT_EQ(b.lo[F_ICMP_TYPE], 0u);
  EXPECT_EQ(b.hi[F_ICMP_TYPE], ~0u);
  EXPECT_EQ(b.lo[F_ADAPTER], 0u);
  EXPECT_EQ(b.hi[F_ADAPTER], ~0u);
  const auto never = entry_of({{F_DST_PORT, ~0u, 90, 80}});
  const tree::Box nb = tree::entry_box(&never->e);
  EXPECT_GT(nb.lo[F_DST_PORT], nb.hi[F_DST_PORT]);
}

TEST(SplitTree, BoxIsExactOnlyForPrefixTestsOnBoxFields) {
  const uint8_t fields[layout::kBoxFields] = {F_SRC_IP0, F_DST_IP0, F_SRC_PORT, F_DST_PORT, F_IP_PROTO,
                                              F_RESERVED_31, F_RESERVED_31};
  const auto five = entry_of({{F_SRC_IP0, 0xffffff00u, 0x0a000100u, 0x0a000100u},
                              {F_DST_PORT, ~0u, 80, 90},
                              {F_IP_PROTO, ~0u, 6, 6}});
  EXPECT_TRUE(tree::box_is_exact(&five->e, fields));
  const auto not_prefix = entry_of({{F_SRC_IP0, 0xff00ff00u, 0x0a000100u, 0x0a000100u}});
  EXPECT_FALSE(tree::box_is_exact(&not_prefix->e, fields));
  const auto other_field = entry_of({{F_SRC_PORT, ~0u, 80, 80}, {F_VM, ~0u, 3, 3}});
  EXPECT_FALSE(tree::box_is_exact(&other_field->e, fields));
  auto below_prefix = entry_of({{F_DST_IP0, 0xffff0000u, 0x0a010000u, 0x0a010000u}});
  below_prefix->b.lo[0] |= 1;  // (v & mask) can never equal lo
  EXPECT_FALSE(tree::box_is_exact(&below_prefix->e, fields));
  auto never = entry_of({});
  never->b.lo[0] = 1;  // a mask-0 lane that no value passes
  EXPECT_FALSE(tree::box_is_exact(&never->e, fields));
  auto program = entry_of({{F_DST_PORT, ~0u, 53, 53}});
  static const BpfJit::Call pass_all{[](const void*, const uint8_t*, uint32_t, uint32_t) -> uint32_t { return 1; },
                                     nullptr};
  program->e.bpf = &pass_all;
  EXPECT_FALSE(tree::box_is_exact(&program->e, fields));
}

TEST(SplitTree, BuildListsEveryEntryInEveryLeafItCanReach) {
  // Entries on two fields; for random points, the leaf each tree sends the point to must
  // list every entry whose intervals hold it (in rank order), unless the build declined it.
  std::mt19937_64 rng(5);
  std::vector<std::unique_ptr<OneBlockEntry>> owned;
  std::vector<const layout::Entry*> entries;
  for (uint32_t i = 0; i < 3000; ++i) {
    const uint32_t plen = uint32_t(rng() % 33);
    const uint32_t mask = plen ? ~0u << (32 - plen) : 0;
    const uint32_t a = uint32_t(rng() % 2000), w = uint32_t(rng() % 300);
    owned.push_back(entry_of({{F_SRC_IP0, mask, uint32_t(rng()), uint32_t(rng())},
                              {F_DST_PORT, ~0u, a, a + w},
                              {F_TCP_FLAGS, i % 5 ? 0u : 0x12u, 0, ~0u}}));
    // lo <= hi within the prefix: make them equal
    owned.back()->b.hi[0] = owned.back()->b.lo[0];
    owned.back()->e.rank = i;
    entries.push_back(&owned.back()->e);
  }
  const tree::Built t = tree::build(entries);
  ASSERT_FALSE(t.roots.empty());
  std::vector<tree::Box> boxes;
  for (const auto* e : entries) boxes.push_back(tree::entry_box(e));
  std::vector<bool> declined(entries.size());
  for (uint32_t d : t.declined) declined[d] = true;
  EXPECT_LT(t.declined.size(), entries.size());
  for (int k = 0; k < 2000; ++k) {
    uint32_t v[F_COUNT] = {};
    v[F_SRC_IP0] = k % 2 ? uint32_t(rng()) : boxes[rng() % boxes.size()].lo[F_SRC_IP0];
    v[F_DST_PORT] = uint32_t(rng() % 2400);
    std::vector<bool> listed(entries.size());
    for (int32_t at : t.roots) {
      while (at >= 0) {
        const auto& nd = t.nodes[size_t(at)];
        uint32_t c = 0;
        for (int j = 0; j < 7; ++j) c += v[nd.field] >= nd.cut[j];
        at = nd.kid[c];
      }
      const auto& lf = t.leaves[size_t(~at)];
      for (uint32_t x = 0; x < lf.count; ++x) {
        const uint32_t id = t.items[lf.first + x] & layout::kItemIndex;
        listed[id] = true;
        // Exact: every fifth entry also has a test under a mask that is not a prefix.
        EXPECT_EQ((t.items[lf.first + x] & layout::kItemExact) != 0, id % 5 != 0);
        if (x) {
          ASSERT_LT(t.items[lf.first + x - 1] & layout::kItemIndex, id) << "leaf not in rank order";
        }
      }
    }
    for (size_t i = 0; i < entries.size(); ++i) {
      const bool holds = v[F_SRC_IP0] >= boxes[i].lo[F_SRC_IP0] && v[F_SRC_IP0] <= boxes[i].hi[F_SRC_IP0] &&
                         v[F_DST_PORT] >= boxes[i].lo[F_DST_PORT] && v[F_DST_PORT] <= boxes[i].hi[F_DST_PORT];
      if (holds && !declined[i]) {
        ASSERT_TRUE(listed[i]) << "entry " << i << " missing for point " << k;
      }
    }
  }
}

TEST(SplitTree, ClassBenchSetsEqualLinearReferenceThroughChanges) {
  for (auto style : {bench::Style::Acl, bench::Style::Fw, bench::Style::Ipc}) {
    for (int family : {4, 6}) {
      const std::string what = std::string(bench::style_name(style)) + std::to_string(family);
      bench::GenOptions g;
      g.style = style;
      g.family = family;
      g.count = 1500;
      g.seed = 21;
      auto rules = bench::generate_rules(g);
      const auto pkts = trace_packets(rules, 2000, 4);
      Classifier c;
      c.set_tree_mode(Classifier::TreeMode::Manual);
      LinearClassifier ref;
      c.apply({}, rules);
      for (const auto& r : rules) ref.add(r);
      c.build_tree();
      const auto st = c.stats();
      EXPECT_EQ(st.tree_builds, 1u) << what;
      if (style == bench::Style::Acl) {
        EXPECT_EQ(st.tree_entries, st.entries) << what << ": the tree serves all";
      }
      EXPECT_GT(expect_same(c, ref, pkts, what + " built") * 2, pkts.size()) << what;
      // Changes after the build: removed entries are dead in the tree, new ones in tables.
      std::mt19937_64 rng(uint64_t(family) * 10 + uint64_t(style));
      std::vector<RuleRef> removes;
      for (size_t i = 0; i < rules.size(); i += 1 + rng() % 8) removes.push_back({rules[i].kind, rules[i].id});
      std::vector<Rule> adds;
      for (uint32_t i = 0; i < 100; ++i) {
        Rule r = rules[rng() % rules.size()];
        r.id = 100000 + i;
        r.priority = uint16_t(rng() % 3);
        r.action = i % 2 ? Action::Drop : Action::Notify;
        adds.push_back(r);
      }
      c.apply(removes, adds);
      for (const auto& ref_id : removes) ref.remove(ref_id);
      // The linear reference places rules by priority like the classifier does.
      for (const auto& r : adds) ref.add(r);
      const auto st2 = c.stats();
      EXPECT_GT(st2.tables, 0u) << what << ": the adds wait in tables";
      expect_same(c, ref, pkts, what + " changed");
      c.build_tree();
      EXPECT_EQ(c.stats().tree_builds, 2u);
      expect_same(c, ref, pkts, what + " rebuilt");
    }
  }
}

TEST(SplitTree, RandomRulesEqualLinearReferenceWithBuildsBetweenChanges) {
  std::mt19937_64 rng(99);
  const auto pkts = random_packets(rng, 1500);
  Classifier c;
  c.set_tree_mode(Classifier::TreeMode::Manual);
  LinearClassifier ref;
  std::vector<RuleRef> live;
  uint32_t next = 0;
  for (int step = 0; step < 900; ++step) {
    if (live.size() < 40 || rng() % 3) {
      Rule r = random_rule(rng, next++);
      const Placement where = rng() % 8 == 0 ? Placement::Head : Placement::Tail;
      c.add(r, where);
      ref.add(r, where);
      live.push_back({r.kind, r.id});
    } else {
      const size_t k = rng() % live.size();
      ASSERT_TRUE(c.remove(live[k]));
      ASSERT_TRUE(ref.remove(live[k]));
      live.erase(live.begin() + long(k));
    }
    if (rng() % 40 == 0) c.build_tree();
    if (step % 150 == 149) expect_same(c, ref, pkts, "step " + std::to_string(step));
  }
  EXPECT_GT(c.stats().tree_builds, 5u);
  c.set_tree_mode(Classifier::TreeMode::Off);
  EXPECT_EQ(c.stats().tree_entries, 0u);
  expect_same(c, ref, pkts, "tree off");
  c.clear();
  EXPECT_EQ(c.stats().rules, 0u);
}

TEST(SplitTree, BackgroundBuilderPublishesWhileChangesAndReadersGoOn) {
  bench::GenOptions g;
  g.count = 3000;
  g.seed = 8;
  auto rules = bench::generate_rules(g);
  const auto pkts = trace_packets(rules, 1024, 6);
  Classifier c;  // Background is the default
  LinearClassifier ref;
  c.apply({}, rules);
  for (const auto& r : rules) ref.add(r);
  // A reader classifies all the while (the tree it walks is kept by its snapshot).
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> read{0};
  std::thread reader([&] {
    auto rd = c.reader();
    std::vector<PacketRef> refs;
    for (const auto& p : pkts) refs.push_back({p.data.data(), uint32_t(p.data.size()), p.meta});
    Decision out[32];
    while (!stop.load()) {
      for (size_t i = 0; i + 32 <= refs.size(); i += 32) rd.classify(&refs[i], 32, out);
      read += refs.size();
    }
  });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (c.stats().tree_builds == 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_GE(c.stats().tree_builds, 1u) << "no tree within 20 s";
  // Changes take effect at once, built or not: a rule that drops one packet's header ahead
  // of everything, then removed again.
  std::mt19937_64 rng(3);
  for (int i = 0; i < 300; ++i) {
    const Pkt& p = pkts[rng() % pkts.size()];
    const auto h = bench::generate_trace({rules[rng() % rules.size()]}, 1, uint64_t(i))[0];
    Rule r = rules[rng() % rules.size()];
    r.id = 200000 + uint32_t(i);
    r.priority = kMaxPriority;
    r.action = Action::Drop;
    c.add(r);
    ref.add(r);
    const auto f = bench::header_frame(h);
    ASSERT_EQ(c.classify_one(f.data(), uint32_t(f.size())), ref.classify(f.data(), uint32_t(f.size()), {}));
    ASSERT_EQ(c.classify_one(p.data.data(), uint32_t(p.data.size())),
              ref.classify(p.data.data(), uint32_t(p.data.size()), {}));
    if (i % 3 == 0) {
      ASSERT_TRUE(c.remove({r.kind, r.id}));
      ASSERT_TRUE(ref.remove({r.kind, r.id}));
    }
  }
  stop = true;
  reader.join();
  EXPECT_GT(read.load(), 0u);
  expect_same(c, ref, pkts, "after background builds");
}

TEST(SplitTree, EmptyAndTinyRuleSetsBuild) {
  Classifier c;
  c.set_tree_mode(Classifier::TreeMode::Manual);
  c.build_tree();  // nothing in force: nothing to build
  EXPECT_EQ(c.stats().tree_builds, 0u);
  bench::GenOptions g;
  g.count = 10;
  g.seed = 2;
  const auto rules = bench::generate_rules(g);
  c.apply({}, rules);
  c.build_tree();
  EXPECT_EQ(c.stats().tree_builds, 1u);
  EXPECT_EQ(c.stats().tree_entries, 10u);
  const auto pkts = trace_packets(rules, 200, 1);
  size_t matched = 0;
  for (const auto& p : pkts) matched += c.classify_one(p.data.data(), uint32_t(p.data.size())).matched();
  EXPECT_GT(matched, 100u);
  std::vector<RuleRef> all;
  for (const auto& r : rules) all.push_back({r.kind, r.id});
  c.apply(all, std::vector<Rule>{});
  EXPECT_EQ(c.stats().tree_entries, 0u) << "removed entries are dead";
  c.build_tree();  // a tree of no entries
  EXPECT_EQ(c.stats().tree_builds, 2u);
  for (const auto& p : pkts) ASSERT_FALSE(c.classify_one(p.data.data(), uint32_t(p.data.size())).matched());
}

// Entries that one tuple table holds get no tree (one probe a packet beats a walk): 100
// BPF rules of one shape are built into tables only, and decide as the linear reference.
TEST(SplitTree, EntriesOneTableHoldsGetNoTree) {
  Classifier c;
  c.set_tree_mode(Classifier::TreeMode::Manual);
  const std::vector<Rule> rules = vpf::test::hundred_bpf_rules();
  c.apply({}, rules);
  c.build_tree();
  EXPECT_EQ(c.stats().tree_builds, 1u);
  EXPECT_EQ(c.stats().tree_entries, 0u);
  EXPECT_EQ(c.stats().tables, 1u);
  LinearClassifier ref;
  for (const auto& r : rules) ref.add(r);
  std::vector<std::vector<uint8_t>> frames;
  for (uint32_t k = 0; k < 100; ++k) {
    bench::Header h;
    h.proto = k % 3 ? 6 : 17;
    h.src.w[0] = 0xc0a80001u;
    h.dst.w[0] = 0x0a000000u | (k + 1) << 16 | k;
    h.sport = 1024;
    h.dport = uint16_t(k % 2 ? 3000 + k : 80);
    frames.push_back(bench::header_frame(h));
  }
  size_t matched = 0;
  for (const auto& f : frames) {
    const Decision d = c.classify_one(f.data(), uint32_t(f.size()));
    EXPECT_EQ(d.rule_id, ref.classify(f.data(), uint32_t(f.size()), PacketMeta{}).rule_id);
    matched += d.matched();
  }
  EXPECT_GT(matched, 20u);
}
