// vportfilter's plugin: its connection tracking seen from the outside — the listing, the
// state the application sets, the statistics, and the rules' flags that act on connections
// (the datapath's side is Plugin::BatchRun::govern in plugin.cc; the table conn_tracking.h).
#include <algorithm>

#include "plugin.h"

namespace vpf::plugin {

using channel::VerdictAction;
using nlohmann::json;

std::string Plugin::conn_list(bool* ok) const {
  *ok = conns_size_ != 0;
  if (!*ok) return "connection tracking is off (plugin argument conns=0)";
  const ConnTracking* ct = conns_.load(std::memory_order_acquire);
  return ct ? ct->list() : "";
}

json Plugin::connections(const json& params) const {
  if (!params.is_object()) throw std::invalid_argument("connections takes {\"adapter\"?: N, \"id\"?: N}");
  int64_t adapter = -1;
  uint64_t id = 0;
  if (params.contains("adapter")) {
    if (!params["adapter"].is_number_integer() || params["adapter"].get<int64_t>() < 0 ||
        params["adapter"].get<int64_t>() > INT32_MAX)
      throw std::invalid_argument("'adapter' is an adapter id (0 or more): " + params["adapter"].dump());
    adapter = params["adapter"].get<int64_t>();
  }
  if (params.contains("id")) {
    if (!params["id"].is_number_unsigned() || params["id"].get<uint64_t>() == 0)
      throw std::invalid_argument("'id' is a connection id (1 or more): " + params["id"].dump());
    id = params["id"].get<uint64_t>();
  }
  const ConnTracking* ct = conns_.load(std::memory_order_acquire);
  if (!ct) return {{"tracking", conns_size_ != 0}, {"connections", json::array()}};
  std::vector<uint64_t> pending;
  for (const auto& r : rings_) r.holds->pending_requests(&pending);
  std::sort(pending.begin(), pending.end());
  return {{"tracking", conns_size_ != 0}, {"connections", ct->list_json(adapter, id, mono_ns(), pending)}};
}

void Plugin::update_conn_flags(const std::vector<matcher::RuleRef>& removes, const std::vector<matcher::RuleAdd>& adds) {
  const auto conn = [](matcher::RuleKind k) { return k == matcher::RuleKind::Connection; };
  const bool touched = std::any_of(removes.begin(), removes.end(), [&](const auto& r) { return conn(r.kind); }) ||
                       std::any_of(adds.begin(), adds.end(), [&](const auto& a) { return conn(a.rule.kind); });
  if (!touched) return;
  const auto cur = conn_flags_.load();
  ConnFlags flags = cur ? *cur : ConnFlags{};
  std::erase_if(flags, [&](const auto& f) {
    return std::find(removes.begin(), removes.end(), matcher::RuleRef{matcher::RuleKind::Connection, f.first}) !=
           removes.end();
  });
  for (const auto& a : adds)
    if (conn(a.rule.kind) && (a.rule.nf_flags & kConnActing)) flags.emplace_back(a.rule.id, a.rule.nf_flags & kConnActing);
  std::sort(flags.begin(), flags.end());
  const bool any = !flags.empty();
  conn_flags_.store(any ? std::make_shared<const ConnFlags>(std::move(flags)) : nullptr);
  conn_flags_any_.store(any, std::memory_order_release);
}

uint32_t Plugin::conn_flags_of(const ConnFlags& f, uint32_t rule_id) {
  const auto it = std::lower_bound(f.begin(), f.end(), std::make_pair(rule_id, uint32_t(0)));
  return it != f.end() && it->first == rule_id ? it->second : 0;
}

json Plugin::set_connection_state(const json& params) {
  if (!params.is_object() || !params.contains("id") || !params["id"].is_number_unsigned() || params["id"].get<uint64_t>() == 0 ||
      !params.contains("suspended") || !params["suspended"].is_boolean())
    throw std::invalid_argument("set_connection_state takes {\"id\": N (1 or more), \"suspended\": true|false}");
  ConnTracking* ct = conns_.load(std::memory_order_acquire);
  return {{"found", ct && ct->set_suspended(params["id"].get<uint64_t>(), params["suspended"].get<bool>())}};
}

json Plugin::complete_connect_request(const json& params) {
  if (!params.is_object() || !params.contains("id") || !params["id"].is_number_unsigned() || params["id"].get<uint64_t>() == 0 ||
      !params.contains("allow") || !params["allow"].is_boolean())
    throw std::invalid_argument("complete_connect_request takes {\"id\": N (1 or more), \"allow\": true|false}");
  const uint64_t id = params["id"].get<uint64_t>();
  const VerdictAction action = params["allow"].get<bool>() ? VerdictAction::Send : VerdictAction::Drop;
  bool found = false;
  for (auto& r : rings_)
    r.holds->claim_request(id, [&](HoldSlot& s) {
      finish_hold(s, action, nullptr, 0);
      r.holds->release(&s);
      found = true;
    });
  if (found) cc_.verdicts.fetch_add(1, std::memory_order_relaxed);
  return {{"found", found}};
}

json Plugin::conn_stats() const {
  if (!conns_size_) return nullptr;
  if (const ConnTracking* ct = conns_.load(std::memory_order_acquire)) return ct->stats();
  return ConnTracking::idle_stats(conn_limits_);  // no connection rule has been in force yet
}

}  // namespace vpf::plugin
