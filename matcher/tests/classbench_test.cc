// The ClassBench-like generator: valid rules in every style and family, traces that hit
// their rules, and frames the parser reads back as the header they were made from.
#include <gtest/gtest.h>

#include "classbench.h"
#include "vpf/matcher/classifier.h"
#include "vpf/matcher/parser.h"

using namespace vpf;
using namespace vpf::matcher;

TEST(ClassBench, RulesAreValidAndTracesHitThem) {
  for (auto style : {bench::Style::Acl, bench::Style::Fw, bench::Style::Ipc}) {
    for (int family : {4, 6}) {
      bench::GenOptions g;
      g.style = style;
      g.family = family;
      g.count = 500;
      g.seed = 3;
      const auto rules = bench::generate_rules(g);
      ASSERT_EQ(rules.size(), 500u);
      Classifier c;
      ASSERT_NO_THROW(c.apply({}, rules)) << bench::style_name(style) << family;
      const auto trace = bench::generate_trace(rules, 4000, 9);
      ASSERT_EQ(trace.size(), 4000u);
      size_t matched = 0, repeats = 0;
      for (size_t i = 0; i < trace.size(); ++i) {
        const auto f = bench::header_frame(trace[i]);
        PacketKey k;
        parse_frame(f.data(), uint32_t(f.size()), {}, &k);
        ASSERT_EQ(k.f[F_IP_VER], uint32_t(family));
        ASSERT_EQ(k.f[F_IP_PROTO], trace[i].proto);
        ASSERT_EQ(k.f[F_SRC_IP0], trace[i].src.w[0]);
        if (trace[i].proto == 6 || trace[i].proto == 17) {
          ASSERT_EQ(k.f[F_DST_PORT], trace[i].dport);
        }
        matched += c.classify_one(f.data(), uint32_t(f.size())).matched();
        if (i > 0 && trace[i].dst == trace[i - 1].dst && trace[i].sport == trace[i - 1].sport) ++repeats;
      }
      // Headers are drawn inside rules (1 in 20 is random), and repeat (locality).
      EXPECT_GT(matched, trace.size() * 85 / 100) << bench::style_name(style) << family;
      EXPECT_GT(repeats, trace.size() / 3) << "no locality";
    }
  }
}

TEST(ClassBench, StylesDiffer) {
  auto wildcard_share = [](bench::Style s) {
    bench::GenOptions g;
    g.style = s;
    g.count = 2000;
    size_t any = 0;
    for (const auto& r : bench::generate_rules(g)) any += r.local_ip.is_zero() && r.local_mask.is_zero();
    return any;
  };
  // Firewall sets wildcard the source far more often than ACL sets.
  EXPECT_GT(wildcard_share(bench::Style::Fw), 3 * wildcard_share(bench::Style::Acl));
  bench::Style s;
  EXPECT_TRUE(bench::parse_style("ipc", &s));
  EXPECT_EQ(s, bench::Style::Ipc);
  EXPECT_FALSE(bench::parse_style("router", &s));
}

TEST(ClassBench, NoRuleWildcardsBothAddresses) {
  for (int family : {4, 6})
    for (auto style : {bench::Style::Acl, bench::Style::Fw, bench::Style::Ipc}) {
      bench::GenOptions g;
      g.style = style;
      g.family = family;
      g.count = 5000;
      for (const auto& r : bench::generate_rules(g))
        ASSERT_FALSE(r.local_mask.is_zero() && r.remote_mask.is_zero()) << "rule " << r.id;
    }
}
