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
constexpr const char* kDefaultInstance = "default";

// The version get_driver_version reports: four 16-bit words, as the seed packs them.
constexpr uint64_t kVersionWords = (uint64_t(0) << 48) | (uint64_t(1) << 32) | (uint64_t(0) << 16) | 0;
// Settings an instance keeps in its row (config method), with their seed names.
const std::map<std::string, std::string> kInstanceSettings = {
    {"denyexpiredrequests", "deny_expired"},
    {"forceapppermissioncheck", "force_app_permission_check"},
    {"loggingenabled", "logging"},
};
bool truthy(const std::string& v) {
  std::string l;
  for (char c : v) l += char(std::tolower(static_cast<unsigned char>(c)));
  return l == "true" || l == "1" || l == "yes";
}
bool boolean_text(const std::string& v) {
  std::string l;
  for (char c : v) l += char(std::tolower(static_cast<unsigned char>(c)));
  return l == "true" || l == "1" || l == "yes" || l == "false" || l == "0" || l == "no";
}


std::string str(const json& row, const char* col) {
  return row.contains(col) && row[col].is_string() ? row[col].get<std::string>() : "";
}
int64_t num(const json& row, const char* col) {
  return row.contains(col) && row[col].is_number_integer() ? row[col].get<int64_t>() : 0;
}

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
    throw ApiError(-32001, kErrPrivilegeNotHeld,
                   "permission denied: instance '" + guid + "' requires root (ForceAppPermissionCheck)");
  if (!i.allowed.count(s.peer().exe))
    throw ApiError(-32001, kErrPrivilegeNotHeld,
                   "permission denied: " + s.peer().exe + " is not an allowed controller of instance '" + guid + "'");
}

Session* Agent::owner_of(const std::string& guid) {
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
    if (database_refused(reply, error, kErrNotReady)) return;
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
      c.rule = checked ? *checked : matcher::rule_from_json(spec);
      if (!checked && !c.rule.bpf.empty()) matcher::compile_bpf(c.rule.bpf);
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
                 {"params", {{"event_id", v.event_id}, {"message", why}, {"seed_error", kErrInvalidParameter}}}});
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

// ---- clients ----

bool Agent::authorized(const Peer& p) const {
  if (p.uid == 0) return true;
  for (const auto& [g, i] : instances_)
    if (i.allowed.count(p.exe)) return true;
  return false;
}

namespace {
std::string exe_of(int pid) {
  char buf[4096];
  const std::string link = "/proc/" + std::to_string(pid) + "/exe";
  const ssize_t n = ::readlink(link.c_str(), buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, size_t(n)) : "";
}
}  // namespace

void Agent::accept() {
  acceptor_->async_accept([this](const boost::system::error_code& ec, local::socket s) {
    if (ec) return;
    ucred cred{};
    socklen_t len = sizeof cred;
    ::getsockopt(s.native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &len);
    Peer peer{int(cred.pid), int(cred.uid), exe_of(cred.pid)};
    auto session = std::make_shared<Session>(std::move(s), *this, peer, opts_.client_queue_bytes);
    if (!authorized(peer)) {
      const std::string why = "permission denied: uid " + std::to_string(cred.uid) + " (" +
                              (peer.exe.empty() ? "?" : peer.exe) + ") is not root and not an allowed controller";
      log("client refused: " + why);
      session->refuse({{"code", -32001}, {"message", why}, {"data", {{"seed_error", kErrPrivilegeNotHeld}}}});
    } else {
      sessions_.insert(session);
      session->start();
    }
    accept();
  });
}

void Agent::on_session_closed(Session& s) {
  closed_sessions_dropped_ += s.events_dropped;
  const bool owned = !s.owned_instance.empty();
  close_channel(s);  // the plugin gives its held packets their expiry verdict
  if (owned) {
    const bool deny = instance(s.owned_instance).deny_expired;
    for (const auto& [id, t] : s.pending) expire(id, deny);
    if (!s.pending.empty())
      log("client pid " + std::to_string(s.peer().pid) + " went away holding " + std::to_string(s.pending.size()) +
          " captured packets: " + (deny ? "dropped" : "sent on") + " (DenyExpiredRequests)");
    s.pending.clear();
    s.owned_instance.clear();
  }
  // Erase after this call returns: the session may be running one of its own handlers.
  asio::post(io_, [this, p = s.shared_from_this(), owned] {
    sessions_.erase(p);
    if (owned) {
      push_rules();
      push_config();
    }
    sync_channels();  // a monitor less
  });
}

std::string Agent::instance_of(const json& params) const {
  if (!params.contains("instance")) return kDefaultInstance;
  if (!params["instance"].is_string() || params["instance"].get<std::string>().empty())
    throw ApiError(-32602, kErrInvalidParameter, "'instance' must be a non-empty string");
  return params["instance"].get<std::string>();
}

namespace {

std::vector<uint8_t> hex_bytes(const json& params, const char* name) {
  if (!params.contains(name) || !params[name].is_string())
    throw ApiError(-32602, kErrInvalidParameter, std::string("'") + name + "' must be the frame in hex");
  const std::string& h = params[name].get_ref<const std::string&>();
  if (h.size() % 2) throw ApiError(-32602, kErrInvalidParameter, std::string("'") + name + "': odd number of hex digits");
  std::vector<uint8_t> out(h.size() / 2);
  for (size_t i = 0; i < out.size(); ++i) {
    auto nib = [&](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      throw ApiError(-32602, kErrInvalidParameter, std::string("'") + name + "': '" + c + "' is not a hex digit");
    };
    out[i] = uint8_t(nib(h[2 * i]) << 4 | nib(h[2 * i + 1]));
  }
  return out;
}

int64_t int_param(const json& params, const char* name, int64_t def, int64_t lo, int64_t hi) {
  if (!params.contains(name)) return def;
  if (!params[name].is_number_integer() || params[name].get<int64_t>() < lo || params[name].get<int64_t>() > hi)
    throw ApiError(-32602, kErrInvalidParameter,
                   std::string("'") + name + "' must be an integer in " + std::to_string(lo) + ".." + std::to_string(hi));
  return params[name].get<int64_t>();
}

}  // namespace

void Agent::handle(Session& s, const std::string& method, const json& params, Reply reply) {
  try {
    if (method == "list_adapters") {
      json out = json::array();
      for (const auto& [k, a] : adapters_)
        if (a.id >= 0) out.push_back(a.to_json());
      std::sort(out.begin(), out.end(), [](const json& a, const json& b) { return a["id"] < b["id"]; });
      return reply(out, nullptr);
    }
    if (method == "add_rule" || method == "delete_rule" || method == "delete_all_rules" || method == "config" ||
        method == "start_filter" || method == "import_rules" || method == "set_active" || method == "update_rule" ||
        method == "move_rule")
      check_access(s, instance_of(params));
    if (method == "add_rule") return add_rule(params, reply);
    if (method == "import_rules") return import_rules(params, reply);
    if (method == "update_rule" || method == "move_rule") return change_rule(method, params, reply);
    if (method == "set_active") {
      if (!params.contains("active") || !params["active"].is_boolean())
        throw ApiError(-32602, kErrInvalidParameter, "set_active needs 'active': true or false");
      return set_instance(instance_of(params), {{"active", params["active"].get<bool>() ? "true" : "false"}}, reply);
    }
    if (method == "delete_rule" || method == "delete_all_rules") return delete_rules(params, reply);
    if (method == "list_rules") return reply(list_rules(params), nullptr);
    if (method == "get_statistics") return reply(statistics(), nullptr);
    if (method == "check_bpf") {
      if (!params.contains("expression") || !params["expression"].is_string())
        throw ApiError(-32602, kErrInvalidParameter, "check_bpf needs {\"expression\": TEXT}");
      try {
        matcher::compile_bpf(params["expression"].get<std::string>());
        return reply({{"ok", true}}, nullptr);
      } catch (const std::exception& e) {
        return reply({{"ok", false}, {"error", e.what()}}, nullptr);
      }
    }
    if (method == "start_filter") return start_filter(s, params, reply);
    if (method == "stop_filter") return stop_filter(s, reply);
    if (method == "subscribe") {
      const std::string what = params.value("instance", std::string("*"));
      if (params.contains("instance") && !params["instance"].is_string())
        throw ApiError(-32602, kErrInvalidParameter, "'instance' must be a name or \"*\"");
      if (params.contains("packets") && !params["packets"].is_boolean())
        throw ApiError(-32602, kErrInvalidParameter, "'packets' must be true or false");
      if (params.contains("adapters") && !params["adapters"].is_boolean())
        throw ApiError(-32602, kErrInvalidParameter, "'adapters' must be true or false");
      s.monitor = params.value("packets", true) ? what : "";
      s.adapter_events = params.value("adapters", s.adapter_events);
      sync_channels();  // monitors get copies of events that go to client channels
      return reply({{"ok", true}}, nullptr);
    }
    if (method == "open_channel") return open_channel(s, reply);
    if (method == "send_packet") return inject(params, 0, reply);
    if (method == "insert_incoming_packet") return inject(params, 1, reply);
    if (method == "set_adapter") return set_adapter(params, reply);
    if (method == "config") return config(s, params, reply);
    if (method == "install") return install(s, params, reply);
    if (method == "uninstall") return uninstall(s, params, reply);
    if (method == "get_driver_status") return reply(driver_status(params), nullptr);
    if (method == "get_driver_version")
      return reply({{"version", kVersionWords}, {"text", "0.1.0.0"}, {"protocol_version", protocol::kVersion}},
                   nullptr);
    if (method == "status") {
      uint64_t client_drops = closed_sessions_dropped_;
      for (const auto& c : sessions_) client_drops += c->events_dropped;
      json inst = json::array();
      for (const auto& [g, i] : instances_) {
        const Session* o = owner_of(g);
        inst.push_back({{"guid", g}, {"altitude", i.altitude}, {"active", i.active}, {"installed", i.exists},
                        {"client_pid", o ? json(o->peer().pid) : json(nullptr)},
                        {"client_channel", o != nullptr && o->direct_route != 0}});
      }
      return reply({{"plugin_attached", bool(plugin_)},
                    {"adapters", adapters_.size()},
                    {"rules", rule_rows_.size()},
                    {"instances", inst},
                    {"clients", sessions_.size()},
                    {"events", {{"received", events_received_}, {"unrouted", events_unrouted_},
                                {"expired_by_agent", expired_by_agent_}, {"verdicts_lost", verdicts_lost_},
                                {"bad_verdicts", bad_verdicts_}, {"client_events_dropped", client_drops}}},
                    {"protocol_version", protocol::kVersion}},
                   nullptr);
    }
    throw ApiError(-32601, 1, "unknown method '" + method + "'");
  } catch (const ApiError& e) {
    reply(nullptr, &e);
  } catch (const std::exception& e) {
    const ApiError err(-32603, kErrInvalidParameter, e.what());
    reply(nullptr, &err);
  }
}

void Agent::start_filter(Session& s, const json& params, const Reply& reply) {
  const std::string inst = instance_of(params);
  const Instance i = instance(inst);
  if (!i.exists && inst != kDefaultInstance)
    throw ApiError(-32000, kErrFileNotFound, "instance '" + inst + "' is not installed");
  const int64_t timeout = int_param(params, "timeout_ms", 0, 0, 86400000);
  if (timeout != 0 && timeout < 3000)
    throw ApiError(-32602, kErrImplementationLimit, "timeout must be 0 or at least 3000 ms, not " + std::to_string(timeout));
  const std::string mode = params.value("mode", std::string("capture"));
  if (mode != "capture" && mode != "stat") throw ApiError(-32602, kErrInvalidParameter, "'mode' must be capture or stat");
  if (!s.owned_instance.empty())
    throw ApiError(-32000, kErrConnectionActive, "this client has started instance '" + s.owned_instance + "' already");
  if (const Session* o = owner_of(inst))
    throw ApiError(-32000, kErrConnectionActive,
                   "instance '" + inst + "' is started by another client (pid " + std::to_string(o->peer().pid) + ")");
  s.owned_instance = inst;
  s.timeout_ms = uint32_t(timeout);
  s.stat_mode = mode == "stat";
  s.adapter_events = true;
  push_config();
  if (!i.active) return set_instance(inst, {{"active", "true"}}, reply);  // the monitor pushes the rules
  push_rules();
  reply({{"ok", true}}, nullptr);
}

void Agent::stop_filter(Session& s, const Reply& reply) {
  if (s.owned_instance.empty()) return reply({{"ok", true}, {"was_started", false}}, nullptr);
  const std::string inst = s.owned_instance;
  const bool deny = instance(inst).deny_expired;
  for (const auto& [id, t] : s.pending) expire(id, deny);
  s.pending.clear();
  s.expiry_timer.cancel();
  close_channel(s);
  s.wants_direct = false;
  s.owned_instance.clear();
  s.stat_mode = false;
  push_config();
  // The seed's stop_filter detaches the filter: the instance's rules leave the datapath.
  set_instance(inst, {{"active", "false"}}, reply);
}

void Agent::inject(const json& params, uint8_t direction, const Reply& reply) {
  const int64_t adapter = int_param(params, "adapter", -1, 0, INT32_MAX);
  if (adapter < 0) throw ApiError(-32602, kErrInvalidParameter, "'adapter' (an adapter id) is required");
  bool known = false;
  for (const auto& [k, a] : adapters_) known |= a.id == adapter;
  if (!known) throw ApiError(-32602, kErrNotFound, "no adapter " + std::to_string(adapter));
  const std::vector<uint8_t> frame = hex_bytes(params, "data");
  if (frame.size() < 14 || frame.size() > protocol::kMaxPacket)
    throw ApiError(-32602, kErrInvalidParameter,
                   "a frame has 14.." + std::to_string(protocol::kMaxPacket) + " bytes, not " + std::to_string(frame.size()));
  const int64_t times = int_param(params, "num_times", 1, 1, 1000000);
  if (!plugin_) throw ApiError(-32000, kErrNotReady, "the plugin is not attached");
  if (!plugin_->inject(uint32_t(adapter), direction, uint32_t(times), frame))
    throw ApiError(-32000, kErrNotReady, "the plugin's command ring is full; try again");
  reply({{"ok", true}}, nullptr);
}

void Agent::set_adapter(const json& params, const Reply& reply) {
  const int64_t id = int_param(params, "adapter", -1, 0, INT32_MAX);
  std::string key;
  for (const auto& [k, a] : adapters_)
    if (a.id == id && id >= 0) key = k;
  if (key.empty()) throw ApiError(-32602, kErrNotFound, "no adapter " + std::to_string(id));
  std::map<std::string, std::string> settings = adapters_[key].settings;
  for (const auto& [k, v] : params.items()) {
    if (k == "adapter") continue;
    if (k == "max_packet_bytes" || k == "buffer_size" || k == "packet_timeout") {
      const int64_t hi = k == "max_packet_bytes" ? Adapter::kDefaultMaxPacketBytes : INT32_MAX;
      settings[k] = std::to_string(int_param(params, k.c_str(), 0, 0, hi));
    } else if (k == "collect_statistics") {
      if (!v.is_boolean()) throw ApiError(-32602, kErrInvalidParameter, "'collect_statistics' must be true or false");
      settings[k] = v.get<bool>() ? "true" : "false";
    } else if (k == "promiscuous_mode" || k == "wifi_monitor_mode") {
      if (v == false) continue;
      throw ApiError(-32602, kErrNotSupported,
                     k == "promiscuous_mode"
                         ? "promiscuous mode is not supported: the filter already sees every frame of the VM's port"
                         : "WiFi monitor mode is not supported: VM ports are not WiFi adapters");
    } else {
      throw ApiError(-32602, kErrInvalidParameter,
                     "unknown adapter property '" + k +
                         "' (max_packet_bytes, collect_statistics, buffer_size, packet_timeout)");
    }
  }
  commit(json::array({{{"op", "update"}, {"table", "Adapter"},
                                     {"where", json::array({json::array({"key", "==", key})})},
                                     {"row", {{"settings", ovsdb_make_map(settings)}}}}}),
                       [reply](const json&, const json& error) {
                         if (database_refused(reply, error, kErrNotReady)) return;
                         reply({{"ok", true}}, nullptr);
                       });
}

void Agent::config(Session& s, const json& params, const Reply& reply) {
  const std::string inst = instance_of(params);
  if (!params.contains("name") || !params["name"].is_string())
    throw ApiError(-32602, kErrInvalidParameter, "config needs 'name'");
  std::string lname;
  for (char c : params["name"].get<std::string>()) lname += char(std::tolower(static_cast<unsigned char>(c)));
  const auto it = kInstanceSettings.find(lname);
  if (it == kInstanceSettings.end())
    throw ApiError(-32602, kErrInvalidParameter,
                   "unknown setting '" + params["name"].get<std::string>() +
                       "' (the agent keeps DenyExpiredRequests, ForceAppPermissionCheck, LoggingEnabled)");
  const Instance i = instance(inst);
  if (!params.contains("value")) {
    const auto v = i.settings.find(it->second);
    return reply({{"value", v != i.settings.end() && truthy(v->second) ? "True" : "False"}}, nullptr);
  }
  if (!params["value"].is_string() || !boolean_text(params["value"].get<std::string>()))
    throw ApiError(-32602, kErrInvalidParameter,
                   "value of " + params["name"].get<std::string>() + " must be True, False, 1, 0, Yes or No");
  if (s.peer().uid != 0)
    throw ApiError(-32001, kErrPrivilegeNotHeld, "changing " + params["name"].get<std::string>() + " needs root");
  set_instance(inst, {{it->second, truthy(params["value"].get<std::string>()) ? "true" : "false"}}, reply);
}

void Agent::install(Session& s, const json& params, const Reply& reply) {
  if (s.peer().uid != 0) throw ApiError(-32001, kErrPrivilegeNotHeld, "install needs root");
  if (!params.contains("guid") || !params["guid"].is_string() || params["guid"].get<std::string>().empty())
    throw ApiError(-32602, kErrInvalidParameter, "install needs 'guid' (the product GUID)");
  const std::string guid = params["guid"];
  json changes = {{"altitude", int_param(params, "altitude", 0, INT32_MIN, INT32_MAX)}};
  if (params.contains("allowed_controllers")) {
    if (!params["allowed_controllers"].is_array())
      throw ApiError(-32602, kErrInvalidParameter, "'allowed_controllers' must be a list of executable paths");
    for (const auto& c : params["allowed_controllers"])
      if (!c.is_string() || c.get<std::string>().empty() || c.get<std::string>()[0] != '/')
        throw ApiError(-32602, kErrInvalidParameter, "allowed controller " + c.dump() + " is not an absolute path");
    changes["allowed_controllers"] = params["allowed_controllers"];
  }
  if (params.contains("force_app_permission_check")) {
    if (!params["force_app_permission_check"].is_boolean())
      throw ApiError(-32602, kErrInvalidParameter, "'force_app_permission_check' must be true or false");
    changes["force_app_permission_check"] = params["force_app_permission_check"].get<bool>() ? "true" : "false";
  }
  // A new instance is installed but not started (its rules wait for start_filter).
  if (!instance(guid).exists) changes["active"] = "false";
  set_instance(guid, changes, reply);
}

void Agent::uninstall(Session& s, const json& params, const Reply& reply) {
  if (s.peer().uid != 0) throw ApiError(-32001, kErrPrivilegeNotHeld, "uninstall needs root");
  if (!params.contains("guid") || !params["guid"].is_string())
    throw ApiError(-32602, kErrInvalidParameter, "uninstall needs 'guid'");
  const std::string guid = params["guid"];
  if (!instance(guid).exists && guid != kDefaultInstance)
    throw ApiError(-32602, kErrFileNotFound, "instance '" + guid + "' is not installed");
  const json ops = json::array({{{"op", "delete"}, {"table", "Rule"}, {"where", json::array({json::array({"instance", "==", guid})})}},
                                {{"op", "delete"}, {"table", "Instance"}, {"where", json::array({json::array({"guid", "==", guid})})}}});
  commit(ops, [reply](const json& result, const json& error) {
    if (database_refused(reply, error, kErrNotReady)) return;
    reply({{"ok", true}, {"rules_deleted", result[0].value("count", 0)}}, nullptr);
  });
}

json Agent::driver_status(const json& params) const {
  const std::string guid = instance_of(params.contains("guid") ? json{{"instance", params["guid"]}} : params);
  const Instance i = instance(guid);
  // The seed's MODULE_STATUS_*: 0 not present, 1 stopped, 4 running.
  const int st = !i.exists && guid != kDefaultInstance ? 0 : plugin_ && i.active ? 4 : 1;
  return {{"status", st}, {"plugin_attached", bool(plugin_)}, {"active", i.active}};
}

void Agent::add_rule(const json& params, const Reply& reply) {
  const std::string inst = instance_of(params);
  if (!params.contains("rule") || !params["rule"].is_object())
    throw ApiError(-32602, kErrInvalidParameter, "add_rule needs {\"rule\": {...}}");
  matcher::Rule rule;
  try {
    rule = matcher::rule_from_json(params["rule"]);
    if (!rule.bpf.empty()) matcher::compile_bpf(rule.bpf);
  } catch (const std::exception& e) {
    throw ApiError(-32602, kErrInvalidParameter, e.what());
  }
  const std::string at = params.value("at", std::string("tail"));
  if (at != "head" && at != "tail") throw ApiError(-32602, kErrInvalidParameter, "'at' must be head or tail");
  const std::string kind = matcher::to_string(rule.kind);
  if (rows_by_id_.count({inst, kind, rule.id}))
    throw ApiError(-32602, kErrAlreadyExists, kind + " rule " + std::to_string(rule.id) + " exists already");
  const auto pos = positions_.find({inst, kind});
  const bool any = pos != positions_.end();
  const int64_t lo = any ? *pos->second.begin() : 0, hi = any ? *pos->second.rbegin() : 0;
  json spec = matcher::rule_to_json(rule);
  spec.erase("kind");
  spec.erase("id");
  const int64_t position = !any ? 0 : at == "head" ? lo - 1 : hi + 1;
  const json row = {{"instance", inst}, {"kind", kind}, {"rule_id", rule.id}, {"position", position}, {"spec", spec.dump()}};
  // The transaction goes out first; while the server commits it, the plugin gets the rule
  // as the row will make it (learn_row then finds it in place and sends nothing).  If the
  // row does not come as guessed (refused, or changed meanwhile), the guess is taken back.
  commit(json::array({{{"op", "insert"}, {"table", "Rule"}, {"row", row}}}),
         [this, reply, inst, kind, id = rule.id](const json& result, const json& error) {
           drop_provisional(inst, kind, id);
           if (database_refused(reply, error, kErrAlreadyExists, " the rule")) return;
           reply({{"uuid", result[0]["uuid"][1]}}, nullptr);
         });
  // (Not while another add of the same rule is in flight: the database takes one of them.)
  if (std::any_of(provisional_.begin(), provisional_.end(), [&](const Place& p) { return names(p, inst, kind, rule.id); }))
    return;
  std::string text;
  if (const auto place = want_rule(inst, kind, rule.id, position, spec, &text, &rule)) {  // checked above
    provisional_.insert(*place);
    send_rule_changes();
  }
}

void Agent::import_rules(const json& params, const Reply& reply) {
  const std::string inst = instance_of(params);
  if (!params.contains("rules")) throw ApiError(-32602, kErrInvalidParameter, "import_rules needs 'rules'");
  std::vector<matcher::Rule> rules;
  try {
    rules = matcher::rules_from_json(params["rules"]);  // names the rule and the field
    for (const auto& r : rules)
      if (!r.bpf.empty()) matcher::compile_bpf(r.bpf);
  } catch (const std::exception& e) {
    throw ApiError(-32602, kErrInvalidParameter, e.what());
  }
  const bool replace = params.value("replace", false);
  json ops = json::array();
  int64_t next = 0;
  if (replace) {
    ops.push_back({{"op", "delete"}, {"table", "Rule"}, {"where", json::array({json::array({"instance", "==", inst})})}});
  } else {
    for (const auto& [u, row] : rule_rows_) {
      if (str(row, "instance") != inst) continue;
      next = std::max(next, num(row, "position") + 1);
      for (const auto& r : rules)
        if (matcher::to_string(r.kind) == str(row, "kind") && r.id == num(row, "rule_id"))
          throw ApiError(-32602, kErrAlreadyExists,
                         std::string(matcher::to_string(r.kind)) + " rule " + std::to_string(r.id) +
                             " exists already (import with replace to start from an empty instance)");
    }
  }
  for (const auto& r : rules) {
    json spec = matcher::rule_to_json(r);
    spec.erase("kind");
    spec.erase("id");
    ops.push_back({{"op", "insert"}, {"table", "Rule"},
                   {"row", {{"instance", inst}, {"kind", matcher::to_string(r.kind)}, {"rule_id", r.id},
                            {"position", next++}, {"spec", spec.dump()}}}});
  }
  const size_t n = rules.size();
  commit(ops, [reply, n](const json&, const json& error) {
    if (database_refused(reply, error, kErrAlreadyExists, " the rules")) return;
    reply({{"imported", n}}, nullptr);
  });
}

// update_rule {kind, id, rule}: the rule replaced in place (its position kept; the new rule
// may carry another id, if that one is free).  move_rule {kind, id, to: up|down}: swaps
// it with its neighbour in evaluation order.  One transaction each.
void Agent::change_rule(const std::string& method, const json& params, const Reply& reply) {
  const std::string inst = instance_of(params);
  if (!params.contains("kind") || !params["kind"].is_string() || !params.contains("id") || !params["id"].is_number_unsigned())
    throw ApiError(-32602, kErrInvalidParameter, method + " needs 'kind' and 'id'");
  const std::string kind = params["kind"];
  const int64_t id = params["id"].get<int64_t>();
  std::vector<std::pair<std::string, const json*>> rows;  // uuid, row: this kind, evaluation order
  for (const auto& [u, row] : rule_rows_)
    if (str(row, "instance") == inst && str(row, "kind") == kind) rows.emplace_back(u, &row);
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) {
    return std::make_pair(num(*a.second, "position"), num(*a.second, "rule_id")) <
           std::make_pair(num(*b.second, "position"), num(*b.second, "rule_id"));
  });
  const auto it = std::find_if(rows.begin(), rows.end(), [&](const auto& r) { return num(*r.second, "rule_id") == id; });
  if (it == rows.end()) throw ApiError(-32602, kErrNotFound, kind + " rule " + std::to_string(id) + " does not exist");
  auto uuid_is = [](const std::string& u) { return json::array({json::array({"_uuid", "==", json::array({"uuid", u})})}); };
  json ops = json::array();
  if (method == "update_rule") {
    if (!params.contains("rule") || !params["rule"].is_object())
      throw ApiError(-32602, kErrInvalidParameter, "update_rule needs {\"rule\": {...}}");
    json r = params["rule"];
    if (!r.contains("kind")) r["kind"] = kind;
    matcher::Rule rule;
    try {
      rule = matcher::rule_from_json(r);
      if (!rule.bpf.empty()) matcher::compile_bpf(rule.bpf);
    } catch (const std::exception& e) {
      throw ApiError(-32602, kErrInvalidParameter, e.what());
    }
    if (matcher::to_string(rule.kind) != kind) throw ApiError(-32602, kErrInvalidParameter, "update_rule cannot change a rule's kind");
    if (rule.id != id)
      for (const auto& [u, row] : rows)
        if (num(*row, "rule_id") == rule.id)
          throw ApiError(-32602, kErrAlreadyExists, kind + " rule " + std::to_string(rule.id) + " exists already");
    json spec = matcher::rule_to_json(rule);
    spec.erase("kind");
    spec.erase("id");
    ops.push_back({{"op", "update"}, {"table", "Rule"}, {"where", uuid_is(it->first)},
                   {"row", {{"rule_id", rule.id}, {"spec", spec.dump()}}}});
  } else {
    const std::string to = params.value("to", std::string());
    if (to != "up" && to != "down") throw ApiError(-32602, kErrInvalidParameter, "'to' must be up or down");
    const auto other = to == "up" ? (it == rows.begin() ? rows.end() : it - 1) : it + 1;
    if (other == rows.end()) return reply({{"moved", false}}, nullptr);  // already first / last
    int64_t pa = num(*it->second, "position"), pb = num(*other->second, "position");
    if (pa == pb) pb += to == "up" ? -1 : 1;  // equal positions (rows written by others): make room
    ops.push_back({{"op", "update"}, {"table", "Rule"}, {"where", uuid_is(it->first)}, {"row", {{"position", pb}}}});
    ops.push_back({{"op", "update"}, {"table", "Rule"}, {"where", uuid_is(other->first)}, {"row", {{"position", pa}}}});
  }
  commit(ops, [reply, method](const json&, const json& error) {
    if (database_refused(reply, error, kErrNotReady)) return;
    reply(method == "move_rule" ? json{{"moved", true}} : json{{"ok", true}}, nullptr);
  });
}

void Agent::delete_rules(const json& params, const Reply& reply) {
  const std::string inst = instance_of(params);
  json where = json::array({json::array({"instance", "==", inst})});
  if (params.contains("kind")) {
    if (!params["kind"].is_string() || !std::set<std::string>{"filter", "passthrough", "connection"}.count(params["kind"]))
      throw ApiError(-32602, kErrInvalidParameter, "'kind' must be filter, passthrough or connection");
    where.push_back({"kind", "==", params["kind"]});
  }
  if (params.contains("id")) {
    if (!params["id"].is_number_unsigned() || params["id"].get<uint64_t>() > 0xffffffffu)
      throw ApiError(-32602, kErrInvalidParameter, "'id' must be a rule id");
    where.push_back({"rule_id", "==", params["id"]});
  }
  const bool one = params.contains("id");
  if (one && !params.contains("kind")) throw ApiError(-32602, kErrInvalidParameter, "delete_rule needs 'kind' and 'id'");
  json ops = json::array({{{"op", "delete"}, {"table", "Rule"}, {"where", where}}});
  std::set<std::string> uuids;
  if (one) {
    // One rule: by its row's uuid (the server finds it at once; a condition on the other
    // columns makes it look at every row of the table).
    const auto rows = rows_by_id_.find({inst, params["kind"].get<std::string>(), params["id"].get<uint32_t>()});
    if (rows == rows_by_id_.end()) throw ApiError(-32602, kErrNotFound, "no such rule");
    uuids = rows->second;
    ops = json::array();
    for (const auto& u : uuids) ops.push_back({{"op", "delete"}, {"table", "Rule"}, {"where", {{"_uuid", "==", {"uuid", u}}}}});
  }
  commit(ops, [this, reply, one, uuids](const json& result, const json& error) {
    if (!error.is_null()) {
      for (const auto& u : uuids)  // still there: back into the plugin
        if (!row_entries_.count(u)) learn_row(u);
      send_rule_changes();
      database_refused(reply, error, kErrNotReady);
      return;
    }
    int64_t n = 0;
    for (const auto& r : result) n += r.value("count", 0);
    if (one && n == 0) {
      const ApiError e(-32602, kErrNotFound, "no such rule");
      return reply(nullptr, &e);
    }
    reply({{"deleted", n}}, nullptr);
  });
  // The transaction is out: the rule leaves the plugin while the server commits it.
  for (const auto& u : uuids) forget_row(u, true);
  if (!uuids.empty()) send_rule_changes();
}

json Agent::list_rules(const json& params) const {
  const std::string inst = instance_of(params);
  if (params.contains("kind") && !params["kind"].is_string()) return json::array();  // no kind matches
  return instance_rules(inst, params.value("kind", std::string()));
}

json Agent::statistics() {
  if (!plugin_) throw ApiError(-32000, kErrNotReady, "the plugin is not attached");
  const json st = plugin_->call("stats");
  // One adapter may have had several netdevs in the plugin (a port re-created, or its
  // type changed): its counters are the sum of all of them.
  std::map<int64_t, json> merged;
  for (const auto& a : st["adapters"]) {
    json& m = merged[a["adapter"].get<int64_t>()];
    if (m.is_null()) {
      m = a;
      continue;
    }
    for (const char* dir : {"incoming", "outgoing"})
      for (auto& [k, v] : m[dir].items())
        if (v.is_number_unsigned() && a[dir].contains(k)) v = v.get<uint64_t>() + a[dir][k].get<uint64_t>();
  }
  json adapters = json::array();
  for (const auto& [id, a] : merged) {
    const json& in = a["incoming"];
    const json& out = a["outgoing"];
    // The seed's names, from the adapter's (the VM's NIC's) point of view: it receives
    // what OVS sends to it (incoming) and sends what OVS receives from it (outgoing).
    bool collect = true;
    for (const auto& [k, ad] : adapters_)
      if (ad.id == id) collect = ad.collect_statistics();
    adapters.push_back({{"adapter_id", a["adapter"]},
                        {"collect_statistics", collect},
                        {"total",
                         {{"packets_received", in["packets"]}, {"bytes_received", in["bytes"]},
                          {"packets_sent", out["packets"]}, {"bytes_sent", out["bytes"]},
                          {"packets_dropped_inbound", in["dropped"]}, {"bytes_dropped_inbound", in["dropped_bytes"]},
                          {"packets_dropped_outbound", out["dropped"]}, {"bytes_dropped_outbound", out["dropped_bytes"]}}},
                        {"filter",
                         {{"packets_received", in["filter_packets"]}, {"bytes_received", in["filter_bytes"]},
                          {"packets_sent", out["filter_packets"]}, {"bytes_sent", out["filter_bytes"]},
                          {"packets_dropped_inbound", in["dropped"]}, {"bytes_dropped_inbound", in["dropped_bytes"]},
                          {"packets_dropped_outbound", out["dropped"]}, {"bytes_dropped_outbound", out["dropped_bytes"]}}},
                        {"events_lost", in["events_lost"].get<uint64_t>() + out["events_lost"].get<uint64_t>()}});
  }
  // Per-rule hits, named as each instance knows its rules.
  json rules = json::array();
  for (const auto& r : st["rules"]) {
    const auto o = origins_.find(r["id"].get<uint32_t>());
    if (o == origins_.end() || o->second.retired) continue;  // a deleted rule's
    rules.push_back({{"instance", o->second.instance}, {"kind", matcher::to_string(o->second.kind)},
                     {"id", o->second.rule_id}, {"hits", r["hits"]}});
  }
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return {{"adapters", adapters}, {"rules", rules}, {"time_ns", uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec)}};
}

}  // namespace vpf::agent
