// The agent benchmark (run by scripts/bench.sh agent on a private switch with ports p1 and
// p2, flow p1 -> p2, p2's transmitted frames in $VPF_RUN/p2-tx.pcap), through the
// vpf::NetFilter library, as an application sees it:
//   1. rule add -> active: add_filter_rule returns once the rule is in the datapath
//      (the agent answers after the plugin took the new rule set); p50/p99 over adds,
//      from no rules, then BASE_ADDS (1000) on top of a large set imported first
//      (BASE_RULES), and those deleted one at a time;
//   2. notify events relayed to one client: frames injected on p1, a notify rule on p2's
//      incoming side; events/s received and events lost (datapath ring + agent queue);
//   3. capture round trip: one frame every 400 us; from the datapath seeing it (the event's
//      timestamp) to the frame leaving p2 after the client's SEND verdict (p2's tx pcap
//      timestamp, microseconds); also datapath -> handler.
// Ends with "capture_round_trip_p99_us <value>".
#include <time.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "vpf/agent_connection.h"
#include "vpf/netfilter.h"

namespace {

using namespace std::chrono_literals;

uint64_t realtime_ns() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

std::vector<uint8_t> frame(uint8_t marker, uint32_t seq) {
  static const char* hex = "52540000000252540000000108004500002000000000401100000a0000010a0000020400050000080000";
  std::vector<uint8_t> f;
  for (size_t i = 0; hex[i]; i += 2) f.push_back(uint8_t(std::stoi(std::string(hex + i, 2), nullptr, 16)));
  f.push_back(marker);
  f.push_back(uint8_t(seq >> 16));
  f.push_back(uint8_t(seq >> 8));
  f.push_back(uint8_t(seq));
  return f;
}

double pct(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, size_t(p / 100.0 * double(v.size())))];
}

// seq -> wire time (ns, microsecond resolution) of frames with `marker` in the pcap.
std::map<uint32_t, uint64_t> wire_times(const std::string& path, uint8_t marker) {
  std::ifstream f(path, std::ios::binary);
  std::string d((std::istreambuf_iterator<char>(f)), {});
  std::map<uint32_t, uint64_t> out;
  size_t pos = 24;
  while (pos + 16 <= d.size()) {
    uint32_t sec, usec, incl;
    std::memcpy(&sec, d.data() + pos, 4);
    std::memcpy(&usec, d.data() + pos + 4, 4);
    std::memcpy(&incl, d.data() + pos + 8, 4);
    if (pos + 16 + incl > d.size()) break;
    const auto* p = reinterpret_cast<const uint8_t*>(d.data() + pos + 16);
    if (incl >= 46 && p[42] == marker) out[uint32_t(p[43] << 16 | p[44] << 8 | p[45])] = uint64_t(sec) * 1000000000ull + uint64_t(usec) * 1000;
    pos += 16 + incl;
  }
  return out;
}

}  // namespace

// 2. notify relay: a notify rule on ADAPTER's outgoing side selecting the frames with UDP
// source port 9 (the share of the replayed mix bench_agent.sh chose); events/s the
// client's handler saw over SECS,
// and where the others went.
// The notify rule of the relay (rule 1 on ADAPTER's outgoing side); already there is fine.
void add_notify_rule(vpf::NetFilter& nf, const std::string& adapter) {
  nf.list_adapters();
  int id = -1;
  for (const auto& a : nf.adapters())
    if (a.name == adapter) id = a.id;
  try {
    nf.add_filter_rule(1, id, vpf::kDirectionOutgoing, -1, -1, "udp src port 9", vpf::kRuleActionNotify);
  } catch (const vpf::NetFilterError& e) {
    if (e.code() != vpf::kErrorAlreadyExists) throw;
  }
}

// 2a. the notify rule in force with no client taking its events (they reach the agent,
// which has nobody to give them to): what the datapath's share of the relay costs the
// other port, without the relay itself.
int notify_rule_only(const std::string& guid, const std::string& adapter) {
  try {
    vpf::NetFilter nf;
    nf.initialize(guid);
    add_notify_rule(nf, adapter);
    vpf::AgentConnection ac(vpf::AgentConnection::default_socket());
    ac.call("set_active", {{"instance", guid}, {"active", true}});
    return 0;
  } catch (const vpf::NetFilterError& e) {
    std::fprintf(stderr, "agent_bench notify-rule: %s (error %d)\n", e.what(), e.code());
    return 1;
  }
}

int notify_relay(const std::string& guid, const std::string& adapter, double secs) {
  try {
    vpf::NetFilter nf;
    nf.initialize(guid);
    add_notify_rule(nf, adapter);
    int id = -1;
    for (const auto& a : nf.adapters())
      if (a.name == adapter) id = a.id;
    std::atomic<uint64_t> notified{0};
    nf.on_notify_packet = [&](vpf::NotifyPacketEventParams&) { notified.fetch_add(1, std::memory_order_relaxed); };
    vpf::AgentConnection ac(vpf::AgentConnection::default_socket());
    auto counters = [&] {
      const auto st = ac.call("get_statistics");
      const auto status = ac.call("status");
      for (const auto& a : st["adapters"])
        if (a["adapter_id"] == id)
          return std::make_tuple(a["filter"]["packets_sent"].get<uint64_t>(), a["events_lost"].get<uint64_t>(),
                                 status["events"]["client_events_dropped"].get<uint64_t>());
      return std::make_tuple(uint64_t(0), uint64_t(0), uint64_t(0));
    };
    nf.start_filter(0);
    std::this_thread::sleep_for(1s);
    const auto [m0, lost0, dropped0] = counters();
    const uint64_t n0 = notified.load();
    const auto t0 = std::chrono::steady_clock::now();
    std::this_thread::sleep_for(std::chrono::milliseconds(int64_t(secs * 1000)));
    const auto [m1, lost1, dropped1] = counters();
    const uint64_t n1 = notified.load();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    nf.stop_filter();
    std::printf("notify_matched_per_s %.0f\nnotify_events_per_s %.0f\nnotify_lost_in_plugin_rings_per_s %.0f\n"
                "notify_dropped_by_agent_per_s %.0f\nnotify_delivered_share %.4f\n",
                double(m1 - m0) / s, double(n1 - n0) / s, double(lost1 - lost0) / s, double(dropped1 - dropped0) / s,
                m1 > m0 ? double(n1 - n0) / double(m1 - m0) : 0.0);
    return 0;
  } catch (const vpf::NetFilterError& e) {
    std::fprintf(stderr, "agent_bench notify: %s (error %d)\n", e.what(), e.code());
    return 1;
  }
}

int main(int argc, char** argv) {
  const char* run = std::getenv("VPF_RUN");
  if (!run || argc < 2) {
    std::fprintf(stderr, "usage: VPF_RUN=DIR VPF_AGENT_SOCKET=SOCK agent_bench GUID dummy [ADDS CAPTURES [BASE_RULES.json [BASE_ADDS]]] | agent_bench GUID notify ADAPTER SECS | agent_bench GUID notify-rule ADAPTER\n");
    return 2;
  }
  const std::string guid = argv[1];
  const std::string mode = argc > 2 ? argv[2] : "";
  if (mode == "notify") return notify_relay(guid, argc > 3 ? argv[3] : "pcap0", argc > 4 ? std::atof(argv[4]) : 5);
  if (mode == "notify-rule") return notify_rule_only(guid, argc > 3 ? argv[3] : "pcap0");
  const int adds = argc > 3 ? std::atoi(argv[3]) : 300;
  const int captures = argc > 4 ? std::atoi(argv[4]) : 2000;
  const std::string base_rules = argc > 5 ? argv[5] : "";
  const int base_adds = argc > 6 ? std::atoi(argv[6]) : 1000;
  try {
    vpf::NetFilter nf;
    nf.initialize(guid);
    nf.list_adapters();
    int p1 = -1, p2 = -1;
    for (const auto& a : nf.adapters()) {
      if (a.name == "p1") p1 = a.id;
      if (a.name == "p2") p2 = a.id;
    }
    std::mutex mu;
    std::map<uint32_t, std::pair<uint64_t, uint64_t>> seen;  // seq -> (datapath ts, handler ts)
    nf.on_packet = [&](vpf::PacketEventParams& e) {
      const uint64_t now = realtime_ns();
      const uint32_t seq = uint32_t(e.buffer[43] << 16 | e.buffer[44] << 8 | e.buffer[45]);
      const uint64_t dp = uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(e.timestamp.time_since_epoch()).count()) +
                          uint64_t(e.timestamp_ns);
      {
        std::lock_guard l(mu);
        seen[seq] = {dp, now};
      }
      e.action = vpf::kPacketActionSend;
    };
    nf.start_filter(0);

    // 1. rule add -> active.
    std::vector<double> add_us;
    for (int i = 0; i < adds; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      nf.add_filter_rule(uint32_t(100000 + i), -1, vpf::kDirectionAny, -1, -1,
                         "udp and udp[8] == 0xee and udp[9] == " + std::to_string(i % 256), vpf::kRuleActionDrop);
      add_us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
    }
    std::printf("rule_add_active_0_to_%d_p50_us %.1f\nrule_add_active_0_to_%d_p99_us %.1f\n", adds, pct(add_us, 50), adds,
                pct(add_us, 99));
    nf.delete_all_filter_rules();

    // 1b. the same with a large rule set in force (imported in one call), as a provisioning
    // script meets it: each add on top of BASE rules.
    if (!base_rules.empty()) {
      std::ifstream f(base_rules);
      const auto rules = nlohmann::json::parse(f);
      vpf::AgentConnection ac(vpf::AgentConnection::default_socket());
      const auto t0 = std::chrono::steady_clock::now();
      ac.call("import_rules", {{"instance", guid}, {"rules", rules["rules"]}});
      const double import_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      const size_t base = rules["rules"].size();
      add_us.clear();
      for (int i = 0; i < base_adds; ++i) {
        const auto t1 = std::chrono::steady_clock::now();
        nf.add_filter_rule(uint32_t(200000 + i), -1, vpf::kDirectionAny, -1, -1,
                           "udp and udp[8] == 0xee and udp[9] == " + std::to_string(i % 256), vpf::kRuleActionDrop);
        add_us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t1).count());
      }
      std::printf("rule_import_ms %.1f\nrule_add_base_rules %zu\n", import_ms, base);
      std::printf("rule_add_active_p50_us %.1f\nrule_add_active_p99_us %.1f\n", pct(add_us, 50), pct(add_us, 99));
      // The same rules deleted one at a time (out of force when the call returns).
      std::vector<double> del_us;
      for (int i = 0; i < base_adds; ++i) {
        const auto t1 = std::chrono::steady_clock::now();
        nf.delete_filter_rule(uint32_t(200000 + i));
        del_us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t1).count());
      }
      std::printf("rule_delete_active_p50_us %.1f\nrule_delete_active_p99_us %.1f\n", pct(del_us, 50), pct(del_us, 99));
      const auto t2 = std::chrono::steady_clock::now();
      nf.delete_all_filter_rules();
      std::printf("rule_delete_all_ms %.1f\n",
                  std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t2).count());
    }

    // 3. capture round trip.
    nf.add_filter_rule(2, p2, vpf::kDirectionIncoming, -1, -1, "udp and udp[8] == 0xcc", vpf::kRuleActionCapture);
    // The work the rule changes above left behind (the matcher's background rebuild after
    // thousands of deletes, ovsdb-server compacting its log) ends first: this measures the
    // round trip of a switch at rest, not of one still busy with the last phase.
    std::this_thread::sleep_for(2s);
    // One frame every kCaptureGap, from this thread, which sleeps in between: it takes no
    // CPU from the threads it measures and the handler wakes nobody (the frame before has
    // long been decided: the round trip is far shorter than the gap).
    constexpr auto kCaptureGap = 400us;
    auto next = std::chrono::steady_clock::now();
    for (int i = 1; i <= captures; ++i) {
      nf.send_packet(p1, frame(0xcc, uint32_t(i)), 1, false);
      next += kCaptureGap;
      std::this_thread::sleep_until(next);
    }
    for (int waited = 0; waited < 2000; ++waited) {
      {
        std::lock_guard l(mu);
        if (seen.size() >= size_t(captures)) break;
      }
      std::this_thread::sleep_for(1ms);
    }
    std::this_thread::sleep_for(500ms);
    const auto wire = wire_times(std::string(run) + "/p2-tx.pcap", 0xcc);
    std::vector<double> rt, to_client;
    {
      std::lock_guard l(mu);
      for (const auto& [seq, t] : seen) {
        to_client.push_back(double(t.second - t.first) / 1000.0);
        const auto w = wire.find(seq);
        if (w != wire.end()) rt.push_back((double(w->second) - double(t.first)) / 1000.0);
      }
    }
    std::printf("capture_events %zu\ncapture_on_wire %zu\n", to_client.size(), rt.size());
    std::printf("capture_datapath_to_handler_p50_us %.1f\ncapture_datapath_to_handler_p99_us %.1f\n", pct(to_client, 50),
                pct(to_client, 99));
    std::printf("capture_round_trip_p50_us %.1f\n", pct(rt, 50));
    nf.delete_all_filter_rules();
    nf.stop_filter();
    std::printf("capture_round_trip_p99_us %.1f\n", pct(rt, 99));
    return rt.size() == size_t(captures) ? 0 : 1;
  } catch (const vpf::NetFilterError& e) {
    std::fprintf(stderr, "agent_bench: %s (error %d)\n", e.what(), e.code());
    return 1;
  }
}
