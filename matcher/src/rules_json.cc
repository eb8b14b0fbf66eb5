// The JSON rules format.
#include "vpf/matcher/rules_json.h"

#include "vpf/matcher/bpf.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

namespace vpf::matcher {
namespace {

using nlohmann::json;

std::string where(size_t position, const json& j) {
  std::string s = "rule #" + std::to_string(position + 1);
  if (j.is_object() && j.contains("id") && j["id"].is_number_integer()) s += " (id " + j["id"].dump() + ")";
  return s;
}

struct Reader {
  const json& j;
  size_t position;

  [[noreturn]] void fail(const std::string& key, const std::string& why) const {
    throw RulesFileError(where(position, j) + ": field '" + key + "': " + why);
  }

  int64_t integer(const std::string& key, int64_t lo, int64_t hi) const {
    const json& v = j[key];
    if (!v.is_number_integer()) fail(key, "expected an integer, got " + v.dump());
    const int64_t x = v.get<int64_t>();
    if (x < lo || x > hi) fail(key, std::to_string(x) + " is outside " + std::to_string(lo) + ".." + std::to_string(hi));
    return x;
  }

  // Runs a value parser, turning its std::invalid_argument into this rule's error.
  template <class F>
  auto field(const std::string& key, F parse) const {
    try {
      return parse(j[key]);
    } catch (const std::invalid_argument& e) {
      fail(key, e.what());
    }
  }

  std::string text(const std::string& key) const {
    if (!j[key].is_string()) fail(key, "expected a string, got " + j[key].dump());
    return j[key].get<std::string>();
  }

  PortRange ports(const std::string& key) const {
    const json& v = j[key];
    auto port = [&](int64_t x) {
      if (x < 0 || x > 65535) fail(key, std::to_string(x) + " is not a port (0..65535)");
      return uint16_t(x);
    };
    if (v.is_number_integer()) {
      const int64_t x = v.get<int64_t>();
      if (x == 0) return PortRange{};  // NF_RULE: 0 = any
      return PortRange{port(x), port(x)};
    }
    if (v.is_array() && v.size() == 2 && v[0].is_number_integer() && v[1].is_number_integer())
      return PortRange{port(v[0].get<int64_t>()), port(v[1].get<int64_t>())};
    if (v.is_string()) {
      const std::string s = v.get<std::string>();
      const auto dash = s.find('-');
      try {
        size_t used = 0;
        if (dash == std::string::npos) {
          const int64_t x = std::stoll(s, &used);
          if (used != s.size()) throw std::invalid_argument(s);
          return PortRange{port(x), port(x)};
        }
        const std::string a = s.substr(0, dash), b = s.substr(dash + 1);
        const int64_t lo = std::stoll(a, &used);
        if (used != a.size()) throw std::invalid_argument(s);
        const int64_t hi = std::stoll(b, &used);
        if (used != b.size()) throw std::invalid_argument(s);
        return PortRange{port(lo), port(hi)};
      } catch (const std::logic_error&) {
        fail(key, "'" + s + "' is not a port or a range like 1000-2000");
      }
    }
    fail(key, "expected a port, \"lo-hi\" or [lo, hi], got " + v.dump());
  }
};

const std::set<std::string> kKeys = {"kind", "id", "adapter", "direction", "min_size", "max_size", "bpf",
                                     "action", "priority", "enabled", "protocol", "vm", "local_port",
                                     "remote_port", "ip_family", "local", "remote", "local_ip", "local_mask",
                                     "remote_ip", "remote_mask", "flags"};

uint8_t parse_protocol(const json& v) {
  if (v.is_number_integer()) {
    const int64_t p = v.get<int64_t>();
    if (p < 0 || p > 255) throw std::invalid_argument(std::to_string(p) + " is not an IP protocol number (0..255)");
    return uint8_t(p);
  }
  if (v.is_string()) {
    const std::string s = v.get<std::string>();
    if (s == "any") return 0;
    if (s == "icmp") return 1;
    if (s == "tcp") return 6;
    if (s == "udp") return 17;
    if (s == "icmp6" || s == "icmpv6") return 58;
    if (s == "sctp") return 132;
    if (s == "udplite") return 136;
    throw std::invalid_argument("'" + s + "' is not a protocol (any, tcp, udp, icmp, icmp6, sctp, udplite or a number)");
  }
  throw std::invalid_argument("expected a protocol name or number, got " + v.dump());
}

const char* protocol_name(uint8_t p) {
  switch (p) {
    case 1: return "icmp";
    case 6: return "tcp";
    case 17: return "udp";
    case 58: return "icmp6";
    case 132: return "sctp";
    case 136: return "udplite";
  }
  return nullptr;
}

struct FlagName {
  const char* name;
  uint32_t value;
};
constexpr FlagName kFlags[] = {
    {"allow", nf_flag::kAllow},       {"block", nf_flag::kBlock},
    {"filter", nf_flag::kFilter},     {"suspended", nf_flag::kSuspended},
    {"offline", nf_flag::kOffline},   {"indicate_connect_requests", nf_flag::kIndicateConnectRequests},
    {"disable_redirect_protection", nf_flag::kDisableRedirectProtection},
    {"pend_connect_request", nf_flag::kPendConnectRequest},
    {"filter_as_ip_packets", nf_flag::kFilterAsIpPackets},
    {"readonly", nf_flag::kReadonly}, {"control_flow", nf_flag::kControlFlow},
    {"redirect", nf_flag::kRedirect}, {"bypass_ip_packets", nf_flag::kBypassIpPackets},
};

uint32_t parse_flags(const json& v) {
  if (v.is_number_integer()) {
    const int64_t x = v.get<int64_t>();
    if (x < 0 || x > 0xffffffffLL) throw std::invalid_argument(std::to_string(x) + " is not a flag value");
    return uint32_t(x);
  }
  auto one = [](const std::string& s) -> uint32_t {
    for (const auto& f : kFlags)
      if (s == f.name) return f.value;
    throw std::invalid_argument("'" + s + "' is not a filtering flag");
  };
  if (v.is_string()) return one(v.get<std::string>());
  if (v.is_array()) {
    uint32_t out = 0;
    for (const auto& x : v) {
      if (!x.is_string()) throw std::invalid_argument("flag names must be strings, got " + x.dump());
      out |= one(x.get<std::string>());
    }
    return out;
  }
  throw std::invalid_argument("expected a flag number, name or list of names, got " + v.dump());
}

}  // namespace

Direction parse_direction(const json& v) {
  if (v.is_number_integer()) {
    const int64_t d = v.get<int64_t>();
    if (d >= 0 && d <= 2) return static_cast<Direction>(d);
    throw std::invalid_argument(std::to_string(d) + " is not 0 (outgoing), 1 (incoming) or 2 (any)");
  }
  if (v.is_string()) {
    const std::string s = v.get<std::string>();
    if (s == "outgoing" || s == "out") return Direction::Outgoing;
    if (s == "incoming" || s == "in") return Direction::Incoming;
    if (s == "any" || s == "both") return Direction::Any;
    throw std::invalid_argument("'" + s + "' is not a direction (outgoing, incoming, any)");
  }
  throw std::invalid_argument("expected a direction, got " + v.dump());
}

Action parse_action(const json& v) {
  if (v.is_number_integer()) {
    const int64_t a = v.get<int64_t>();
    if (a >= 0 && a <= 4) return static_cast<Action>(a);
    throw std::invalid_argument(std::to_string(a) + " is not 1 (drop), 2 (capture), 3 (notify) or 4 (count)");
  }
  if (v.is_string()) {
    const std::string s = v.get<std::string>();
    for (int a = 0; a <= 4; ++a)
      if (s == to_string(static_cast<Action>(a))) return static_cast<Action>(a);
    throw std::invalid_argument("'" + s + "' is not an action (drop, capture, notify, count)");
  }
  throw std::invalid_argument("expected an action, got " + v.dump());
}

Rule rule_from_json(const json& j, size_t position, Check check) {
  if (!j.is_object()) throw RulesFileError(where(position, j) + ": expected an object, got " + j.dump());
  Reader rd{j, position};
  for (const auto& [key, value] : j.items())
    if (!kKeys.count(key)) rd.fail(key, "unknown field");
  Rule r;
  if (j.contains("kind")) {
    const std::string k = rd.text("kind");
    const auto kind = rule_kind_from(k);
    if (!kind) rd.fail("kind", "'" + k + "' is not filter, passthrough or connection");
    r.kind = *kind;
  }
  if (!j.contains("id")) rd.fail("id", "missing");
  r.id = uint32_t(rd.integer("id", 0, 0xfffffffe));
  if (r.kind == RuleKind::Passthrough) r.action = Action::Pass;
  if (r.kind == RuleKind::Connection) r.action = Action::Pass;
  if (j.contains("adapter")) r.adapter = int32_t(rd.integer("adapter", -1, 0x7fffffff));
  if (j.contains("direction")) r.direction = rd.field("direction", parse_direction);
  if (j.contains("min_size")) r.min_size = int32_t(rd.integer("min_size", -1, 0x7fffffff));
  if (j.contains("max_size")) r.max_size = int32_t(rd.integer("max_size", -1, 0x7fffffff));
  if (j.contains("bpf")) {
    r.bpf = rd.text("bpf");
    if (check == Check::Compile && !r.bpf.empty()) {
      try {
        compile_bpf(r.bpf);
      } catch (const std::exception& e) {
        rd.fail("bpf", e.what());
      }
    }
  }
  if (j.contains("action")) {
    if (r.kind != RuleKind::Filter) rd.fail("action", "only filter rules take an action");
    r.action = rd.field("action", parse_action);
  }
  if (j.contains("priority")) r.priority = uint16_t(rd.integer("priority", 0, kMaxPriority));
  if (j.contains("enabled")) {
    if (!j["enabled"].is_boolean()) rd.fail("enabled", "expected true or false");
    r.enabled = j["enabled"].get<bool>();
  }
  if (j.contains("protocol")) r.protocol = rd.field("protocol", parse_protocol);
  if (j.contains("vm")) r.vm = uint32_t(rd.integer("vm", 0, 0xffffffff));
  if (j.contains("local_port")) r.local_port = rd.ports("local_port");
  if (j.contains("remote_port")) r.remote_port = rd.ports("remote_port");
  if (j.contains("flags")) r.nf_flags = rd.field("flags", parse_flags);
  // Addresses: "local"/"remote" as CIDR text, or NF_RULE style ip + mask.
  auto address = [&](const char* side, IpAddr* addr, IpAddr* mask) {
    const std::string cidr = side, ip = std::string(side) + "_ip", m = std::string(side) + "_mask";
    if (j.contains(cidr) && (j.contains(ip) || j.contains(m)))
      rd.fail(cidr, "give either '" + cidr + "' or '" + ip + "'/'" + m + "', not both");
    uint8_t fam = 0;
    try {
      if (j.contains(cidr)) {
        parse_prefix(rd.text(cidr), &fam, addr, mask);
      } else if (j.contains(ip)) {
        IpAddr dummy;
        parse_prefix(rd.text(ip), &fam, addr, &dummy);
        *mask = IpAddr{};
        if (j.contains(m)) {
          uint8_t mfam = 0;
          // A mask is written as an address: 255.255.0.0 or ffff:ffff::.
          parse_prefix(rd.text(m), &mfam, mask, &dummy);
          if (mfam != fam) rd.fail(m, "mask family differs from the address family");
          for (int w = 0; w < 4; ++w) addr->w[w] &= mask->w[w] | (mask->is_zero() ? ~0u : 0u);
        }
      } else if (j.contains(m)) {
        rd.fail(m, "a mask needs '" + ip + "'");
      }
    } catch (const std::invalid_argument& e) {
      rd.fail(j.contains(cidr) ? cidr : ip, e.what());
    }
    if (fam) {
      if (r.ip_family && r.ip_family != fam) rd.fail(cidr, "local and remote addresses are of different families");
      r.ip_family = fam;
    }
  };
  address("local", &r.local_ip, &r.local_mask);
  address("remote", &r.remote_ip, &r.remote_mask);
  if (j.contains("ip_family")) {
    const int64_t f = rd.integer("ip_family", 0, 6);
    if (f != 0 && f != 4 && f != 6) rd.fail("ip_family", std::to_string(f) + " is not 0, 4 or 6");
    if (r.ip_family && f != r.ip_family) rd.fail("ip_family", "does not match the addresses' family");
    r.ip_family = uint8_t(f);
  }
  try {
    validate_rule(r);
  } catch (const RuleError& e) {
    throw RulesFileError(where(position, j) + ": " + e.what());
  }
  return r;
}

std::vector<Rule> rules_from_json(const json& j, Check check) {
  const json* list = &j;
  if (j.is_object()) {
    if (!j.contains("rules")) throw RulesFileError("expected an array of rules or an object with \"rules\"");
    for (const auto& [key, value] : j.items())
      if (key != "rules") throw RulesFileError("unknown top-level field '" + key + "'");
    list = &j["rules"];
  }
  if (!list->is_array()) throw RulesFileError("\"rules\" must be an array");
  std::vector<Rule> out;
  std::set<std::pair<int, uint32_t>> ids;
  for (size_t i = 0; i < list->size(); ++i) {
    Rule r = rule_from_json((*list)[i], i, check);
    if (!ids.insert({int(r.kind), r.id}).second)
      throw RulesFileError(where(i, (*list)[i]) + ": field 'id': another " + to_string(r.kind) +
                           " rule in the file has id " + std::to_string(r.id));
    out.push_back(std::move(r));
  }
  return out;
}

std::vector<Rule> rules_from_text(const std::string& text, Check check) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {  // a syntax error, or a number out of range
    throw RulesFileError(std::string("not valid JSON: ") + e.what());
  }
  return rules_from_json(j, check);
}

std::vector<Rule> rules_from_file(const std::string& path, Check check) {
  std::ifstream in(path);
  if (!in) throw RulesFileError(path + ": cannot open: " + std::strerror(errno), true);
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    return rules_from_text(ss.str(), check);
  } catch (const RulesFileError& e) {
    throw RulesFileError(path + ": " + e.what());
  }
}

json rule_to_json(const Rule& r) {
  json j;
  j["kind"] = to_string(r.kind);
  j["id"] = r.id;
  if (r.adapter != kAllAdapters) j["adapter"] = r.adapter;
  if (r.direction != Direction::Any) j["direction"] = to_string(r.direction);
  if (r.min_size != kNoSizeLimit) j["min_size"] = r.min_size;
  if (r.max_size != kNoSizeLimit) j["max_size"] = r.max_size;
  if (!r.bpf.empty()) j["bpf"] = r.bpf;
  if (r.kind == RuleKind::Filter) j["action"] = to_string(r.action);
  if (r.priority) j["priority"] = r.priority;
  if (!r.enabled) j["enabled"] = false;
  if (r.protocol) {
    if (const char* n = protocol_name(r.protocol)) j["protocol"] = n;
    else j["protocol"] = r.protocol;
  }
  if (r.vm) j["vm"] = r.vm;
  auto ports = [](const PortRange& p) -> json {
    if (p.lo == p.hi) return p.lo;
    return std::to_string(p.lo) + "-" + std::to_string(p.hi);
  };
  if (!r.local_port.any()) j["local_port"] = ports(r.local_port);
  if (!r.remote_port.any()) j["remote_port"] = ports(r.remote_port);
  auto cidr = [&](const IpAddr& a, const IpAddr& m) -> std::string {
    int plen = 0;
    bool prefix = true;
    const int words = r.ip_family == 4 ? 1 : 4;
    if (m.is_zero()) return format_ip(r.ip_family, a);
    for (int w = 0; w < words; ++w) {
      const int ones = std::countl_one(m.w[w]);
      if (ones < 32 && (m.w[w] << ones) != 0) prefix = false;
      plen += ones;
      if (ones < 32) {
        for (int x = w + 1; x < words; ++x) prefix = prefix && m.w[x] == 0;
        break;
      }
    }
    if (!prefix) return "";
    return format_ip(r.ip_family, a) + "/" + std::to_string(plen);
  };
  auto side = [&](const char* name, const IpAddr& a, const IpAddr& m) {
    if (a.is_zero() && m.is_zero()) return;
    const std::string c = cidr(a, m);
    if (!c.empty()) {
      j[name] = c;
    } else {
      j[std::string(name) + "_ip"] = format_ip(r.ip_family, a);
      j[std::string(name) + "_mask"] = format_ip(r.ip_family, m);
    }
  };
  if (r.ip_family) {
    side("local", r.local_ip, r.local_mask);
    side("remote", r.remote_ip, r.remote_mask);
    if (!j.contains("local") && !j.contains("local_ip") && !j.contains("remote") && !j.contains("remote_ip"))
      j["ip_family"] = r.ip_family;
  }
  if (r.nf_flags) j["flags"] = r.nf_flags;
  return j;
}

json rules_to_json(const std::vector<Rule>& rules) {
  json arr = json::array();
  for (const auto& r : rules) arr.push_back(rule_to_json(r));
  return json{{"rules", arr}};
}

}  // namespace vpf::matcher
