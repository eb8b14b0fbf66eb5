// The linear reference classifier: every rule in order, evaluated field by field.
#include <algorithm>

#include "vpf/matcher/classifier.h"
#include "vpf/matcher/parser.h"

namespace vpf::matcher {
namespace {

bool address_matches(const PacketKey& k, int first_field, uint8_t family, const IpAddr& addr, const IpAddr& mask) {
  if (addr.is_zero() && mask.is_zero()) return true;
  const int words = family == 4 ? 1 : 4;
  for (int w = 0; w < words; ++w) {
    const uint32_t m = mask.is_zero() ? ~0u : mask.w[w];
    if ((k.f[first_field + w] & m) != (addr.w[w] & m)) return false;
  }
  return true;
}

bool port_matches(uint32_t port, const PortRange& r) { return r.any() || (port >= r.lo && port <= r.hi); }

}  // namespace

bool rule_matches(const Rule& r, const std::vector<bpf_insn>& prog, const uint8_t* data, uint32_t len,
                  const PacketKey& k) {
  if (!r.enabled) return false;
  if (r.adapter >= 0 && k.f[F_ADAPTER] != uint32_t(r.adapter)) return false;
  const auto dir = static_cast<Direction>(k.f[F_DIRECTION]);
  if (r.direction != Direction::Any && dir != r.direction) return false;
  if (r.min_size > 0 && len < uint32_t(r.min_size)) return false;
  if (r.max_size > 0 && len > uint32_t(r.max_size)) return false;
  if (r.vm && k.f[F_VM] != r.vm) return false;
  if (r.protocol && k.f[F_IP_PROTO] != r.protocol) return false;
  if (r.ip_family && k.f[F_IP_VER] != r.ip_family) return false;
  const bool outgoing = dir == Direction::Outgoing;
  if (!r.local_port.any() || !r.remote_port.any()) {
    if (!(k.f[F_PARSE_FLAGS] & PARSE_PORTS)) return false;
    const uint32_t local = outgoing ? k.f[F_SRC_PORT] : k.f[F_DST_PORT];
    const uint32_t remote = outgoing ? k.f[F_DST_PORT] : k.f[F_SRC_PORT];
    if (!port_matches(local, r.local_port) || !port_matches(remote, r.remote_port)) return false;
  }
  if (r.ip_family) {
    if (!address_matches(k, outgoing ? F_SRC_IP0 : F_DST_IP0, r.ip_family, r.local_ip, r.local_mask)) return false;
    if (!address_matches(k, outgoing ? F_DST_IP0 : F_SRC_IP0, r.ip_family, r.remote_ip, r.remote_mask)) return false;
  }
  if (!prog.empty() && bpf_interpret(prog, data, len, len) == 0) return false;
  return true;
}

void LinearClassifier::add(const Rule& rule, Placement where) {
  validate_rule(rule);
  for (const auto& c : rules_)
    if (c.rule.kind == rule.kind && c.rule.id == rule.id)
      throw RuleError(rule, "id", "a rule with this id exists already");
  Compiled c{rule, effective_action(rule), {}};
  if (!rule.bpf.empty()) {
    try {
      c.prog = compile_bpf(rule.bpf);
    } catch (const BpfError& e) {
      throw RuleError(rule, "bpf", e.what());
    }
  }
  // Evaluation order: passthrough group first, then priority (higher first), then
  // insertion order (head placement goes before its equals).
  auto before = [](const Rule& a, const Rule& b) {
    const int ga = a.kind == RuleKind::Passthrough ? 0 : 1, gb = b.kind == RuleKind::Passthrough ? 0 : 1;
    if (ga != gb) return ga < gb;
    return a.priority > b.priority;
  };
  auto pos = where == Placement::Tail
                 ? std::find_if(rules_.begin(), rules_.end(), [&](const Compiled& x) { return before(rule, x.rule); })
                 : std::find_if(rules_.begin(), rules_.end(), [&](const Compiled& x) { return !before(x.rule, rule); });
  rules_.insert(pos, std::move(c));
}

void LinearClassifier::add(const Rule& rule, RuleRef before) {
  auto at = [&] {
    return std::find_if(rules_.begin(), rules_.end(),
                        [&](const Compiled& c) { return c.rule.kind == before.kind && c.rule.id == before.id; });
  };
  if (at() == rules_.end()) throw RuleError(rule, "before", "no such rule");
  add(rule, Placement::Tail);
  auto it = std::find_if(rules_.begin(), rules_.end(),
                         [&](const Compiled& c) { return c.rule.kind == rule.kind && c.rule.id == rule.id; });
  Compiled c = std::move(*it);
  rules_.erase(it);
  rules_.insert(at(), std::move(c));
}

std::vector<RuleRef> LinearClassifier::order() const {
  std::vector<RuleRef> out;
  for (const auto& c : rules_) out.push_back({c.rule.kind, c.rule.id});
  return out;
}

bool LinearClassifier::remove(RuleRef ref) {
  auto it = std::find_if(rules_.begin(), rules_.end(),
                         [&](const Compiled& c) { return c.rule.kind == ref.kind && c.rule.id == ref.id; });
  if (it == rules_.end()) return false;
  rules_.erase(it);
  return true;
}

Decision LinearClassifier::classify(const uint8_t* data, uint32_t len, const PacketMeta& meta) const {
  PacketKey k;
  parse_frame(data, len, meta, &k);
  for (const auto& c : rules_)
    if (rule_matches(c.rule, c.prog, data, len, k)) return Decision{c.rule.id, c.rule.kind, c.action};
  return Decision{};
}

}  // namespace vpf::matcher
