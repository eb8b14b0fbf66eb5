// Rule validation and helpers.
#include "vpf/matcher/rule.h"

#include <arpa/inet.h>

#include <cstring>
#include <stdexcept>

namespace vpf::matcher {

namespace {
std::string describe(RuleKind kind, uint32_t id, const std::string& field, const std::string& why) {
  return std::string(to_string(kind)) + " rule " + std::to_string(id) + ": field '" + field +
         "': " + why;
}

bool mask_is_zero_outside_family(uint8_t family, const IpAddr& a) {
  return family != 4 || (a.w[1] | a.w[2] | a.w[3]) == 0;
}
}  // namespace

RuleError::RuleError(const Rule& rule, std::string field, const std::string& why)
    : RuleError(rule.kind, rule.id, std::move(field), why) {}

RuleError::RuleError(RuleKind kind, uint32_t id, std::string field, const std::string& why)
    : std::runtime_error(describe(kind, id, field, why)), field_(std::move(field)), kind_(kind), id_(id) {}

const char* to_string(RuleKind kind) {
  switch (kind) {
    case RuleKind::Passthrough: return "passthrough";
    case RuleKind::Filter: return "filter";
    case RuleKind::Connection: return "connection";
  }
  return "?";
}

std::optional<RuleKind> rule_kind_from(std::string_view name) {
  for (RuleKind k : {RuleKind::Passthrough, RuleKind::Filter, RuleKind::Connection})
    if (name == to_string(k)) return k;
  return std::nullopt;
}

const char* to_string(Action action) {
  switch (action) {
    case Action::Pass: return "pass";
    case Action::Drop: return "drop";
    case Action::Capture: return "capture";
    case Action::Notify: return "notify";
    case Action::Count: return "count";
  }
  return "?";
}

const char* to_string(Direction dir) {
  switch (dir) {
    case Direction::Outgoing: return "outgoing";
    case Direction::Incoming: return "incoming";
    case Direction::Any: return "any";
  }
  return "?";
}

Action effective_action(const Rule& r) {
  switch (r.kind) {
    case RuleKind::Passthrough:
      return Action::Pass;
    case RuleKind::Filter:
      return r.action;
    case RuleKind::Connection:
      break;
  }
  using namespace nf_flag;
  const uint32_t f = r.nf_flags;
  if (f & kOffline)
    throw RuleError(r, "flags",
                    "offline (8) emulates the server's side of a TCP connection inside the switch, which vportfilter "
                    "does not do (docs/connections.md, \"offline\"); redirect the connection to a local proxy instead");
  if (const uint32_t later = f & kConnectionLevel & ~kConnectionBuilt)
    throw RuleError(r, "flags",
                    "flag value " + std::to_string(later) +
                        " acts on connections in a way the datapath does not do yet (redirect, redirect protection, "
                        "control flow: docs/connections.md)");
  if ((f & kPendConnectRequest) && (f & kBlock) && !(f & kFilterAsIpPackets))
    throw RuleError(r, "flags",
                    "pend_connect_request with block: a blocked SYN opens no connection, so there is no request to "
                    "pend");
  const uint32_t known =
      kBlock | kFilter | kFilterAsIpPackets | kReadonly | kBypassIpPackets | kConnectionBuilt;
  if (f & ~known) throw RuleError(r, "flags", "unknown flag bits " + std::to_string(f & ~known));
  if (f & kFilterAsIpPackets) {
    // FILTER_AS_IP_PACKETS takes precedence over FILTER, as in the reference.
    if ((f & kBypassIpPackets) && (f & kBlock))
      throw RuleError(r, "flags", "BYPASS_IP_PACKETS and BLOCK contradict each other");
    if (f & kBypassIpPackets) return Action::Pass;
    if (f & kBlock) return Action::Drop;
    if (f & kReadonly) return Action::Notify;
    return Action::Capture;
  }
  if (f & kReadonly) throw RuleError(r, "flags", "READONLY is only valid with FILTER_AS_IP_PACKETS");
  if (f & kBypassIpPackets)
    throw RuleError(r, "flags", "BYPASS_IP_PACKETS is only valid with FILTER_AS_IP_PACKETS");
  if ((f & kBlock) && (f & kFilter))
    throw RuleError(r, "flags", "BLOCK and FILTER contradict each other");
  if (f & kBlock) return Action::Drop;
  if (f & kFilter) return Action::Capture;
  return Action::Pass;
}

void validate_rule(const Rule& r) {
  if (r.kind != RuleKind::Passthrough && r.kind != RuleKind::Filter && r.kind != RuleKind::Connection)
    throw RuleError(r, "kind", "must be passthrough, filter or connection");
  if (r.adapter < -1)
    throw RuleError(r, "adapter", std::to_string(r.adapter) + " is not an adapter id (>= 0) or -1 (all)");
  if (r.direction != Direction::Outgoing && r.direction != Direction::Incoming &&
      r.direction != Direction::Any)
    throw RuleError(r, "direction",
                    std::to_string(static_cast<int>(r.direction)) +
                        " is not 0 (outgoing), 1 (incoming) or 2 (any)");
  if (r.min_size < -1)
    throw RuleError(r, "min_size", std::to_string(r.min_size) + " is negative; use -1 for no lower limit");
  if (r.max_size < -1)
    throw RuleError(r, "max_size", std::to_string(r.max_size) + " is negative; use -1 for no upper limit");
  if (r.max_size == 0)
    throw RuleError(r, "max_size", "0 would match no packet; use -1 for no upper limit");
  if (r.min_size > 0 && r.max_size > 0 && r.min_size > r.max_size)
    throw RuleError(r, "max_size",
                    std::to_string(r.max_size) + " is below min_size " + std::to_string(r.min_size));
  if (r.kind == RuleKind::Filter && r.action == Action::Pass)
    throw RuleError(r, "action", "a filter rule drops (1), captures (2), notifies (3) or counts (4)");
  if (r.kind == RuleKind::Passthrough && r.action != Action::Pass && r.action != Action::Drop)
    throw RuleError(r, "action", "a passthrough rule takes no action (it always passes)");
  if (r.kind != RuleKind::Connection && r.nf_flags != 0)
    throw RuleError(r, "flags", "filtering flags belong to connection (NF_RULE) rules");
  if (r.local_port.lo > r.local_port.hi)
    throw RuleError(r, "local_port", "range " + std::to_string(r.local_port.lo) + "-" +
                                         std::to_string(r.local_port.hi) + " is empty");
  if (r.remote_port.lo > r.remote_port.hi)
    throw RuleError(r, "remote_port", "range " + std::to_string(r.remote_port.lo) + "-" +
                                          std::to_string(r.remote_port.hi) + " is empty");
  const bool ports = !r.local_port.any() || !r.remote_port.any();
  if (ports && r.protocol != 0 && r.protocol != 6 && r.protocol != 17 && r.protocol != 132 &&
      r.protocol != 136)
    throw RuleError(r, "protocol",
                    "ports are given but protocol " + std::to_string(r.protocol) +
                        " has none (use 6 tcp, 17 udp, 132 sctp, 136 udplite or 0)");
  if (r.ip_family != 0 && r.ip_family != 4 && r.ip_family != 6)
    throw RuleError(r, "ip_family", std::to_string(r.ip_family) + " is not 0, 4 or 6");
  if (r.ip_family == 0 && !(r.local_ip.is_zero() && r.remote_ip.is_zero() &&
                            r.local_mask.is_zero() && r.remote_mask.is_zero()))
    throw RuleError(r, "ip_family", "addresses are given but ip_family is 0 (they would be ignored)");
  for (auto [name, a] : {std::pair{"local_ip", &r.local_ip}, std::pair{"local_mask", &r.local_mask},
                         std::pair{"remote_ip", &r.remote_ip},
                         std::pair{"remote_mask", &r.remote_mask}}) {
    if (!mask_is_zero_outside_family(r.ip_family, *a))
      throw RuleError(r, name, "an IPv4 value uses words that only IPv6 has");
  }
  if (r.kind == RuleKind::Connection) effective_action(r);  // throws on refused flags
}

void parse_prefix(const std::string& text, uint8_t* family, IpAddr* addr, IpAddr* mask) {
  std::string host = text;
  int plen = -1;
  if (auto slash = text.find('/'); slash != std::string::npos) {
    host = text.substr(0, slash);
    const std::string len = text.substr(slash + 1);
    if (len.empty() || len.size() > 3 || len.find_first_not_of("0123456789") != std::string::npos)
      throw std::invalid_argument("'" + text + "': prefix length '" + len + "' is not a number");
    plen = std::stoi(len);
  }
  *addr = IpAddr{};
  *mask = IpAddr{};
  unsigned char buf[16];
  if (inet_pton(AF_INET, host.c_str(), buf) == 1) {
    *family = 4;
    if (plen > 32) throw std::invalid_argument("'" + text + "': IPv4 prefix length above 32");
    addr->w[0] = uint32_t(buf[0]) << 24 | uint32_t(buf[1]) << 16 | uint32_t(buf[2]) << 8 | buf[3];
    const int l = plen < 0 ? 32 : plen;
    mask->w[0] = l == 0 ? 0 : ~uint32_t(0) << (32 - l);
  } else if (inet_pton(AF_INET6, host.c_str(), buf) == 1) {
    *family = 6;
    if (plen > 128) throw std::invalid_argument("'" + text + "': IPv6 prefix length above 128");
    const int l = plen < 0 ? 128 : plen;
    for (int w = 0; w < 4; ++w) {
      addr->w[w] = uint32_t(buf[4 * w]) << 24 | uint32_t(buf[4 * w + 1]) << 16 |
                   uint32_t(buf[4 * w + 2]) << 8 | buf[4 * w + 3];
      const int bits = l - 32 * w;
      mask->w[w] = bits >= 32 ? ~uint32_t(0) : bits <= 0 ? 0 : ~uint32_t(0) << (32 - bits);
    }
  } else {
    throw std::invalid_argument("'" + text + "' is not an IPv4 or IPv6 address");
  }
  if (plen == 0) {
    // "0.0.0.0/0" means any address: leave both zero.
    *addr = IpAddr{};
  }
  for (int w = 0; w < 4; ++w)
    if (addr->w[w] & ~mask->w[w])
      throw std::invalid_argument("'" + text + "': address has bits set outside the prefix");
}

std::string format_ip(uint8_t family, const IpAddr& a) {
  char out[INET6_ADDRSTRLEN] = {0};
  unsigned char buf[16];
  if (family == 4) {
    for (int i = 0; i < 4; ++i) buf[i] = uint8_t(a.w[0] >> (24 - 8 * i));
    inet_ntop(AF_INET, buf, out, sizeof out);
  } else {
    for (int w = 0; w < 4; ++w)
      for (int i = 0; i < 4; ++i) buf[4 * w + i] = uint8_t(a.w[w] >> (24 - 8 * i));
    inet_ntop(AF_INET6, buf, out, sizeof out);
  }
  return out;
}

}  // namespace vpf::matcher
