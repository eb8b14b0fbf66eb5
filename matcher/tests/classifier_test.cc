// The classifier against the linear reference, on every kernel this CPU has.
#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <thread>

#include "frames.h"
#include "random_rules.h"
#include "vpf/matcher/classifier.h"

using namespace vpf::matcher;
using vpf::test::random_frame;
using vpf::test::random_packets;
using vpf::test::random_rule;
using vpf::test::Pkt;

namespace {

// The classifier's decisions for the packets, in one call.
std::vector<Decision> decide(Classifier& c, const std::vector<Pkt>& pkts) {
  std::vector<PacketRef> refs;
  for (const auto& p : pkts) refs.push_back({p.data.data(), uint32_t(p.data.size()), p.meta});
  std::vector<Decision> got(pkts.size());
  c.classify(refs.data(), uint32_t(refs.size()), got.data());
  return got;
}

void expect_same(Classifier& c, const LinearClassifier& ref, const std::vector<Pkt>& pkts, const char* what) {
  const std::vector<Decision> got = decide(c, pkts);
  int bad = 0;
  size_t matched = 0;
  for (size_t i = 0; i < pkts.size() && bad < 5; ++i) {
    const Decision want = ref.classify(pkts[i].data.data(), uint32_t(pkts[i].data.size()), pkts[i].meta);
    matched += want.matched();
    if (!(got[i] == want)) {
      ++bad;
      ADD_FAILURE() << what << " isa " << isa_name(c.isa()) << " packet " << i << ": got rule "
                    << got[i].rule_id << "/" << to_string(got[i].kind) << "/" << to_string(got[i].action)
                    << " want " << want.rule_id << "/" << to_string(want.kind) << "/" << to_string(want.action);
    }
  }
  // The comparison is only worth something if rules do match.
  EXPECT_GT(matched * 10, pkts.size()) << what << ": only " << matched << " of " << pkts.size() << " packets matched";
}

}  // namespace

TEST(Classifier, EveryKernelEqualsLinearReference) {
  std::mt19937_64 rng(42);
  const auto pkts = random_packets(rng, 3000);
  for (int round = 0; round < 4; ++round) {
    Classifier c;
    LinearClassifier ref;
    const int n = 50 + round * 150;
    for (int i = 0; i < n; ++i) {
      Rule r = random_rule(rng, uint32_t(i));
      const Placement where = rng() % 8 == 0 ? Placement::Head : Placement::Tail;
      c.add(r, where);
      ref.add(r, where);
    }
    for (Isa isa : supported_isas()) {
      c.set_isa(isa);
      expect_same(c, ref, pkts, "random rules");
    }
  }
}

TEST(Classifier, IncrementalAddDeleteStaysEquivalent) {
  std::mt19937_64 rng(7);
  const auto pkts = random_packets(rng, 1500);
  Classifier c;
  LinearClassifier ref;
  std::vector<RuleRef> live;
  uint32_t next = 0;
  for (int step = 0; step < 600; ++step) {
    if (live.empty() || rng() % 3) {
      Rule r = random_rule(rng, next++);
      c.add(r);
      ref.add(r);
      live.push_back({r.kind, r.id});
    } else {
      const size_t k = rng() % live.size();
      EXPECT_TRUE(c.remove(live[k]));
      EXPECT_TRUE(ref.remove(live[k]));
      live.erase(live.begin() + long(k));
    }
    if (step % 100 == 99)
      for (Isa isa : supported_isas()) {
        c.set_isa(isa);
        expect_same(c, ref, pkts, "after updates");
      }
  }
  EXPECT_FALSE(c.remove(RuleRef{RuleKind::Filter, 999999}));
  c.clear();
  EXPECT_EQ(c.stats().rules, 0u);
  EXPECT_EQ(c.stats().tables, 0u);
  EXPECT_FALSE(c.classify_one(pkts[0].data.data(), uint32_t(pkts[0].data.size()), pkts[0].meta).matched());
}

// Inserts before random rules of the same group and priority, hammered at a few spots so
// that the room between neighbours runs out and rules are moved; the order must stay the
// linear reference's, rule for rule, and so must every decision.
TEST(Classifier, InsertBeforeKeepsTheOrderOfTheReference) {
  std::mt19937_64 rng(11);
  const auto pkts = random_packets(rng, 1500);
  Classifier c;
  LinearClassifier ref;
  std::vector<Rule> live;
  uint32_t next = 0;
  auto same_band = [](const Rule& a, const Rule& b) {
    return (a.kind == RuleKind::Passthrough) == (b.kind == RuleKind::Passthrough) && a.priority == b.priority;
  };
  for (int step = 0; step < 700; ++step) {
    Rule r = random_rule(rng, next++);
    r.priority = uint16_t(rng() % 2);
    std::vector<size_t> anchors;
    for (size_t i = 0; i < live.size(); ++i)
      if (same_band(live[i], r)) anchors.push_back(i);
    if (step % 5 == 4 && !live.empty()) {
      const size_t k = rng() % live.size();
      c.apply({{live[k].kind, live[k].id}}, std::vector<RuleAdd>{});
      ASSERT_TRUE(ref.remove({live[k].kind, live[k].id}));
      live.erase(live.begin() + long(k));
      continue;
    }
    if (anchors.empty() || step % 7 == 0) {
      c.apply({}, {RuleAdd{r, std::nullopt}});
      ref.add(r);
    } else {
      // Mostly the first three anchors of the band: the same spots again and again.
      const Rule& a = live[anchors[rng() % 4 == 0 ? rng() % anchors.size() : std::min<size_t>(anchors.size() - 1, rng() % 3)]];
      c.apply({}, {RuleAdd{r, RuleRef{a.kind, a.id}}});
      ref.add(r, RuleRef{a.kind, a.id});
    }
    live.push_back(r);
  }
  // The classifier's order is the reference's.
  std::vector<RuleRef> got;
  for (const auto& info : c.rules()) got.push_back({info.rule.kind, info.rule.id});
  ASSERT_EQ(got, ref.order());
  EXPECT_GT(c.stats().moved_rules, 0u) << "the room between neighbours never ran out";
  for (Isa isa : supported_isas()) {
    c.set_isa(isa);
    expect_same(c, ref, pkts, "after inserts before rules");
  }
}

TEST(Classifier, InsertBeforeIsCheckedWhole) {
  Classifier c;
  Rule a;
  a.id = 1;
  a.priority = 3;
  Rule b;
  b.id = 2;
  c.add(a);
  c.add(b);
  Rule x;
  x.id = 3;
  // Another priority, no such rule, a rule removed by the same call: refused, nothing changes.
  EXPECT_THROW(c.apply({}, {RuleAdd{x, RuleRef{RuleKind::Filter, 1}}}), RuleError);
  EXPECT_THROW(c.apply({}, {RuleAdd{x, RuleRef{RuleKind::Filter, 9}}}), RuleError);
  EXPECT_THROW(c.apply({{RuleKind::Filter, 2}}, {RuleAdd{x, RuleRef{RuleKind::Filter, 2}}}), RuleError);
  try {
    c.apply({}, {RuleAdd{x, RuleRef{RuleKind::Passthrough, 2}}});
    FAIL();
  } catch (const RuleError& e) {
    EXPECT_EQ(e.field(), "before");
    EXPECT_NE(std::string(e.what()).find("passthrough rule 2"), std::string::npos) << e.what();
  }
  EXPECT_EQ(c.stats().rules, 2u);
  // Before an add of the same call, and before a rule in force.
  Rule y;
  y.id = 4;
  c.apply({}, {RuleAdd{x, RuleRef{RuleKind::Filter, 2}}, RuleAdd{y, RuleRef{RuleKind::Filter, 3}}});
  std::vector<uint32_t> ids;
  for (const auto& info : c.rules()) ids.push_back(info.rule.id);
  EXPECT_EQ(ids, (std::vector<uint32_t>{1, 4, 3, 2}));
  // A head add still goes before rules inserted before the first of the band.
  Rule h;
  h.id = 5;
  c.add(h, Placement::Head);
  ids.clear();
  for (const auto& info : c.rules()) ids.push_back(info.rule.id);
  EXPECT_EQ(ids, (std::vector<uint32_t>{1, 5, 4, 3, 2}));
}

TEST(Classifier, BatchSizesZeroToMany) {
  std::mt19937_64 rng(3);
  const auto pkts = random_packets(rng, 100);
  Classifier c;
  LinearClassifier ref;
  for (uint32_t i = 0; i < 80; ++i) {
    Rule r = random_rule(rng, i);
    c.add(r);
    ref.add(r);
  }
  std::vector<PacketRef> refs;
  for (const auto& p : pkts) refs.push_back({p.data.data(), uint32_t(p.data.size()), p.meta});
  for (Isa isa : supported_isas()) {
    c.set_isa(isa);
    for (uint32_t n = 0; n <= 70; ++n) {
      std::vector<Decision> out(n + 1);
      out[n].rule_id = 12345;  // guard: must stay untouched
      c.classify(refs.data(), n, out.data());
      for (uint32_t i = 0; i < n; ++i)
        ASSERT_EQ(out[i], ref.classify(pkts[i].data.data(), uint32_t(pkts[i].data.size()), pkts[i].meta))
            << isa_name(isa) << " n=" << n << " i=" << i;
      ASSERT_EQ(out[n].rule_id, 12345u);
    }
  }
}

TEST(Classifier, OrderPassthroughPriorityHead) {
  Classifier c;
  auto frame = vpf::test::FrameBuilder().eth(vpf::test::kMacB, vpf::test::kMacA).ethertype(0x0800)
                   .ipv4(vpf::test::ip4(10, 0, 0, 1), vpf::test::ip4(10, 0, 0, 2), 6).tcp(1234, 80).build();
  Rule drop;
  drop.id = 1;
  drop.bpf = "tcp port 80";
  c.add(drop);
  EXPECT_EQ(c.classify_one(frame.data(), uint32_t(frame.size())).rule_id, 1u);
  Rule notify = drop;
  notify.id = 2;
  notify.action = Action::Notify;
  c.add(notify);  // same priority, later: rule 1 still decides
  EXPECT_EQ(c.classify_one(frame.data(), uint32_t(frame.size())).rule_id, 1u);
  notify.id = 3;
  c.add(notify, Placement::Head);  // at the head: decides
  EXPECT_EQ(c.classify_one(frame.data(), uint32_t(frame.size())).rule_id, 3u);
  Rule capture = drop;
  capture.id = 4;
  capture.action = Action::Capture;
  capture.priority = 10;
  c.add(capture);
  auto d = c.classify_one(frame.data(), uint32_t(frame.size()));
  EXPECT_EQ(d.rule_id, 4u);
  EXPECT_EQ(d.action, Action::Capture);
  Rule pass;
  pass.kind = RuleKind::Passthrough;
  pass.id = 1;  // ids are per kind
  pass.action = Action::Pass;
  pass.bpf = "host 10.0.0.2";
  c.add(pass);
  d = c.classify_one(frame.data(), uint32_t(frame.size()));
  EXPECT_EQ(d.rule_id, 1u);
  EXPECT_EQ(d.kind, RuleKind::Passthrough);
  EXPECT_EQ(d.action, Action::Pass);
  const auto order = c.rules();
  ASSERT_EQ(order.size(), 5u);
  EXPECT_EQ(order[0].rule.kind, RuleKind::Passthrough);
  EXPECT_EQ(order[1].rule.id, 4u);
  EXPECT_EQ(order[2].rule.id, 3u);
  c.remove({RuleKind::Passthrough, 1});
  Rule count = drop;
  count.id = 5;
  count.action = Action::Count;
  count.priority = 20;
  c.add(count);  // decides like any filter rule; the packet passes (the datapath's part)
  d = c.classify_one(frame.data(), uint32_t(frame.size()));
  EXPECT_EQ(d.rule_id, 5u);
  EXPECT_EQ(d.action, Action::Count);
}

TEST(Classifier, LocalRemoteFollowDirection) {
  Classifier c;
  Rule r;
  r.kind = RuleKind::Connection;
  r.id = 9;
  r.nf_flags = nf_flag::kBlock;
  r.protocol = 6;
  r.remote_port = {80, 80};
  r.ip_family = 4;
  r.local_ip.w[0] = vpf::test::ip4(10, 0, 0, 1);
  c.add(r);
  using vpf::test::FrameBuilder;
  auto out = FrameBuilder().eth(vpf::test::kMacB, vpf::test::kMacA).ethertype(0x0800)
                 .ipv4(vpf::test::ip4(10, 0, 0, 1), vpf::test::ip4(8, 8, 8, 8), 6).tcp(40000, 80).build();
  auto in = FrameBuilder().eth(vpf::test::kMacA, vpf::test::kMacB).ethertype(0x0800)
                .ipv4(vpf::test::ip4(8, 8, 8, 8), vpf::test::ip4(10, 0, 0, 1), 6).tcp(80, 40000).build();
  EXPECT_EQ(c.classify_one(out.data(), uint32_t(out.size()), {0, Direction::Outgoing, 0}).action, Action::Drop);
  EXPECT_EQ(c.classify_one(in.data(), uint32_t(in.size()), {0, Direction::Incoming, 0}).action, Action::Drop);
  // The same frames seen in the other direction are someone else's traffic.
  EXPECT_FALSE(c.classify_one(out.data(), uint32_t(out.size()), {0, Direction::Incoming, 0}).matched());
  EXPECT_FALSE(c.classify_one(in.data(), uint32_t(in.size()), {0, Direction::Outgoing, 0}).matched());
}

TEST(Classifier, BadRuleIsRefusedWholeAndChangesNothing) {
  Classifier c;
  Rule a;
  a.id = 1;
  a.bpf = "tcp";
  c.add(a);
  Rule good = a;
  good.id = 2;
  Rule bad = a;
  bad.id = 3;
  bad.bpf = "tcp port nonsense";
  try {
    c.apply({RuleRef{RuleKind::Filter, 1}}, {good, bad});
    FAIL() << "bad batch accepted";
  } catch (const RuleError& e) {
    EXPECT_EQ(e.rule_id(), 3u);
    EXPECT_EQ(e.field(), "bpf");
    EXPECT_NE(std::string(e.what()).find("nonsense"), std::string::npos) << e.what();
  }
  ASSERT_EQ(c.rules().size(), 1u);
  EXPECT_EQ(c.rules()[0].rule.id, 1u);
  EXPECT_THROW(c.add(a), RuleError);  // duplicate id
  EXPECT_THROW(c.apply({RuleRef{RuleKind::Filter, 77}}, std::vector<Rule>{}), RuleError);
  EXPECT_THROW(c.apply({}, {good, good}), RuleError);
  EXPECT_EQ(c.rules().size(), 1u);
  // Replacing a rule in one batch is fine.
  Rule replaced = a;
  replaced.bpf = "udp";
  c.apply({RuleRef{RuleKind::Filter, 1}}, {replaced});
  EXPECT_EQ(c.find({RuleKind::Filter, 1})->rule.bpf, "udp");
}

TEST(Classifier, ManyDistinctLoadsFallBackToJit) {
  // 40 different byte offsets exhaust the 32 dynamic slots: later rules must still be
  // right (prefilter or JIT only).
  std::mt19937_64 rng(11);
  const auto pkts = random_packets(rng, 800);
  Classifier c;
  LinearClassifier ref;
  for (uint32_t i = 0; i < 40; ++i) {
    Rule r;
    r.id = i;
    r.bpf = "ether[" + std::to_string(i) + "] = " + std::to_string(i * 7 % 256);
    c.add(r);
    ref.add(r);
  }
  EXPECT_LE(c.stats().dynamic_slots, 32u);
  EXPECT_GT(c.stats().jit_rules, 0u);
  for (Isa isa : supported_isas()) {
    c.set_isa(isa);
    expect_same(c, ref, pkts, "slot exhaustion");
  }
}

TEST(Classifier, AnEntryOfManyBlocksTestsEveryLane) {
  // An IPv6 5-tuple rule with VM, direction, size and two BPF byte tests needs more than
  // two blocks of lanes.  The matching frame must match on every kernel, and a frame or
  // metadata changed in any one tested place must not.
  const vpf::test::Ip6 local{0x20010db8, 0x11112222, 0x33334444, 0x55556666};
  const vpf::test::Ip6 remote{0x20010db8, 0xaaaabbbb, 0xccccdddd, 0xeeeeffff};
  Rule r;
  r.id = 9;
  r.ip_family = 6;
  r.local_ip.w = local;
  r.remote_ip.w = remote;
  r.protocol = 6;
  r.local_port = {1000, 1000};
  r.remote_port = {80, 80};
  r.vm = 3;
  r.direction = Direction::Outgoing;
  r.min_size = 60;
  r.max_size = 200;
  r.bpf = "ip6[7] = 64 and ip6[1] = 0";
  Classifier c;
  LinearClassifier ref;
  c.add(r);
  ref.add(r);
  const PacketMeta meta{0, Direction::Outgoing, 3};
  auto frame = [](vpf::test::Ip6 src, vpf::test::Ip6 dst, uint16_t sport, uint16_t dport, uint8_t hop,
                  size_t len) {
    return vpf::test::FrameBuilder()
        .eth(vpf::test::kMacB, vpf::test::kMacA)
        .ethertype(0x86dd)
        .ipv6(src, dst, 6, hop)
        .tcp(sport, dport)
        .build(len);
  };
  std::vector<Pkt> pkts{{frame(local, remote, 1000, 80, 64, 80), meta}};
  for (int w = 0; w < 4; ++w) {
    auto s = local, d = remote;
    s[w] ^= 1u << (w * 7);
    d[w] ^= 1u << (31 - w);
    pkts.push_back({frame(s, remote, 1000, 80, 64, 80), meta});
    pkts.push_back({frame(local, d, 1000, 80, 64, 80), meta});
  }
  pkts.push_back({frame(local, remote, 1001, 80, 64, 80), meta});
  pkts.push_back({frame(local, remote, 1000, 81, 64, 80), meta});
  pkts.push_back({frame(local, remote, 1000, 80, 63, 80), meta});
  pkts.push_back({frame(local, remote, 1000, 80, 64, 201), meta});
  pkts.push_back({frame(local, remote, 1000, 80, 64, 80), {0, Direction::Incoming, 3}});
  pkts.push_back({frame(local, remote, 1000, 80, 64, 80), {0, Direction::Outgoing, 4}});
  for (Isa isa : supported_isas()) {
    c.set_isa(isa);
    const std::vector<Decision> got = decide(c, pkts);
    for (size_t i = 0; i < pkts.size(); ++i) {
      const Decision want = ref.classify(pkts[i].data.data(), uint32_t(pkts[i].data.size()), pkts[i].meta);
      EXPECT_EQ(want.matched(), i == 0) << "reference, frame " << i;
      EXPECT_TRUE(got[i] == want) << isa_name(isa) << " frame " << i << ": got rule " << got[i].rule_id;
    }
  }
}

TEST(Classifier, UnsupportedIsaIsRefused) {
  Classifier c;
  for (int i = 0; i < kIsaCount; ++i) {
    const Isa isa = static_cast<Isa>(i);
    if (isa_supported(isa)) EXPECT_NO_THROW(c.set_isa(isa));
    else EXPECT_THROW(c.set_isa(isa), std::invalid_argument);
  }
  EXPECT_EQ(parse_isa("avx512"), Isa::Avx512);
  EXPECT_FALSE(parse_isa("neon").has_value());
}

TEST(Classifier, ReadersNeverSeeAHalfAppliedChange) {
  // A probe packet hits rule 1 (drop); the writer keeps adding and removing rules that do
  // not match it.  Readers on other threads must see rule 1 every time.
  Classifier c;
  auto probe = vpf::test::FrameBuilder().eth(vpf::test::kMacB, vpf::test::kMacA).ethertype(0x0800)
                   .ipv4(vpf::test::ip4(10, 0, 0, 1), vpf::test::ip4(10, 0, 0, 2), 17).udp(5, 53).build();
  Rule hit;
  hit.id = 1;
  hit.bpf = "udp port 53";
  c.add(hit);
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> wrong{0}, done{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 2; ++t)
    readers.emplace_back([&] {
      auto rd = c.reader();
      PacketRef p{probe.data(), uint32_t(probe.size()), {}};
      while (!stop.load()) {
        Decision d;
        rd.classify(&p, 1, &d);
        wrong += d.rule_id != 1;
        ++done;
      }
    });
  std::mt19937_64 rng(5);
  for (uint32_t i = 0; i < 1500; ++i) {
    Rule r;
    r.id = 100 + i;
    r.bpf = "tcp port " + std::to_string(1 + rng() % 60000);
    r.priority = uint16_t(rng() % 3);
    c.add(r, rng() % 2 ? Placement::Head : Placement::Tail);
    if (i % 3 == 2) c.remove(RuleRef{RuleKind::Filter, 100 + i - 2});
  }
  stop = true;
  for (auto& t : readers) t.join();
  EXPECT_EQ(wrong.load(), 0u);
  EXPECT_GT(done.load(), 0u);
}

TEST(Classifier, ScalesToManyRulesAndReportsMemory) {
  Classifier c;
  std::vector<Rule> rules;
  for (uint32_t i = 0; i < 20000; ++i) {
    Rule r;
    r.kind = RuleKind::Connection;
    r.id = i;
    r.nf_flags = nf_flag::kBlock;
    r.protocol = 6;
    r.ip_family = 4;
    r.remote_ip.w[0] = 0x0a000000u | i;
    r.remote_port = {uint16_t(1 + i % 1000), uint16_t(1 + i % 1000)};
    r.direction = Direction::Outgoing;
    rules.push_back(r);
  }
  c.apply({}, rules);
  const auto s = c.stats();
  EXPECT_EQ(s.rules, 20000u);
  EXPECT_EQ(s.entries, 20000u);
  EXPECT_LT(s.tables, 10u);
  EXPECT_GT(s.memory_bytes, 0u);
  EXPECT_LT(s.memory_bytes / s.rules, 2048u) << "bytes per rule";
  auto f = vpf::test::FrameBuilder().eth(vpf::test::kMacB, vpf::test::kMacA).ethertype(0x0800)
               .ipv4(vpf::test::ip4(10, 0, 0, 5), 0x0a000000u | 777, 6).tcp(40000, 778).build();
  EXPECT_EQ(c.classify_one(f.data(), uint32_t(f.size())).rule_id, 777u);
}

TEST(Classifier, TinyBpfRuleSetsEqualLinearReference) {
  // One to four BPF-only rules take the direct path; it must decide exactly like the rest.
  std::mt19937_64 rng(21);
  const auto pkts = random_packets(rng, 2000);
  for (int round = 0; round < 40; ++round) {
    Classifier c;
    LinearClassifier ref;
    const int n = 1 + round % 4;
    for (int i = 0; i < n; ++i) {
      Rule r;
      r.id = uint32_t(i);
      r.kind = rng() % 4 == 0 ? RuleKind::Passthrough : RuleKind::Filter;
      r.action = r.kind == RuleKind::Passthrough ? Action::Pass : static_cast<Action>(1 + rng() % 3);
      r.bpf = vpf::test::random_bpf(rng);
      if (rng() % 3 == 0) r.adapter = int32_t(rng() % 3);
      r.direction = static_cast<Direction>(rng() % 3);
      if (rng() % 4 == 0) r.max_size = 200;
      r.priority = uint16_t(rng() % 2);
      c.add(r);
      ref.add(r);
    }
    // AVX-512 runs the programs' vector forms (where the CPU has VBMI), the others their code.
    for (Isa isa : supported_isas()) {
      c.set_isa(isa);
      const std::vector<Decision> got = decide(c, pkts);
      for (size_t i = 0; i < pkts.size(); ++i)
        ASSERT_EQ(got[i], ref.classify(pkts[i].data.data(), uint32_t(pkts[i].data.size()), pkts[i].meta))
            << "round " << round << " packet " << i << " isa " << isa_name(isa);
    }
  }
}

// `ip6 protochain` loops over the extension headers; a packet whose AH header leads back to
// itself must not keep the classifier (the switch's datapath) in that loop.
TEST(Classifier, ProtochainOnALoopingPacketEnds) {
  Classifier c;
  Rule r;
  r.id = 1;
  r.bpf = "ip6 protochain 6";
  c.add(r);
  std::vector<uint8_t> pkt = vpf::test::looping_ah_frame();
  EXPECT_FALSE(c.classify_one(pkt.data(), uint32_t(pkt.size())).matched());
  LinearClassifier ref;
  ref.add(r);
  EXPECT_FALSE(ref.classify(pkt.data(), uint32_t(pkt.size()), PacketMeta{}).matched());
  pkt = vpf::test::looping_ah_frame(6);  // the AH header now leads to TCP
  EXPECT_TRUE(c.classify_one(pkt.data(), uint32_t(pkt.size())).matched());
}
