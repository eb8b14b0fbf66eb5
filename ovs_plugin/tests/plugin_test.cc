// The vportfilter plugin through its real entry point and hook ABI, with a host of the
// test's own standing in for ovs-vswitchd (the integration test uses the real one).
#include <gtest/gtest.h>
#include <openvswitch/packet-hook.h>

#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <thread>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "frames.h"
#include "vpf/channel_client.h"
#include "vpf/matcher/isa.h"

extern "C" const ovs_packet_hook_ops* ovs_packet_hook_init(const ovs_packet_hook_host*, const char*, char*, size_t);

namespace {

using namespace vpf::test;
using nlohmann::json;

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
struct Injection {
  std::string port;
  ovs_packet_hook_dir dir;
  std::vector<uint8_t> bytes;
};
std::mutex g_inject_mu;
std::vector<Injection> g_injected;
std::atomic<int> g_freed{0};

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
  h.packet_free = [](ovs_packet* p) {
    ++g_freed;
    delete fp(p);
  };
  h.inject = [](const char* port, ovs_packet_hook_dir dir, ovs_packet* p) {
    {
      std::lock_guard lock(g_inject_mu);
      g_injected.push_back({port, dir, fp(p)->bytes});
    }
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

// Calls rx or tx with a batch of ABI version `abi`, as the switch makes it (version 2
// carries the packets' bytes and lengths, version 1 does not; version 5 has plain_ipv4,
// which starts as *plain and is returned there; version 6 memo, the same with *memo).
void call_hook(const ovs_packet_hook_ops* ops, void* port, bool rx, std::vector<ovs_packet*>& ptrs,
               std::vector<uint8_t>& verdicts, uint32_t abi = OVS_PACKET_HOOK_ABI_VERSION,
               uint32_t* plain = nullptr, uint32_t* memo = nullptr) {
  std::vector<const uint8_t*> data;
  std::vector<uint32_t> len;
  for (ovs_packet* p : ptrs) {
    data.push_back(fp(p)->bytes.data());
    len.push_back(uint32_t(fp(p)->bytes.size()));
  }
  const bool v2 = abi >= 2;
  const size_t size = abi >= 5 ? sizeof(ovs_packet_hook_batch)
                      : v2     ? offsetof(ovs_packet_hook_batch, plain_ipv4)
                               : offsetof(ovs_packet_hook_batch, data);
  ovs_packet_hook_batch b{uint32_t(size),
                          abi,
                          uint32_t(ptrs.size()),
                          ptrs.data(),
                          verdicts.data(),
                          v2 ? data.data() : nullptr,
                          v2 ? len.data() : nullptr,
                          plain ? *plain : 0,
                          memo ? *memo : 0};
  (rx ? ops->rx : ops->tx)(port, 0, &b);
  if (plain) *plain = b.plain_ipv4;
  if (memo) *memo = b.memo;
}

// Runs a batch through rx (outgoing) or tx (incoming); returns the verdicts.
std::vector<int> run(const ovs_packet_hook_ops* ops, void* port, bool rx, const std::vector<std::vector<uint8_t>>& frames,
                     uint32_t abi = OVS_PACKET_HOOK_ABI_VERSION, uint32_t* plain = nullptr, uint32_t* memo = nullptr) {
  std::vector<FakePacket> pkts;
  for (const auto& f : frames) pkts.push_back({f});
  std::vector<ovs_packet*> ptrs;
  for (auto& p : pkts) ptrs.push_back(reinterpret_cast<ovs_packet*>(&p));
  std::vector<uint8_t> verdicts(frames.size(), OVS_PACKET_PASS);
  call_hook(ops, port, rx, ptrs, verdicts, abi, plain, memo);
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

// A plugin with port vm1-eth0 as adapter 0 and one rule: outgoing telnet is dropped.
class TelnetDropPlugin : public ::testing::Test {
 protected:
  void SetUp() override {
    char err[256] = "";
    ops = ovs_packet_hook_init(&kHost, "control=none", err, sizeof err);
    ASSERT_NE(ops, nullptr) << err;
    vm1 = ops->port_open("vm1-eth0", "system");
    ASSERT_TRUE(command({"vportfilter/adapter-set", "vm1-eth0", "0"})) << g_reply;
    const std::string rules = write_file("rules-telnet.json", R"({"rules": [
      {"kind": "filter", "id": 1, "bpf": "tcp dst port 23", "action": "drop"}]})");
    ASSERT_TRUE(command({"vportfilter/rules-load", rules})) << g_reply;
  }
  void TearDown() override {
    if (!ops) return;
    if (vm1) ops->port_close(vm1);
    ops->fini();
  }
  const ovs_packet_hook_ops* ops = nullptr;
  void* vm1 = nullptr;
};

TEST_F(TelnetDropPlugin, Version1BatchesGetTheSameVerdicts) {
  // A switch may hand the plugin batches without the bytes and lengths (ABI version 1):
  // the plugin then asks for each packet and decides the same.
  for (uint32_t abi : {1u, 2u})
    EXPECT_EQ(run(ops, vm1, true, {tcp(23), tcp(80), tcp(23)}, abi), (std::vector<int>{D, P, D})) << "ABI " << abi;
}

TEST_F(TelnetDropPlugin, ABatchLargerThanTheSwitchsIsDecidedWhole) {
  // The switch hands at most 32 packets at a time; were it to hand more, every packet must
  // still be decided (in slices), none passed unfiltered past a cut.
  for (uint32_t abi : {1u, 2u}) {
    std::vector<std::vector<uint8_t>> frames;
    std::vector<int> want;
    for (int i = 0; i < 70; ++i) {
      const bool telnet = i % 11 == 0 || i == 32 || i == 33 || i == 69;
      frames.push_back(tcp(telnet ? 23 : 80));
      want.push_back(telnet ? D : P);
    }
    EXPECT_EQ(run(ops, vm1, true, frames, abi), want) << "ABI " << abi;
  }
}

TEST_F(TelnetDropPlugin, HandsTheSwitchTheReceivedPacketsWhoseHeadersItChecked) {
  // ABI 5: bit i of plain_ipv4 tells the switch that received packet i is a plain IPv4
  // frame (untagged, 20-byte header, not a fragment, total length within the frame and
  // covering the transport header), so that it does not parse the packet again.
  std::vector<uint8_t> tagged = tcp(80);
  const uint8_t tag[4] = {0x81, 0x00, 0x00, 0x05};
  tagged.insert(tagged.begin() + 12, tag, tag + 4);
  std::vector<uint8_t> fragment = tcp(80);
  fragment[20] |= 0x20;  // more fragments
  std::vector<uint8_t> past_end = tcp(80);
  past_end[17] = uint8_t(past_end[17] + 1);  // the IP total length one byte past the frame
  std::vector<uint8_t> options = tcp(80);
  options[14] = 0x46;  // a 24-byte IP header
  std::vector<uint8_t> padded = udp(53);
  padded.resize(padded.size() + 6);  // Ethernet padding after the IP packet
  const std::vector<std::vector<uint8_t>> frames{tcp(80), udp(53), icmp(), tagged, fragment, past_end,
                                                 options, padded, tcp(23)};
  // The same decision as a 5-tuple rule: the rule shape the decision cache keys eight
  // packets at a time, checking their headers.
  const std::string rules = write_file("rules-telnet-5tuple.json", R"({"rules": [
    {"kind": "filter", "id": 1, "protocol": "tcp", "remote_port": 23, "action": "drop"}]})");
  ASSERT_TRUE(command({"vportfilter/rules-load", rules})) << g_reply;
  uint32_t plain = 0;
  EXPECT_EQ(run(ops, vm1, true, frames, 5, &plain), (std::vector<int>{P, P, P, P, P, P, P, P, D}));
  if (vpf::matcher::isa_supported(vpf::matcher::Isa::Avx512)) {
    EXPECT_EQ(plain, 0b110000111u);  // the three plain frames, the padded one and telnet
  } else {
    EXPECT_EQ(plain, 0u);  // the headers are checked one packet at a time: nothing to hand over
  }
  // Batches to send are parsed already: nothing handed over.  Nor to an older switch.
  plain = 0;
  run(ops, vm1, false, frames, 5, &plain);
  EXPECT_EQ(plain, 0u);
  plain = 0xdead;
  run(ops, vm1, true, frames, 4, &plain);
  EXPECT_EQ(plain, 0xdeadu);
}

TEST_F(TelnetDropPlugin, LetsTheSwitchRememberThePassesThatHoldForTheWholeFlow) {
  // ABI 6: bit i of memo lets the switch pass the later packets of packet i's exact flow
  // key without the plugin.  Only for a pass with no rule matched, of a plain IPv4 frame
  // whose key holds nothing the switch's flow key does not (no size class, no IP
  // identification), and of a protocol whose transport fields the switch parses.
  const std::string rules = write_file("rules-memo-5tuple.json", R"({"rules": [
    {"kind": "filter", "id": 1, "protocol": "tcp", "remote_port": 23, "action": "drop"},
    {"kind": "filter", "id": 2, "protocol": "udp", "remote_port": 99, "action": "notify"}]})");
  ASSERT_TRUE(command({"vportfilter/rules-load", rules})) << g_reply;
  std::vector<uint8_t> options = tcp(80);
  options[14] = 0x46;  // a 24-byte IP header
  std::vector<uint8_t> udplite = udp(53);
  udplite[23] = 136;  // UDP-Lite: the switch does not parse its ports
  std::vector<uint8_t> padded = udp(53);
  padded.resize(padded.size() + 6);
  const std::vector<std::vector<uint8_t>> frames{tcp(80), udp(53), icmp(), tcp(23), options, udplite, padded, udp(99)};
  // The switch offers the packets whose passes it can remember (here all).
  const uint32_t all = 0xff;
  uint32_t memo = all;
  EXPECT_EQ(run(ops, vm1, true, frames, 6, nullptr, &memo), (std::vector<int>{P, P, P, D, P, P, P, P}));
  EXPECT_EQ(memo, 0b01000111u) << "telnet and the notify copy matched a rule";
  memo = 0b00000110;  // only some offered: the others stay clear
  run(ops, vm1, true, frames, 6, nullptr, &memo);
  EXPECT_EQ(memo, 0b00000110u);
  memo = 0;  // none offered (the switch calls the hook before its flow lookup)
  run(ops, vm1, true, frames, 6, nullptr, &memo);
  EXPECT_EQ(memo, 0u);
  // Not for batches to send, nor for an older switch.
  memo = 0;
  run(ops, vm1, false, frames, 6, nullptr, &memo);
  EXPECT_EQ(memo, 0u);
  memo = 0xbeef;
  run(ops, vm1, true, frames, 5, nullptr, &memo);
  EXPECT_EQ(memo, 0xbeefu);
  // A size condition: the frame length is not in the switch's flow key.
  ASSERT_TRUE(command({"vportfilter/rules-load", write_file("rules-memo-size.json", R"({"rules": [
    {"kind": "filter", "id": 3, "protocol": "tcp", "min_size": 1000, "action": "drop"}]})")}))
      << g_reply;
  memo = all;
  EXPECT_EQ(run(ops, vm1, true, frames, 6, nullptr, &memo), (std::vector<int>{P, P, P, P, P, P, P, P}));
  EXPECT_EQ(memo & 0b1001u, 0u) << "no TCP frame";
  // A BPF test of the IP identification: not in the flow key either; of TCP flags: it is.
  // (With a 5-tuple rule beside it: a lone BPF rule runs without the cache.)
  ASSERT_TRUE(command({"vportfilter/rules-load", write_file("rules-memo-ipid.json", R"({"rules": [
    {"kind": "filter", "id": 4, "bpf": "ip[4:2] = 7", "action": "drop"},
    {"kind": "filter", "id": 6, "protocol": "udp", "remote_port": 99, "action": "drop"}]})")}))
      << g_reply;
  memo = all;
  run(ops, vm1, true, frames, 6, nullptr, &memo);
  EXPECT_EQ(memo, 0u);
  ASSERT_TRUE(command({"vportfilter/rules-load", write_file("rules-memo-flags.json", R"({"rules": [
    {"kind": "filter", "id": 5, "bpf": "tcp[13] & 4 != 0", "action": "drop"},
    {"kind": "filter", "id": 6, "protocol": "udp", "remote_port": 99, "action": "drop"}]})")}))
      << g_reply;
  // (A frame padded to 64 bytes: the key word at byte 47 is read whole.  And after so
  // many batches of new flows the cache looks up one batch in 16: the others have no
  // keys, hence no memo.)
  std::vector<uint8_t> tcp64 = tcp(80);
  tcp64.resize(64);
  memo = 0;
  for (int k = 0; k < 40 && !memo; ++k) {
    memo = 1;
    EXPECT_EQ(run(ops, vm1, true, {tcp64}, 6, nullptr, &memo), (std::vector<int>{P}));
  }
  EXPECT_EQ(memo, 1u);
}

// A port state as the switch makes it (ABI 3): every batch wanted until the plugin says.
ovs_packet_hook_port_state new_state() {
  ovs_packet_hook_port_state st{};
  st.size = sizeof st;
  st.version = OVS_PACKET_HOOK_ABI_VERSION;
  st.want = OVS_PACKET_HOOK_WANT_RX | OVS_PACKET_HOOK_WANT_TX;
  return st;
}

TEST(Plugin, WantsTheBatchesOfTheDirectionsItsRulesName) {
  char err[256] = "";
  const ovs_packet_hook_ops* ops = ovs_packet_hook_init(&kHost, "control=none", err, sizeof err);
  ASSERT_NE(ops, nullptr) << err;
  ASSERT_NE(ops->port_attach, nullptr);
  auto vm1_state = new_state(), vm2_state = new_state(), uplink_state = new_state();
  void* vm1 = ops->port_open("vm1-eth0", "system");
  void* vm2 = ops->port_open("vm2-eth0", "system");
  void* uplink = ops->port_open("uplink", "dpdk");
  ops->port_attach(vm1, &vm1_state);
  ops->port_attach(vm2, &vm2_state);
  ops->port_attach(uplink, &uplink_state);
  constexpr uint32_t kCount = OVS_PACKET_HOOK_COUNT_RX | OVS_PACKET_HOOK_COUNT_TX;
  // Not a VM port: nothing at all, not even counts.
  EXPECT_EQ(vm1_state.want, 0u);
  EXPECT_EQ(uplink_state.want, 0u);
  ASSERT_TRUE(command({"vportfilter/adapter-set", "vm1-eth0", "0"})) << g_reply;
  ASSERT_TRUE(command({"vportfilter/adapter-set", "vm2-eth0", "1"})) << g_reply;
  EXPECT_EQ(vm1_state.want, kCount) << "no rules: the switch counts";
  auto load = [](const std::string& name, const std::string& json) {
    return command({"vportfilter/rules-load", write_file(name, json)});
  };
  ASSERT_TRUE(load("want1.json", R"({"rules": [
    {"kind": "filter", "id": 1, "adapter": 0, "direction": "outgoing", "bpf": "tcp port 23", "action": "drop"}]})"))
      << g_reply;
  EXPECT_EQ(vm1_state.want, kCount | OVS_PACKET_HOOK_WANT_RX);
  EXPECT_EQ(vm2_state.want, kCount);
  EXPECT_EQ(uplink_state.want, 0u);
  EXPECT_EQ(run(ops, vm1, true, {tcp(23), tcp(80)}), (std::vector<int>{D, P}));
  ASSERT_TRUE(load("want2.json", R"({"rules": [
    {"kind": "filter", "id": 2, "direction": "incoming", "bpf": "tcp port 23", "action": "drop"}]})"))
      << g_reply;
  EXPECT_EQ(vm1_state.want, kCount | OVS_PACKET_HOOK_WANT_TX) << "every adapter, incoming only";
  EXPECT_EQ(vm2_state.want, kCount | OVS_PACKET_HOOK_WANT_TX);
  EXPECT_EQ(uplink_state.want, 0u);
  ASSERT_TRUE(load("want3.json", R"({"rules": [
    {"kind": "connection", "id": 3, "adapter": 1, "protocol": "tcp", "remote_port": 25, "flags": ["block"]}]})"))
      << g_reply;
  EXPECT_EQ(vm1_state.want, kCount);
  EXPECT_EQ(vm2_state.want, kCount | OVS_PACKET_HOOK_WANT_RX | OVS_PACKET_HOOK_WANT_TX) << "both directions";
  ASSERT_TRUE(load("want3b.json", R"({"rules": [
    {"kind": "connection", "id": 4, "adapter": 1, "direction": "outgoing", "protocol": "tcp", "remote_port": 25,
     "flags": ["block"]}]})"))
      << g_reply;
  EXPECT_EQ(vm1_state.want, kCount);
  EXPECT_EQ(vm2_state.want, kCount | OVS_PACKET_HOOK_WANT_RX | OVS_PACKET_HOOK_WANT_TX)
      << "an outgoing connection rule: both directions (its connections' replies are tracked)";
  ASSERT_TRUE(load("want4.json", R"({"rules": []})")) << g_reply;
  EXPECT_EQ(vm2_state.want, kCount);
  ASSERT_TRUE(command({"vportfilter/adapter-set", "vm2-eth0", "-1"})) << g_reply;
  EXPECT_EQ(vm2_state.want, 0u) << "released";
  ops->port_close(vm1);
  ops->port_close(vm2);
  ops->port_close(uplink);
  ops->fini();
}

// conns=0: no connection tracking; a connection rule then wants only the batches of its
// own direction, and the listing says why it is empty.
TEST(Plugin, WithoutTrackingAConnectionRuleWantsOnlyItsDirection) {
  char err[256] = "";
  const ovs_packet_hook_ops* ops = ovs_packet_hook_init(&kHost, "control=none conns=0", err, sizeof err);
  ASSERT_NE(ops, nullptr) << err;
  auto st = new_state();
  void* vm = ops->port_open("vm1-eth0", "system");
  ops->port_attach(vm, &st);
  ASSERT_TRUE(command({"vportfilter/adapter-set", "vm1-eth0", "0"})) << g_reply;
  ASSERT_TRUE(command({"vportfilter/rules-load", write_file("untracked.json", R"({"rules": [
    {"kind": "connection", "id": 1, "direction": "outgoing", "protocol": "tcp", "remote_port": 25,
     "flags": ["block"]}]})")}))
      << g_reply;
  EXPECT_EQ(st.want, OVS_PACKET_HOOK_COUNT_RX | OVS_PACKET_HOOK_COUNT_TX | OVS_PACKET_HOOK_WANT_RX);
  EXPECT_FALSE(command({"vportfilter/conn-list"}));
  EXPECT_NE(g_reply.find("connection tracking is off"), std::string::npos) << g_reply;
  ops->port_close(vm);
  ops->fini();
}

// A started plugin with one port, vm1-eth0, attached as the switch attaches it (ABI 3)
// and made adapter 0.
struct OneVm {
  const ovs_packet_hook_ops* ops = nullptr;
  ovs_packet_hook_port_state st = new_state();
  void* vm1 = nullptr;
  void start() {
    char err[256] = "";
    ops = ovs_packet_hook_init(&kHost, "control=none", err, sizeof err);
    ASSERT_NE(ops, nullptr) << err;
    vm1 = ops->port_open("vm1-eth0", "system");
    ops->port_attach(vm1, &st);
    ASSERT_TRUE(command({"vportfilter/adapter-set", "vm1-eth0", "0"})) << g_reply;
  }
};

TEST(Plugin, OneRuleAddedAndRemovedByCommand) {
  OneVm v;
  ASSERT_NO_FATAL_FAILURE(v.start());
  const ovs_packet_hook_ops* ops = v.ops;
  void* vm1 = v.vm1;
  const auto& st = v.st;
  const std::string telnet = R"({"kind": "filter", "id": 7, "adapter": 0, "bpf": "tcp dst port 23", "action": "drop"})";
  ASSERT_TRUE(command({"vportfilter/rule-add", telnet})) << g_reply;
  EXPECT_EQ(g_reply, "added filter:7");
  EXPECT_NE(st.want & OVS_PACKET_HOOK_WANT_RX, 0u);
  EXPECT_EQ(run(ops, vm1, true, {tcp(23), tcp(80)}), (std::vector<int>{D, P}));
  // Refused whole, with the reason; the rule in force stays.
  EXPECT_FALSE(command({"vportfilter/rule-add", telnet}));
  EXPECT_NE(g_reply.find("exists"), std::string::npos) << g_reply;
  EXPECT_FALSE(command({"vportfilter/rule-add", "{\"kind\": \"filter\", \"id\": 8, \"bpf\": \"tcp port x\"}"}));
  EXPECT_NE(g_reply.find("bpf"), std::string::npos) << g_reply;
  EXPECT_FALSE(command({"vportfilter/rule-add", "{\"kind\": "}));
  EXPECT_NE(g_reply.find("not JSON"), std::string::npos) << g_reply;
  EXPECT_FALSE(command({"vportfilter/rule-add", "[1]"}));
  EXPECT_NE(g_reply.find("JSON object"), std::string::npos) << g_reply;
  for (const char* bad : {"filter", "filter:", "filter:x", "bogus:7", ":7", "filter:-1", "filter:99999999999"}) {
    EXPECT_FALSE(command({"vportfilter/rule-remove", bad})) << bad;
    EXPECT_NE(g_reply.find("is not KIND:ID"), std::string::npos) << bad << ": " << g_reply;
  }
  EXPECT_FALSE(command({"vportfilter/rule-remove", "filter:8"})) << "no such rule";
  EXPECT_FALSE(g_reply.empty());
  EXPECT_EQ(run(ops, vm1, true, {tcp(23)}), (std::vector<int>{D}));
  ASSERT_TRUE(command({"vportfilter/rule-remove", "filter:7"})) << g_reply;
  EXPECT_EQ(st.want & (OVS_PACKET_HOOK_WANT_RX | OVS_PACKET_HOOK_WANT_TX), 0u) << "no rule left for the adapter";
  EXPECT_EQ(run(ops, vm1, true, {tcp(23)}), (std::vector<int>{P}));
  ops->port_close(vm1);
  ops->fini();
}

TEST(Plugin, ANewMemoGenerationForEveryChangeOfTheRulesOrTheMapping) {
  // ABI 6: the verdicts the switch remembers are valid under the port's memo_gen only, so
  // every change that can change a verdict gives it a value it has not had before.
  OneVm v;
  ASSERT_NO_FATAL_FAILURE(v.start());
  auto& st = v.st;
  std::vector<uint32_t> seen{st.memo_gen};
  auto changed = [&] {
    const uint32_t g = st.memo_gen;
    const bool fresh = g != 0 && std::find(seen.begin(), seen.end(), g) == seen.end();
    seen.push_back(g);
    return fresh;
  };
  EXPECT_NE(st.memo_gen, 0u);
  ASSERT_TRUE(command({"vportfilter/rule-add", R"({"kind": "filter", "id": 7, "bpf": "tcp dst port 23", "action": "drop"})"}))
      << g_reply;
  EXPECT_TRUE(changed()) << "a rule added";
  ASSERT_TRUE(command({"vportfilter/rule-remove", "filter:7"})) << g_reply;
  EXPECT_TRUE(changed()) << "a rule removed";
  ASSERT_TRUE(command({"vportfilter/rules-load", write_file("memo-gen.json", R"({"rules": [
    {"kind": "filter", "id": 1, "protocol": "tcp", "remote_port": 23, "action": "drop"}]})")}))
      << g_reply;
  EXPECT_TRUE(changed()) << "rules loaded";
  ASSERT_TRUE(command({"vportfilter/adapter-set", "vm1-eth0", "3"})) << g_reply;
  EXPECT_TRUE(changed()) << "another adapter";
  EXPECT_FALSE(command({"vportfilter/rule-add", "{\"kind\": "}));
  EXPECT_EQ(st.memo_gen, seen.back()) << "a refused rule changes nothing";
  // A plugin loaded again goes on from the generation the switch's state holds.
  v.ops->port_close(v.vm1);
  v.ops->fini();
  OneVm again;
  again.st = st;
  ASSERT_NO_FATAL_FAILURE(again.start());
  EXPECT_GT(again.st.memo_gen, seen.back());
  again.ops->port_close(again.vm1);
  again.ops->fini();
}

TEST(Plugin, PacketsTheSwitchCountedAreTheAdaptersToo) {
  OneVm v;
  ASSERT_NO_FATAL_FAILURE(v.start());
  const ovs_packet_hook_ops* ops = v.ops;
  void* vm1 = v.vm1;
  auto& st = v.st;
  const std::string rules = write_file("counted.json", R"({"rules": [
    {"kind": "filter", "id": 1, "direction": "outgoing", "bpf": "tcp port 23", "action": "drop"}]})");
  ASSERT_TRUE(command({"vportfilter/rules-load", rules})) << g_reply;
  // The hook saw 3 outgoing packets (one dropped); the switch counted other batches in
  // two queue slots and the shared slot, in both directions.
  const auto frames = std::vector<std::vector<uint8_t>>{tcp(23), tcp(80), tcp(81)};
  uint64_t seen_bytes = 0;
  for (const auto& f : frames) seen_bytes += f.size();
  EXPECT_EQ(run(ops, vm1, true, frames), (std::vector<int>{D, P, P}));
  st.counted[OVS_PACKET_HOOK_RX][0] = {10, 1000, {}};
  st.counted[OVS_PACKET_HOOK_RX][3] = {5, 500, {}};
  st.counted[OVS_PACKET_HOOK_RX][OVS_PACKET_HOOK_COUNT_SLOTS] = {2, 200, {}};
  st.counted[OVS_PACKET_HOOK_TX][1] = {7, 700, {}};
  auto adapter = [&] {
    const json stats = json::parse((command({"vportfilter/stats"}), g_reply));
    return stats["adapters"][0];
  };
  json a = adapter();
  EXPECT_EQ(a["outgoing"]["packets"], 3 + 10 + 5 + 2);
  EXPECT_EQ(a["outgoing"]["bytes"], seen_bytes + 1700);
  EXPECT_EQ(a["outgoing"]["dropped"], 1);
  EXPECT_EQ(a["incoming"]["packets"], 7);
  EXPECT_EQ(a["incoming"]["bytes"], 700);
  // The netdev goes away: its counts stay with the adapter (the state is not read again).
  ops->port_close(vm1);
  st.counted[OVS_PACKET_HOOK_RX][0].packets = 999999;
  a = adapter();
  EXPECT_EQ(a["outgoing"]["packets"], 3 + 10 + 5 + 2);
  EXPECT_EQ(a["incoming"]["bytes"], 700);
  EXPECT_FALSE(a["present"].get<bool>());
  ops->fini();
}

TEST(Plugin, VerdictsCountersAndCommands) {
  char err[256] = "";
  const ovs_packet_hook_ops* ops = ovs_packet_hook_init(&kHost, "control=none", err, sizeof err);
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

  // Fail-closed: captures and notifies without an agent are dropped.
  ASSERT_TRUE(command({"vportfilter/policy", "fail-closed"})) << g_reply;
  EXPECT_EQ(run(ops, vm1, true, {udp(53), icmp()}), (std::vector<int>{D, D}));

  // Bad packets: empty, truncated, garbage; never a crash, never a wrong drop.
  std::vector<uint8_t> cut = tcp(23);
  cut.resize(30);
  EXPECT_EQ(run(ops, vm1, true, {std::vector<uint8_t>(14, 0), cut, std::vector<uint8_t>(60, 0xff)}),
            (std::vector<int>{P, P, P}));

  ASSERT_TRUE(command({"vportfilter/show"}));
  EXPECT_NE(g_reply.find("rules: 7"), std::string::npos) << g_reply;
  EXPECT_NE(g_reply.find("adapter 0: vm1-eth0 (system, vm 7)"), std::string::npos) << g_reply;
  EXPECT_NE(g_reply.find("outgoing: packets 11 bytes"), std::string::npos) << g_reply;
  EXPECT_NE(g_reply.find("dropped 4"), std::string::npos) << g_reply;
  EXPECT_NE(g_reply.find("events_lost 4"), std::string::npos) << g_reply;  // 2 capture, 2 notify
  EXPECT_NE(g_reply.find("filter:2=2 filter:3=2"), std::string::npos) << g_reply;  // DNS and ICMP twice each
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

namespace {

using vpf::channel::ChannelClient;
using vpf::channel::PacketEvent;
using vpf::channel::RpcError;
using vpf::channel::VerdictAction;

// Runs a batch whose packets are heap-allocated like the switch's: packets the plugin
// took stay alive (it owns them now); the others are freed here.
std::vector<int> run_owned(const ovs_packet_hook_ops* ops, void* port, bool rx,
                           const std::vector<std::vector<uint8_t>>& frames) {
  std::vector<ovs_packet*> ptrs;
  for (const auto& f : frames) ptrs.push_back(reinterpret_cast<ovs_packet*>(new FakePacket{f}));
  std::vector<uint8_t> verdicts(frames.size(), OVS_PACKET_PASS);
  call_hook(ops, port, rx, ptrs, verdicts);
  for (size_t i = 0; i < ptrs.size(); ++i)
    if (verdicts[i] != OVS_PACKET_TAKEN) delete fp(ptrs[i]);
  return std::vector<int>(verdicts.begin(), verdicts.end());
}

// One request line on a fresh connection; the reply line (or "" at EOF).
std::string raw_exchange(const std::string& path, const std::string& lines) {
  const int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return "connect failed";
  if (!lines.empty()) [[maybe_unused]] auto n = write(fd, lines.data(), lines.size());
  shutdown(fd, SHUT_WR);
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = read(fd, buf, sizeof buf)) > 0;) out.append(buf, size_t(n));
  close(fd);
  return out;
}

template <class Pred>
bool eventually(Pred p) {
  for (int i = 0; i < 400; ++i) {
    if (p()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

size_t injected_count() {
  std::lock_guard lock(g_inject_mu);
  return g_injected.size();
}

std::vector<PacketEvent> events_of(ChannelClient& c, std::vector<std::vector<uint8_t>>* data = nullptr) {
  std::vector<PacketEvent> out;
  c.poll_events([&](const PacketEvent& e, const uint8_t* d) {
    out.push_back(e);
    if (data) data->emplace_back(d, d + e.cap_len);
  });
  return out;
}

}  // namespace

TEST(PluginChannel, AgentDrivesRulesEventsVerdictsAndInjection) {
  const std::string sock = ::testing::TempDir() + "vpf-ctl-" + std::to_string(getpid()) + ".sock";
  const std::string rules = write_file("ch-rules.json", R"([
    {"kind": "filter", "id": 10, "bpf": "udp dst port 53", "action": "capture"},
    {"kind": "filter", "id": 11, "bpf": "icmp", "action": "notify"},
    {"kind": "filter", "id": 12, "bpf": "tcp dst port 23", "action": "drop"}])");
  char err[256] = "";
  const ovs_packet_hook_ops* ops =
      ovs_packet_hook_init(&kHost, ("rules=" + rules + " control=" + sock).c_str(), err, sizeof err);
  ASSERT_NE(ops, nullptr) << err;
  void* vm1 = ops->port_open("vm1-eth0", "system");
  g_injected.clear();

  // Before hello nothing is served; malformed input gets an error and changes nothing.
  EXPECT_NE(raw_exchange(sock, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"stats\"}\n").find("say hello first"),
            std::string::npos);
  EXPECT_NE(raw_exchange(sock, "{not json\n").find("-32700"), std::string::npos);
  EXPECT_NE(raw_exchange(sock, "[1,2]\n").find("-32600"), std::string::npos);
  EXPECT_NE(raw_exchange(sock, R"({"id":1,"method":"hello","params":{"version":999}})" "\n").find("channel version"),
            std::string::npos);

  // A non-root peer is refused with a reason (needs root to switch user in the child).
  if (geteuid() == 0) {
    int pfd[2];
    ASSERT_EQ(pipe(pfd), 0);
    const pid_t pid = fork();
    if (pid == 0) {
      if (setgid(65534) != 0 || setuid(65534) != 0) _exit(3);
      const std::string r = raw_exchange(sock, "");
      [[maybe_unused]] auto n = write(pfd[1], r.data(), r.size());
      _exit(0);
    }
    close(pfd[1]);
    std::string reply;
    char buf[512];
    for (ssize_t n; (n = read(pfd[0], buf, sizeof buf)) > 0;) reply.append(buf, size_t(n));
    close(pfd[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    EXPECT_NE(reply.find("uid 65534 is not root"), std::string::npos) << reply;
  }

  auto agent = std::make_unique<ChannelClient>(sock);
  EXPECT_EQ(agent->hello()["event_rings"], 8);
  EXPECT_THROW(ChannelClient second(sock), RpcError);  // one agent at a time

  // Requests with bad parameters are refused whole.
  EXPECT_THROW(agent->call("set_adapters", {{"adapters", {{{"port", "vm1-eth0"}}}}}), RpcError);
  EXPECT_THROW(agent->call("set_adapters", {{"adapters", {{{"port", "a"}, {"adapter", 1}}, {{"port", "b"}, {"adapter", 1}}}}}),
               RpcError);
  EXPECT_THROW(agent->call("set_config", {{"policy", "fail-open"}, {"mode", "sometimes"}}), RpcError);
  try {
    agent->call("set_rules", {{"rules", {{{"id", 1}, {"bpf", "udp port nonsense"}}}}});
    ADD_FAILURE() << "bad rule accepted";
  } catch (const RpcError& e) {
    EXPECT_NE(std::string(e.what()).find("nonsense"), std::string::npos) << e.what();
  }
  EXPECT_THROW(agent->call("no_such_method"), RpcError);
  EXPECT_EQ(agent->call("set_config", json::object())["policy"], "fail-open") << "a refused config changed nothing";

  // Adapters by name (one that does not exist yet is kept for later); snaplen 20.
  auto r = agent->call("set_adapters", {{"adapters", {{{"port", "vm1-eth0"}, {"adapter", 3}, {"vm", 9}, {"snaplen", 20}},
                                                      {{"port", "vm2-eth0"}, {"adapter", 4}}}}});
  EXPECT_EQ(r["present"], 1);
  void* vm2 = ops->port_open("vm2-eth0", "system");
  EXPECT_EQ(run_owned(ops, vm2, true, {tcp(23)}), (std::vector<int>{D})) << "late port got its adapter";

  // change_rules: bad requests are refused whole, with the reason.
  auto refused = [&](const json& params, const char* want) {
    try {
      agent->call("change_rules", params);
      ADD_FAILURE() << "accepted: " << params.dump();
    } catch (const RpcError& e) {
      EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
    }
  };
  const json count_tcp = {{"kind", "filter"}, {"id", 14}, {"bpf", "tcp"}, {"action", "count"}};
  refused(json::array(), "change_rules needs");
  refused({{"drop", json::array()}}, "unknown member 'drop'");
  refused({{"remove", {{{"kind", "filter"}}}}}, "must be {\"kind\"");
  refused({{"remove", {{{"kind", "rule"}, {"id", 12}}}}}, "names no rule kind");
  refused({{"remove", {{{"kind", "filter"}, {"id", 99}}}}}, "no such rule");
  refused({{"add", {count_tcp}}}, "an added rule is");
  refused({{"add", {{{"rule", count_tcp}, {"before", {{"kind", "filter"}, {"id", 99}}}}}}}, "no filter rule 99");
  refused({{"add", {{{"rule", count_tcp}, {"before", {{"kind", "passthrough"}, {"id", 12}}}}}}}, "no passthrough rule 12");
  refused({{"remove", {{{"kind", "filter"}, {"id", 12}}}}, {"add", {{{"rule", {{"id", 15}, {"bpf", "tcp port x"}}}}}}},
          "bpf");
  EXPECT_EQ(run_owned(ops, vm2, true, {tcp(23)}), (std::vector<int>{D})) << "a refused change removed nothing";
  // A count rule placed before the drop rule decides first; at the tail it would not.
  r = agent->call("change_rules", {{"add", {{{"rule", count_tcp}, {"before", {{"kind", "filter"}, {"id", 12}}}}}}});
  EXPECT_EQ(r["added"], 1);
  EXPECT_EQ(run_owned(ops, vm2, true, {tcp(23)}), (std::vector<int>{P}));
  agent->call("change_rules", {{"remove", {{{"kind", "filter"}, {"id", 14}}}}});
  EXPECT_EQ(run_owned(ops, vm2, true, {tcp(23)}), (std::vector<int>{D}));

  // Capture and notify: the capture is taken, the notify copy is cut to the snaplen.
  EXPECT_EQ(run_owned(ops, vm1, true, {udp(53), icmp(), tcp(80)}), (std::vector<int>{OVS_PACKET_TAKEN, P, P}));
  ASSERT_TRUE(agent->wait_events(1000));
  std::vector<std::vector<uint8_t>> data;
  auto ev = events_of(*agent, &data);
  ASSERT_EQ(ev.size(), 2u);
  std::sort(ev.begin(), ev.end(), [](auto& a, auto& b) { return a.rule_id < b.rule_id; });
  EXPECT_EQ(ev[0].rule_id, 10u);
  EXPECT_EQ(ev[0].h.type, vpf::channel::kCapture);
  EXPECT_EQ(ev[0].adapter, 3u);
  EXPECT_EQ(ev[0].direction, 0);
  EXPECT_EQ(ev[0].cap_len, ev[0].orig_len) << "a capture carries the whole frame";
  EXPECT_NE(ev[0].capture_id, 0u);
  EXPECT_EQ(ev[0].l3_offset, 14u) << "where the parser found the IP header";
  EXPECT_EQ(ev[1].rule_id, 11u);
  EXPECT_EQ(ev[1].h.type, vpf::channel::kNotify);
  EXPECT_EQ(ev[1].cap_len, 20u);
  EXPECT_EQ(ev[1].l3_offset, 14u) << "six IP bytes are in the copy";
  EXPECT_GT(ev[1].orig_len, 20u);
  EXPECT_GT(ev[1].timestamp_ns, 1700000000ull * 1000000000ull);

  // SEND_MODIFIED with a larger frame: injected as received from the port.
  std::vector<uint8_t> bigger = udp(53);
  bigger.resize(bigger.size() + 300, 0xab);
  ASSERT_TRUE(agent->verdict(ev[0].capture_id, VerdictAction::SendModified, bigger));
  ASSERT_TRUE(eventually([] { return injected_count() == 1; }));
  EXPECT_EQ(g_injected[0].port, "vm1-eth0");
  EXPECT_EQ(g_injected[0].dir, OVS_PACKET_HOOK_RX);
  EXPECT_EQ(g_injected[0].bytes, bigger);
  // The same id again is stale.
  ASSERT_TRUE(agent->verdict(ev[0].capture_id, VerdictAction::Send));

  // DROP: freed, counted as dropped.  An incoming capture sent back goes out (TX).
  const int freed0 = g_freed;
  run_owned(ops, vm1, true, {udp(53)});
  auto from_dns = FrameBuilder().eth(kMacA, kMacB).ethertype(0x0800).ipv4(ip4(10, 0, 0, 53), ip4(10, 0, 0, 1), 17)
                      .udp(5353, 53).build();
  EXPECT_EQ(run_owned(ops, vm1, false, {from_dns}), (std::vector<int>{OVS_PACKET_TAKEN}));
  ASSERT_TRUE(agent->wait_events(1000));
  ev = events_of(*agent);
  ASSERT_EQ(ev.size(), 2u);
  for (const auto& e : ev) ASSERT_TRUE(agent->verdict(e.capture_id, e.direction == 0 ? VerdictAction::Drop : VerdictAction::Send));
  ASSERT_TRUE(eventually([&] { return g_freed == freed0 + 1 && injected_count() == 2; }));
  EXPECT_EQ(g_injected[1].dir, OVS_PACKET_HOOK_TX);
  EXPECT_EQ(g_injected[1].bytes, from_dns);

  // Injection records: three copies toward the VM; a bad adapter is counted, not sent.
  ASSERT_TRUE(agent->inject(3, 1, 3, icmp()));
  ASSERT_TRUE(agent->inject(99, 0, 1, icmp()));
  ASSERT_TRUE(eventually([] { return injected_count() == 5; }));

  // Expiry: with a 50 ms timeout and deny_expired off, an unanswered capture is sent.
  agent->call("set_config", {{"hold_timeout_ms", 50}, {"deny_expired", false}});
  run_owned(ops, vm1, true, {udp(53)});
  ASSERT_TRUE(eventually([] { return injected_count() == 6; }));
  events_of(*agent);

  auto st = agent->call("stats");
  EXPECT_EQ(st["channel"]["verdicts"], 3);
  EXPECT_EQ(st["channel"]["stale_verdicts"], 1);
  EXPECT_EQ(st["channel"]["expired"], 1);
  EXPECT_EQ(st["channel"]["injected"], 3);
  EXPECT_EQ(st["channel"]["inject_errors"], 1);
  json a3;
  for (const auto& a : st["adapters"])
    if (a["adapter"] == 3) a3 = a;
  ASSERT_TRUE(a3.is_object()) << st.dump();
  EXPECT_EQ(a3["outgoing"]["packets"], 5);
  EXPECT_EQ(a3["outgoing"]["filter_packets"], 4);  // 3 DNS + 1 ICMP; http matched nothing
  EXPECT_EQ(a3["outgoing"]["dropped"], 1);         // the DROP verdict
  EXPECT_EQ(a3["outgoing"]["events"], 4);

  // Statistics mode: no events, captures pass.
  agent->call("set_config", {{"mode", "stat"}});
  EXPECT_EQ(run_owned(ops, vm1, true, {udp(53), icmp()}), (std::vector<int>{P, P}));
  EXPECT_EQ(events_of(*agent).size(), 0u);
  agent->call("set_config", {{"mode", "filter"}, {"hold_timeout_ms", 0}, {"deny_expired", true}});

  // The agent dies holding a capture: the packet gets the expiry action (drop), nothing
  // stays held, and the next agent starts with clean rings.
  const int freed1 = g_freed;
  EXPECT_EQ(run_owned(ops, vm1, true, {udp(53)}), (std::vector<int>{OVS_PACKET_TAKEN}));
  agent.reset();
  ASSERT_TRUE(eventually([&] { return g_freed == freed1 + 1; }));
  ASSERT_TRUE(command({"vportfilter/stats"}));
  EXPECT_EQ(json::parse(g_reply)["held"], 0);
  EXPECT_EQ(json::parse(g_reply)["channel"]["released_on_detach"], 1);
  EXPECT_EQ(run_owned(ops, vm1, true, {udp(53)}), (std::vector<int>{P})) << "no agent: fail-open";
  agent = std::make_unique<ChannelClient>(sock);
  EXPECT_EQ(events_of(*agent).size(), 0u);

  // A verdict record that lies about its length is counted and skipped.
  {
    vpf::channel::Verdict v{};
    v.capture_id = 1;
    v.action = 3;
    v.len = 5000;
    vpf::channel::Ring cmd = agent->region().command_ring();
    ASSERT_TRUE(cmd.push(vpf::channel::kVerdict, &v, sizeof v, nullptr, 0));
    ASSERT_TRUE(agent->inject(3, 1, 1, icmp()));  // wakes the plugin
    ASSERT_TRUE(eventually([&] { return agent->call("stats")["channel"]["bad_records"] == 1; }));
  }
  agent.reset();
  ops->port_close(vm1);
  ops->port_close(vm2);
  ops->fini();
  EXPECT_NE(access(sock.c_str(), F_OK), 0) << "the socket file is removed at unload";
}

TEST(PluginPorts, PortsThatGoAwayAreFreedAndTheirSlotsStartFromZero) {
  // 500 ports come and go in bursts of 50 while traffic flows on two others: the plugin
  // keeps only the ports that exist, the steady ports count exactly, and a port that gets
  // a freed port's counter slot starts from zero.
  char err[256] = "";
  const ovs_packet_hook_ops* ops = ovs_packet_hook_init(&kHost, "control=none", err, sizeof err);
  ASSERT_NE(ops, nullptr) << err;
  void* steady[2] = {ops->port_open("vmA", "system"), ops->port_open("vmB", "system")};
  ASSERT_TRUE(command({"vportfilter/adapter-set", "vmA", "0"})) << g_reply;
  ASSERT_TRUE(command({"vportfilter/adapter-set", "vmB", "1"})) << g_reply;
  const std::string rules = write_file("rules-ports.json", R"({"rules": [
    {"kind": "filter", "id": 1, "bpf": "tcp dst port 23", "action": "drop"}]})");
  ASSERT_TRUE(command({"vportfilter/rules-load", rules})) << g_reply;
  auto stats = [] { return json::parse((command({"vportfilter/stats"}), g_reply)); };
  auto adapter = [&](int id) {
    const json st = stats();
    for (const auto& a : st["adapters"])
      if (a["adapter"] == id) return a;
    return json();
  };
  uint64_t steady_packets = 0;
  for (int burst = 0; burst < 10; ++burst) {
    std::vector<void*> ports;
    for (int i = 0; i < 50; ++i) {
      const std::string name = "tmp" + std::to_string(burst) + "-" + std::to_string(i);
      ports.push_back(ops->port_open(name.c_str(), "system"));
      // A temporary adapter for the burst (the same ids each time, as an agent reuses them).
      ASSERT_TRUE(command({"vportfilter/adapter-set", name, std::to_string(100 + i)})) << g_reply;
      EXPECT_EQ(run(ops, ports.back(), true, {tcp(23), tcp(80)}), (std::vector<int>{D, P}));
      for (void* s : steady) EXPECT_EQ(run(ops, s, true, {tcp(80)}), (std::vector<int>{P}));
      steady_packets += 1;
    }
    ASSERT_EQ(stats()["ports"]["open"], 52);
    for (size_t i = 0; i < ports.size(); ++i) {
      // Unmapped first, as an agent does when a VM goes: nothing of it is kept.
      ASSERT_TRUE(command({"vportfilter/adapter-set", "tmp" + std::to_string(burst) + "-" + std::to_string(i), "-1"}));
      ops->port_close(ports[i]);
    }
    const json st = stats();
    EXPECT_EQ(st["ports"]["open"], 2);
    EXPECT_EQ(st["ports"]["closing"], 0);
    EXPECT_EQ(st["ports"]["gone_adapters"], 0);
    EXPECT_EQ(st["adapters"].size(), 2u) << st.dump();
  }
  EXPECT_EQ(adapter(0)["outgoing"]["packets"], steady_packets);
  EXPECT_EQ(adapter(1)["outgoing"]["packets"], steady_packets);
  EXPECT_EQ(adapter(1)["outgoing"]["dropped"], 0);

  // A new port takes a freed slot: its counters start from zero.
  void* fresh = ops->port_open("fresh", "system");
  ASSERT_TRUE(command({"vportfilter/adapter-set", "fresh", "7"}));
  EXPECT_EQ(adapter(7)["outgoing"]["packets"], 0);
  EXPECT_EQ(adapter(7)["outgoing"]["dropped"], 0);
  EXPECT_EQ(run(ops, fresh, true, {tcp(23)}), (std::vector<int>{D}));
  EXPECT_EQ(adapter(7)["outgoing"]["packets"], 1);

  // A mapped adapter's port that goes away keeps its counts under its name, and comes
  // back counting on from them.
  ops->port_close(steady[1]);
  json b = adapter(1);
  EXPECT_FALSE(b["present"].get<bool>());
  EXPECT_EQ(b["outgoing"]["packets"], steady_packets);
  EXPECT_EQ(stats()["ports"]["gone_adapters"], 1);
  steady[1] = ops->port_open("vmB", "system");
  EXPECT_EQ(run(ops, steady[1], true, {tcp(23)}), (std::vector<int>{D})) << "the returning port is adapter 1 again";
  b = adapter(1);
  EXPECT_TRUE(b["present"].get<bool>());
  EXPECT_EQ(b["outgoing"]["packets"], steady_packets + 1);
  EXPECT_EQ(b["outgoing"]["dropped"], 1);
  EXPECT_EQ(stats()["ports"]["gone_adapters"], 0);
  ASSERT_TRUE(command({"vportfilter/show"}));
  EXPECT_NE(g_reply.find("ports: 3 open, 0 closed but holding packets, 0 adapters gone"), std::string::npos) << g_reply;

  ops->port_close(fresh);
  for (void* s : steady) ops->port_close(s);
  ops->fini();
}

TEST(PluginPorts, AHeldPacketKeepsItsPortUntilItsVerdict) {
  const std::string sock = ::testing::TempDir() + "vpf-ports-" + std::to_string(getpid()) + ".sock";
  const std::string rules = write_file("ports-capture.json", R"([
    {"kind": "filter", "id": 10, "bpf": "udp dst port 53", "action": "capture"}])");
  char err[256] = "";
  const ovs_packet_hook_ops* ops =
      ovs_packet_hook_init(&kHost, ("rules=" + rules + " control=" + sock).c_str(), err, sizeof err);
  ASSERT_NE(ops, nullptr) << err;
  void* vm1 = ops->port_open("vm1-eth0", "system");
  auto agent = std::make_unique<ChannelClient>(sock);
  agent->hello();
  agent->call("set_adapters", {{"adapters", {{{"port", "vm1-eth0"}, {"adapter", 3}}}}});
  {
    std::lock_guard lock(g_inject_mu);
    g_injected.clear();
  }
  ASSERT_EQ(run_owned(ops, vm1, true, {udp(53)}), (std::vector<int>{OVS_PACKET_TAKEN}));
  ASSERT_TRUE(agent->wait_events(1000));
  const auto ev = events_of(*agent);
  ASSERT_EQ(ev.size(), 1u);
  // The netdev goes away while its packet waits: the port is closed, not freed.
  ops->port_close(vm1);
  json st = agent->call("stats");
  EXPECT_EQ(st["ports"]["open"], 0);
  EXPECT_EQ(st["ports"]["closing"], 1);
  EXPECT_EQ(st["held"], 1);
  // The verdict still finds it (sent back as received from the port), and then it goes.
  ASSERT_TRUE(agent->verdict(ev[0].capture_id, VerdictAction::Send));
  ASSERT_TRUE(eventually([] { return injected_count() == 1; }));
  EXPECT_EQ(g_injected[0].port, "vm1-eth0");
  ASSERT_TRUE(eventually([&] { return agent->call("stats")["ports"]["closing"] == 0; }));
  st = agent->call("stats");
  EXPECT_EQ(st["ports"]["gone_adapters"], 1) << "adapter 3 is still mapped: its counts are kept";
  ASSERT_EQ(st["adapters"].size(), 1u);
  EXPECT_EQ(st["adapters"][0]["outgoing"]["events"], 1);
  // Unmapping the name lets the counts go too.
  agent->call("set_adapters", {{"adapters", json::array()}});
  EXPECT_EQ(agent->call("stats")["ports"]["gone_adapters"], 0);
  agent.reset();
  ops->fini();
}
