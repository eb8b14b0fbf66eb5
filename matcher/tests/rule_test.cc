#include <gtest/gtest.h>

#include <chrono>

#include "vpf/matcher/bpf.h"
#include "vpf/matcher/rule.h"

using namespace vpf::matcher;

namespace {
std::string refuse(const Rule& r) {
  try {
    validate_rule(r);
  } catch (const RuleError& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST(Rule, DefaultsAreValid) {
  Rule r;
  EXPECT_EQ(refuse(r), "");
  EXPECT_EQ(effective_action(r), Action::Drop);
}

TEST(Rule, BadFieldsAreNamed) {
  Rule r;
  r.id = 7;
  r.adapter = -5;
  EXPECT_EQ(refuse(r), "filter rule 7: field 'adapter': -5 is not an adapter id (>= 0) or -1 (all)");
  r = Rule{};
  r.direction = static_cast<Direction>(9);
  EXPECT_NE(refuse(r).find("field 'direction'"), std::string::npos);
  r = Rule{};
  r.min_size = 100;
  r.max_size = 50;
  EXPECT_NE(refuse(r).find("field 'max_size': 50 is below min_size 100"), std::string::npos);
  r = Rule{};
  r.max_size = 0;
  EXPECT_NE(refuse(r).find("max_size"), std::string::npos);
  r = Rule{};
  r.action = Action::Pass;
  EXPECT_NE(refuse(r).find("field 'action'"), std::string::npos);
  r = Rule{};
  r.local_port = {100, 10};
  EXPECT_NE(refuse(r).find("local_port"), std::string::npos);
  r = Rule{};
  r.protocol = 1;
  r.remote_port = {80, 80};
  EXPECT_NE(refuse(r).find("field 'protocol'"), std::string::npos);
  r = Rule{};
  r.local_ip.w[0] = 1;
  EXPECT_NE(refuse(r).find("ip_family"), std::string::npos);
  r = Rule{};
  r.ip_family = 4;
  r.local_ip.w[2] = 1;
  EXPECT_NE(refuse(r).find("local_ip"), std::string::npos);
  r = Rule{};
  r.nf_flags = 1;
  EXPECT_NE(refuse(r).find("connection"), std::string::npos);
}

TEST(Rule, NfFlags) {
  Rule r;
  r.kind = RuleKind::Connection;
  r.nf_flags = nf_flag::kAllow;
  EXPECT_EQ(effective_action(r), Action::Pass);
  r.nf_flags = nf_flag::kBlock;
  EXPECT_EQ(effective_action(r), Action::Drop);
  r.nf_flags = nf_flag::kFilter;
  EXPECT_EQ(effective_action(r), Action::Capture);
  r.nf_flags = nf_flag::kFilterAsIpPackets | nf_flag::kReadonly;
  EXPECT_EQ(effective_action(r), Action::Notify);
  r.nf_flags = nf_flag::kFilterAsIpPackets | nf_flag::kBypassIpPackets;
  EXPECT_EQ(effective_action(r), Action::Pass);
  r.nf_flags = nf_flag::kFilter | nf_flag::kFilterAsIpPackets;
  EXPECT_EQ(effective_action(r), Action::Capture);
  r.nf_flags = nf_flag::kOffline;
  EXPECT_NE(refuse(r).find("emulates the server's side"), std::string::npos);
  r.nf_flags = nf_flag::kRedirect;
  EXPECT_NE(refuse(r).find("does not do yet"), std::string::npos);
  r.nf_flags = nf_flag::kControlFlow;
  EXPECT_NE(refuse(r).find("does not do yet"), std::string::npos);
  r.nf_flags = nf_flag::kPendConnectRequest;
  EXPECT_EQ(effective_action(r), Action::Pass) << "pend acts on the connection, not the action";
  r.nf_flags = nf_flag::kPendConnectRequest | nf_flag::kBlock;
  EXPECT_NE(refuse(r).find("no request to pend"), std::string::npos);
  r.nf_flags = nf_flag::kFilterAsIpPackets | nf_flag::kReadonly | nf_flag::kSuspended;
  EXPECT_EQ(effective_action(r), Action::Notify) << "suspended acts on the connection, not the action";
  r.nf_flags = nf_flag::kBlock | nf_flag::kFilter;
  EXPECT_NE(refuse(r).find("contradict"), std::string::npos);
  r.nf_flags = nf_flag::kReadonly;
  EXPECT_NE(refuse(r).find("READONLY"), std::string::npos);
  r.nf_flags = 1u << 20;
  EXPECT_NE(refuse(r).find("unknown flag"), std::string::npos);
}

TEST(Rule, ParsePrefix) {
  uint8_t fam;
  IpAddr a, m;
  parse_prefix("10.1.0.0/16", &fam, &a, &m);
  EXPECT_EQ(fam, 4);
  EXPECT_EQ(a.w[0], 0x0a010000u);
  EXPECT_EQ(m.w[0], 0xffff0000u);
  parse_prefix("2001:db8::/33", &fam, &a, &m);
  EXPECT_EQ(fam, 6);
  EXPECT_EQ(a.w[0], 0x20010db8u);
  EXPECT_EQ(m.w[0], 0xffffffffu);
  EXPECT_EQ(m.w[1], 0x80000000u);
  EXPECT_EQ(format_ip(6, a), "2001:db8::");
  parse_prefix("1.2.3.4", &fam, &a, &m);
  EXPECT_EQ(m.w[0], 0xffffffffu);
  EXPECT_EQ(format_ip(4, a), "1.2.3.4");
  EXPECT_THROW(parse_prefix("10.1.2.3/8", &fam, &a, &m), std::invalid_argument);
  EXPECT_THROW(parse_prefix("10.1.2.3/33", &fam, &a, &m), std::invalid_argument);
  EXPECT_THROW(parse_prefix("not-an-ip", &fam, &a, &m), std::invalid_argument);
  EXPECT_THROW(parse_prefix("10.0.0.0/x", &fam, &a, &m), std::invalid_argument);
}

// A host name in a BPF expression is looked up in /etc/hosts only: localhost compiles; an
// unknown name is refused at once, saying why, without asking DNS (which could take
// seconds and sends queries off the host).
TEST(Rule, BpfHostNamesAreNotAskedOfDns) {
  EXPECT_FALSE(vpf::matcher::compile_bpf("host localhost").empty());
  const auto t0 = std::chrono::steady_clock::now();
  std::string err;
  try {
    vpf::matcher::compile_bpf("udp and dst no-such-host-vportfilter");
  } catch (const vpf::matcher::BpfError& e) {
    err = e.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(500));
  EXPECT_NE(err.find("unknown host 'no-such-host-vportfilter'"), std::string::npos) << err;
  EXPECT_NE(err.find("never in DNS"), std::string::npos) << err;
}
