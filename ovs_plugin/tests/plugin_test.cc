// The vportfilter plugin through its real entry point and hook ABI, with a host of the
// test's own standing in for ovs-vswitchd (the integration test uses the real one).
#include <gtest/gtest.h>
#include <openvswitch/packet-hook.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "frames.h"

extern "C" const ovs_packet_hook_ops* ovs_packet_hook_init(const ovs_packet_hook_host*, const char*, char*, size_t);

namespace {

using namespace vpf::test;

struct FakePacket {
  std::vector<uint8_t> bytes;
};
FakePacket* fp(const ovs_packet* p) { return reinterpret_cast<FakePacket*>(const_cast<ovs_packet*>(p)); }

struct Command {
  ovs_packet_hook_command_func* cb;
  void* aux;
  int min, max;
};
std::map<std::string, Command> g_commands;
std::string g_reply;
bool g_reply_ok;
std::vector<std::string> g_log;

ovs_packet_hook_host make_host() {
  ovs_packet_hook_host h{};
  h.size = sizeof h;
  h.version = OVS_PACKET_HOOK_ABI_VERSION;
  h.log = [](ovs_packet_hook_log_level, const char* m) { g_log.push_back(m); };
  h.packet_data = [](const ovs_packet* p) -> const uint8_t* { return fp(p)->bytes.data(); };
  h.packet_size = [](const ovs_packet* p) { return uint32_t(fp(p)->bytes.size()); };
  h.packet_data_writable = [](ovs_packet* p) { return fp(p)->bytes.data(); };
  h.packet_replace = [](ovs_packet* p, const void* d, uint32_t len) {
    auto* b = static_cast<const uint8_t*>(d);
    fp(p)->bytes.assign(b, b + len);
    return p;
  };
  h.packet_new = [](const void* d, uint32_t len) {
    auto* b = static_cast<const uint8_t*>(d);
    return reinterpret_cast<ovs_packet*>(new FakePacket{std::vector<uint8_t>(b, b + len)});
  };
  h.packet_free = [](ovs_packet* p) { delete fp(p); };
  h.inject = [](const char*, ovs_packet_hook_dir, ovs_packet* p) {
    delete fp(p);
    return 0;
  };
  h.register_command = [](const char* name, const char*, int min, int max, ovs_packet_hook_command_func* cb,
                          void* aux) {
    g_commands[name] = Command{cb, aux, min, max};
    return 0;
  };
  h.command_reply = [](ovs_packet_hook_reply*, int ok, const char* body) {
    g_reply_ok = ok != 0;
    g_reply = body;
  };
  return h;
}

const ovs_packet_hook_host kHost = make_host();

bool command(std::vector<std::string> args) {
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  auto it = g_commands.find(args[0]);
  EXPECT_NE(it, g_commands.end()) << args[0];
  if (it == g_commands.end()) return false;
  EXPECT_GE(int(args.size()) - 1, it->second.min);
  EXPECT_LE(int(args.size()) - 1, it->second.max);
  g_reply.clear();
  it->second.cb(int(argv.size()), argv.data(), it->second.aux, nullptr);
  return g_reply_ok;
}

std::string write_file(const std::string& name, const std::string& text) {
  const std::string path = ::testing::TempDir() + name;
  std::ofstream(path) << text;
  return path;
}

// Runs a batch through rx (outgoing) or tx (incoming); returns the verdicts.
std::vector<int> run(const ovs_packet_hook_ops* ops, void* port, bool rx, const std::vector<std::vector<uint8_t>>& frames) {
  std::vector<FakePacket> pkts;
  for (const auto& f : frames) pkts.push_back({f});
  std::vector<ovs_packet*> ptrs;
  for (auto& p : pkts) ptrs.push_back(reinterpret_cast<ovs_packet*>(&p));
  std::vector<uint8_t> verdicts(frames.size(), OVS_PACKET_PASS);
  ovs_packet_hook_batch b{sizeof b, OVS_PACKET_HOOK_ABI_VERSION, uint32_t(frames.size()), ptrs.data(), verdicts.data()};
  (rx ? ops->rx : ops->tx)(port, 0, &b);
  return std::vector<int>(verdicts.begin(), verdicts.end());
}

std::vector<uint8_t> tcp(uint16_t dport, bool to_vm = false) {
  return FrameBuilder().eth(to_vm ? kMacA : kMacB, to_vm ? kMacB : kMacA).ethertype(0x0800)
      .ipv4(to_vm ? ip4(10, 0, 0, 2) : ip4(10, 0, 0, 1), to_vm ? ip4(10, 0, 0, 1) : ip4(10, 0, 0, 2), 6)
      .tcp(40000, dport).build();
}
std::vector<uint8_t> udp(uint16_t dport) {
  return FrameBuilder().eth(kMacB, kMacA).ethertype(0x0800).ipv4(ip4(10, 0, 0, 1), ip4(10, 0, 0, 53), 17).udp(5353, dport).build();
}
std::vector<uint8_t> icmp() {
  return FrameBuilder().eth(kMacB, kMacA).ethertype(0x0800).ipv4(ip4(10, 0, 0, 1), ip4(10, 0, 0, 2), 1).icmp(8, 0).build();
}

constexpr int P = OVS_PACKET_PASS, D = OVS_PACKET_DROP;

}  // namespace

TEST(Plugin, RefusesAWrongHostAndABadStartingRuleFile) {
  char err[256] = "";
  ovs_packet_hook_host old = kHost;
  old.version = OVS_PACKET_HOOK_ABI_VERSION + 1;
  EXPECT_EQ(ovs_packet_hook_init(&old, "", err, sizeof err), nullptr);
  EXPECT_NE(std::string(err).find("ABI"), std::string::npos) << err;
  const std::string bad = write_file("bad-rules.json", R"([{"id": 1, "bpf": "tcp port nonsense"}])");
  EXPECT_EQ(ovs_packet_hook_init(&kHost, bad.c_str(), err, sizeof err), nullptr);
  EXPECT_NE(std::string(err).find("nonsense"), std::string::npos) << err;
  EXPECT_EQ(ovs_packet_hook_init(&kHost, "/nonexistent/rules.json", err, sizeof err), nullptr);
  EXPECT_NE(std::string(err).find("cannot open"), std::string::npos) << err;
}

TEST(Plugin, VerdictsCountersAndCommands) {
  char err[256] = "";
  const ovs_packet_hook_ops* ops = ovs_packet_hook_init(&kHost, "", err, sizeof err);
  ASSERT_NE(ops, nullptr) << err;
  ASSERT_EQ(ops->version, uint32_t(OVS_PACKET_HOOK_ABI_VERSION));
  void* vm1 = ops->port_open("vm1-eth0", "system");
  void* uplink = ops->port_open("uplink", "dpdk");
  ASSERT_TRUE(command({"vportfilter/adapter-set", "vm1-eth0", "0", "7"})) << g_reply;

  const std::string rules = write_file("rules.json", R"({"rules": [
    {"kind": "passthrough", "id": 1, "bpf": "tcp port 22"},
    {"kind": "filter", "id": 1, "bpf": "tcp dst port 23", "action": "drop"},
    {"kind": "filter", "id": 2, "bpf": "udp dst port 53", "action": "capture"},
    {"kind": "filter", "id": 3, "bpf": "icmp", "action": "notify"},
    {"kind": "filter", "id": 4, "bpf": "tcp", "action": "drop", "direction": "incoming", "remote_port": 443,
     "protocol": "tcp"},
    {"kind": "filter", "id": 5, "adapter": 1, "action": "drop"},
    {"kind": "connection", "id": 6, "vm": 7, "protocol": "tcp", "remote_port": 25, "flags": ["block"]}
  ]})");
  ASSERT_TRUE(command({"vportfilter/rules-load", rules})) << g_reply;

  // Outgoing (rx): telnet dropped; DNS captured -> fail-open passes; ICMP notify passes;
  // ssh passthrough; http passes; SMTP blocked by the VM's connection rule.
  EXPECT_EQ(run(ops, vm1, true, {tcp(23), udp(53), icmp(), tcp(22), tcp(80), tcp(25)}),
            (std::vector<int>{D, P, P, P, P, D}));
  // Incoming (tx): replies from port 443 dropped; telnet is an outgoing-direction concern
  // only for its destination port (23 is now the source), so it passes.
  auto from443 = FrameBuilder().eth(kMacA, kMacB).ethertype(0x0800).ipv4(ip4(1, 1, 1, 1), ip4(10, 0, 0, 1), 6)
                     .tcp(443, 40000).build();
  EXPECT_EQ(run(ops, vm1, false, {from443, tcp(80, true)}), (std::vector<int>{D, P}));
  // A port that is not an adapter is never touched.
  EXPECT_EQ(run(ops, uplink, true, {tcp(23), udp(53)}), (std::vector<int>{P, P}));

  // Fail-closed: captures without an agent are dropped.
  ASSERT_TRUE(command({"vportfilter/policy", "fail-closed"})) << g_reply;
  EXPECT_EQ(run(ops, vm1, true, {udp(53), icmp()}), (std::vector<int>{D, P}));

  // Bad packets: empty, truncated, garbage; never a crash, never a wrong drop.
  std::vector<uint8_t> cut = tcp(23);
  cut.resize(30);
  EXPECT_EQ(run(ops, vm1, true, {std::vector<uint8_t>(14, 0), cut, std::vector<uint8_t>(60, 0xff)}),
            (std::vector<int>{P, P, P}));

  ASSERT_TRUE(command({"vportfilter/show"}));
  EXPECT_NE(g_reply.find("rules: 7"), std::string::npos) << g_reply;
  EXPECT_NE(g_reply.find("adapter 0: vm1-eth0 (system, vm 7)"), std::string::npos) << g_reply;
  EXPECT_NE(g_reply.find("outgoing: packets 11 bytes"), std::string::npos) << g_reply;
  EXPECT_NE(g_reply.find("dropped 3"), std::string::npos) << g_reply;
  EXPECT_NE(g_reply.find("incoming: packets 2"), std::string::npos) << g_reply;
  EXPECT_EQ(g_reply.find("uplink"), std::string::npos) << "ports that are not adapters are not listed";

  // Bad commands change nothing and say what was wrong.
  EXPECT_FALSE(command({"vportfilter/rules-load", "/nonexistent.json"}));
  EXPECT_NE(g_reply.find("cannot open"), std::string::npos);
  const std::string broken = write_file("broken.json", R"([{"id": 1, "direction": "up"}])");
  EXPECT_FALSE(command({"vportfilter/rules-load", broken}));
  EXPECT_NE(g_reply.find("field 'direction'"), std::string::npos) << g_reply;
  EXPECT_FALSE(command({"vportfilter/adapter-set", "vm1-eth0", "x"}));
  EXPECT_NE(g_reply.find("not an adapter id"), std::string::npos);
  EXPECT_FALSE(command({"vportfilter/adapter-set", "nosuch", "3"}));
  EXPECT_NE(g_reply.find("no port named 'nosuch'"), std::string::npos);
  EXPECT_FALSE(command({"vportfilter/policy", "sometimes"}));
  ASSERT_TRUE(command({"vportfilter/show"}));
  EXPECT_NE(g_reply.find("rules: 7"), std::string::npos) << "a refused rules file kept the old rules";
  EXPECT_EQ(run(ops, vm1, true, {tcp(23)}), (std::vector<int>{D}));

  // Releasing the adapter: its packets pass untouched.
  ASSERT_TRUE(command({"vportfilter/adapter-set", "vm1-eth0", "-1"}));
  EXPECT_EQ(run(ops, vm1, true, {tcp(23)}), (std::vector<int>{P}));

  ops->port_close(vm1);
  ops->port_close(uplink);
  ops->fini();
}
