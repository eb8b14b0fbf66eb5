#include <gtest/gtest.h>

#include "vpf/matcher/rules_json.h"

using namespace vpf::matcher;

namespace {
std::string error_of(const std::string& text) {
  try {
    rules_from_text(text);
  } catch (const RulesFileError& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST(RulesJson, EveryFieldReadsAndRoundTrips) {
  const auto rules = rules_from_text(R"({"rules": [
    {"kind": "filter", "id": 1, "adapter": 3, "direction": "outgoing", "min_size": 60, "max_size": 1500,
     "bpf": "tcp port 22", "action": "capture", "priority": 7, "enabled": false},
    {"kind": "passthrough", "id": 1, "direction": "in", "bpf": "arp"},
    {"kind": "connection", "id": 5, "protocol": "tcp", "vm": 12, "local_port": "1024-65535", "remote_port": 443,
     "local": "10.0.0.0/8", "remote": "192.168.1.10", "flags": ["block"]},
    {"kind": "connection", "id": 6, "protocol": 17, "remote_port": [5000, 5100], "local_ip": "10.1.0.0",
     "local_mask": "255.255.0.0", "flags": 384},
    {"id": 7, "remote": "2001:db8::/32", "direction": 2, "action": 1}
  ]})");
  ASSERT_EQ(rules.size(), 5u);
  EXPECT_EQ(rules[0].adapter, 3);
  EXPECT_EQ(rules[0].direction, Direction::Outgoing);
  EXPECT_EQ(rules[0].action, Action::Capture);
  EXPECT_EQ(rules[0].priority, 7);
  EXPECT_FALSE(rules[0].enabled);
  EXPECT_EQ(rules[1].kind, RuleKind::Passthrough);
  EXPECT_EQ(rules[1].direction, Direction::Incoming);
  EXPECT_EQ(rules[2].protocol, 6);
  EXPECT_EQ(rules[2].vm, 12u);
  EXPECT_EQ(rules[2].local_port, (PortRange{1024, 65535}));
  EXPECT_EQ(rules[2].remote_port, (PortRange{443, 443}));
  EXPECT_EQ(rules[2].ip_family, 4);
  EXPECT_EQ(rules[2].local_mask.w[0], 0xff000000u);
  EXPECT_EQ(rules[2].remote_mask.w[0], 0xffffffffu);
  EXPECT_EQ(rules[2].nf_flags, nf_flag::kBlock);
  EXPECT_EQ(rules[3].local_ip.w[0], 0x0a010000u);
  EXPECT_EQ(rules[3].local_mask.w[0], 0xffff0000u);
  EXPECT_EQ(rules[3].nf_flags, 384u);
  EXPECT_EQ(rules[4].ip_family, 6);
  EXPECT_EQ(rules[4].action, Action::Drop);
  // Round trip through the canonical form.
  const auto again = rules_from_json(rules_to_json(rules));
  ASSERT_EQ(again.size(), rules.size());
  for (size_t i = 0; i < rules.size(); ++i) EXPECT_EQ(again[i], rules[i]) << rules_to_json({rules[i]}).dump();
  // A plain array works too.
  EXPECT_EQ(rules_from_text(R"([{"id": 1}])").size(), 1u);
  EXPECT_EQ(rules_from_text(R"([{"id": 1, "action": "count"}, {"id": 2, "action": 4}])").at(1).action, Action::Count);
}

TEST(RulesJson, ErrorsNameTheRuleAndField) {
  EXPECT_EQ(error_of(R"([{"id": 1}, {"id": 2, "adaptr": 1}])"), "rule #2 (id 2): field 'adaptr': unknown field");
  EXPECT_NE(error_of(R"([{"id": 1, "direction": "sideways"}])").find("field 'direction': 'sideways' is not a direction"), std::string::npos);
  EXPECT_NE(error_of(R"([{"id": 1, "remote_port": "80-x"}])").find("field 'remote_port'"), std::string::npos);
  EXPECT_NE(error_of(R"([{"id": 1, "remote_port": 70000}])").find("not a port"), std::string::npos);
  // A number JSON itself cannot hold (found by fuzz/fuzz_rules_json.cc): refused as bad JSON.
  EXPECT_NE(error_of(R"([{"id": 398797025e559953987970253}])").find("not valid JSON"), std::string::npos);
  EXPECT_NE(error_of(R"([{"id": 1, "local": "10.0.0.300"}])").find("field 'local'"), std::string::npos);
  EXPECT_NE(error_of(R"([{"id": 1, "local": "10.0.0.0/8", "remote": "::1"}])").find("different families"), std::string::npos);
  EXPECT_NE(error_of(R"([{"kind": "passthrough", "id": 1, "action": "drop"}])").find("only filter rules"), std::string::npos);
  EXPECT_NE(error_of(R"([{"id": 1, "action": "pass"}])").find("drops (1), captures (2), notifies (3) or counts (4)"), std::string::npos);
  EXPECT_NE(error_of(R"([{"id": 1, "action": 5}])").find("field 'action': 5 is not"), std::string::npos);
  EXPECT_NE(error_of(R"([{"id": 1, "action": "log"}])").find("'log' is not an action"), std::string::npos);
  EXPECT_NE(error_of(R"([{"id": 1}, {"id": 1}])").find("another filter rule in the file has id 1"), std::string::npos);
  EXPECT_NE(error_of(R"([{"id": 1, "min_size": 100, "max_size": 50}])").find("below min_size"), std::string::npos);
  EXPECT_NE(error_of(R"([{"kind": "connection", "id": 1, "flags": ["offline"]}])").find("redirect the connection to a local proxy"), std::string::npos);
  EXPECT_NE(error_of(R"([{"kind": "connection", "id": 1, "flags": ["warp"]}])").find("'warp' is not a filtering flag"), std::string::npos);
  EXPECT_NE(error_of(R"([{"direction": 1}])").find("field 'id': missing"), std::string::npos);
  EXPECT_NE(error_of(R"([{"id": -4}])").find("field 'id'"), std::string::npos);
  EXPECT_NE(error_of(R"({"rules": [ {"id": 1 ]})").find("not valid JSON"), std::string::npos);
  EXPECT_NE(error_of(R"({"rulez": []})").find("\"rules\""), std::string::npos);
  EXPECT_NE(error_of(R"([3])").find("expected an object"), std::string::npos);
  EXPECT_THROW(rules_from_file("/nonexistent/rules.json"), RulesFileError);
}

// A file that cannot be read is told apart from one whose rules are refused by the error's
// kind, not by its text (vpfctl's exit codes 1 and 3 depend on it).
TEST(RulesJson, ReadErrorsAreToldApartFromRefusals) {
  try {
    rules_from_file("/nonexistent/rules.json");
    FAIL() << "no error";
  } catch (const RulesFileError& e) {
    EXPECT_TRUE(e.io());
    EXPECT_NE(std::string(e.what()).find("/nonexistent/rules.json: cannot open"), std::string::npos) << e.what();
  }
  try {
    rules_from_text(R"([{"id": 1, "protocol": "cannot"}])");
    FAIL() << "no error";
  } catch (const RulesFileError& e) {
    EXPECT_FALSE(e.io()) << e.what();
  }
}

// Check::Compile refuses a rule whose BPF expression libpcap cannot compile, naming the
// rule and the field; Check::Format leaves that to the classifier.
TEST(RulesJson, CompileCheckRefusesBadBpfNamingTheRule) {
  const std::string text = R"([{"id": 1, "bpf": "tcp"}, {"id": 2, "bpf": "tcp port eighty"}])";
  EXPECT_EQ(rules_from_text(text).size(), 2u);
  try {
    rules_from_text(text, Check::Compile);
    FAIL() << "no error";
  } catch (const RulesFileError& e) {
    EXPECT_NE(std::string(e.what()).find("rule #2 (id 2): field 'bpf': "), std::string::npos) << e.what();
    EXPECT_FALSE(e.io());
  }
  EXPECT_EQ(rule_from_json(nlohmann::json::parse(R"({"id": 3, "bpf": "udp port 53"})"), 0, Check::Compile).bpf,
            "udp port 53");
}
