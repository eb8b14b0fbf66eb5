// vpf::NetFilter against a real switch and agent (started by netfilter_ovs_test.sh):
// ports p1 and p2 on a dummy-datapath bridge, flows p1 <-> p2, each port's transmitted
// frames in $VPF_RUN/pN-tx.pcap.  Frames enter with `ovs-appctl netdev-dummy/receive`.
// Each test works in its own instance (installed in SetUp, uninstalled in TearDown).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "vpf/agent_connection.h"
#include "vpf/channel.h"
#include "vpf/netfilter.h"
#include "vpf/protocol.h"

namespace {

using namespace std::chrono_literals;
using nlohmann::json;

std::string run_dir() { return std::getenv("VPF_RUN") ? std::getenv("VPF_RUN") : ""; }

constexpr const char* kFrame = "52540000000252540000000108004500002000000000401100000a0000010a0000020400050000080000";
std::string frame_hex(uint8_t marker, size_t extra = 0) {
  char m[3];
  std::snprintf(m, sizeof m, "%02x", marker);
  return std::string(kFrame) + m + "000000" + std::string(extra * 2, '0');
}
std::vector<uint8_t> bytes(const std::string& hex) {
  std::vector<uint8_t> v(hex.size() / 2);
  for (size_t i = 0; i < v.size(); ++i) v[i] = uint8_t(std::stoi(hex.substr(2 * i, 2), nullptr, 16));
  return v;
}
void receive(const char* port, uint8_t marker) {
  const std::string cmd = std::string("ovs-appctl netdev-dummy/receive ") + port + " " + frame_hex(marker) + " >/dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
}

// Frames a port transmitted: (marker byte at 42, length).
std::vector<std::pair<uint8_t, size_t>> sent_on(const char* port) {
  std::ifstream f(run_dir() + "/" + port + "-tx.pcap", std::ios::binary);
  std::string d((std::istreambuf_iterator<char>(f)), {});
  std::vector<std::pair<uint8_t, size_t>> out;
  size_t pos = 24;
  while (pos + 16 <= d.size()) {
    uint32_t incl;
    std::memcpy(&incl, d.data() + pos + 8, 4);
    if (pos + 16 + incl > d.size()) break;
    out.emplace_back(incl > 42 ? uint8_t(d[pos + 16 + 42]) : 0, incl);
    pos += 16 + incl;
  }
  return out;
}
size_t count_marker(const char* port, uint8_t m) {
  size_t n = 0;
  for (const auto& [mk, len] : sent_on(port)) n += mk == m;
  return n;
}
template <class F>
bool eventually(F cond, std::chrono::milliseconds limit = 5000ms) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (cond()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return cond();
}

int code_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const vpf::NetFilterError& e) {
    return e.code();
  }
  return 0;
}

int adapter_of(vpf::NetFilter& nf, const std::string& name) {
  nf.list_adapters();
  for (const auto& a : nf.adapters())
    if (a.name == name) return a.id;
  return -1;
}

std::atomic<int> guid_counter{0};

class NetFilterOvs : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(run_dir().empty()) << "run through netfilter_ovs_test.sh";
    char g[64];
    std::snprintf(g, sizeof g, "{00000000-0000-0000-0000-%012d}", ++guid_counter + 1000 * ::getpid() % 1000000);
    guid = g;
    vpf::NetFilter installer;
    installer.install("", guid, 100, 0, "");
  }
  void TearDown() override {
    vpf::NetFilter installer;
    installer.uninstall("", guid, 0);
  }
  std::string guid;
};

TEST_F(NetFilterOvs, ErrorCodesBeforeInitializeAndForBadArguments) {
  vpf::NetFilter nf;
  EXPECT_EQ(code_of([&] { nf.start_filter(0); }), vpf::kErrorNotReady);
  EXPECT_EQ(code_of([&] { nf.add_filter_rule(1, -1, 2, -1, -1, "", 1); }), vpf::kErrorNotReady);
  EXPECT_EQ(code_of([&] { nf.list_adapters(); }), vpf::kErrorNotReady);
  EXPECT_EQ(code_of([&] { nf.initialize("not-a-guid"); }), vpf::kErrorInvalidParameter);
  EXPECT_EQ(code_of([&] { nf.initialize("{11111111-2222-3333-4444-555555555555}"); }), vpf::kErrorFileNotFound);
  EXPECT_EQ(nf.get_driver_status("{11111111-2222-3333-4444-555555555555}"), vpf::kModuleStatusNotPresent);
  EXPECT_EQ(nf.get_driver_version("{11111111-2222-3333-4444-555555555555}"), 0);
  EXPECT_EQ(nf.get_driver_status(guid), vpf::kModuleStatusStopped);
  EXPECT_EQ(nf.get_driver_version(guid), int64_t(1) << 32);  // 0.1.0.0
  EXPECT_EQ(code_of([&] { nf.toggle_process_protection(true); }), vpf::kErrorNotSupported);
  EXPECT_EQ(code_of([&] { nf.shutdown_system(false, false); }), vpf::kErrorNotSupported);
  EXPECT_EQ(code_of([&] { nf.nt_status_to_win32_error(5); }), vpf::kErrorNotSupported);
  vpf::NetFilter nowhere("/nonexistent/agent.sock");
  EXPECT_EQ(code_of([&] { nowhere.initialize(guid); }), vpf::kErrorFileNotFound);
}

TEST_F(NetFilterOvs, StartFilterTimeoutsAndStartingTwice) {
  vpf::NetFilter nf, other;
  nf.initialize(guid);
  other.initialize(guid);
  EXPECT_EQ(code_of([&] { nf.start_filter(100); }), vpf::kErrorImplementationLimit);
  EXPECT_EQ(code_of([&] { nf.start_filter(2999); }), vpf::kErrorImplementationLimit);
  EXPECT_FALSE(nf.active());
  nf.start_filter(0);
  EXPECT_TRUE(nf.active());
  EXPECT_EQ(nf.get_driver_status(guid), vpf::kModuleStatusRunning);
  EXPECT_EQ(code_of([&] { nf.start_filter(0); }), vpf::kErrorConnectionActive);
  EXPECT_EQ(code_of([&] { other.start_filter(3000); }), vpf::kErrorConnectionActive);
  EXPECT_EQ(code_of([&] { nf.set_serialize_events(1); }), vpf::kErrorConnectionActive);
  nf.stop_filter();
  EXPECT_FALSE(nf.active());
  EXPECT_EQ(nf.get_driver_status(guid), vpf::kModuleStatusStopped);
  other.start_filter(3000);
  other.stop_filter();
}

TEST_F(NetFilterOvs, AdaptersAndTheirProperties) {
  vpf::NetFilter nf;
  nf.initialize(guid);
  nf.list_adapters();
  ASSERT_EQ(nf.adapter_count(), 2);
  int i1 = nf.adapter_name(0) == "p1" ? 0 : 1;
  EXPECT_EQ(nf.adapter_name(i1), "p1");
  EXPECT_EQ(nf.adapter_friendly_name(i1), "web1");
  EXPECT_EQ(nf.adapter_mac_address(i1), "52-54-00-00-00-01");
  EXPECT_EQ(nf.adapter_interface_type(i1), 6);
  EXPECT_EQ(nf.adapter_max_packet_bytes(i1), int(vpf::kMaxSnaplen));
  EXPECT_TRUE(nf.adapter_collect_statistics(i1));
  EXPECT_FALSE(nf.adapter_wi_fi_monitor_mode_supported(i1));
  EXPECT_NE(nf.adapter_description(i1).find("p1"), std::string::npos);
  EXPECT_EQ(code_of([&] { nf.set_adapter_promiscuous_mode(i1, true); }), vpf::kErrorNotSupported);
  EXPECT_EQ(code_of([&] { nf.set_adapter_wi_fi_monitor_mode(i1, true); }), vpf::kErrorNotSupported);
  EXPECT_EQ(code_of([&] { nf.adapter_name(7); }), vpf::kErrorInvalidParameter);
  EXPECT_EQ(code_of([&] { nf.set_adapter_max_packet_bytes(i1, 300000); }), vpf::kErrorInvalidParameter);
  nf.set_adapter_packet_timeout(i1, 250);
  nf.list_adapters();
  i1 = nf.adapter_name(0) == "p1" ? 0 : 1;
  EXPECT_EQ(nf.adapter_packet_timeout(i1), 250);
  nf.set_adapter_packet_timeout(i1, 1000);
}

TEST_F(NetFilterOvs, RulesAreRefusedWholeAndListedInOrder) {
  vpf::NetFilter nf;
  nf.initialize(guid);
  try {
    nf.add_filter_rule(1, -1, vpf::kDirectionAny, -1, -1, "udp port", vpf::kRuleActionDrop);
    FAIL() << "a bad BPF rule was accepted";
  } catch (const vpf::NetFilterError& e) {
    EXPECT_EQ(e.code(), vpf::kErrorInvalidParameter);
    EXPECT_NE(std::string(e.what()).find("syntax error"), std::string::npos) << e.what();
  }
  EXPECT_EQ(code_of([&] { nf.add_filter_rule(1, -1, 7, -1, -1, "", 1); }), vpf::kErrorInvalidParameter);
  EXPECT_EQ(code_of([&] { nf.add_filter_rule(1, -1, 2, -1, -1, "", 9); }), vpf::kErrorInvalidParameter);
  EXPECT_EQ(nf.filter_rule_count(), 0);
  EXPECT_TRUE(nf.add_filter_rule(5, -1, vpf::kDirectionOutgoing, 60, 1500, "tcp port 22", vpf::kRuleActionNotify));
  EXPECT_TRUE(nf.add_filter_rule(3, 0, vpf::kDirectionIncoming, -1, -1, "", vpf::kRuleActionDrop));
  EXPECT_TRUE(nf.add_passthrough_rule(1, -1, vpf::kDirectionAny, -1, -1, "icmp"));
  EXPECT_EQ(code_of([&] { nf.add_filter_rule(5, -1, 2, -1, -1, "", 1); }), vpf::kErrorAlreadyExists);
  ASSERT_EQ(nf.filter_rule_count(), 2);
  EXPECT_EQ(nf.filter_rule_rule_id(0), 5u);
  EXPECT_EQ(nf.filter_rule_action(0), vpf::kRuleActionNotify);
  EXPECT_EQ(nf.filter_rule_direction(0), vpf::kDirectionOutgoing);
  EXPECT_EQ(nf.filter_rule_min_packet_size(0), 60);
  EXPECT_EQ(nf.filter_rule_max_packet_size(0), 1500);
  EXPECT_EQ(nf.filter_rule_bpf_rule(0), "tcp port 22");
  EXPECT_EQ(nf.filter_rule_adapter_id(1), 0);
  ASSERT_EQ(nf.passthrough_rule_count(), 1);
  EXPECT_EQ(nf.passthrough_rule_bpf_rule(0), "icmp");
  EXPECT_FALSE(nf.delete_filter_rule(99));
  EXPECT_TRUE(nf.delete_filter_rule(5));
  EXPECT_EQ(nf.filter_rule_count(), 1);
  EXPECT_TRUE(nf.delete_all_filter_rules());
  EXPECT_TRUE(nf.delete_all_passthrough_rules());
  EXPECT_EQ(nf.filter_rule_count() + nf.passthrough_rule_count(), 0);
}

TEST_F(NetFilterOvs, CaptureVerdictsTakeEffectOnTheWire) {
  vpf::NetFilter nf;
  nf.initialize(guid);
  const int p1 = adapter_of(nf, "p1");
  std::atomic<int> fired{0}, refired{0};
  nf.on_packet = [&](vpf::PacketEventParams& e) {
    ++fired;
    const uint8_t m = e.buffer[42];
    if (m == 0xc1) e.action = vpf::kPacketActionDrop;
    if (m == 0xc2) e.action = vpf::kPacketActionSend;
    if (m == 0xc3) {  // a larger replacement: ask for a bigger buffer first
      const int want = e.data_size + 100;
      if (int(e.buffer.size()) < want) {
        e.data_size = want;
        e.result_code = vpf::kErrorInsufficientBuffer;
        return;
      }
      ++refired;
      e.buffer[42] = 0xe3;
      e.buffer[16] = 0, e.buffer[17] = uint8_t(32 + 100);  // IP total length
      e.data_size = want;
      e.action = vpf::kPacketActionSendModified;
    }
  };
  ASSERT_TRUE(nf.add_filter_rule(1, p1, vpf::kDirectionOutgoing, -1, -1, "udp and (udp[8] & 0xf0) == 0xc0",
                                 vpf::kRuleActionCapture));
  nf.start_filter(0);
  const size_t e3_before = count_marker("p2", 0xe3);
  receive("p1", 0xc1);
  receive("p1", 0xc2);
  receive("p1", 0xc3);
  receive("p1", 0x01);  // no rule: straight through
  EXPECT_TRUE(eventually([] { return count_marker("p2", 0xc2) >= 1 && count_marker("p2", 0xe3) >= 1; }));
  EXPECT_EQ(count_marker("p2", 0xc1), 0u);
  EXPECT_EQ(fired.load(), 4);  // c1, c2, c3 twice
  EXPECT_EQ(refired.load(), 1);
  EXPECT_EQ(count_marker("p2", 0xe3), e3_before + 1);
  for (const auto& [m, len] : sent_on("p2")) {
    if (m == 0xe3) {
      EXPECT_EQ(len, 46u + 100u);
    }
  }
  nf.stop_filter();
}

TEST_F(NetFilterOvs, NotifyCopiesAreCutToTheAdaptersSnaplen) {
  vpf::NetFilter nf;
  nf.initialize(guid);
  nf.list_adapters();
  const int i1 = nf.adapter_name(0) == "p1" ? 0 : 1;
  const int p1 = nf.adapter_id(i1);
  nf.set_adapter_max_packet_bytes(i1, 30);
  std::mutex mu;
  std::vector<vpf::NotifyPacketEventParams> seen;
  std::vector<std::vector<uint8_t>> data;
  nf.on_notify_packet = [&](vpf::NotifyPacketEventParams& e) {
    std::lock_guard l(mu);
    seen.push_back(e);
    data.emplace_back(e.data.begin(), e.data.end());
  };
  ASSERT_TRUE(nf.add_filter_rule(2, -1, vpf::kDirectionAny, -1, -1, "udp and udp[8] == 0xa7", vpf::kRuleActionNotify));
  nf.start_filter(0);
  const size_t before = count_marker("p2", 0xa7);
  const auto t0 = std::chrono::system_clock::now();
  receive("p1", 0xa7);
  // The packet is notified twice: leaving p1 and entering p2; the handlers run on a worker
  // pool, so the two events may come in either order.
  auto index_of_p1 = [&] {
    for (size_t i = 0; i < seen.size(); ++i)
      if (seen[i].adapter_id == p1) return int(i);
    return -1;
  };
  EXPECT_TRUE(eventually([&] {
    std::lock_guard l(mu);
    return index_of_p1() >= 0;
  }));
  EXPECT_TRUE(eventually([&] { return count_marker("p2", 0xa7) == before + 1; })) << "a notified packet passes";
  {
    // Released before stop_filter, which waits for the handlers (the packet's second event,
    // on p2, may be waiting for this lock).
    std::lock_guard l(mu);
    const int k = index_of_p1();
    ASSERT_GE(k, 0);
    const auto& e = seen[size_t(k)];
    EXPECT_EQ(e.adapter_id, p1);
    EXPECT_EQ(e.direction, vpf::kDirectionOutgoing);
    EXPECT_EQ(e.packet_size, 46);
    EXPECT_EQ(e.data.size(), 30u);
    EXPECT_EQ(e.packet_type, vpf::kDltEn10mb);
    EXPECT_EQ(e.ip_offset, 14);
    EXPECT_EQ(e.ip_size, 16);
    EXPECT_EQ(e.rule_id, 2u);
    EXPECT_LT(std::chrono::abs(e.timestamp - t0), 5s);
    EXPECT_EQ(data[size_t(k)][12], 0x08);
  }
  nf.stop_filter();
  nf.set_adapter_max_packet_bytes(i1, 0);
}

TEST_F(NetFilterOvs, StatisticsEqualTheTrafficSent) {
  vpf::NetFilter nf;
  nf.initialize(guid);
  const int p1 = adapter_of(nf, "p1");
  std::mutex mu;
  std::vector<vpf::StatisticsEventParams> st;
  nf.on_statistics = [&](vpf::StatisticsEventParams& e) {
    std::lock_guard l(mu);
    st.push_back(e);
  };
  auto snapshot = [&] {
    {
      std::lock_guard l(mu);
      st.clear();
    }
    nf.get_statistics(p1);
    EXPECT_TRUE(eventually([&] {
      std::lock_guard l(mu);
      return !st.empty();
    }));
    std::lock_guard l(mu);
    return st.at(0);
  };
  const auto a = snapshot();
  EXPECT_EQ(a.adapter_id, p1);
  EXPECT_FALSE(a.filter_specific);
  for (int i = 0; i < 5; ++i) receive("p1", 0x10);
  const auto b = snapshot();
  EXPECT_EQ(b.packets_sent - a.packets_sent, 5u);
  EXPECT_EQ(b.bytes_sent - a.bytes_sent, 5u * 46);
  EXPECT_EQ(b.packets_dropped_outbound, a.packets_dropped_outbound);
}

TEST_F(NetFilterOvs, SendInsertAndTheSendBuffer) {
  vpf::NetFilter nf;
  nf.initialize(guid);
  const int p1 = adapter_of(nf, "p1"), p2 = adapter_of(nf, "p2");
  const size_t b1 = count_marker("p2", 0x51), b2 = count_marker("p2", 0x52), b3 = count_marker("p2", 0x53);
  nf.send_packet(p1, bytes(frame_hex(0x51)), 3, false);  // as if p1's VM sent it: the flow takes it to p2
  nf.insert_incoming_packet(p2, bytes(frame_hex(0x52)));  // delivered to p2's VM
  nf.send_packet(p1, bytes(frame_hex(0x53)), 2, true);    // buffered only
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(count_marker("p2", 0x53), b3);
  nf.flush_send_buffer(-1);
  EXPECT_TRUE(eventually([&] {
    return count_marker("p2", 0x51) == b1 + 3 && count_marker("p2", 0x52) == b2 + 1 && count_marker("p2", 0x53) == b3 + 2;
  }));
  EXPECT_EQ(code_of([&] { nf.send_packet(p1, std::vector<uint8_t>(5, 0), 1, false); }), vpf::kErrorInvalidParameter);
  EXPECT_EQ(code_of([&] { nf.send_packet(p1, bytes(frame_hex(0x51)), 0, false); }), vpf::kErrorInvalidParameter);
  EXPECT_EQ(code_of([&] { nf.send_packet(4242, bytes(frame_hex(0x51)), 1, false); }), vpf::kErrorNotFound);
}

// A client killed while it holds a captured packet: the agent applies DenyExpiredRequests.
void killed_while_holding(const std::string& guid, bool deny, uint8_t marker) {
  int pipefd[2];
  ASSERT_EQ(::pipe(pipefd), 0);
  const pid_t child = ::fork();
  if (child == 0) {
    ::close(pipefd[0]);
    vpf::NetFilter nf;
    nf.initialize(guid);
    nf.on_packet = [&](vpf::PacketEventParams&) {
      char c = 'x';
      (void)!::write(pipefd[1], &c, 1);
      ::pause();  // never decides
    };
    nf.add_filter_rule(9, -1, vpf::kDirectionOutgoing, -1, -1, "udp and udp[8] == " + std::to_string(marker),
                       vpf::kRuleActionCapture);
    nf.start_filter(0);
    char c = 'r';
    (void)!::write(pipefd[1], &c, 1);
    ::pause();
    ::_exit(0);
  }
  ::close(pipefd[1]);
  char c;
  ASSERT_EQ(::read(pipefd[0], &c, 1), 1);
  ASSERT_EQ(c, 'r');
  const size_t before = count_marker("p2", marker);
  receive("p1", marker);
  ASSERT_EQ(::read(pipefd[0], &c, 1), 1);  // the handler holds it now
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(count_marker("p2", marker), before) << "held while the client decides";
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  ::close(pipefd[0]);
  if (deny) {
    std::this_thread::sleep_for(500ms);
    EXPECT_EQ(count_marker("p2", marker), before) << "DenyExpiredRequests: dropped";
  } else {
    EXPECT_TRUE(eventually([&] { return count_marker("p2", marker) == before + 1; })) << "sent on, not stuck";
  }
}

TEST_F(NetFilterOvs, AClientKilledWhileHoldingLeavesNoPacketStuck) { killed_while_holding(guid, false, 0x61); }

TEST_F(NetFilterOvs, AClientKilledWhileHoldingWithDenyExpiredDropsIt) {
  vpf::NetFilter nf;
  nf.initialize(guid);
  EXPECT_EQ(nf.config("DenyExpiredRequests"), "False");
  nf.config("DenyExpiredRequests=True");
  EXPECT_EQ(nf.config("DenyExpiredRequests"), "True");
  killed_while_holding(guid, true, 0x62);
}

TEST_F(NetFilterOvs, AHungHandlerExpiresAfterTheTimeout) {
  vpf::NetFilter nf;
  nf.initialize(guid);
  std::promise<void> release;
  auto released = release.get_future().share();
  std::atomic<int> fired{0};
  nf.on_packet = [&](vpf::PacketEventParams&) {
    ++fired;
    released.wait();
  };
  nf.add_filter_rule(1, -1, vpf::kDirectionOutgoing, -1, -1, "udp and udp[8] == 0x71", vpf::kRuleActionCapture);
  nf.start_filter(3000);
  const size_t before = count_marker("p2", 0x71);
  const auto t0 = std::chrono::steady_clock::now();
  receive("p1", 0x71);
  EXPECT_TRUE(eventually([&] { return count_marker("p2", 0x71) == before + 1; }, 6000ms));
  const auto waited = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(waited, 2900ms);
  EXPECT_EQ(fired.load(), 1);
  release.set_value();
  nf.stop_filter();
}

TEST_F(NetFilterOvs, HigherAltitudeDecidesFirst) {
  const std::string low = guid;
  char g[64];
  std::snprintf(g, sizeof g, "{00000000-0000-0000-0001-%012d}", ::getpid() % 1000000);
  const std::string high = g;
  vpf::NetFilter installer;
  installer.install("", high, 500, 0, "");
  vpf::NetFilter a, b;
  a.initialize(high);
  b.initialize(low);
  EXPECT_EQ(a.altitude(), 500);
  EXPECT_EQ(b.altitude(), 100);
  std::atomic<int> got_a{0}, got_b{0};
  a.on_packet = [&](vpf::PacketEventParams&) { ++got_a; };
  b.on_packet = [&](vpf::PacketEventParams&) { ++got_b; };
  // Outgoing only: after the verdict the packet would meet the rules again on p2's way out.
  // The lower instance's rule first: the higher one's is then placed before it in the
  // plugin (the agent sends only the added rule, with the rule it goes before).
  b.add_filter_rule(1, -1, vpf::kDirectionOutgoing, -1, -1, "udp and udp[8] == 0x81", vpf::kRuleActionCapture);
  a.add_filter_rule(1, -1, vpf::kDirectionOutgoing, -1, -1, "udp and udp[8] == 0x81", vpf::kRuleActionCapture);
  b.start_filter(0);
  a.start_filter(0);
  receive("p1", 0x81);
  EXPECT_TRUE(eventually([&] { return got_a == 1; }));
  EXPECT_EQ(got_b.load(), 0);
  a.stop_filter();
  receive("p1", 0x81);
  EXPECT_TRUE(eventually([&] { return got_b == 1; }));
  EXPECT_EQ(got_a.load(), 1);
  b.stop_filter();
  installer.uninstall("", high, 0);
}

TEST_F(NetFilterOvs, StatisticsModeReportsCountersNotPackets) {
  vpf::NetFilter nf;
  nf.initialize(guid);
  const int p1 = adapter_of(nf, "p1");
  std::atomic<int> packets{0}, total{0};
  std::mutex mu;
  std::vector<uint64_t> filter_sent;  // p1's filter-specific packets_sent, per event
  nf.on_packet = [&](vpf::PacketEventParams&) { ++packets; };
  nf.on_statistics = [&](vpf::StatisticsEventParams& e) {
    if (!e.filter_specific) ++total;
    else if (e.adapter_id == p1) {
      std::lock_guard l(mu);
      filter_sent.push_back(e.packets_sent);
    }
  };
  auto events = [&] {
    std::lock_guard l(mu);
    return filter_sent.size();
  };
  auto last = [&] {
    std::lock_guard l(mu);
    return filter_sent.back();
  };
  nf.add_filter_rule(1, -1, vpf::kDirectionAny, -1, -1, "udp and udp[8] == 0x91", vpf::kRuleActionCapture);
  nf.add_filter_rule(2, -1, vpf::kDirectionAny, -1, -1, "udp and udp[8] == 0x92", vpf::kRuleActionNotify);
  nf.set_operation_mode(vpf::OperationMode::Stat);
  nf.start_filter(0);
  EXPECT_TRUE(eventually([&] { return events() > 0; }, 3000ms));
  const uint64_t before = last();
  const size_t delivered = count_marker("p2", 0x91) + count_marker("p2", 0x92);
  for (int i = 0; i < 3; ++i) receive("p1", 0x91);
  for (int i = 0; i < 2; ++i) receive("p1", 0x92);
  receive("p1", 0x93);  // no rule: counted in the total only
  // The capture and notify rules only count: all six pass, none is reported.
  EXPECT_TRUE(eventually([&] { return count_marker("p2", 0x91) + count_marker("p2", 0x92) == delivered + 5; }));
  EXPECT_TRUE(eventually([&] { return last() == before + 5; }, 3000ms)) << last() - before;
  EXPECT_GT(total.load(), 0);
  EXPECT_EQ(packets.load(), 0);
  nf.stop_filter();
}

TEST_F(NetFilterOvs, ConfigSettingsAndWorkerThreads) {
  vpf::NetFilter nf;
  nf.initialize(guid);
  EXPECT_EQ(code_of([&] { nf.config("NoSuchSetting=1"); }), vpf::kErrorInvalidParameter);
  EXPECT_EQ(code_of([&] { nf.config("MaxWorkerThreadCount=lots"); }), vpf::kErrorInvalidParameter);
  EXPECT_EQ(code_of([&] { nf.config("DenyExpiredRequests=maybe"); }), vpf::kErrorInvalidParameter);
  EXPECT_EQ(code_of([&] { nf.config("BuildInfo=x"); }), vpf::kErrorInvalidParameter);
  EXPECT_NE(nf.config("BuildInfo").find("vportfilter"), std::string::npos);
  nf.config("InitialSendBufferSize=65536");
  EXPECT_EQ(nf.config("InitialSendBufferSize"), "65536");
  nf.config("MinWorkerThreadCount=2");
  nf.config("MaxWorkerThreadCount=3");
  nf.config("WorkerInitialStackSize=262144");
  std::atomic<int> created{0}, ended{0};
  nf.on_worker_thread_creation = [&](vpf::WorkerThreadCreationEventParams&) { ++created; };
  nf.on_worker_thread_termination = [&](vpf::WorkerThreadTerminationEventParams&) { ++ended; };
  nf.start_filter(0);
  // Two pool workers; with a client channel, its two threads fire events too and count
  // toward the maximum (the pool gets one): three.
  const bool channel = !std::getenv("VPF_DIRECT_CHANNEL") || std::string(std::getenv("VPF_DIRECT_CHANNEL")) != "0";
  EXPECT_TRUE(eventually([&] { return created.load() == (channel ? 3 : 2); })) << created.load();
  EXPECT_EQ(code_of([&] { nf.config("MaxWorkerThreadCount=8"); }), vpf::kErrorConnectionActive);
  nf.stop_filter();
  EXPECT_GE(ended.load(), 2);
  // serialize_events: one thread fires every event.
  nf.set_serialize_events(1);
  std::mutex mu;
  std::set<std::thread::id> threads;
  std::atomic<int> n{0};
  nf.on_notify_packet = [&](vpf::NotifyPacketEventParams&) {
    std::lock_guard l(mu);
    threads.insert(std::this_thread::get_id());
    ++n;
  };
  nf.add_filter_rule(1, -1, vpf::kDirectionOutgoing, -1, -1, "udp and udp[8] == 0x92", vpf::kRuleActionNotify);
  nf.start_filter(0);
  for (int i = 0; i < 10; ++i) receive("p1", 0x92);
  EXPECT_TRUE(eventually([&] { return n == 10; }));
  EXPECT_EQ(threads.size(), 1u);
  nf.stop_filter();
}

TEST_F(NetFilterOvs, LoggingEnabledLogsTheInstancesEvents) {
  vpf::NetFilter nf;
  nf.initialize(guid);
  EXPECT_EQ(nf.config("LoggingEnabled"), "False");
  nf.config("LoggingEnabled=yes");
  EXPECT_EQ(nf.config("loggingenabled"), "True");
  nf.add_filter_rule(4, -1, vpf::kDirectionOutgoing, -1, -1, "udp and udp[8] == 0x93", vpf::kRuleActionNotify);
  nf.start_filter(0);
  receive("p1", 0x93);
  const std::string line = "instance " + guid + ": notify adapter";
  EXPECT_TRUE(eventually([&] {
    std::ifstream f(run_dir() + "/agent.log");
    std::string log((std::istreambuf_iterator<char>(f)), {});
    return log.find(line) != std::string::npos && log.find(" rule 4 46 bytes") != std::string::npos;
  }));
  nf.stop_filter();
}

TEST_F(NetFilterOvs, NfRuleShapedRules) {
  vpf::NetFilter nf;
  nf.initialize(guid);
  vpf::NfRule r;
  r.protocol = 17;
  r.direction = vpf::kNfDirectionOut;
  r.remote_port = htons(1280);  // the test frames: UDP 1024 -> 1280
  r.ip_family = AF_INET;
  const uint8_t net[4] = {10, 0, 0, 0}, mask[4] = {255, 255, 255, 0};
  std::memcpy(r.remote_ip, net, 4);
  std::memcpy(r.remote_mask, mask, 4);
  r.filtering_flag = 1;  // NF_BLOCK
  const uint32_t id = nf.nf_add_rule(r, true);
  vpf::NfRule bad;
  bad.filtering_flag = 8;  // NF_OFFLINE: not done yet
  EXPECT_EQ(code_of([&] { nf.nf_add_rule(bad, false); }), vpf::kErrorInvalidParameter);
  bad.filtering_flag = 0;
  bad.direction = 9;
  EXPECT_EQ(code_of([&] { nf.nf_add_rule(bad, false); }), vpf::kErrorInvalidParameter);
  const auto rules = nf.nf_rules();
  ASSERT_EQ(rules.size(), 1u);
  EXPECT_EQ(rules[0].first, id);
  EXPECT_EQ(ntohs(rules[0].second.remote_port), 1280);
  EXPECT_EQ(rules[0].second.remote_mask[2], 255);
  nf.start_filter(0);
  const size_t before = count_marker("p2", 0xb1);
  receive("p1", 0xb1);
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(count_marker("p2", 0xb1), before) << "blocked by the NF_RULE";
  nf.nf_delete_rules();
  EXPECT_TRUE(nf.nf_rules().empty());
  receive("p1", 0xb1);
  EXPECT_TRUE(eventually([&] { return count_marker("p2", 0xb1) == before + 1; }));
  nf.stop_filter();
}

// An NF_RULE of the VM's outgoing traffic to a remote port (protocol 0: any).
vpf::NfRule outgoing_rule(int protocol, uint16_t remote_port, unsigned long flag) {
  vpf::NfRule r;
  r.protocol = protocol;
  r.direction = vpf::kNfDirectionOut;
  r.remote_port = htons(remote_port);
  r.filtering_flag = flag;
  return r;
}

// An NF_RULE allowing the VM's UDP flows makes the plugin follow them: listed, with the
// datagrams the VM sent, one by id; bad and unknown ids refused with their codes.
TEST_F(NetFilterOvs, ConnectionsOfTheAdaptersConnectionRulesAreListed) {
  vpf::NetFilter nf;
  nf.initialize(guid);
  nf.nf_add_rule(outgoing_rule(IPPROTO_UDP, 1280, 0), true);  // NF_ALLOW
  nf.start_filter(0);
  auto flow = [&]() -> std::optional<vpf::ConnectionInfo> {
    for (const auto& c : nf.list_connections())
      if (c.protocol == IPPROTO_UDP && c.local_address == "10.0.0.1" && c.local_port == 1024 &&
          c.remote_address == "10.0.0.2" && c.remote_port == 1280)
        return c;
    return std::nullopt;
  };
  const uint64_t before = flow() ? flow()->packets_sent : 0;
  receive("p1", 0xb2);
  receive("p1", 0xb2);
  ASSERT_TRUE(eventually([&] { return flow() && flow()->packets_sent == before + 2; }))
      << nf.list_connections().size() << " connections, the flow's packets: " << (flow() ? flow()->packets_sent : 0);
  const vpf::ConnectionInfo c = *flow();
  EXPECT_EQ(c.direction, vpf::kNfDirectionOut);
  EXPECT_EQ(c.ip_family, AF_INET);
  EXPECT_EQ(c.adapter_id, adapter_of(nf, "p1"));
  EXPECT_EQ(c.bytes_sent, (before + 2) * 46);
  EXPECT_EQ(c.state, before ? c.state : "unreplied");
  const vpf::ConnectionInfo one = nf.get_connection(c.id);
  EXPECT_EQ(one.id, c.id);
  EXPECT_EQ(one.remote_port, 1280);
  for (const auto& other : nf.list_connections(adapter_of(nf, "p2"))) EXPECT_NE(other.id, c.id);
  EXPECT_EQ(code_of([&] { nf.get_connection(0); }), vpf::kErrorInvalidParameter);
  EXPECT_EQ(code_of([&] { nf.get_connection(uint64_t(1) << 60); }), vpf::kErrorNotFound);
  nf.nf_delete_rules();
  nf.stop_filter();
}

// A TCP segment between the VM (10.0.0.1, behind p1) and its peer (10.0.0.2, behind p2):
// `out` is sent by the VM; into the switch on the sender's port.
void tcp_segment(bool out, uint16_t vm_port, uint16_t peer_port, uint32_t seq, uint32_t ack, uint8_t flags) {
  char hex[256];
  const char* macs = out ? "525400000002525400000001" : "525400000001525400000002";
  const char* ips = out ? "0a0000010a000002" : "0a0000020a000001";
  std::snprintf(hex, sizeof hex, "%s0800450000280000000040060000%s%04x%04x%08x%08x50%02x200000000000", macs, ips,
                out ? vm_port : peer_port, out ? peer_port : vm_port, seq, ack, flags);
  const std::string cmd = std::string("ovs-appctl netdev-dummy/receive ") + (out ? "p1 " : "p2 ") + hex + " >/dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
}

// The VM opens VM_PORT -> the peer's PEER_PORT with initial sequence numbers ISN_VM and
// ISN_PEER: SYN, SYN-ACK, ACK.
void tcp_handshake(uint16_t vm_port, uint16_t peer_port, uint32_t isn_vm, uint32_t isn_peer) {
  tcp_segment(true, vm_port, peer_port, isn_vm, 0, 0x02);
  tcp_segment(false, vm_port, peer_port, isn_peer, isn_vm + 1, 0x12);
  tcp_segment(true, vm_port, peer_port, isn_vm + 1, isn_peer + 1, 0x10);
}

// The connection events handlers saw (they run on worker threads).
struct ConnectionEvents {
  std::mutex mu;
  std::vector<vpf::ConnectionEventParams> seen;
  std::function<void(vpf::ConnectionEventParams&)> handler() {
    return [this](vpf::ConnectionEventParams& e) {
      std::lock_guard l(mu);
      seen.push_back(e);
    };
  }
  std::vector<vpf::ConnectionEventParams> get() {
    std::lock_guard l(mu);
    return seen;
  }
};

// Connection events: an NF_RULE that notifies the VM's web traffic (FILTER_AS_IP_PACKETS
// with READONLY) makes its instance see the connections it governs opened and closed,
// with what each side sent; an allowing rule raises none.
TEST_F(NetFilterOvs, ConnectionEventsOfTheConnectionsARuleFilters) {
  vpf::NetFilter nf;
  ConnectionEvents seen;
  nf.on_tcp_connected = nf.on_tcp_closed = nf.on_udp_created = nf.on_udp_closed = seen.handler();
  nf.initialize(guid);
  const uint32_t id = nf.nf_add_rule(outgoing_rule(0, 80, 128 | 256), true);  // NF_FILTER_AS_IP_PACKETS | NF_READONLY
  nf.nf_add_rule(outgoing_rule(0, 22, 0), false);                               // NF_ALLOW: no events
  nf.start_filter(0);
  auto events = [&] { return seen.get(); };
  // The VM opens 10.0.0.1:41000 -> 10.0.0.2:80, sends nothing, and closes in order.
  tcp_handshake(41000, 80, 1000, 5000);
  ASSERT_TRUE(eventually([&] { return events().size() == 1; })) << events().size() << " events";
  vpf::ConnectionEventParams e = events()[0];
  EXPECT_EQ(e.event, vpf::kTcpConnected);
  EXPECT_EQ(e.rule_id, id);
  EXPECT_EQ(e.connection.protocol, IPPROTO_TCP);
  EXPECT_EQ(e.connection.local_address, "10.0.0.1");
  EXPECT_EQ(e.connection.local_port, 41000);
  EXPECT_EQ(e.connection.remote_address, "10.0.0.2");
  EXPECT_EQ(e.connection.remote_port, 80);
  EXPECT_EQ(e.connection.direction, vpf::kNfDirectionOut);
  EXPECT_EQ(e.connection.adapter_id, adapter_of(nf, "p1"));
  EXPECT_EQ(e.connection.vm, 7u);
  EXPECT_EQ(e.connection.state, "established");
  EXPECT_EQ(e.connection.packets_sent, 2u);
  EXPECT_EQ(e.connection.packets_received, 1u);
  tcp_segment(true, 41000, 80, 1001, 5001, 0x11);
  tcp_segment(false, 41000, 80, 5001, 1002, 0x10);
  tcp_segment(false, 41000, 80, 5001, 1002, 0x11);
  tcp_segment(true, 41000, 80, 1002, 5002, 0x10);
  ASSERT_TRUE(eventually([&] { return events().size() == 2; })) << events().size() << " events";
  e = events()[1];
  EXPECT_EQ(e.event, vpf::kTcpClosed);
  EXPECT_EQ(e.connection.id, events()[0].connection.id);
  EXPECT_EQ(e.connection.state, "closed");
  EXPECT_EQ(e.connection.packets_sent, 4u);
  EXPECT_EQ(e.connection.bytes_sent, 4u * 54);
  EXPECT_EQ(e.connection.packets_received, 3u);
  // A UDP flow to port 80: created.  An SSH connection (allowed): nothing.
  const std::string udp = std::string("ovs-appctl netdev-dummy/receive p1 ") +
                          "5254000000025254000000010800450000200000000040110000" + "0a0000010a000002" + "a0280050" +
                          "000c0000" + "01020304 >/dev/null";
  ASSERT_EQ(std::system(udp.c_str()), 0);
  tcp_handshake(41001, 22, 1, 9);
  ASSERT_TRUE(eventually([&] { return events().size() == 3; })) << events().size() << " events";
  e = events()[2];
  EXPECT_EQ(e.event, vpf::kUdpCreated);
  EXPECT_EQ(e.connection.protocol, IPPROTO_UDP);
  EXPECT_EQ(e.connection.local_port, 41000);
  EXPECT_EQ(e.connection.packets_sent, 1u);
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(events().size(), 3u) << "the allowed connection raised an event";
  nf.nf_delete_rules();
  nf.stop_filter();
}

// NF_INDICATE_CONNECT_REQUESTS: the VM's SYN under the rule raises tcp_connect_request (the
// connection allowed, so nothing else); a SYN no such rule decides raises nothing.
TEST_F(NetFilterOvs, ConnectRequestsOfTheVmsSyns) {
  vpf::NetFilter nf;
  ConnectionEvents seen;
  nf.on_tcp_connect_request = nf.on_tcp_connected = nf.on_tcp_closed = seen.handler();
  nf.initialize(guid);
  const uint32_t id = nf.nf_add_rule(outgoing_rule(IPPROTO_TCP, 443, 16), true);  // NF_ALLOW | NF_INDICATE_...
  nf.nf_add_rule(outgoing_rule(IPPROTO_TCP, 8443, 0), false);
  nf.start_filter(0);
  auto events = [&] { return seen.get(); };
  tcp_handshake(42000, 443, 7000, 9000);
  tcp_segment(true, 42001, 8443, 1, 0, 0x02);
  ASSERT_TRUE(eventually([&] { return events().size() == 1; })) << events().size() << " events";
  std::this_thread::sleep_for(300ms);
  ASSERT_EQ(events().size(), 1u) << "only the connect request";
  const vpf::ConnectionEventParams e = events()[0];
  EXPECT_EQ(e.event, vpf::kTcpConnectRequest);
  EXPECT_EQ(e.rule_id, id);
  EXPECT_EQ(e.connection.local_port, 42000);
  EXPECT_EQ(e.connection.remote_port, 443);
  EXPECT_EQ(e.connection.remote_address, "10.0.0.2");
  EXPECT_EQ(e.connection.direction, vpf::kNfDirectionOut);
  EXPECT_EQ(e.connection.state, "syn_sent");
  EXPECT_EQ(e.connection.packets_sent, 1u);
  EXPECT_EQ(e.connection.id, nf.get_connection(e.connection.id).id);
  nf.nf_delete_rules();
  nf.stop_filter();
}

// TCP segments a port transmitted from VM_PORT to PEER_PORT or back.
size_t tcp_sent_on(const char* port, uint16_t vm_port, uint16_t peer_port) {
  std::ifstream f(run_dir() + "/" + port + "-tx.pcap", std::ios::binary);
  std::string d((std::istreambuf_iterator<char>(f)), {});
  size_t n = 0;
  for (size_t pos = 24; pos + 16 <= d.size();) {
    uint32_t incl;
    std::memcpy(&incl, d.data() + pos + 8, 4);
    if (pos + 16 + incl > d.size()) break;
    const auto* b = reinterpret_cast<const uint8_t*>(d.data() + pos + 16);
    if (incl >= 38 && b[23] == 6) {
      const uint16_t sp = uint16_t(b[34] << 8 | b[35]), dp = uint16_t(b[36] << 8 | b[37]);
      n += (sp == vm_port && dp == peer_port) || (sp == peer_port && dp == vm_port);
    }
    pos += 16 + incl;
  }
  return n;
}

// NF_PEND_CONNECT_REQUEST: the VM's SYN is held until its request is completed — by the
// handler's filtering flag (NF_ALLOW: the SYN goes on and the connection with it; NF_BLOCK:
// dropped, and its retransmission too), later by complete_tcp_connect_request, or by the
// connection's id whoever holds it (complete_connection_request, as vpfctl conn complete
// does); a request left pending is listed so.  Bad completions are refused with their codes.
TEST_F(NetFilterOvs, PendedConnectRequestsHoldTheSynUntilCompleted) {
  vpf::NetFilter nf;
  std::mutex mu;
  std::map<uint16_t, vpf::ConnectionEventParams> seen;  // by remote port
  nf.on_tcp_connect_request = [&](vpf::ConnectionEventParams& e) {
    const uint16_t port = e.connection.remote_port;
    e.filtering_flag = port == 7001 ? vpf::kNfAllow : port == 7002 ? vpf::kNfBlock : vpf::kNfPendConnectRequest;
    std::lock_guard l(mu);
    seen[port] = e;
  };
  auto request = [&](uint16_t port) -> std::optional<vpf::ConnectionEventParams> {
    std::lock_guard l(mu);
    const auto it = seen.find(port);
    if (it == seen.end()) return std::nullopt;
    return it->second;
  };
  nf.initialize(guid);
  nf.nf_add_rule(outgoing_rule(IPPROTO_TCP, 0, 64), true);  // NF_ALLOW | NF_PEND_CONNECT_REQUEST
  nf.start_filter(0);
  // Completed in the handler: allowed, then the handshake goes through both ways.
  tcp_segment(true, 41001, 7001, 100, 0, 0x02);
  ASSERT_TRUE(eventually([&] { return tcp_sent_on("p2", 41001, 7001) == 1; })) << "the allowed SYN goes on";
  const auto allowed = request(7001);
  ASSERT_TRUE(allowed);
  EXPECT_NE(allowed->request_id, 0u);
  EXPECT_TRUE(allowed->connection.pending);
  EXPECT_EQ(allowed->connection.state, "syn_sent");
  tcp_segment(false, 41001, 7001, 500, 101, 0x12);
  tcp_segment(true, 41001, 7001, 101, 501, 0x10);
  EXPECT_TRUE(eventually([&] { return tcp_sent_on("p1", 41001, 7001) == 1 && tcp_sent_on("p2", 41001, 7001) == 2; }));
  EXPECT_EQ(nf.get_connection(allowed->connection.id).state, "established");
  EXPECT_FALSE(nf.get_connection(allowed->connection.id).pending);
  // Blocked in the handler: the SYN and its retransmission stay in the switch.
  tcp_segment(true, 41002, 7002, 200, 0, 0x02);
  ASSERT_TRUE(eventually([&] { return request(7002).has_value(); }));
  tcp_segment(true, 41002, 7002, 200, 0, 0x02);
  // Left pending: held, listed as pending, then completed by its request id.
  tcp_segment(true, 41003, 7003, 300, 0, 0x02);
  ASSERT_TRUE(eventually([&] { return request(7003).has_value(); }));
  const auto later = *request(7003);
  EXPECT_TRUE(eventually([&] { return nf.get_connection(later.connection.id).pending; }));
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(tcp_sent_on("p2", 41002, 7002), 0u) << "blocked";
  EXPECT_EQ(tcp_sent_on("p2", 41003, 7003), 0u) << "held while pending";
  EXPECT_TRUE(nf.complete_tcp_connect_request(later.request_id, vpf::kNfAllow));
  EXPECT_TRUE(eventually([&] { return tcp_sent_on("p2", 41003, 7003) == 1; })) << "sent on once allowed";
  EXPECT_FALSE(nf.get_connection(later.connection.id).pending);
  EXPECT_EQ(code_of([&] { nf.complete_tcp_connect_request(later.request_id, vpf::kNfAllow); }), vpf::kErrorNotFound)
      << "completed already";
  // Completed by the connection's id, as vpfctl conn complete does: blocked.
  tcp_segment(true, 41004, 7004, 400, 0, 0x02);
  ASSERT_TRUE(eventually([&] { return request(7004).has_value(); }));
  const uint64_t conn4 = request(7004)->connection.id;
  EXPECT_TRUE(nf.complete_connection_request(conn4, vpf::kNfBlock));
  EXPECT_FALSE(nf.get_connection(conn4).pending);
  tcp_segment(true, 41004, 7004, 401, 0, 0x10);
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(tcp_sent_on("p2", 41004, 7004), 0u) << "the blocked connection's segments stay";
  EXPECT_EQ(code_of([&] { nf.complete_connection_request(conn4, vpf::kNfAllow); }), vpf::kErrorNotFound) << "nothing waits";
  // Bad completions.
  EXPECT_EQ(code_of([&] { nf.complete_tcp_connect_request(12345, vpf::kNfAllow); }), vpf::kErrorNotFound);
  EXPECT_EQ(code_of([&] { nf.complete_tcp_connect_request(later.request_id, 2); }), vpf::kErrorInvalidParameter);
  EXPECT_EQ(code_of([&] { nf.complete_connection_request(0, vpf::kNfAllow); }), vpf::kErrorInvalidParameter);
  EXPECT_EQ(code_of([&] { nf.complete_connection_request(conn4, 64); }), vpf::kErrorInvalidParameter);
  nf.nf_delete_rules();
  nf.stop_filter();
}

// A pended request nobody completes gets what an expired capture gets when the instance's
// timeout passes: with DenyExpiredRequests its connection is blocked.
TEST_F(NetFilterOvs, APendedRequestLeftAloneExpires) {
  vpf::NetFilter nf;
  std::atomic<uint64_t> conn{0};
  nf.on_tcp_connect_request = [&](vpf::ConnectionEventParams& e) {
    e.filtering_flag = vpf::kNfPendConnectRequest;
    conn = e.connection.id;
  };
  nf.initialize(guid);
  nf.config("DenyExpiredRequests=True");
  nf.nf_add_rule(outgoing_rule(IPPROTO_TCP, 7010, 64), true);
  nf.start_filter(3000);
  tcp_segment(true, 41010, 7010, 100, 0, 0x02);
  ASSERT_TRUE(eventually([&] { return conn != 0; }));
  EXPECT_TRUE(nf.get_connection(conn).pending);
  EXPECT_TRUE(eventually([&] { return !nf.get_connection(conn).pending; }, 6000ms)) << "expired";
  tcp_segment(true, 41010, 7010, 101, 0, 0x10);
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(tcp_sent_on("p2", 41010, 7010), 0u) << "denied: the SYN and what follows stay";
  nf.nf_delete_rules();
  nf.stop_filter();
}

// NF_SUSPENDED: a connection opened under the rule raises its connection events but not
// its packets' until set_connection_state resumes it, and again none once suspended.
TEST_F(NetFilterOvs, SuspendedConnectionsRaiseNoPacketEventsUntilResumed) {
  vpf::NetFilter nf;
  std::atomic<int> notified{0};
  std::atomic<uint64_t> created{0};
  nf.on_notify_packet = [&](vpf::NotifyPacketEventParams&) { ++notified; };
  nf.on_udp_created = [&](vpf::ConnectionEventParams& e) { created = e.connection.id; };
  nf.initialize(guid);
  nf.nf_add_rule(outgoing_rule(IPPROTO_UDP, 80, 128 | 256 | 4), true);  // ... | NF_READONLY | NF_SUSPENDED
  nf.start_filter(0);
  const std::string datagram = std::string("ovs-appctl netdev-dummy/receive p1 ") +
                               "5254000000025254000000010800450000200000000040110000" + "0a0000010a000002" + "a0300050" +
                               "000c0000" + "01020304 >/dev/null";
  ASSERT_EQ(std::system(datagram.c_str()), 0);
  ASSERT_TRUE(eventually([&] { return created != 0; }));
  const uint64_t id = created;
  EXPECT_TRUE(nf.get_connection(id).suspended);
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(notified, 0) << "suspended: no packet event";
  EXPECT_TRUE(nf.set_connection_state(id, false));
  EXPECT_FALSE(nf.get_connection(id).suspended);
  ASSERT_EQ(std::system(datagram.c_str()), 0);
  EXPECT_TRUE(eventually([&] { return notified == 1; })) << notified;
  EXPECT_TRUE(nf.set_connection_state(id, true));
  ASSERT_EQ(std::system(datagram.c_str()), 0);
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(notified, 1) << "suspended again";
  EXPECT_EQ(nf.get_connection(id).packets_sent, 3u) << "every datagram passed";
  EXPECT_EQ(code_of([&] { nf.set_connection_state(0, true); }), vpf::kErrorInvalidParameter);
  EXPECT_EQ(code_of([&] { nf.set_connection_state(uint64_t(1) << 60, true); }), vpf::kErrorNotFound);
  nf.nf_delete_rules();
  nf.stop_filter();
}

TEST_F(NetFilterOvs, AdapterAddedAndRemovedEvents) {
  vpf::NetFilter nf;
  std::atomic<int> added{-1}, removed{-1};
  nf.on_adapter_added = [&](vpf::AdapterEventParams& e) { added = e.adapter_id; };
  nf.on_adapter_removed = [&](vpf::AdapterEventParams& e) { removed = e.adapter_id; };
  nf.initialize(guid);
  ASSERT_EQ(std::system("ovs-vsctl add-port br0 p9 -- set interface p9 type=dummy"), 0);
  EXPECT_TRUE(eventually([&] { return added >= 0; }));
  EXPECT_EQ(adapter_of(nf, "p9"), added.load());
  ASSERT_EQ(std::system("ovs-vsctl del-port br0 p9"), 0);
  EXPECT_TRUE(eventually([&] { return removed == added; }));
}

// The raw protocol: bad frames get an error and end the connection; nothing changes.
int raw_connect() {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::snprintf(a.sun_path, sizeof a.sun_path, "%s", std::getenv("VPF_AGENT_SOCKET"));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return -1;
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}
std::string read_all(int fd) {
  std::string s;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    s.append(buf, size_t(n));
  }
  return s;
}

int raw_connect();

// A monitor that never reads: its queue fills, its events are dropped and counted, and
// neither the datapath nor another client notices.
TEST_F(NetFilterOvs, ASlowClientLosesItsEventsNotTheDatapath) {
  const int slow = raw_connect();
  ASSERT_GE(slow, 0);
  const std::string sub = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"subscribe\",\"params\":{\"instance\":\"*\"}}\n";
  ASSERT_EQ(::send(slow, sub.data(), sub.size(), MSG_NOSIGNAL), ssize_t(sub.size()));
  char buf[256];
  ASSERT_GT(::recv(slow, buf, sizeof buf, 0), 0);  // its reply; then it never reads again
  vpf::NetFilter nf;
  nf.initialize(guid);
  const int p1 = adapter_of(nf, "p1"), p2 = adapter_of(nf, "p2");
  std::atomic<int> events{0};
  nf.on_notify_packet = [&](vpf::NotifyPacketEventParams&) { ++events; };
  // Frames injected on p1 do not meet p1's rules again; they meet p2's on their way out.
  nf.add_filter_rule(1, p2, vpf::kDirectionIncoming, -1, -1, "udp and udp[8] == 0x5a", vpf::kRuleActionNotify);
  nf.start_filter(0);
  vpf::AgentConnection ac(std::getenv("VPF_AGENT_SOCKET"));
  const uint64_t dropped0 = ac.call("status")["events"]["client_events_dropped"];
  const size_t before = count_marker("p2", 0x5a);
  constexpr int kFrames = 4000;
  for (int i = 0; i < kFrames; i += 500) {
    nf.send_packet(p1, bytes(frame_hex(0x5a)), 500, false);
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_TRUE(eventually([&] { return count_marker("p2", 0x5a) == before + kFrames; }, 20000ms))
      << count_marker("p2", 0x5a) - before << " of " << kFrames << " frames forwarded";
  EXPECT_TRUE(eventually([&] { return events == kFrames; })) << events << " events for the reading client";
  const uint64_t dropped = ac.call("status")["events"]["client_events_dropped"].get<uint64_t>() - dropped0;
  EXPECT_GT(dropped, 0u) << "the slow client's queue never filled";
  EXPECT_LT(dropped, uint64_t(kFrames));
  ::close(slow);
  nf.stop_filter();
}

// The plugin's state as `ovs-appctl vportfilter/show` prints it: the "channel:" counters
// and each open client channel's.
struct PluginView {
  json channel;
  std::vector<json> clients;
};
PluginView plugin_view() {
  PluginView v;
  FILE* f = ::popen("ovs-appctl vportfilter/show", "r");
  char line[8192];
  while (f && std::fgets(line, sizeof line, f)) {
    const std::string l = line;
    if (l.rfind("channel: ", 0) == 0) v.channel = json::parse(l.substr(9));
    if (l.rfind("client channel ", 0) == 0) v.clients.push_back(json::parse(l.substr(l.find(": ") + 2)));
  }
  if (f) ::pclose(f);
  return v;
}

// A raw client of its own channel (as vpf::NetFilter uses it), writing what it likes.
constexpr uint8_t kSend = uint8_t(vpf::channel::VerdictAction::Send);
constexpr uint8_t kSendModified = uint8_t(vpf::channel::VerdictAction::SendModified);
struct ChannelClient {
  std::unique_ptr<vpf::AgentConnection> conn;
  vpf::channel::Region region;
  int verdicts_efd = -1;
  std::vector<vpf::protocol::EventFrame> agent_events;  // what came through the agent
  std::mutex mu;

  ChannelClient(const std::string& guid, int adapter, uint32_t rule_id, uint8_t marker) {
    conn = std::make_unique<vpf::AgentConnection>(vpf::AgentConnection::default_socket(),
                                                  [this](const vpf::protocol::EventFrame& f, std::vector<uint8_t>) {
                                                    std::lock_guard l(mu);
                                                    agent_events.push_back(f);
                                                  });
    char bpf[64];
    std::snprintf(bpf, sizeof bpf, "udp and udp[8] == 0x%02x", marker);
    conn->call("add_rule", {{"instance", guid},
                            {"rule", {{"kind", "filter"}, {"id", rule_id}, {"adapter", adapter}, {"direction", "incoming"},
                                      {"bpf", bpf}, {"action", "capture"}}}});
    conn->call("start_filter", {{"instance", guid}});
    conn->call("open_channel");
    auto fds = conn->take_fds();
    EXPECT_EQ(fds.size(), 3u);
    region = vpf::channel::Region::attach(fds[0]);
    ::close(fds[0]);
    ::close(fds[1]);
    verdicts_efd = fds[2];
  }
  ~ChannelClient() { ::close(verdicts_efd); }
  // The next capture event in the channel (0 if none within 5 s).
  uint64_t next_capture() {
    uint64_t id = 0;
    eventually([&] {
      for (uint32_t i = 0; i < region.event_rings() && !id; ++i) {
        auto r = region.ring(i);
        const vpf::channel::RecordHeader* rec;
        uint32_t len;
        if (r.peek(&rec, &len) == vpf::channel::Ring::Status::Ok && rec->type == vpf::channel::kCapture) {
          vpf::channel::PacketEvent ev;
          std::memcpy(&ev, rec, sizeof ev);
          id = ev.capture_id;
        }
        r.release();
      }
      return id != 0;
    });
    return id;
  }
  void write(uint64_t id, uint8_t action, uint32_t claimed_len, const std::vector<uint8_t>& data = {},
             uint16_t type = vpf::channel::kVerdict) {
    vpf::channel::Verdict v{};
    v.capture_id = id;
    v.action = action;
    v.len = claimed_len;
    ASSERT_TRUE(region.command_ring().push(type, &v, sizeof v, data.data(), uint32_t(data.size())));
    vpf::channel::wake_consumer(region.header()->plugin_waiting, verdicts_efd);
  }
};

// Everything a client writes into its channel is checked: verdicts for unknown, stale and
// other clients' packets, lengths past the record, bad actions and record types are
// counted and change nothing; event rings whose reading end lies only lose that client's
// events (a capture then gets its expiry verdict at once); a corrupt verdict ring closes
// the channel (its held packet gets the expiry verdict) and the client's events come
// through the agent again.  The switch forwards throughout.
TEST_F(NetFilterOvs, AHostileChannelClientCannotHurtTheSwitchOrOthers) {
  vpf::NetFilter probe;
  probe.initialize(guid);
  const int p2 = adapter_of(probe, "p2");
  char g2[64];
  std::snprintf(g2, sizeof g2, "{00000000-0000-0000-0001-%012d}", ::getpid() % 1000000);
  probe.install("", g2, 50, 0, "");
  {
    ChannelClient a(guid, p2, 1, 0x91), b(g2, p2, 1, 0x9f);
    const size_t sent0 = count_marker("p2", 0x91), other0 = count_marker("p2", 0x95);
    receive("p1", 0x91);
    const uint64_t id = a.next_capture();
    ASSERT_NE(id, 0u);
    const auto before = plugin_view();
    ASSERT_EQ(before.clients.size(), 2u) << "both clients have a channel";
    const json status = a.conn->call("status");
    for (const auto& inst : status["instances"]) {
      if (inst["guid"] == guid) {
        EXPECT_EQ(inst["client_channel"], true) << inst.dump();
      }
    }
    a.write(id ^ (uint64_t(1) << 40), kSend, 0);   // no such use of the slot
    a.write(id, 9, 0);                                                  // no such action
    a.write(id, kSendModified, 5, std::vector<uint8_t>(8, 0));  // 5 bytes
    a.write(id, kSend, 4000);                      // longer than the record
    a.write(id, kSend, 0, {}, vpf::channel::kInject);  // not a client's record
    b.write(id, kSend, 0);                         // another client's packet
    std::this_thread::sleep_for(200ms);
    EXPECT_EQ(count_marker("p2", 0x91), sent0) << "a refused verdict released the packet";
    const auto mid = plugin_view();
    uint64_t stale = 0, bad = 0, foreign = 0;
    for (const auto& c : mid.clients) {
      stale += c["stale_verdicts"].get<uint64_t>();
      bad += c["bad_records"].get<uint64_t>();
      foreign += c["foreign_verdicts"].get<uint64_t>();
    }
    EXPECT_EQ(stale, 1u);
    EXPECT_EQ(bad, 4u);
    EXPECT_EQ(foreign, 1u);
    a.write(id, kSend, 0);  // the owner's verdict counts
    EXPECT_TRUE(eventually([&] { return count_marker("p2", 0x91) == sent0 + 1; }));

    // Event rings whose reading end lies (tail past head): nothing more fits, so the next
    // capture cannot be written; it is not held but sent on at once (the expiry verdict)
    // and counted lost.  Put right again, the channel carries events as before.
    for (uint32_t i = 0; i < a.region.event_rings(); ++i) {
      auto* rh = a.region.ring(i).header();
      rh->tail.store(rh->head.load() + 4096);
    }
    const uint64_t lost0 = plugin_view().clients.at(0)["lost"].get<uint64_t>() + plugin_view().clients.at(1)["lost"].get<uint64_t>();
    receive("p1", 0x91);
    EXPECT_TRUE(eventually([&] { return count_marker("p2", 0x91) == sent0 + 2; })) << "a capture waited on a broken ring";
    EXPECT_EQ(plugin_view().clients.at(0)["lost"].get<uint64_t>() + plugin_view().clients.at(1)["lost"].get<uint64_t>(), lost0 + 1);
    for (uint32_t i = 0; i < a.region.event_rings(); ++i) a.region.ring(i).header()->tail.store(a.region.ring(i).header()->head.load());

    // A corrupt verdict ring: the channel closes, the held packet is sent on (instance
    // without DenyExpiredRequests), later events come through the agent.
    receive("p1", 0x91);
    ASSERT_NE(a.next_capture(), 0u);
    auto* h = a.region.command_ring().header();
    h->head.store(h->tail.load() + 3);  // not a record boundary
    vpf::channel::wake_consumer(a.region.header()->plugin_waiting, a.verdicts_efd);
    EXPECT_TRUE(eventually([&] { return count_marker("p2", 0x91) == sent0 + 3; }));
    EXPECT_TRUE(eventually([] { return plugin_view().clients.size() == 1; }));
    EXPECT_EQ(plugin_view().channel["clients_broken"], before.channel["clients_broken"].get<uint64_t>() + 1);
    receive("p1", 0x91);
    EXPECT_TRUE(eventually([&] {
      std::lock_guard l(a.mu);
      return !a.agent_events.empty();
    })) << "no event through the agent after the channel closed";
    {
      std::lock_guard l(a.mu);
      a.conn->verdict(a.agent_events.front().event_id, vpf::protocol::kSend);
    }
    EXPECT_TRUE(eventually([&] { return count_marker("p2", 0x91) == sent0 + 4; }));
    receive("p1", 0x95);  // other traffic was never touched
    EXPECT_TRUE(eventually([&] { return count_marker("p2", 0x95) == other0 + 1; }));
  }
  // Both clients gone: no channel left, nothing held.
  EXPECT_TRUE(eventually([] { return plugin_view().clients.empty(); }));
  probe.uninstall("", g2, 0);
}

TEST(RawProtocol, BadFramesAreRefusedAndEndTheConnection) {
  namespace p = vpf::protocol;
  struct Case {
    p::FrameHeader h;
    const char* expect;
  } cases[] = {
      {{p::kFrameMagic, 9, p::kVerdictFrame, 16, 0}, "version 9"},
      {{p::kFrameMagic, uint16_t(p::kVersion), p::kEventFrame, 48, 0}, "not a verdict"},
      {{p::kFrameMagic, uint16_t(p::kVersion), p::kVerdictFrame, 100u << 20, 0}, "more than the limit"},
      {{p::kFrameMagic, uint16_t(p::kVersion), p::kVerdictFrame, 4, 0}, "shorter than"},
  };
  for (const auto& c : cases) {
    const int fd = raw_connect();
    ASSERT_GE(fd, 0);
    std::string msg(reinterpret_cast<const char*>(&c.h), sizeof c.h);
    msg += std::string(c.h.length < 64 ? c.h.length : 64, '\0');
    ::send(fd, msg.data(), msg.size(), MSG_NOSIGNAL);
    const std::string reply = read_all(fd);  // ends: the agent closed the connection
    ::close(fd);
    EXPECT_NE(reply.find(c.expect), std::string::npos) << reply;
  }
  // A verdict for an event this client never got: refused by a notification, the
  // connection stays.
  const int fd = raw_connect();
  p::FrameHeader h{p::kFrameMagic, uint16_t(p::kVersion), p::kVerdictFrame, sizeof(p::VerdictFrame), 0};
  p::VerdictFrame v{12345, p::kSend, {}, 0};
  std::string msg(reinterpret_cast<const char*>(&h), sizeof h);
  msg.append(reinterpret_cast<const char*>(&v), sizeof v);
  msg += "{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"status\"}\n";
  ::send(fd, msg.data(), msg.size(), MSG_NOSIGNAL);
  std::string got;
  char buf[4096];
  while (got.find("\"id\":7") == std::string::npos) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    got.append(buf, size_t(n));
  }
  ::close(fd);
  EXPECT_NE(got.find("verdict_refused"), std::string::npos) << got;
  EXPECT_NE(got.find("\"id\":7"), std::string::npos) << got;
}

}  // namespace
