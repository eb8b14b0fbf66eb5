// vpf::NetFilter's connections: the agent's objects and the plugin's connection event
// records, as ConnectionInfo (netfilter.h).
#include <arpa/inet.h>
#include <sys/socket.h>

#include <cstring>
#include <nlohmann/json.hpp>

#include "vpf/channel.h"
#include "vpf/netfilter.h"

namespace vpf {

using nlohmann::json;

ConnectionInfo connection_of(const json& j) {
  try {
    ConnectionInfo c;
    c.id = j.at("id").get<uint64_t>();
    c.adapter_id = j.at("adapter_id").get<int>();
    c.vm = j.at("vm").get<uint32_t>();
    c.protocol = j.at("protocol") == "tcp" ? IPPROTO_TCP : IPPROTO_UDP;
    c.ip_family = j.at("ip_version") == 6 ? AF_INET6 : AF_INET;
    c.local_address = j.at("local_address").get<std::string>();
    c.remote_address = j.at("remote_address").get<std::string>();
    c.local_port = j.at("local_port").get<unsigned short>();
    c.remote_port = j.at("remote_port").get<unsigned short>();
    c.direction = j.at("direction") == "outgoing" ? kNfDirectionOut : kNfDirectionIn;
    c.state = j.at("state").get<std::string>();
    c.packets_sent = j.at("packets_sent").get<uint64_t>();
    c.bytes_sent = j.at("bytes_sent").get<uint64_t>();
    c.packets_received = j.at("packets_received").get<uint64_t>();
    c.bytes_received = j.at("bytes_received").get<uint64_t>();
    c.age_ms = j.at("age_ms").get<uint64_t>();
    c.idle_ms = j.at("idle_ms").get<uint64_t>();
    c.suspended = j.value("suspended", false);
    c.pending = j.value("pending", false);
    return c;
  } catch (const json::exception& e) {
    throw NetFilterError(kErrorInvalidParameter, std::string("not a connection: ") + e.what());
  }
}

namespace {

std::string address_text(int family, const uint32_t* words) {
  uint32_t be[4];
  for (int w = 0; w < 4; ++w) be[w] = htonl(words[w]);
  char buf[INET6_ADDRSTRLEN] = "";
  inet_ntop(family, be, buf, sizeof buf);
  return buf;
}

}  // namespace

bool connection_event_of(const protocol::EventFrame& f, std::span<const uint8_t> data, ConnectionEventParams* out) {
  using K = channel::ConnectionEventKind;
  channel::ConnectionRecord r;
  if (f.type != protocol::kConnection || data.size() != sizeof r) return false;
  std::memcpy(&r, data.data(), sizeof r);
  if (r.event < uint8_t(K::TcpConnected) || r.event > uint8_t(K::TcpConnectRequest) || (r.protocol != 6 && r.protocol != 17) ||
      (r.ip_version != 4 && r.ip_version != 6))
    return false;
  ConnectionEventParams e;
  e.event = r.event;  // the kinds are numbered as kTcpConnected ... kUdpClosed
  e.rule_id = f.rule_id;
  e.timestamp = std::chrono::system_clock::time_point(std::chrono::nanoseconds(f.timestamp_ns));
  ConnectionInfo& c = e.connection;
  c.id = r.id;
  c.adapter_id = int(f.adapter);
  c.vm = r.vm;
  c.protocol = r.protocol;
  c.ip_family = r.ip_version == 6 ? AF_INET6 : AF_INET;
  c.local_address = address_text(c.ip_family, r.local_ip);
  c.remote_address = address_text(c.ip_family, r.remote_ip);
  c.local_port = r.local_port;
  c.remote_port = r.remote_port;
  const bool vm_opened = f.direction == 0;  // the direction of the connection: who opened it
  c.direction = vm_opened ? kNfDirectionOut : kNfDirectionIn;
  c.state = r.event == uint8_t(K::TcpConnected)        ? "established"
            : r.event == uint8_t(K::UdpCreated)        ? "unreplied"
            : r.event == uint8_t(K::TcpConnectRequest) ? "syn_sent"
                                                       : "closed";
  const int sent = vm_opened ? 0 : 1;  // the record counts from the opener's side
  c.packets_sent = r.packets[sent];
  c.bytes_sent = r.bytes[sent];
  c.packets_received = r.packets[1 - sent];
  c.bytes_received = r.bytes[1 - sent];
  c.age_ms = r.age_ns / 1000000;
  if (r.event == uint8_t(K::TcpConnectRequest) && f.event_id) {  // pended: its SYN is held
    e.request_id = f.event_id;
    c.pending = true;
  }
  *out = std::move(e);
  return true;
}

static_assert(int(channel::ConnectionEventKind::TcpConnected) == kTcpConnected &&
              int(channel::ConnectionEventKind::TcpClosed) == kTcpClosed &&
              int(channel::ConnectionEventKind::UdpCreated) == kUdpCreated &&
              int(channel::ConnectionEventKind::UdpClosed) == kUdpClosed &&
              int(channel::ConnectionEventKind::TcpConnectRequest) == kTcpConnectRequest);

}  // namespace vpf
