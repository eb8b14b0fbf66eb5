// vportfilter matcher: the rule model.
//
// One internal rule model serves both API shapes of the product:
//  * NetFilter filter and passthrough rules: id, adapter (-1 = all), direction, packet size
//    range, optional BPF expression (libpcap's language), action;
//  * NF_RULE-shaped connection rules: protocol, VM, direction, local/remote port (or port
//    range), IP family, local/remote address with mask, filtering flag.
// Every rule may use every field: a filter rule can carry a 5-tuple, an NF_RULE-shaped
// rule a BPF expression.  "Local" is always the VM's side of the packet and "remote" the
// peer: for an outgoing packet local = source, for an incoming packet local = destination.
//
// Order of evaluation for one packet (the same everywhere in the product):
//   1. passthrough rules; the first that matches passes the packet, with no event;
//   2. filter and connection rules together; the first that matches decides;
//   3. no match: the packet passes.
// Within each group, a higher `priority` goes first; equal priorities go in insertion
// order (a rule added "at the head" goes before every rule already there).  The default
// priority is 0, so by default rules are evaluated in the order they were added.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include "vpf/matcher/packet_key.h"

namespace vpf::matcher {

enum class RuleKind : uint8_t {
  Passthrough = 0,  // NetFilter passthrough rule: a match passes the packet
  Filter = 1,       // NetFilter filter rule: drop, capture or notify
  Connection = 2,   // NF_RULE-shaped rule: action from the filtering flag
};

enum class Action : uint8_t {
  Pass = 0,
  Drop = 1,     // RULE_ACTION_DROP
  Capture = 2,  // RULE_ACTION_CAPTURE: held for a synchronous verdict
  Notify = 3,   // RULE_ACTION_NOTIFY: an asynchronous copy, the packet passes
  Count = 4,    // (extension) the packet passes, counted as the filter's: rule hits and
                // filter-specific statistics; a capture/notify rule of an instance in
                // statistics mode acts so
};

// NF_RULE filtering flags (values of the reference structure).
namespace nf_flag {
inline constexpr uint32_t kAllow = 0;
inline constexpr uint32_t kBlock = 1;
inline constexpr uint32_t kFilter = 2;
inline constexpr uint32_t kSuspended = 4;
inline constexpr uint32_t kOffline = 8;
inline constexpr uint32_t kIndicateConnectRequests = 16;
inline constexpr uint32_t kDisableRedirectProtection = 32;
inline constexpr uint32_t kPendConnectRequest = 64;
inline constexpr uint32_t kFilterAsIpPackets = 128;
inline constexpr uint32_t kReadonly = 256;
inline constexpr uint32_t kControlFlow = 512;
inline constexpr uint32_t kRedirect = 1024;
inline constexpr uint32_t kBypassIpPackets = 2048;
// Flags that act on connections, not packets, and those of them the datapath does (the
// rest are refused: docs/connections.md).
inline constexpr uint32_t kConnectionLevel = kSuspended | kOffline | kIndicateConnectRequests |
                                             kDisableRedirectProtection | kPendConnectRequest |
                                             kControlFlow | kRedirect;
inline constexpr uint32_t kConnectionBuilt = kSuspended | kIndicateConnectRequests | kPendConnectRequest;
}  // namespace nf_flag

// An IPv4 or IPv6 address as four host-order words (IPv4 in word 0), see packet_key.h.
struct IpAddr {
  std::array<uint32_t, 4> w{};
  bool is_zero() const { return (w[0] | w[1] | w[2] | w[3]) == 0; }
  friend bool operator==(const IpAddr&, const IpAddr&) = default;
};

// Inclusive port range; {0, 65535} (the default) means any port.
struct PortRange {
  uint16_t lo = 0;
  uint16_t hi = 65535;
  bool any() const { return lo == 0 && hi == 65535; }
  friend bool operator==(const PortRange&, const PortRange&) = default;
};

inline constexpr int32_t kAllAdapters = -1;
inline constexpr int32_t kNoSizeLimit = -1;
inline constexpr uint16_t kMaxPriority = 65535;

struct Rule {
  RuleKind kind = RuleKind::Filter;
  uint32_t id = 0;                     // application-chosen; unique within its kind
  int32_t adapter = kAllAdapters;      // adapter id, or -1 for every adapter
  Direction direction = Direction::Any;
  int32_t min_size = kNoSizeLimit;     // frame bytes; -1 = no lower limit
  int32_t max_size = kNoSizeLimit;     // frame bytes; -1 = no upper limit
  std::string bpf;                     // libpcap filter expression; empty = none
  Action action = Action::Drop;        // Filter: Drop/Capture/Notify. Passthrough: Pass.
  uint16_t priority = 0;               // higher goes first; ties keep insertion order
  bool enabled = true;                 // a disabled rule is kept but never matches

  // 5-tuple part (NF_RULE).  Zero / any means "not part of the rule".
  uint8_t protocol = 0;                // IP protocol number, 0 = any
  uint32_t vm = 0;                     // VM id (NF_RULE processId), 0 = any
  PortRange local_port;
  PortRange remote_port;
  uint8_t ip_family = 0;               // 0 (addresses unused), 4 or 6
  IpAddr local_ip, local_mask;         // address; mask all-zero = exact address
  IpAddr remote_ip, remote_mask;
  uint32_t nf_flags = 0;               // Connection rules: NF_RULE filteringFlag

  friend bool operator==(const Rule&, const Rule&) = default;
};

// Thrown when a rule is refused.  what() names the rule, the field and the reason, e.g.
// "filter rule 7: field 'bpf': syntax error in filter expression: ...".
class RuleError : public std::runtime_error {
 public:
  RuleError(const Rule& rule, std::string field, const std::string& why);
  RuleError(RuleKind kind, uint32_t id, std::string field, const std::string& why);
  const std::string& field() const { return field_; }
  RuleKind kind() const { return kind_; }
  uint32_t rule_id() const { return id_; }

 private:
  std::string field_;
  RuleKind kind_;
  uint32_t id_;
};

const char* to_string(RuleKind kind);    // "passthrough", "filter", "connection"
std::optional<RuleKind> rule_kind_from(std::string_view name);  // to_string's inverse
const char* to_string(Action action);    // "pass", "drop", "capture", "notify"
const char* to_string(Direction dir);    // "outgoing", "incoming", "any"

// The action a rule takes when it decides: the filter action, Pass for passthrough
// rules, or the NF_RULE filtering flag's meaning for connection rules.
// Throws RuleError if the flags are refused.
Action effective_action(const Rule& rule);

// Checks every field; throws RuleError for the first problem.  Does not compile the BPF
// expression (compile_rule() does that).
void validate_rule(const Rule& rule);

// Parses "10.0.0.0/8", "2001:db8::/32", "10.1.2.3" (mask = exact) into address and mask.
// Throws std::invalid_argument naming the text.
void parse_prefix(const std::string& text, uint8_t* family, IpAddr* addr, IpAddr* mask);
std::string format_ip(uint8_t family, const IpAddr& addr);

}  // namespace vpf::matcher
