// The plugin's connection tracking: see conn_tracking.h.
#include "conn_tracking.h"

#include <arpa/inet.h>

#include <algorithm>
#include <sstream>

#include "vpf/matcher/parser.h"

namespace vpf::plugin {

namespace {

// A datapath thread sweeps one stripe of the table when this long has passed since the
// last sweep: a whole sweep takes stripes × this (64 × 16 ms ≈ 1 s at most).
constexpr uint64_t kSweepEveryNs = 16000000;

std::string address(const conntrack::ConnKey& k, const uint32_t* ip, uint16_t port) {
  char buf[INET6_ADDRSTRLEN] = "?";
  if (k.ip_ver == 4) {
    const uint32_t be = htonl(ip[0]);
    inet_ntop(AF_INET, &be, buf, sizeof buf);
    return std::string(buf) + ":" + std::to_string(port);
  }
  uint32_t be[4];
  for (int w = 0; w < 4; ++w) be[w] = htonl(ip[w]);
  inet_ntop(AF_INET6, be, buf, sizeof buf);
  return "[" + std::string(buf) + "]:" + std::to_string(port);
}

}  // namespace

ConnTracking::ConnTracking(uint32_t max_conns) : tracker_(conntrack::Limits{max_conns, max_conns}) {}

uint32_t ConnTracking::follow(const uint8_t* const* data, const uint32_t* len, uint32_t n, uint32_t adapter,
                              uint32_t vm, matcher::Direction dir, uint64_t now_ns, const conntrack::Tracker::Decisions& d,
                              conntrack::Governing* gov) {
  n = std::min(n, conntrack::Tracker::kBatch);
  matcher::PacketKey keys[conntrack::Tracker::kBatch];
  const matcher::PacketKey* kp[conntrack::Tracker::kBatch];
  conntrack::Observed out[conntrack::Tracker::kBatch];
  for (uint32_t i = 0; i < n; ++i) {
    matcher::parse_frame(data[i], len[i], matcher::PacketMeta{adapter, dir, vm}, &keys[i]);
    kp[i] = &keys[i];
  }
  if (n) tracker_.track_batch(kp, data, len, n, now_ns, d, out);
  uint32_t replies = 0;
  for (uint32_t i = 0; i < n; ++i) {
    const bool tracked = out[i].verdict == conntrack::Verdict::New || out[i].verdict == conntrack::Verdict::Known;
    gov[i] = tracked ? out[i].gov : conntrack::Governing{};
    replies |= uint32_t(tracked && out[i].reply) << i;
  }
  uint64_t last = last_sweep_.load(std::memory_order_relaxed);
  if (now_ns - last >= kSweepEveryNs && last_sweep_.compare_exchange_strong(last, now_ns, std::memory_order_relaxed))
    tracker_.expire_step(now_ns, nullptr);
  return replies;
}

std::string ConnTracking::list() const {
  auto conns = tracker_.list();
  std::sort(conns.begin(), conns.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
  std::ostringstream o;
  for (const conntrack::ConnInfo& c : conns) {
    const bool tcp = c.key.proto == 6;
    o << "id=" << c.id << " adapter=" << c.key.adapter << " vm=" << c.vm << (tcp ? " tcp " : " udp ")
      << address(c.key, c.key.local_ip, c.key.local_port) << " -> " << address(c.key, c.key.remote_ip, c.key.remote_port)
      << " opened=" << (c.opened == matcher::Direction::Outgoing ? "outgoing" : "incoming")
      << " state=" << (tcp ? conntrack::tcp_state_name(c.tcp) : c.replied ? "replied" : "unreplied")
      << " packets=" << c.packets[0] << "/" << c.packets[1] << " bytes=" << c.bytes[0] << "/" << c.bytes[1] << "\n";
  }
  return o.str();
}

nlohmann::json ConnTracking::stats() const {
  const conntrack::Stats s = tracker_.stats();
  return {{"limit", tracker_.limits().total}, {"active", s.active},       {"created", s.created},
          {"removed", s.removed},             {"untracked", s.untracked}, {"invalid", s.invalid},
          {"out_of_window", s.out_of_window}, {"full", s.full}};
}

}  // namespace vpf::plugin
