// The bit form (src/bit_form.h): rule sets of BPF and metadata rules decided through it
// equal the linear reference, on frames cut short (loads out of bounds), frames longer
// than 16 bits can count (the guard), every ISA, and through changes (a changed set is
// decided by the tables until the form is rebuilt).
#include <gtest/gtest.h>

#include <chrono>
#include <random>
#include <string>
#include <thread>

#include "random_rules.h"
#include "vpf/matcher/classifier.h"
#include "vpf/matcher/isa.h"

using namespace vpf;
using namespace vpf::matcher;
using vpf::test::Pkt;

namespace {

// Expressions that lower (the form needs entries without a program), and two that do not.
const char* kLowered[] = {"tcp port 80", "udp", "host 10.0.0.1", "net 10.0.0.0/8 and tcp", "tcp dst port 443",
                          "udp src port 53", "tcp[tcpflags] & tcp-syn != 0", "len <= 128", "icmp", "not ip",
                          "arp", "ether broadcast", "greater 1000", "ip[6:2] & 0x1fff = 0",
                          "src net 192.168.0.0/16", "dst host 172.16.5.4 and udp", "ip proto 132",
                          "tcp portrange 1000-2000", "ip[1] & 0xfc = 0x28", "udp and udp[4:2] > 100"};
const char* kNotLowered[] = {"ip[2:2] - ((ip[0]&0xf)<<2) > 100", "ip[2:2] - ((ip[0]&0xf)<<2) < 60"};

bool form_possible() { return isa_supported(Isa::Avx512) && cpu_has_avx512_vbmi(); }

// `pool`: the set's own few expressions (a set's rules share shapes, and the form needs
// their loads to fit 16 slots).
Rule bpf_rule(std::mt19937_64& rng, uint32_t id, bool lowered_only, const std::vector<const char*>& pool) {
  Rule r;
  r.id = id;
  const int kind = int(rng() % 4);
  r.kind = kind == 0 ? RuleKind::Passthrough : RuleKind::Filter;
  r.action = r.kind == RuleKind::Passthrough ? Action::Pass : static_cast<Action>(1 + rng() % 3);
  if (rng() % 4 == 0) r.adapter = int32_t(rng() % 3);
  r.direction = static_cast<Direction>(rng() % 3);
  if (rng() % 6 == 0) r.min_size = int32_t(rng() % 200);
  if (rng() % 6 == 0) r.max_size = int32_t(60 + rng() % 1000);
  if (r.min_size > 0 && r.max_size > 0 && r.min_size > r.max_size) std::swap(r.min_size, r.max_size);
  if (rng() % 8 == 0) r.max_size = 70000;  // a length test that does not split at 16 bits
  if (rng() % 5 != 0) {
    if (!lowered_only && rng() % 10 == 0) r.bpf = kNotLowered[rng() % 2];
    else r.bpf = pool[rng() % pool.size()];
  }
  if (rng() % 4 == 0) r.priority = uint16_t(rng() % 3);
  return r;
}

// Random frames, some cut short, and one frame too long for 16 bits.
std::vector<Pkt> trace(std::mt19937_64& rng, int n) {
  std::vector<Pkt> out = test::random_packets(rng, n);
  for (int i = 0; i < n / 4; ++i) {
    Pkt p = out[size_t(i)];
    p.data.resize(rng() % (p.data.size() + 1));
    out.push_back(p);
  }
  Pkt big = out[0];
  big.data.resize(70001, 0xab);
  out.push_back(big);
  return out;
}

size_t expect_same(Classifier& c, const LinearClassifier& ref, const std::vector<Pkt>& pkts, const std::string& what) {
  std::vector<PacketRef> refs;
  for (const auto& p : pkts) refs.push_back({p.data.data(), uint32_t(p.data.size()), p.meta});
  size_t matched = 0;
  for (Isa isa : supported_isas()) {
    c.set_isa(isa);
    std::vector<Decision> got(pkts.size());
    c.classify(refs.data(), uint32_t(refs.size()), got.data());
    int bad = 0;
    for (size_t i = 0; i < pkts.size() && bad < 5; ++i) {
      const Decision want = ref.classify(pkts[i].data.data(), uint32_t(pkts[i].data.size()), pkts[i].meta);
      matched += isa == Isa::Avx512 && want.matched();
      if (!(got[i] == want)) {
        ++bad;
        ADD_FAILURE() << what << " isa " << isa_name(isa) << " packet " << i << " (" << pkts[i].data.size()
                      << " bytes): got rule " << got[i].rule_id << " want " << want.rule_id;
      }
    }
  }
  return matched;
}

}  // namespace

TEST(BitForm, RandomRuleSetsEqualLinearReferenceThroughChanges) {
  std::mt19937_64 rng(11);
  int with_form = 0, sets = 0;
  size_t matched = 0;
  for (int round = 0; round < 40; ++round) {
    Classifier c;
    c.set_tree_mode(Classifier::TreeMode::Manual);
    LinearClassifier ref;
    const bool lowered_only = round % 4 != 3;
    const uint32_t n = 6 + uint32_t(rng() % 60);
    std::vector<const char*> pool;
    for (int k = 0; k < 4; ++k) pool.push_back(kLowered[rng() % (sizeof kLowered / sizeof *kLowered)]);
    std::vector<Rule> rules;
    for (uint32_t k = 0; k < n; ++k) rules.push_back(bpf_rule(rng, k + 1, lowered_only, pool));
    c.apply({}, rules);
    for (const auto& r : rules) ref.add(r);
    c.build_tree();
    ++sets;
    with_form += c.stats().bit_form_entries > 0;
    const auto pkts = trace(rng, 300);
    const std::string what = "set " + std::to_string(round);
    matched += expect_same(c, ref, pkts, what);
    // A change: the form is stale until the next build, and the tables decide.
    const RuleRef gone{rules[0].kind, rules[0].id};
    c.remove(gone);
    ref.remove(gone);
    const Rule added = bpf_rule(rng, 1000, lowered_only, pool);
    c.add(added);
    ref.add(added);
    EXPECT_EQ(c.stats().bit_form_entries, 0u) << what;
    expect_same(c, ref, pkts, what + " after a change");
    c.build_tree();
    expect_same(c, ref, pkts, what + " rebuilt");
  }
  EXPECT_GT(matched, 1000u);
  if (form_possible()) {
    EXPECT_GE(with_form, sets / 2) << "the form was in force for too few sets";
  }
}

TEST(BitForm, HundredRulesOfOneShapeTakeTheForm) {
  if (!form_possible()) GTEST_SKIP() << "the bit form needs AVX-512 with VBMI";
  Classifier c;
  c.set_tree_mode(Classifier::TreeMode::Manual);
  const std::vector<Rule> rules = test::hundred_bpf_rules();
  c.apply({}, rules);
  EXPECT_EQ(c.stats().bit_form_entries, 0u);  // Manual: nothing until a build
  c.build_tree();
  const auto st = c.stats();
  EXPECT_EQ(st.bit_form_entries, st.entries);
  // The ethertype, protocol, fragment offset and the in-bounds bits every entry needs are
  // gates; the port and the two address halves are the chunks.
  EXPECT_EQ(st.bit_form_chunks, 3u);
}

TEST(BitForm, BackgroundBuilderInstallsTheForm) {
  if (!form_possible()) GTEST_SKIP() << "the bit form needs AVX-512 with VBMI";
  Classifier c;  // Background
  std::vector<Rule> rules;
  for (uint32_t k = 0; k < 20; ++k) {
    Rule r;
    r.id = k + 1;
    r.bpf = "udp port " + std::to_string(5000 + k);
    rules.push_back(r);
  }
  c.apply({}, rules);
  for (int i = 0; i < 500 && c.stats().bit_form_entries == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  EXPECT_GT(c.stats().bit_form_entries, 0u);
  // A rule that tests a parsed field: no form.
  Rule parsed;
  parsed.id = 100;
  parsed.protocol = 6;
  c.add(parsed);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(c.stats().bit_form_entries, 0u);
}
