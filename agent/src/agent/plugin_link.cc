// vpf-agent: the plugin (see plugin_link.h).
#include "plugin_link.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>

#include "agent_common.h"
#include "client_api.h"
#include "event_router.h"
#include "policy_store.h"
#include "vpf/matcher/rules_json.h"

namespace vpf::agent {

using nlohmann::json;

PluginLink::PluginLink(Agent& a) : a_(a), plugin_timer_(a.io()) {}

PluginLink::~PluginLink() = default;  // Agent detaches first, while the other parts are there

void PluginLink::start() { try_plugin(); }

void PluginLink::try_plugin() {
  if (plugin_) {
    // Still there?  A closed control socket reads as EOF.
    pollfd p{plugin_->socket_fd(), POLLIN, 0};
    if (::poll(&p, 1, 0) > 0 && (p.revents & (POLLIN | POLLHUP | POLLERR))) {
      char c;
      if (::recv(plugin_->socket_fd(), &c, 1, MSG_PEEK | MSG_DONTWAIT) <= 0) detach_plugin("the plugin went away");
    }
  }
  if (!plugin_ && ::access(a_.options().plugin_socket.c_str(), F_OK) == 0) attach_plugin();
  plugin_timer_.expires_after(std::chrono::seconds(1));
  plugin_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec) try_plugin();
  });
}

void PluginLink::attach_plugin() {
  try {
    plugin_ = std::make_shared<channel::ChannelClient>(a_.options().plugin_socket);
  } catch (const std::exception& e) {
    log(std::string("cannot attach to the plugin: ") + e.what());
    return;
  }
  log("attached to the plugin at " + a_.options().plugin_socket);
  last_adapters_pushed_ = last_config_pushed_ = nullptr;
  rules_synced_ = false;
  push_adapters();
  push_rules();
  push_config();
  if (plugin_) a_.events().plugin_attached(plugin_);
}

void PluginLink::detach_plugin(const std::string& why) {
  a_.events().plugin_detached();
  if (!plugin_) return;
  if (!why.empty()) log(why);
  plugin_.reset();
}

void PluginLink::push_adapters() {
  json list = json::array();
  for (const auto& [key, a] : a_.store().adapters())
    if (a.id >= 0) list.push_back({{"port", a.name}, {"adapter", a.id}, {"vm", a.vm}, {"snaplen", a.max_packet_bytes()}});
  push("set_adapters", {{"adapters", list}}, last_adapters_pushed_, "adapters");
}

void PluginLink::push(const char* method, const json& params, json& last, const char* what) {
  if (!plugin_ || params == last) return;
  try {
    plugin_->call(method, params);
    last = params;
  } catch (const channel::RpcError& e) {
    log(std::string("the plugin refused the ") + what + ": " + e.what());
  } catch (const std::exception& e) {
    detach_plugin(std::string(method) + ": " + e.what());
  }
}

void PluginLink::forget_row(const std::string& uuid, bool retire) {
  const auto it = row_entries_.find(uuid);
  if (it == row_entries_.end()) return;
  const RowEntry& e = it->second;
  const auto id = std::make_tuple(e.instance, e.kind, e.rule_id);
  auto& rows = rows_by_id_[id];
  rows.erase(uuid);
  if (rows.empty()) {
    rows_by_id_.erase(id);
    if (const auto k = matcher::rule_kind_from(e.kind); k && retire) a_.events().retire_id({e.instance, int(*k), e.rule_id});
  }
  auto& pos = positions_[{e.instance, e.kind}];
  pos.erase(pos.find(e.position));
  if (pos.empty()) positions_.erase({e.instance, e.kind});
  if (e.place) {
    wanted_[e.place->first].erase(e.place->second);
    dirty_.insert(*e.place);
  }
  if (retire) checked_.erase(e.text);
  row_entries_.erase(it);
}

std::optional<PluginLink::Place> PluginLink::want_rule(const std::string& instance, const std::string& kind, uint32_t rule_id,
                                             int64_t position, json spec, std::string* text, const matcher::Rule* checked) {
  const auto inst = a_.store().instances().find(instance);
  if (inst == a_.store().instances().end() || !inst->second.active || !matcher::rule_kind_from(kind)) return std::nullopt;
  const int64_t prio = spec.contains("priority") && spec["priority"].is_number_integer() ? spec["priority"].get<int64_t>() : 0;
  spec["kind"] = kind;
  spec["id"] = rule_id;
  // A row written by another client may be wrong: report it, skip it (each distinct text
  // is parsed and checked once).
  *text = spec.dump();
  auto it = checked_.find(*text);
  if (it == checked_.end()) {
    Checked c;
    try {
      c.rule = checked ? *checked : matcher::rule_from_json(spec, 0, matcher::Check::Compile);
    } catch (const std::exception& ex) {
      c.error = ex.what();
      log("rule row " + kind + " " + std::to_string(rule_id) + " of instance " + instance + " ignored: " + c.error);
    }
    it = checked_.emplace(*text, std::move(c)).first;
  }
  if (!it->second.error.empty()) return std::nullopt;
  const matcher::Rule& rule = it->second.rule;
  // An instance whose client runs in statistics mode reports no packets: its capture and
  // notify rules only count what they match (filter-specific statistics).
  const Session* owner = a_.api().owner_of(instance);
  if (owner && owner->stat_mode && rule.kind == matcher::RuleKind::Filter &&
      (rule.action == matcher::Action::Capture || rule.action == matcher::Action::Notify))
    spec["action"] = "count";
  // Rule ids become the plugin's own (unique across instances); the order is the plugin's
  // placement, so priorities are folded into it.
  const uint32_t pid = a_.events().internal_id(instance, rule.kind, rule.id);
  spec["id"] = pid;
  spec.erase("priority");
  const Place place{rule.kind == matcher::RuleKind::Passthrough ? 0 : 1,
                    OrderKey{-inst->second.altitude, instance, kind, -prio, position, rule_id}};
  json route = nullptr;  // events of capture and notify rules may go straight to the instance's client
  const bool events = rule.action == matcher::Action::Capture || rule.action == matcher::Action::Notify;
  if (events && !(owner && owner->stat_mode))
    if (const uint16_t slot = a_.events().route_slot(instance)) route = {{"client", slot}, {"rule_id", rule.id}};
  wanted_[place.first][place.second] = PluginRule{rule.kind, pid, spec.dump(), route};
  dirty_.insert(place);
  return place;
}

void PluginLink::learn_row(const std::string& uuid) {
  const auto r = a_.store().rule_rows().find(uuid);
  if (r == a_.store().rule_rows().end()) return;
  const json& row = r->second;
  RowEntry e{str(row, "instance"), str(row, "kind"), uint32_t(num(row, "rule_id")), num(row, "position"), std::nullopt, ""};
  // (instance, kind, id) names one row: a second row with them (written by another client)
  // stays out of the plugin.
  auto& rows = rows_by_id_[std::make_tuple(e.instance, e.kind, e.rule_id)];
  rows.insert(uuid);
  const bool duplicate = rows.size() > 1;
  positions_[{e.instance, e.kind}].insert(e.position);
  if (duplicate) {
    log("rule row " + e.kind + " " + std::to_string(e.rule_id) + " of instance " + e.instance +
        " ignored: another row has the same kind and id");
  } else {
    json spec = json::parse(str(row, "spec"), nullptr, false);
    e.place = want_rule(e.instance, e.kind, e.rule_id, e.position, spec.is_object() ? spec : json::object(), &e.text);
    if (e.place) provisional_.erase(*e.place);  // add_rule's guess, now the row's
  }
  row_entries_[uuid] = std::move(e);
}

void PluginLink::drop_provisional(const std::string& instance, const std::string& kind, uint32_t rule_id) {
  bool dropped = false;
  for (auto it = provisional_.begin(); it != provisional_.end();) {
    if (names(*it, instance, kind, rule_id)) {
      wanted_[it->first].erase(it->second);
      dirty_.insert(*it);
      it = provisional_.erase(it);
      dropped = true;
    } else {
      ++it;
    }
  }
  if (!dropped) return;
  if (const auto k = matcher::rule_kind_from(kind); k && !rows_by_id_.count({instance, kind, rule_id})) a_.events().retire_id({instance, int(*k), rule_id});
  send_rule_changes();
}

void PluginLink::push_rule_rows(const json& changed) {
  for (const auto& [uuid, change] : changed.items()) {
    forget_row(uuid, true);
    learn_row(uuid);
  }
  send_rule_changes();
}

void PluginLink::push_rules() {
  // Every row again (instances' order and activity, owners' modes): the plugin's ids stay
  // for rows that are still there.
  std::vector<std::string> uuids;
  for (const auto& [u, e] : row_entries_) uuids.push_back(u);
  for (const auto& u : uuids) forget_row(u, false);
  for (const auto& [u, row] : a_.store().rule_rows()) learn_row(u);
  std::set<std::tuple<std::string, int, uint32_t>> gone;
  for (const auto& [id, internal] : a_.events().internal_ids()) {
    const auto& [inst, kind, rule_id] = id;
    if (!rows_by_id_.count({inst, matcher::to_string(matcher::RuleKind(kind)), rule_id})) gone.insert(id);
  }
  for (const auto& id : gone) a_.events().retire_id(id);
  for (int g = 0; g < 2; ++g)
    for (const auto& [k, r] : pushed_[g]) dirty_.insert({g, k});
  send_rule_changes();
}

void PluginLink::send_rule_changes() {
  a_.events().purge_retired();
  if (!plugin_) return;  // attach_plugin sends the whole set
  auto ref = [](const PluginRule& r) { return json{{"kind", matcher::to_string(r.kind)}, {"id", r.id}}; };
  try {
    if (!rules_synced_) {
      json all = json::array(), routes = json::array();
      for (int g = 0; g < 2; ++g)
        for (const auto& [k, r] : wanted_[g]) {
          all.push_back(json::parse(r.text));
          if (!r.route.is_null()) {
            json e = r.route;
            e["kind"] = matcher::to_string(r.kind);
            e["id"] = r.id;
            routes.push_back(std::move(e));
          }
        }
      plugin_->call("set_rules", {{"rules", all}, {"routes", routes}});
      pushed_[0] = wanted_[0];
      pushed_[1] = wanted_[1];
      rules_synced_ = true;
      dirty_.clear();
      return;
    }
    json removes = json::array(), adds = json::array();
    std::set<Place> adding;
    // Adds from the last place back, each before its successor in wanted_ that the plugin
    // holds already or that this change adds earlier.
    for (auto d = dirty_.rbegin(); d != dirty_.rend(); ++d) {
      const auto& [g, k] = *d;
      const auto p = pushed_[g].find(k);
      const auto w = wanted_[g].find(k);
      const bool same = p != pushed_[g].end() && w != wanted_[g].end() && p->second.text == w->second.text;
      if (same) continue;
      if (p != pushed_[g].end()) removes.push_back(ref(p->second));
      if (w == wanted_[g].end()) continue;
      json before = nullptr;
      for (auto n = std::next(w); n != wanted_[g].end(); ++n) {
        const auto np = pushed_[g].find(n->first);
        if (adding.count({g, n->first}) || (np != pushed_[g].end() && np->second.text == n->second.text)) {
          before = ref(n->second);
          break;
        }
      }
      adds.push_back({{"rule", json::parse(w->second.text)}, {"before", before}, {"route", w->second.route}});
      adding.insert(*d);
    }
    if (!removes.empty() || !adds.empty()) plugin_->call("change_rules", {{"remove", removes}, {"add", adds}});
    for (const auto& [g, k] : dirty_) {
      const auto w = wanted_[g].find(k);
      if (w == wanted_[g].end()) pushed_[g].erase(k);
      else pushed_[g][k] = w->second;
    }
    dirty_.clear();
  } catch (const channel::RpcError& e) {
    log(std::string("the plugin refused the rule change: ") + e.what());
    rules_synced_ = false;  // the next change sends the whole set
  } catch (const std::exception& e) {
    detach_plugin(std::string("rules: ") + e.what());
  }
}

void PluginLink::push_config() {
  // The agent enforces each client's event timeout itself; the plugin's hold timeout is
  // the backstop (the longest timeout plus a margin, 60 s while a client asked for none).
  uint64_t hold = 0;
  bool any = false;
  for (const auto& s : a_.api().sessions())
    if (!s->owned_instance.empty()) {
      any = true;
      hold = std::max<uint64_t>(hold, s->timeout_ms == 0 ? 60000 : s->timeout_ms + 1000);
    }
  const json cfg = {{"hold_timeout_ms", any ? hold : 5000}, {"deny_expired", a_.store().instance(kDefaultInstance).deny_expired}};
  push("set_config", cfg, last_config_pushed_, "configuration");
}

const std::set<std::string>* PluginLink::rows_of(const std::string& instance, const std::string& kind, uint32_t rule_id) const {
  const auto it = rows_by_id_.find({instance, kind, rule_id});
  return it == rows_by_id_.end() ? nullptr : &it->second;
}

std::optional<std::pair<int64_t, int64_t>> PluginLink::positions(const std::string& instance, const std::string& kind) const {
  const auto it = positions_.find({instance, kind});
  if (it == positions_.end() || it->second.empty()) return std::nullopt;
  return std::make_pair(*it->second.begin(), *it->second.rbegin());
}

void PluginLink::add_provisional(const std::string& instance, const matcher::Rule& rule, int64_t position,
                                 const json& spec) {
  const std::string kind = matcher::to_string(rule.kind);
  // (Not while another add of the same rule is in flight: the database takes one of them.)
  if (std::any_of(provisional_.begin(), provisional_.end(), [&](const Place& p) { return names(p, instance, kind, rule.id); }))
    return;
  std::string text;
  if (const auto place = want_rule(instance, kind, rule.id, position, spec, &text, &rule)) {  // checked by the caller
    provisional_.insert(*place);
    send_rule_changes();
  }
}

void PluginLink::restore_rows(const std::set<std::string>& uuids) {
  for (const auto& u : uuids)
    if (!row_entries_.count(u)) learn_row(u);
  send_rule_changes();
}

void PluginLink::forget_rows(const std::set<std::string>& uuids) {
  for (const auto& u : uuids) forget_row(u, true);
  if (!uuids.empty()) send_rule_changes();
}

}  // namespace vpf::agent
