// The ClassBench-like generator: valid rules in every style and family, traces that hit
// their rules, and frames the parser reads back as the header they were made from.
#include <gtest/gtest.h>

#include <fstream>

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

namespace {
std::string write_temp(const std::string& name, const std::string& text) {
  const std::string path = ::testing::TempDir() + name;
  std::ofstream(path) << text;
  return path;
}
}  // namespace

// A standard ClassBench filter file becomes rules as the converter must make them:
// rule i id i+1, outgoing, local = source; port ranges only where a protocol carries ports.
TEST(ClassBench, FilterFilesAreRead) {
  const std::string path = write_temp("cb_filters",
                                      "@192.151.10.0/23\t10.0.0.1/32\t0 : 65535\t1521 : 1521\t0x06/0xFF\t0x0000/0x0000\n"
                                      "\n"
                                      "@0.0.0.0/0\t10.1.0.0/16\t1024 : 2048\t53 : 53\t0x00/0x00\n"
                                      "@1.2.3.4/32\t0.0.0.0/0\t0 : 65535\t7 : 7\t0x01/0xFF\n");
  const auto rules = bench::read_classbench_filters(path);
  ASSERT_EQ(rules.size(), 3u);
  EXPECT_EQ(rules[0].id, 1u);
  EXPECT_EQ(rules[2].id, 3u);
  EXPECT_EQ(rules[0].direction, Direction::Outgoing);
  EXPECT_EQ(rules[0].protocol, 6);
  EXPECT_EQ(rules[0].local_ip.w[0], 0xc0970a00u);  // 192.151.10.0, the /23's base
  EXPECT_EQ(rules[0].local_mask.w[0], 0xfffffe00u);
  EXPECT_EQ(rules[0].remote_mask.w[0], 0xffffffffu);
  EXPECT_TRUE(rules[0].local_port.any());
  EXPECT_EQ(rules[0].remote_port.lo, 1521);
  EXPECT_EQ(rules[1].protocol, 0);  // any protocol keeps its ranges
  EXPECT_EQ(rules[1].local_port.lo, 1024);
  EXPECT_EQ(rules[1].local_port.hi, 2048);
  EXPECT_TRUE(rules[1].local_mask.is_zero() && rules[1].local_ip.is_zero());
  EXPECT_TRUE(rules[2].remote_port.any());  // ICMP: no port condition
  Classifier c;
  EXPECT_NO_THROW(c.apply({}, rules));

  // A packet of the trace format decides as the rules say.
  const std::string trace = write_temp("cb_trace",
                                       "3231124225\t167772161\t40000\t1521\t6\t1\n"  // 192.151.11.1 -> 10.0.0.1:1521 tcp
                                       "1\t167837953\t1500\t53\t17\t2\n"               // 0.0.0.1 -> 10.1.1.1:53 udp
                                       "1\t167837953\t1500\t53\t1\t0\n");              // the same as ICMP: no ports
  const auto headers = bench::read_classbench_trace(trace);
  ASSERT_EQ(headers.size(), 3u);
  const uint32_t want[] = {1, 2, kNoRule};
  for (size_t i = 0; i < headers.size(); ++i) {
    const auto f = bench::header_frame(headers[i]);
    const Decision d = c.classify_one(f.data(), uint32_t(f.size()));
    EXPECT_EQ(d.matched() ? d.rule_id : kNoRule, want[i]) << i;
  }
}

TEST(ClassBench, BadLinesAreRefusedNamingTheLine) {
  auto error_of = [](const std::string& text) {
    try {
      bench::read_classbench_filters(write_temp("cb_bad", text));
    } catch (const std::runtime_error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(error_of("@1.2.3.4/33 0.0.0.0/0 0 : 65535 0 : 65535 0x06/0xFF\n").find("cb_bad:1: prefix length '33'"),
            std::string::npos);
  EXPECT_NE(error_of("@1.2.3.4/32 0.0.0.0/0 0 : 65535 0 : 65535 0x06/0xFF\n1.2.3.4/32\n").find("cb_bad:2: a filter starts with '@'"),
            std::string::npos);
  EXPECT_NE(error_of("@1.2.3.4/32 0.0.0.0/0 9 : 5 0 : 65535 0x06/0xFF\n").find("ends below its start"), std::string::npos);
  EXPECT_NE(error_of("@1.2.3.4/32 0.0.0.0/0 0 : 65535 0 : 65535 0x06/0x0F\n").find("protocol mask"), std::string::npos);
  EXPECT_NE(error_of("@1.2.3/32 0.0.0.0/0 0 : 65535 0 : 65535 0x06/0xFF\n").find("dotted"), std::string::npos);
  EXPECT_THROW(bench::read_classbench_trace("/nonexistent/trace"), std::runtime_error);
}
