// The plugin's connection tracking: see conn_tracking.h.
#include "conn_tracking.h"

#include <arpa/inet.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <sstream>

#include "uninit.h"
#include "vpf/matcher/parser.h"

namespace vpf::plugin {

namespace {

// A datapath thread sweeps one stripe of the table when this long has passed since the
// last sweep: a whole sweep takes stripes × this (64 × 16 ms ≈ 1 s at most).
constexpr uint64_t kSweepEveryNs = 16000000;

std::string host(const conntrack::ConnKey& k, const uint32_t* ip) {
  char buf[INET6_ADDRSTRLEN] = "?";
  uint32_t be[4];
  for (int w = 0; w < 4; ++w) be[w] = htonl(ip[w]);
  inet_ntop(k.ip_ver == 4 ? AF_INET : AF_INET6, be, buf, sizeof buf);
  return buf;
}

std::string address(const conntrack::ConnKey& k, const uint32_t* ip, uint16_t port) {
  return k.ip_ver == 4 ? host(k, ip) + ":" + std::to_string(port) : "[" + host(k, ip) + "]:" + std::to_string(port);
}

const char* protocol_name(const conntrack::ConnInfo& c) { return c.key.proto == 6 ? "tcp" : "udp"; }
const char* opened_name(const conntrack::ConnInfo& c) {
  return c.opened == matcher::Direction::Outgoing ? "outgoing" : "incoming";
}
const char* state_name(const conntrack::ConnInfo& c) {
  return c.key.proto == 6 ? conntrack::tcp_state_name(c.tcp) : c.replied ? "replied" : "unreplied";
}

}  // namespace

ConnTracking::ConnTracking(conntrack::Limits limits) : tracker_(limits) {}

namespace {

// The VM's SYN that opens a TCP connection (not a SYN-ACK), as parsed.
bool opening_syn(const matcher::PacketKey& k, matcher::Direction dir) {
  return dir == matcher::Direction::Outgoing && k.f[matcher::F_IP_PROTO] == 6 &&
         (k.f[matcher::F_TCP_FLAGS] & (conntrack::kSyn | conntrack::kAck)) == conntrack::kSyn;
}

}  // namespace

ConnTracking::Followed ConnTracking::follow(const uint8_t* const* data, const uint32_t* len, uint32_t n,
                                            uint32_t adapter, uint32_t vm, matcher::Direction dir, uint64_t now_ns,
                                            const conntrack::Tracker::Decisions& d, uint32_t indicate, uint32_t pend,
                                            conntrack::Governing* gov, matcher::PacketKey* keys,
                                            std::vector<conntrack::Event>* events, conntrack::Event* requests) {
  n = std::min(n, conntrack::Tracker::kBatch);
  const matcher::PacketKey* kp[conntrack::Tracker::kBatch];
  conntrack::Observed out[conntrack::Tracker::kBatch];
  Uninit<conntrack::ConnInfo, conntrack::Tracker::kBatch> told;  // written where out[i].event is set
  for (uint32_t i = 0; i < n; ++i) {
    matcher::parse_frame(data[i], len[i], matcher::PacketMeta{adapter, dir, vm}, &keys[i]);
    kp[i] = &keys[i];
  }
  // The SYNs to pend open their connections blocked, settled, until the request is completed.
  uint32_t pend_syn = 0;
  for (uint32_t m = pend & (n >= 32 ? ~0u : (1u << n) - 1); m; m &= m - 1) {
    const uint32_t i = uint32_t(std::countr_zero(m));
    pend_syn |= uint32_t(opening_syn(keys[i], dir) && d.words[i] != conntrack::kNoWord) << i;
  }
  conntrack::Tracker::Decisions dd = d;
  uint64_t words[conntrack::Tracker::kBatch];
  if (pend_syn) {
    std::copy(d.words, d.words + n, words);
    for (uint32_t m = pend_syn; m; m &= m - 1) {
      const uint32_t i = uint32_t(std::countr_zero(m));
      words[i] = with_action(words[i], matcher::Action::Drop);
    }
    dd.words = words;
    dd.settle = pend_syn;
  }
  if (n) tracker_.track_batch(kp, data, len, n, now_ns, dd, out, told.v);
  Followed f;
  for (uint32_t i = 0; i < n; ++i) {
    const bool tracked = out[i].verdict == conntrack::Verdict::New || out[i].verdict == conntrack::Verdict::Known;
    gov[i] = tracked ? out[i].gov : conntrack::Governing{};
    f.replies |= uint32_t(tracked && out[i].reply) << i;
    f.suspended |= uint32_t(tracked && out[i].suspended) << i;
    f.settled |= uint32_t(tracked && gov[i].set && gov[i].gen == conntrack::kSettledGen) << i;
    if (out[i].event != conntrack::EventKind::None) events->push_back({out[i].event, told.v[i], out[i].gov});
    // A connect request: the VM's SYN that opened a TCP connection.
    const bool pended = (pend_syn >> i & 1) && out[i].verdict == conntrack::Verdict::New;
    if (!pended && !((indicate >> i & 1) && out[i].verdict == conntrack::Verdict::New && opening_syn(keys[i], dir)))
      continue;
    conntrack::Event e{conntrack::EventKind::TcpConnectRequest, {}, out[i].gov};
    bool invalid = false;
    conntrack::Tracker::key_of(keys[i], &e.conn.key, &invalid);
    e.conn.id = out[i].id;
    e.conn.vm = vm;
    e.conn.opened = dir;
    e.conn.created_ns = e.conn.last_ns = now_ns;
    e.conn.packets[0] = 1;
    e.conn.bytes[0] = len[i];
    if (pended) {
      requests[i] = e;
      f.pended |= 1u << i;
      count_request(0);
    } else {
      events->push_back(e);
    }
  }
  uint64_t last = last_sweep_.load(std::memory_order_relaxed);
  if (now_ns - last >= kSweepEveryNs && last_sweep_.compare_exchange_strong(last, now_ns, std::memory_order_relaxed))
    tracker_.expire_step(now_ns, events);
  return f;
}

bool ConnTracking::settle_request(const uint8_t* frame, uint32_t len, uint32_t adapter, uint32_t vm, uint64_t id,
                                  uint64_t word) {
  matcher::PacketKey k;
  matcher::parse_frame(frame, len, matcher::PacketMeta{adapter, matcher::Direction::Outgoing, vm}, &k);
  count_request(unpack(word).action == matcher::Action::Drop ? 2 : 1);
  return tracker_.settle(k, id, word);
}

channel::ConnectionRecord ConnTracking::record_of(const conntrack::Event& e, uint64_t now_ns) {
  using K = channel::ConnectionEventKind;
  channel::ConnectionRecord r{};
  const conntrack::ConnInfo& c = e.conn;
  r.id = c.id;
  switch (e.kind) {
    case conntrack::EventKind::TcpConnected: r.event = uint8_t(K::TcpConnected); break;
    case conntrack::EventKind::TcpClosed: r.event = uint8_t(K::TcpClosed); break;
    case conntrack::EventKind::UdpCreated: r.event = uint8_t(K::UdpCreated); break;
    case conntrack::EventKind::UdpClosed: r.event = uint8_t(K::UdpClosed); break;
    case conntrack::EventKind::TcpConnectRequest: r.event = uint8_t(K::TcpConnectRequest); break;
    case conntrack::EventKind::None: break;
  }
  r.protocol = c.key.proto;
  r.ip_version = c.key.ip_ver;
  r.vm = c.vm;
  r.local_port = c.key.local_port;
  r.remote_port = c.key.remote_port;
  for (int w = 0; w < 4; ++w) {
    r.local_ip[w] = c.key.local_ip[w];
    r.remote_ip[w] = c.key.remote_ip[w];
  }
  for (int k = 0; k < 2; ++k) {
    r.packets[k] = c.packets[k];
    r.bytes[k] = c.bytes[k];
  }
  r.age_ns = now_ns - std::min(now_ns, c.created_ns);
  return r;
}

std::vector<conntrack::ConnInfo> ConnTracking::sorted() const {
  auto conns = tracker_.list();
  std::sort(conns.begin(), conns.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
  return conns;
}

std::string ConnTracking::list() const {
  std::ostringstream o;
  for (const conntrack::ConnInfo& c : sorted()) {
    o << "id=" << c.id << " adapter=" << c.key.adapter << " vm=" << c.vm << " " << protocol_name(c) << " "
      << address(c.key, c.key.local_ip, c.key.local_port) << " -> " << address(c.key, c.key.remote_ip, c.key.remote_port)
      << " opened=" << opened_name(c) << " state=" << state_name(c) << " packets=" << c.packets[0] << "/"
      << c.packets[1] << " bytes=" << c.bytes[0] << "/" << c.bytes[1] << (c.suspended ? " suspended" : "") << "\n";
  }
  return o.str();
}

nlohmann::json ConnTracking::list_json(int64_t adapter, uint64_t id, uint64_t now_ns,
                                       const std::vector<uint64_t>& pending) const {
  nlohmann::json out = nlohmann::json::array();
  for (const conntrack::ConnInfo& c : sorted()) {
    if ((adapter >= 0 && c.key.adapter != uint64_t(adapter)) || (id && c.id != id)) continue;
    // The VM's view: what it sent is the opener's side of a connection it opened.
    const int sent = c.opened == matcher::Direction::Outgoing ? 0 : 1;
    out.push_back({{"id", c.id},
                   {"adapter_id", c.key.adapter},
                   {"vm", c.vm},
                   {"protocol", protocol_name(c)},
                   {"ip_version", c.key.ip_ver},
                   {"local_address", host(c.key, c.key.local_ip)},
                   {"local_port", c.key.local_port},
                   {"remote_address", host(c.key, c.key.remote_ip)},
                   {"remote_port", c.key.remote_port},
                   {"direction", opened_name(c)},
                   {"state", state_name(c)},
                   {"suspended", c.suspended},
                   {"pending", std::binary_search(pending.begin(), pending.end(), c.id)},
                   {"packets_sent", c.packets[sent]},
                   {"bytes_sent", c.bytes[sent]},
                   {"packets_received", c.packets[1 - sent]},
                   {"bytes_received", c.bytes[1 - sent]},
                   {"age_ms", (now_ns - std::min(now_ns, c.created_ns)) / 1000000},
                   {"idle_ms", (now_ns - std::min(now_ns, c.last_ns)) / 1000000}});
  }
  return out;
}

void ConnTracking::turn_round(const uint8_t* frame, uint32_t len, const matcher::PacketKey& key, uint8_t* out) {
  std::memcpy(out, frame, len);
  auto swap = [&](uint32_t a, uint32_t b, uint32_t n) {
    if (b + n > len) return;
    std::memcpy(out + a, frame + b, n);
    std::memcpy(out + b, frame + a, n);
  };
  swap(0, 6, 6);
  const uint32_t ver = key.f[matcher::F_IP_VER];
  if (ver == 4) swap(key.l3_offset + 12u, key.l3_offset + 16u, 4);
  if (ver == 6) swap(key.l3_offset + 8u, key.l3_offset + 24u, 16);
  if (key.f[matcher::F_PARSE_FLAGS] & matcher::PARSE_PORTS) swap(key.l4_offset, key.l4_offset + 2u, 2);
}

nlohmann::json ConnTracking::idle_stats(const conntrack::Limits& limits) {
  nlohmann::json j = stats_json(limits, conntrack::Stats{});
  j["events"] = j["events_lost"] = 0;
  j["requests_pended"] = j["requests_allowed"] = j["requests_blocked"] = 0;
  return j;
}

nlohmann::json ConnTracking::stats() const {
  nlohmann::json j = stats_json(tracker_.limits(), tracker_.stats());
  j["events"] = events_.load(std::memory_order_relaxed);
  j["events_lost"] = events_lost_.load(std::memory_order_relaxed);
  j["requests_pended"] = requests_[0].load(std::memory_order_relaxed);
  j["requests_allowed"] = requests_[1].load(std::memory_order_relaxed);
  j["requests_blocked"] = requests_[2].load(std::memory_order_relaxed);
  return j;
}

nlohmann::json ConnTracking::stats_json(const conntrack::Limits& limits, const conntrack::Stats& s) {
  return {{"limit", limits.total},                 {"limit_per_adapter", limits.per_adapter},                   {"active", s.active},       {"created", s.created},
          {"removed", s.removed},             {"untracked", s.untracked}, {"invalid", s.invalid},
          {"out_of_window", s.out_of_window}, {"full", s.full}};
}

}  // namespace vpf::plugin
