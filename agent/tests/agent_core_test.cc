// The agent's pieces that need no server: the OVSDB stream splitter (also on hostile
// input), the adapter model built from Open_vSwitch rows, id allocation.
#include <gtest/gtest.h>

#include "adapters.h"
#include "ovsdb_client.h"
#include "rule_rows.h"
#include "vpf/protocol.h"
#include "vpf/run_program.h"

using namespace vpf::agent;
using nlohmann::json;

TEST(JsonSplitter, SplitsTextsAcrossChunksStringsAndEscapes) {
  const std::string stream = R"({"a":"}{\"]"} [1,[2]]  {"b":{"c":"\\"}})" "\n";
  for (size_t chunk : {size_t(1), size_t(3), size_t(7), stream.size()}) {
    JsonSplitter s;
    std::vector<std::string> got;
    for (size_t i = 0; i < stream.size(); i += chunk)
      s.feed(stream.data() + i, std::min(chunk, stream.size() - i), [&](std::string&& t) { got.push_back(t); });
    ASSERT_EQ(got.size(), 3u) << chunk;
    EXPECT_EQ(json::parse(got[0])["a"], "}{\"]");
    EXPECT_EQ(json::parse(got[1]), json::parse("[1,[2]]"));
    EXPECT_EQ(json::parse(got[2])["b"]["c"], "\\");
  }
}

TEST(JsonSplitter, RefusesGarbageAndOversizedTexts) {
  JsonSplitter s;
  auto ignore = [](std::string&&) {};
  EXPECT_THROW(s.feed("x", 1, ignore), std::runtime_error);
  JsonSplitter small(16);
  const std::string big = "{\"k\":\"" + std::string(100, 'v') + "\"}";
  EXPECT_THROW(small.feed(big.data(), big.size(), ignore), std::runtime_error);
}

// The client protocol's splitter (lines and binary frames), shared by the agent's sessions,
// the library and the console.
TEST(StreamItem, LinesAndFramesAcrossChunks) {
  namespace proto = vpf::protocol;
  const std::string verdict = proto::verdict_frame(42, proto::kSendModified, "abc", 3);
  const std::string stream = " \r\n{\"id\":1}\n" + verdict + "\t{\"id\":2}\n";
  for (size_t chunk : {size_t(1), size_t(5), stream.size()}) {
    std::string in;
    std::vector<std::string> got;
    for (size_t i = 0; i < stream.size(); i += chunk) {
      in.append(stream, i, chunk);
      size_t pos = 0;
      for (;;) {
        const size_t before = pos;
        const auto it = proto::next_item<proto::VerdictFrame>(in.data(), in.size(), pos);
        ASSERT_NE(it.kind, it.kBad) << it.problem;
        if (it.kind == it.kNeedMore) {
          EXPECT_GE(pos, before);  // only blanks were consumed
          break;
        }
        if (it.kind == it.kLine) got.emplace_back(it.line);
        else got.push_back("frame " + std::to_string(it.body.event_id) + " " +
                           std::string(reinterpret_cast<const char*>(it.data), it.body.data_size));
      }
      in.erase(0, pos);
    }
    EXPECT_EQ(got, (std::vector<std::string>{"{\"id\":1}", "frame 42 abc", "{\"id\":2}"})) << chunk;
  }
}

TEST(StreamItem, BadFramesAndOversizedTextsAreNamed) {
  namespace proto = vpf::protocol;
  auto problem_of = [](std::string in) {
    size_t pos = 0;
    auto it = proto::next_item<proto::VerdictFrame>(in.data(), in.size(), pos);
    return it.kind == it.kBad ? it.problem : std::string("not bad");
  };
  std::string f = proto::verdict_frame(1, proto::kSend, nullptr, 0);
  std::string wrong_magic = f;
  wrong_magic[1] = 'X';
  EXPECT_EQ(problem_of(wrong_magic), "bad frame: wrong magic");
  std::string event_type = f;
  event_type[6] = char(proto::kEventFrame);  // FrameHeader.type
  EXPECT_NE(problem_of(event_type).find("is not a verdict"), std::string::npos);
  std::string short_data = proto::verdict_frame(1, proto::kSendModified, "abcd", 4);
  short_data[sizeof(proto::FrameHeader) + offsetof(proto::VerdictFrame, data_size)] = 9;
  EXPECT_NE(problem_of(short_data).find("data_size 9 disagrees"), std::string::npos);
  EXPECT_NE(problem_of(std::string(proto::kMaxLine + 1, '{')).find("longer than 16 MiB"), std::string::npos);
  EXPECT_EQ(problem_of(std::string(1000, '{')), "not bad");  // no newline yet: more input needed
}

namespace {

// As ovsdb-server sends them (RFC 7047 notation for sets, maps and uuids).
OvsView sample() {
  OvsView v;
  v.apply(json::parse(R"({
    "Bridge": {
      "b1": {"new": {"name": "br0", "datapath_type": "netdev",
                     "ports": ["set", [["uuid", "p1"], ["uuid", "p2"], ["uuid", "p3"], ["uuid", "p4"]]]}},
      "b2": {"new": {"name": "brk", "datapath_type": "", "ports": ["uuid", "p5"]}}},
    "Port": {
      "p1": {"new": {"name": "vm1", "interfaces": ["uuid", "i1"]}},
      "p2": {"new": {"name": "int", "interfaces": ["uuid", "i2"]}},
      "p3": {"new": {"name": "tun", "interfaces": ["uuid", "i3"]}},
      "p4": {"new": {"name": "vhu", "interfaces": ["uuid", "i4"]}},
      "p5": {"new": {"name": "kern", "interfaces": ["uuid", "i5"]}}},
    "Interface": {
      "i1": {"new": {"name": "vm1", "type": "", "mac_in_use": "aa:bb:cc:dd:ee:0f",
                     "external_ids": ["map", [["iface-id", "port-uuid-1"], ["vm-name", "web"], ["vm-id", "12"]]]}},
      "i2": {"new": {"name": "int", "type": "internal"}},
      "i3": {"new": {"name": "tun", "type": "geneve"}},
      "i4": {"new": {"name": "vhu", "type": "dpdkvhostuserclient", "external_ids": ["map", [["vm-id", "not-a-number"]]]}},
      "i5": {"new": {"name": "kern", "type": ""}}}})"));
  return v;
}

}  // namespace

TEST(Adapters, VmPortsOfTheUserspaceDatapathOnly) {
  const auto a = vm_ports(sample(), default_vm_types());
  ASSERT_EQ(a.size(), 2u);  // not internal, not a tunnel, not on the kernel datapath's bridge
  const Adapter& vm1 = a.at("port-uuid-1");
  EXPECT_EQ(vm1.name, "vm1");
  EXPECT_EQ(vm1.friendly_name, "web");
  EXPECT_EQ(vm1.mac, "AA-BB-CC-DD-EE-0F");
  EXPECT_EQ(vm1.vm, 12u);
  EXPECT_EQ(vm1.to_json()["type"], "system");
  const Adapter& vhu = a.at("vhu");  // no iface-id: keyed by name
  EXPECT_EQ(vhu.vm, 0u) << "a vm-id that is not a number is ignored";
  EXPECT_EQ(vhu.friendly_name, "vhu");
  // Configurable: only vhost-user ports.
  EXPECT_EQ(vm_ports(sample(), {"dpdkvhostuserclient"}).size(), 1u);
}

TEST(Adapters, UpdatesRemoveRowsAndMalformedUpdatesAreIgnored) {
  OvsView v = sample();
  v.apply({{"Interface", {{"i4", json::object()}}}});  // deleted
  v.apply(json::array({1, 2}));                       // not an update: ignored
  v.apply({{"Interface", {{"i9", 5}}}});              // malformed row change: ignored
  EXPECT_EQ(vm_ports(v, default_vm_types()).size(), 1u);
}

TEST(Adapters, SmallestFreeId) {
  EXPECT_EQ(smallest_free_id({}), 0);
  EXPECT_EQ(smallest_free_id({0, 1, 3}), 2);
  EXPECT_EQ(smallest_free_id({1, 2}), 0);
  EXPECT_EQ(smallest_free_id({0, 1, 2}), 3);
}

// The tools of Open vSwitch run with an argument vector: what a path holds (quotes,
// blanks, `$`) reaches the program as it is, and failures say what ran and how it ended.
TEST(RuleRows, OrderedByKindPriorityPositionAndIdWhateverTheRowsHold) {
  auto row = [](const char* kind, int64_t id, int64_t pos, const std::string& spec, const char* inst = "default") {
    return nlohmann::json{{"instance", inst}, {"kind", kind}, {"rule_id", id}, {"position", pos}, {"spec", spec}};
  };
  const std::map<std::string, nlohmann::json> rows = {
      {"a", row("filter", 1, 5, R"({"action": "drop"})")},
      {"b", row("filter", 2, 1, R"({"priority": -9223372036854775808})")},  // the lowest there is
      {"c", row("filter", 3, 9, R"({"priority": 9223372036854775807})")},
      {"d", row("filter", 4, 1, "not json")},                                 // an empty spec
      {"e", row("passthrough", 5, 0, "{}")},
      {"f", row("filter", 6, 0, "{}", "other")},
      {"g", nlohmann::json{{"instance", 7}, {"spec", 8}}},                    // columns of the wrong types
  };
  auto ids = [](const nlohmann::json& rules) {
    std::vector<int64_t> out;
    for (const auto& r : rules) out.push_back(r["id"].get<int64_t>());
    return out;
  };
  EXPECT_EQ(ids(rules_of_rows(rows, "default", "filter")), (std::vector<int64_t>{3, 4, 1, 2}));
  EXPECT_EQ(ids(rules_of_rows(rows, "default", "")), (std::vector<int64_t>{3, 4, 1, 2, 5}));
  const auto r = rules_of_rows(rows, "default", "filter");
  EXPECT_EQ(r[1], (nlohmann::json{{"kind", "filter"}, {"id", 4}}));
  EXPECT_EQ(r[2]["action"], "drop");
  EXPECT_EQ(ids(rules_of_rows(rows, "other", "")), (std::vector<int64_t>{6}));
}

TEST(RunProgram, ArgumentsReachTheProgramAsTheyAreAndFailuresAreNamed) {
  const std::string odd = "it's a \"path\" with $HOME and `x`";
  EXPECT_EQ(vpf::run_program({"test", odd, "=", odd}), "");
  EXPECT_EQ(vpf::run_program({"sh", "-c", "exit 3"}), "sh -c 'exit 3': exited with status 3");
  EXPECT_EQ(vpf::run_program({"sh", "-c", "kill -9 $$"}), "sh -c 'kill -9 $$': killed by signal 9");
  EXPECT_EQ(vpf::run_program({"vpf-no-such-program", "a b"}),
            "vpf-no-such-program 'a b': cannot run: No such file or directory");
  EXPECT_EQ(vpf::run_program({}), "no program to run");
  EXPECT_EQ(vpf::command_line({"ovs-vsctl", "set", "x=it's"}), "ovs-vsctl set 'x=it'\\''s'");
}
