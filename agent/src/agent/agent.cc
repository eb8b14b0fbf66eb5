// vpf-agent: see agent.h.
#include "agent.h"
#include "agent_common.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <iostream>

#include "vpf/matcher/bpf.h"
#include "vpf/matcher/rules_json.h"
#include "vpf/run_program.h"

namespace vpf::agent {

using nlohmann::json;
namespace asio = boost::asio;
using local = asio::local::stream_protocol;

namespace {

constexpr const char* kDb = "vportfilter";

}  // namespace

void log(const std::string& msg) {
  char ts[32];
  const std::time_t t = std::time(nullptr);
  std::strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  std::cerr << ts << " vpf-agent: " << msg << std::endl;
}

Agent::Agent(asio::io_context& io, Options opts) : io_(io), opts_(std::move(opts)), plugin_timer_(io) {
  load_instances();
}

Agent::~Agent() {
  detach_plugin("");
  if (acceptor_) ::unlink(opts_.socket.c_str());
}

void Agent::start() {
  connect_ovsdb();
  if (ensure_policy_db()) {
    // ovsdb-server drops its clients' sessions when a database is added: start over.
    for (auto* c : {&ovs_db_, &policy_db_}) {
      (*c)->on_close(nullptr);
      (*c)->close();
    }
    connect_ovsdb();
  }
  policy_db_->monitor(kDb, "policy",
                      {{"Adapter", {{"columns", {"key", "adapter_id", "name", "settings"}}}},
                       {"Instance", {{"columns", {"guid", "altitude", "settings", "allowed_controllers"}}}},
                       {"Rule", {{"columns", {"instance", "kind", "rule_id", "position", "spec"}}}}},
                      [this](const json& u) { on_policy_update(u); });
  ovs_db_->monitor("Open_vSwitch", "ovs",
                   {{"Bridge", {{"columns", {"name", "datapath_type", "ports"}}}},
                    {"Port", {{"columns", {"name", "interfaces"}}}},
                    {"Interface", {{"columns", {"name", "type", "external_ids", "mac_in_use", "ofport"}}}}},
                   [this](const json& u) { on_ovs_update(u); });
  // The client socket: a stale file from an earlier run is replaced.
  ::unlink(opts_.socket.c_str());
  acceptor_ = std::make_unique<local::acceptor>(io_, local::endpoint(opts_.socket));
  ::chmod(opts_.socket.c_str(), 0666);  // everyone reaches the credential check
  accept();
  try_plugin();
  log("started: ovsdb " + opts_.ovsdb + ", clients on " + opts_.socket);
}

void Agent::connect_ovsdb() {
  ovs_db_ = std::make_shared<OvsdbClient>(io_);
  ovs_db_->connect(opts_.ovsdb);
  ovs_db_->on_close([this](const std::string& why) {
    log("lost ovsdb-server: " + why + "; exiting (a supervisor restarts the agent)");
    io_.stop();
  });
  if (opts_.policy_db.empty() || opts_.policy_db == opts_.ovsdb) {
    policy_db_ = ovs_db_;
  } else {
    policy_db_ = std::make_shared<OvsdbClient>(io_);
    policy_db_->connect(opts_.policy_db);
    policy_db_->on_close([this](const std::string& why) {
      log("lost the policy database server: " + why + "; exiting");
      io_.stop();
    });
  }
}

bool Agent::ensure_policy_db() {
  const json dbs = policy_db_->call_sync("list_dbs", json::array());
  if (std::find(dbs.begin(), dbs.end(), json(kDb)) != dbs.end()) {
    // An older schema is converted in place (ovsdb-server keeps the rows).
    std::ifstream f(opts_.schema);
    const json want = json::parse(f, nullptr, false);
    const json have = policy_db_->call_sync("get_schema", json::array({kDb}));
    if (want.is_object() && have.value("version", "") != want.value("version", "")) {
      const std::string server = opts_.policy_db.empty() ? opts_.ovsdb : opts_.policy_db;
      if (const std::string err = run_program({"ovsdb-client", "convert", server, opts_.schema}); !err.empty())
        throw std::runtime_error("could not convert the vportfilter database: " + err);
      log("converted the vportfilter database from schema " + have.value("version", "?") + " to " +
          want.value("version", "?"));
      return true;
    }
    return false;
  }
  if (policy_db_ != ovs_db_)
    throw std::runtime_error("the server at " + opts_.policy_db + " has no vportfilter database");
  // Local server: create the file (if missing) and add it to the running server.
  if (::access(opts_.db_file.c_str(), F_OK) != 0) {
    if (const std::string err = run_program({"ovsdb-tool", "create", opts_.db_file, opts_.schema}); !err.empty())
      throw std::runtime_error("could not create the vportfilter database: " + err);
  }
  if (const std::string err = run_program({"ovs-appctl", "-t", "ovsdb-server", "ovsdb-server/add-db", opts_.db_file});
      !err.empty())
    throw std::runtime_error("could not add the vportfilter database: " + err);
  log("created the vportfilter database in " + opts_.db_file);
  return true;
}

// ---- Open_vSwitch database: adapters ----

void Agent::on_ovs_update(const json& updates) {
  view_.apply(updates);
  auto next = vm_ports(view_, opts_.vm_types);
  for (auto& [key, a] : next) {
    const auto old = adapters_.find(key);
    if (old == adapters_.end()) log("adapter added: " + a.name + " (" + a.description + ")");
    a.id = old != adapters_.end() ? old->second.id : -1;
  }
  for (const auto& [key, a] : adapters_)
    if (!next.count(key)) log("adapter removed: " + a.name + " (id " + std::to_string(a.id) + ")");
  adapters_ = std::move(next);
  assign_ids();
}

void Agent::assign_ids() {
  std::map<std::string, int32_t> stored;
  std::set<int32_t> used;
  for (const auto& [u, row] : adapter_rows_) {
    stored[str(row, "key")] = int32_t(num(row, "adapter_id"));
    used.insert(int32_t(num(row, "adapter_id")));
  }
  json ops = json::array();
  for (auto& [key, a] : adapters_) {
    const auto it = stored.find(key);
    if (it != stored.end()) {
      a.id = it->second;
      continue;
    }
    a.id = -1;
    if (assigning_.count(key)) continue;
    const int32_t id = smallest_free_id(used);
    used.insert(id);
    assigning_.insert(key);
    ops.push_back({{"op", "insert"}, {"table", "Adapter"}, {"row", {{"key", key}, {"adapter_id", id}, {"name", a.name}}}});
  }
  if (!ops.empty()) {
    // The rows come back through the monitor; a conflict (another agent took the id or
    // the key) fails the transaction and the next update retries.
    policy_db_->transact(kDb, ops, [this, ops](const json&, const json& error) {
      for (const auto& op : ops) assigning_.erase(op["row"]["key"].get<std::string>());
      if (!error.is_null()) {
        log("adapter id assignment failed (" + error.dump() + "); retrying");
        assign_ids();
      }
    });
  }
  for (auto& [key, a] : adapters_) {
    a.settings.clear();
    for (const auto& [u, row] : adapter_rows_)
      if (str(row, "key") == key) a.settings = ovsdb_map(row.value("settings", json()));
  }
  push_adapters();
  announce_adapters();
}

void Agent::announce_adapters() {
  std::map<int32_t, std::string> now;
  for (const auto& [key, a] : adapters_)
    if (a.id >= 0) now[a.id] = key;
  auto tell = [&](const char* method, int32_t id) {
    for (const auto& s : sessions_)
      if (s->adapter_events) s->send_json({{"jsonrpc", "2.0"}, {"method", method}, {"params", {{"adapter_id", id}}}});
  };
  for (const auto& [id, key] : announced_)
    if (!now.count(id) || now[id] != key) tell("adapter_removed", id);
  for (const auto& [id, key] : now)
    if (!announced_.count(id) || announced_[id] != key) tell("adapter_added", id);
  announced_ = std::move(now);
}

// ---- vportfilter database: rules, instances, ids ----

void Agent::on_policy_update(const json& updates) {
  bool rules_only = true;
  for (const auto& [table, rows] : updates.items()) {
    auto* t = table == "Adapter" ? &adapter_rows_ : table == "Instance" ? &instance_rows_ : table == "Rule" ? &rule_rows_ : nullptr;
    if (t) ovsdb_apply_rows(*t, rows);
    rules_only = rules_only && table == "Rule";
  }
  if (rules_only && updates.contains("Rule")) {
    push_rule_rows(updates["Rule"]);  // the common case: rules added, changed, deleted
    return;
  }
  load_instances();
  assign_ids();
  push_rules();
  push_config();
  sync_channels();
}

json Agent::instance_rules(const std::string& instance, const std::string& kind) const {
  // Each row's spec is parsed once; the order is kind, then priority (higher first), then
  // position, then id.
  struct Item {
    std::string kind;
    int64_t neg_priority, position, id;
    json spec;
  };
  std::vector<Item> items;
  for (const auto& [u, row] : rule_rows_) {
    if (str(row, "instance") != instance || (!kind.empty() && str(row, "kind") != kind)) continue;
    json spec = json::parse(str(row, "spec"), nullptr, false);
    if (!spec.is_object()) spec = json::object();
    const int64_t prio = spec.contains("priority") && spec["priority"].is_number_integer() ? spec["priority"].get<int64_t>() : 0;
    items.push_back({str(row, "kind"), -prio, num(row, "position"), num(row, "rule_id"), std::move(spec)});
  }
  std::sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
    return std::tie(a.kind, a.neg_priority, a.position, a.id) < std::tie(b.kind, b.neg_priority, b.position, b.id);
  });
  json out = json::array();
  for (auto& it : items) {
    it.spec["kind"] = it.kind;
    it.spec["id"] = it.id;
    out.push_back(std::move(it.spec));
  }
  return out;
}

// ---- instances ----

void Agent::load_instances() {
  std::map<std::string, Instance> out;
  out[kDefaultInstance].guid = kDefaultInstance;
  for (const auto& [u, row] : instance_rows_) {
    Instance i;
    i.guid = str(row, "guid");
    i.exists = true;
    i.altitude = num(row, "altitude");
    i.settings = ovsdb_map(row.value("settings", json()));
    auto flag = [&](const char* k, bool def) { return i.settings.count(k) ? truthy(i.settings[k]) : def; };
    i.active = flag("active", true);
    i.deny_expired = flag("deny_expired", false);
    i.force_check = flag("force_app_permission_check", false);
    i.logging = flag("logging", false);
    for (const auto& c : ovsdb_set(row.value("allowed_controllers", json())))
      if (c.is_string()) i.allowed.insert(c.get<std::string>());
    out[i.guid] = std::move(i);
  }
  instances_ = std::move(out);
}

Agent::Instance Agent::instance(const std::string& guid) const {
  const auto it = instances_.find(guid);
  if (it != instances_.end()) return it->second;
  Instance none;
  none.guid = guid;
  return none;
}

void Agent::check_access(const Session& s, const std::string& guid) const {
  if (s.peer().uid == 0) return;
  const Instance i = instance(guid);
  if (i.force_check)
    throw ApiError(rpc::kNotAllowed, kErrorPrivilegeNotHeld,
                   "permission denied: instance '" + guid + "' requires root (ForceAppPermissionCheck)");
  if (!i.allowed.count(s.peer().exe))
    throw ApiError(rpc::kNotAllowed, kErrorPrivilegeNotHeld,
                   "permission denied: " + s.peer().exe + " is not an allowed controller of instance '" + guid + "'");
}

Session* Agent::owner_of(const std::string& guid) const {
  for (const auto& s : sessions_)
    if (!s->closed() && s->owned_instance == guid) return s.get();
  return nullptr;
}

// Writes `changes` (settings key -> text, or "altitude"/"allowed_controllers") into the
// instance's row, creating the row when missing; replies after the commit.
void Agent::set_instance(const std::string& guid, const json& changes, const Reply& reply) {
  const Instance cur = instance(guid);
  std::map<std::string, std::string> settings = cur.settings;
  json row = json::object();
  for (const auto& [k, v] : changes.items()) {
    if (k == "altitude") row["altitude"] = v;
    else if (k == "allowed_controllers") row["allowed_controllers"] = ovsdb_make_set(v.get<std::vector<json>>());
    else settings[k] = v.get<std::string>();
  }
  row["settings"] = ovsdb_make_map(settings);
  json op;
  if (cur.exists) {
    op = {{"op", "update"}, {"table", "Instance"}, {"where", json::array({json::array({"guid", "==", guid})})}, {"row", row}};
  } else {
    row["guid"] = guid;
    if (!row.contains("altitude")) row["altitude"] = 0;
    op = {{"op", "insert"}, {"table", "Instance"}, {"row", row}};
  }
  commit(json::array({op}), [reply](const json&, const json& error) {
    if (database_refused(reply, error, kErrorNotReady)) return;
    reply({{"ok", true}}, nullptr);
  });
}

uint32_t Agent::internal_id(const std::string& instance, matcher::RuleKind kind, uint32_t rule_id) {
  const auto key = std::make_tuple(instance, int(kind), rule_id);
  auto it = internal_ids_.find(key);
  if (it == internal_ids_.end()) {
    it = internal_ids_.emplace(key, next_internal_id_++).first;
    origins_[it->second] = RuleOrigin{instance, kind, rule_id, false};
  }
  return it->second;
}

void Agent::retire_id(const std::tuple<std::string, int, uint32_t>& id) {
  auto it = internal_ids_.find(id);
  if (it == internal_ids_.end()) return;
  origins_[it->second].retired = true;
  retired_order_.emplace_back(std::chrono::steady_clock::now(), it->second);
  internal_ids_.erase(it);
}

void Agent::purge_retired() {
  // Events of a deleted rule still in flight find their instance for as long as a held
  // packet may wait (the plugin's longest hold timeout is 60 s plus a client's timeout).
  const auto now = std::chrono::steady_clock::now();
  while (!retired_order_.empty() && now - retired_order_.front().first > std::chrono::minutes(10)) {
    origins_.erase(retired_order_.front().second);
    retired_order_.pop_front();
  }
}

void Agent::commit(json ops, OvsdbClient::Reply done) {
  // ovsdb-server sends a session's pending monitor updates before any reply on it
  // (ovsdb_jsonrpc_session_send flushes them first), and our monitor of this database is
  // on the same session: when the reply comes, the update it caused has been handled
  // (rows read, the plugin changed).  So when `done` runs, this agent's view (list_rules,
  // status, ...) already shows the change and the rules are in force.
  policy_db_->transact(kDb, std::move(ops), std::move(done));
}

// ---- the plugin ----

void Agent::try_plugin() {
  if (plugin_) {
    // Still there?  A closed control socket reads as EOF.
    pollfd p{plugin_->socket_fd(), POLLIN, 0};
    if (::poll(&p, 1, 0) > 0 && (p.revents & (POLLIN | POLLHUP | POLLERR))) {
      char c;
      if (::recv(plugin_->socket_fd(), &c, 1, MSG_PEEK | MSG_DONTWAIT) <= 0) detach_plugin("the plugin went away");
    }
  }
  if (!plugin_ && ::access(opts_.plugin_socket.c_str(), F_OK) == 0) attach_plugin();
  plugin_timer_.expires_after(std::chrono::seconds(1));
  plugin_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec) try_plugin();
  });
}

void Agent::attach_plugin() {
  try {
    plugin_ = std::make_shared<channel::ChannelClient>(opts_.plugin_socket);
  } catch (const std::exception& e) {
    log(std::string("cannot attach to the plugin: ") + e.what());
    return;
  }
  log("attached to the plugin at " + opts_.plugin_socket);
  last_adapters_pushed_ = last_config_pushed_ = nullptr;
  rules_synced_ = false;
  push_adapters();
  push_rules();
  push_config();
  if (!plugin_) return;
  // Clients that read a channel of the plugin that went may open one again.
  for (const auto& s : sessions_)
    if (s->wants_direct && !s->owned_instance.empty() && !s->direct_route)
      s->send_json({{"jsonrpc", "2.0"}, {"method", "channel_available"}, {"params", json::object()}});
  // Events: this thread reads the event rings when the plugin's eventfd fires (no thread
  // in between: one wake-up per batch of events).
  events_wait_ = std::make_unique<asio::posix::stream_descriptor>(io_, ::dup(plugin_->events_fd()));
  pump_events();
}

void Agent::pump_events() {
  const auto client = plugin_;
  if (!client || !events_wait_) return;
  try {
    // A bounded share of events per turn, then the other work of this thread gets its own.
    for (int turn = 0; turn < 8; ++turn) {
      std::vector<std::string> batch;
      const size_t n = client->poll_events(
          [&](const channel::PacketEvent& ev, const uint8_t* data) {
            std::string raw(sizeof ev + ev.cap_len, '\0');
            std::memcpy(raw.data(), &ev, sizeof ev);
            std::memcpy(raw.data() + sizeof ev, data, ev.cap_len);
            batch.push_back(std::move(raw));
          },
          512);
      if (!batch.empty()) route(std::move(batch));
      if (plugin_ != client) return;  // routing detached it
      if (n < 512 && client->arm_wait()) {
        events_wait_->async_wait(asio::posix::stream_descriptor::wait_read, [this, client](const boost::system::error_code& ec) {
          if (ec || plugin_ != client) return;
          client->woken();
          pump_events();
        });
        return;
      }
    }
    asio::post(io_, [this, client] {
      if (plugin_ == client) pump_events();
    });
  } catch (const std::exception& e) {
    // A broken ring: detach; the plugin is reattached by try_plugin.
    detach_plugin(std::string("the plugin went away: ") + e.what());
  }
}

void Agent::detach_plugin(const std::string& why) {
  events_wait_.reset();  // cancels the wait on the events eventfd
  if (!plugin_) return;
  if (!why.empty()) log(why);
  plugin_.reset();
  // The plugin closes its client channels when the agent goes; a new one has none.
  channel_pushed_.clear();
  for (const auto& s : sessions_)
    if (s->direct_route) {
      s->direct_route = 0;
      s->send_json({{"jsonrpc", "2.0"}, {"method", "channel_closed"}, {"params", {{"reason", "the plugin went away"}}}});
    }
  // The plugin decides its held packets itself when the agent goes; forget ours.
  for (const auto& s : sessions_) {
    s->pending.clear();
    s->expiry_timer.cancel();
  }
}

void Agent::push_adapters() {
  json list = json::array();
  for (const auto& [key, a] : adapters_)
    if (a.id >= 0) list.push_back({{"port", a.name}, {"adapter", a.id}, {"vm", a.vm}, {"snaplen", a.max_packet_bytes()}});
  push("set_adapters", {{"adapters", list}}, last_adapters_pushed_, "adapters");
}

void Agent::push(const char* method, const json& params, json& last, const char* what) {
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

void Agent::forget_row(const std::string& uuid, bool retire) {
  const auto it = row_entries_.find(uuid);
  if (it == row_entries_.end()) return;
  const RowEntry& e = it->second;
  const auto id = std::make_tuple(e.instance, e.kind, e.rule_id);
  auto& rows = rows_by_id_[id];
  rows.erase(uuid);
  if (rows.empty()) {
    rows_by_id_.erase(id);
    if (const auto k = matcher::rule_kind_from(e.kind); k && retire) retire_id({e.instance, int(*k), e.rule_id});
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

std::optional<Agent::Place> Agent::want_rule(const std::string& instance, const std::string& kind, uint32_t rule_id,
                                             int64_t position, json spec, std::string* text, const matcher::Rule* checked) {
  const auto inst = instances_.find(instance);
  if (inst == instances_.end() || !inst->second.active || !matcher::rule_kind_from(kind)) return std::nullopt;
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
  const Session* owner = owner_of(instance);
  if (owner && owner->stat_mode && rule.kind == matcher::RuleKind::Filter &&
      (rule.action == matcher::Action::Capture || rule.action == matcher::Action::Notify))
    spec["action"] = "count";
  // Rule ids become the plugin's own (unique across instances); the order is the plugin's
  // placement, so priorities are folded into it.
  const uint32_t pid = internal_id(instance, rule.kind, rule.id);
  spec["id"] = pid;
  spec.erase("priority");
  const Place place{rule.kind == matcher::RuleKind::Passthrough ? 0 : 1,
                    OrderKey{-inst->second.altitude, instance, kind, -prio, position, rule_id}};
  json route = nullptr;  // events of capture and notify rules may go straight to the instance's client
  const bool events = rule.action == matcher::Action::Capture || rule.action == matcher::Action::Notify;
  if (events && !(owner && owner->stat_mode))
    if (const uint16_t slot = route_slot(instance)) route = {{"client", slot}, {"rule_id", rule.id}};
  wanted_[place.first][place.second] = PluginRule{rule.kind, pid, spec.dump(), route};
  dirty_.insert(place);
  return place;
}

void Agent::learn_row(const std::string& uuid) {
  const auto r = rule_rows_.find(uuid);
  if (r == rule_rows_.end()) return;
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

void Agent::drop_provisional(const std::string& instance, const std::string& kind, uint32_t rule_id) {
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
  if (const auto k = matcher::rule_kind_from(kind); k && !rows_by_id_.count({instance, kind, rule_id})) retire_id({instance, int(*k), rule_id});
  send_rule_changes();
}

void Agent::push_rule_rows(const json& changed) {
  for (const auto& [uuid, change] : changed.items()) {
    forget_row(uuid, true);
    learn_row(uuid);
  }
  send_rule_changes();
}

void Agent::push_rules() {
  // Every row again (instances' order and activity, owners' modes): the plugin's ids stay
  // for rows that are still there.
  std::vector<std::string> uuids;
  for (const auto& [u, e] : row_entries_) uuids.push_back(u);
  for (const auto& u : uuids) forget_row(u, false);
  for (const auto& [u, row] : rule_rows_) learn_row(u);
  std::set<std::tuple<std::string, int, uint32_t>> gone;
  for (const auto& [id, internal] : internal_ids_) {
    const auto& [inst, kind, rule_id] = id;
    if (!rows_by_id_.count({inst, matcher::to_string(matcher::RuleKind(kind)), rule_id})) gone.insert(id);
  }
  for (const auto& id : gone) retire_id(id);
  for (int g = 0; g < 2; ++g)
    for (const auto& [k, r] : pushed_[g]) dirty_.insert({g, k});
  send_rule_changes();
}

void Agent::send_rule_changes() {
  purge_retired();
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

void Agent::push_config() {
  // The agent enforces each client's event timeout itself; the plugin's hold timeout is
  // the backstop (the longest timeout plus a margin, 60 s while a client asked for none).
  uint64_t hold = 0;
  bool any = false;
  for (const auto& s : sessions_)
    if (!s->owned_instance.empty()) {
      any = true;
      hold = std::max<uint64_t>(hold, s->timeout_ms == 0 ? 60000 : s->timeout_ms + 1000);
    }
  const json cfg = {{"hold_timeout_ms", any ? hold : 5000}, {"deny_expired", instance(kDefaultInstance).deny_expired}};
  push("set_config", cfg, last_config_pushed_, "configuration");
}

// ---- events ----

namespace {

std::string event_frame(const protocol::EventFrame& e, const uint8_t* data) {
  protocol::FrameHeader h{protocol::kFrameMagic, uint16_t(protocol::kVersion), protocol::kEventFrame,
                          uint32_t(sizeof e + e.data_size), 0};
  std::string f(sizeof h + sizeof e + e.data_size, '\0');
  std::memcpy(f.data(), &h, sizeof h);
  std::memcpy(f.data() + sizeof h, &e, sizeof e);
  std::memcpy(f.data() + sizeof h + sizeof e, data, e.data_size);
  return f;
}

}  // namespace

void Agent::route(std::vector<std::string> batch) {
  for (const std::string& raw : batch) {
    ++events_received_;
    channel::PacketEvent ev;
    std::memcpy(&ev, raw.data(), sizeof ev);
    const uint8_t* data = reinterpret_cast<const uint8_t*>(raw.data()) + sizeof ev;
    const bool capture = ev.h.type == channel::kCapture;
    const auto origin = origins_.find(ev.rule_id);
    if (origin == origins_.end()) {  // cannot happen while ids are never reused; be safe
      ++events_unrouted_;
      if (capture) expire(ev.capture_id, false);
      continue;
    }
    const RuleOrigin& o = origin->second;
    // A copy of an event that went straight to its client: for monitors and logging only.
    const bool mirrored = ev.h.flags & channel::kFlagMirrored;
    protocol::EventFrame e = protocol::event_frame_of(ev, capture, o.rule_id, uint8_t(o.kind));
    Session* owner = owner_of(o.instance);
    if (owner && owner->stat_mode) owner = nullptr;
    const bool taken = mirrored ? owner != nullptr : owner && owner->send_event(event_frame(e, data));
    const Instance& inst = instances_.count(o.instance) ? instances_.at(o.instance) : instances_.at(kDefaultInstance);
    if (inst.logging)  // LoggingEnabled: one line per event of the instance
      log("instance " + o.instance + ": " + (capture ? "capture " + std::to_string(ev.capture_id) : std::string("notify")) +
          " adapter " + std::to_string(ev.adapter) + (ev.direction ? " in" : " out") + " rule " +
          std::to_string(o.rule_id) + " " + std::to_string(ev.orig_len) + " bytes -> " +
          (taken ? "client pid " + std::to_string(owner->peer().pid) + (mirrored ? " (its channel)" : "")
                 : capture ? std::string(inst.deny_expired ? "dropped" : "sent") + " (no client to decide)"
                           : std::string("no client")));
    if (mirrored) {
      // decided by the client (or the plugin's expiry): nothing to route
    } else if (capture) {
      if (taken) {
        const auto deadline = owner->timeout_ms ? Session::Clock::now() + std::chrono::milliseconds(owner->timeout_ms)
                                                : Session::Clock::time_point::max();
        owner->pending[ev.capture_id] = deadline;
        if (owner->timeout_ms && owner->pending.size() == 1) arm_expiry(*owner);
      } else {
        expire(ev.capture_id, inst.deny_expired);
      }
    } else if (!taken) {
      ++events_unrouted_;
    }
    bool monitored = false;
    for (const auto& s : sessions_) {
      if (s->closed() || s->monitor.empty() || (s->monitor != "*" && s->monitor != o.instance)) continue;
      if (!monitored) e.flags = protocol::kMonitorCopy, monitored = true;
      s->send_event(event_frame(e, data));
    }
  }
}

void Agent::expire(uint64_t capture_id, bool deny) {
  ++expired_by_agent_;
  if (!plugin_ || !plugin_->verdict(capture_id, deny ? channel::VerdictAction::Drop : channel::VerdictAction::Send))
    ++verdicts_lost_;
}

void Agent::arm_expiry(Session& s) {
  if (s.pending.empty() || s.closed()) return;
  auto earliest = Session::Clock::time_point::max();
  for (const auto& [id, t] : s.pending) earliest = std::min(earliest, t);
  if (earliest == Session::Clock::time_point::max()) return;
  s.expiry_timer.expires_at(earliest);
  s.expiry_timer.async_wait([this, w = std::weak_ptr<Session>(s.shared_from_this())](const boost::system::error_code& ec) {
    if (auto p = w.lock(); p && !ec) expire_due(p);
  });
}

void Agent::expire_due(const std::shared_ptr<Session>& s) {
  const auto now = Session::Clock::now();
  const bool deny = instance(s->owned_instance).deny_expired;
  for (auto it = s->pending.begin(); it != s->pending.end();) {
    if (it->second <= now) {
      expire(it->first, deny);
      it = s->pending.erase(it);
    } else {
      ++it;
    }
  }
  arm_expiry(*s);
}

void Agent::on_verdict(Session& s, const protocol::VerdictFrame& v, std::span<const uint8_t> data) {
  auto fail = [&](const std::string& why) {
    ++bad_verdicts_;
    s.send_json({{"jsonrpc", "2.0"}, {"method", "verdict_refused"},
                 {"params", {{"event_id", v.event_id}, {"message", why}, {"seed_error", kErrorInvalidParameter}}}});
  };
  const auto it = s.pending.find(v.event_id);
  if (it == s.pending.end())
    return fail("verdict for event " + std::to_string(v.event_id) + ": not a captured packet waiting for this client "
                "(already decided, expired, or never sent here)");
  if (v.action < protocol::kDrop || v.action > protocol::kSendModified)
    return fail("verdict action " + std::to_string(v.action) + " is not DROP (1), SEND (2) or SEND_MODIFIED (3)");
  if (v.action == protocol::kSendModified && (data.size() < 14 || data.size() > protocol::kMaxPacket))
    return fail("a modified packet must have 14.." + std::to_string(protocol::kMaxPacket) + " bytes, not " +
                std::to_string(data.size()));
  if (v.action != protocol::kSendModified && !data.empty()) return fail("only SEND_MODIFIED carries data");
  s.pending.erase(it);
  if (!plugin_ || !plugin_->verdict(v.event_id, channel::VerdictAction(v.action), data)) ++verdicts_lost_;
}

}  // namespace vpf::agent
