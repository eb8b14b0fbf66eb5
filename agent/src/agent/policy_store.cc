// vpf-agent: the OVSDB databases (see policy_store.h).
#include "policy_store.h"

#include "rule_rows.h"

#include <unistd.h>

#include <algorithm>
#include <fstream>

#include "agent_common.h"
#include "client_api.h"
#include "event_router.h"
#include "plugin_link.h"
#include "vpf/run_program.h"

namespace vpf::agent {

using nlohmann::json;

namespace {
constexpr const char* kDb = "vportfilter";
}  // namespace

void PolicyStore::start() {
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
}

void PolicyStore::connect_ovsdb() {
  ovs_db_ = std::make_shared<OvsdbClient>(a_.io());
  ovs_db_->connect(a_.options().ovsdb);
  ovs_db_->on_close([this](const std::string& why) {
    log("lost ovsdb-server: " + why + "; exiting (a supervisor restarts the agent)");
    a_.io().stop();
  });
  if (a_.options().policy_db.empty() || a_.options().policy_db == a_.options().ovsdb) {
    policy_db_ = ovs_db_;
  } else {
    policy_db_ = std::make_shared<OvsdbClient>(a_.io());
    policy_db_->connect(a_.options().policy_db);
    policy_db_->on_close([this](const std::string& why) {
      log("lost the policy database server: " + why + "; exiting");
      a_.io().stop();
    });
  }
}

bool PolicyStore::ensure_policy_db() {
  const json dbs = policy_db_->call_sync("list_dbs", json::array());
  if (std::find(dbs.begin(), dbs.end(), json(kDb)) != dbs.end()) {
    // An older schema is converted in place (ovsdb-server keeps the rows).
    std::ifstream f(a_.options().schema);
    const json want = json::parse(f, nullptr, false);
    const json have = policy_db_->call_sync("get_schema", json::array({kDb}));
    if (want.is_object() && have.value("version", "") != want.value("version", "")) {
      const std::string server = a_.options().policy_db.empty() ? a_.options().ovsdb : a_.options().policy_db;
      if (const std::string err = run_program({"ovsdb-client", "convert", server, a_.options().schema}); !err.empty())
        throw std::runtime_error("could not convert the vportfilter database: " + err);
      log("converted the vportfilter database from schema " + have.value("version", "?") + " to " +
          want.value("version", "?"));
      return true;
    }
    return false;
  }
  if (policy_db_ != ovs_db_)
    throw std::runtime_error("the server at " + a_.options().policy_db + " has no vportfilter database");
  // Local server: create the file (if missing) and add it to the running server.
  if (::access(a_.options().db_file.c_str(), F_OK) != 0) {
    if (const std::string err = run_program({"ovsdb-tool", "create", a_.options().db_file, a_.options().schema}); !err.empty())
      throw std::runtime_error("could not create the vportfilter database: " + err);
  }
  if (const std::string err = run_program({"ovs-appctl", "-t", "ovsdb-server", "ovsdb-server/add-db", a_.options().db_file});
      !err.empty())
    throw std::runtime_error("could not add the vportfilter database: " + err);
  log("created the vportfilter database in " + a_.options().db_file);
  return true;
}

void PolicyStore::on_ovs_update(const json& updates) {
  view_.apply(updates);
  auto next = vm_ports(view_, a_.options().vm_types);
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

void PolicyStore::assign_ids() {
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
  a_.link().push_adapters();
  a_.api().announce_adapters();
}

void PolicyStore::on_policy_update(const json& updates) {
  bool rules_only = true;
  for (const auto& [table, rows] : updates.items()) {
    auto* t = table == "Adapter" ? &adapter_rows_ : table == "Instance" ? &instance_rows_ : table == "Rule" ? &rule_rows_ : nullptr;
    if (t) ovsdb_apply_rows(*t, rows);
    rules_only = rules_only && table == "Rule";
  }
  if (rules_only && updates.contains("Rule")) {
    a_.link().push_rule_rows(updates["Rule"]);  // the common case: rules added, changed, deleted
    return;
  }
  load_instances();
  assign_ids();
  a_.link().push_rules();
  a_.link().push_config();
  a_.events().sync_channels();
}

json PolicyStore::instance_rules(const std::string& instance, const std::string& kind) const {
  return rules_of_rows(rule_rows_, instance, kind);
}

void PolicyStore::load_instances() {
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

Instance PolicyStore::instance(const std::string& guid) const {
  const auto it = instances_.find(guid);
  if (it != instances_.end()) return it->second;
  Instance none;
  none.guid = guid;
  return none;
}

// Writes `changes` (settings key -> text, or "altitude"/"allowed_controllers") into the
// instance's row, creating the row when missing; replies after the commit.
void PolicyStore::set_instance(const std::string& guid, const json& changes, const Reply& reply) {
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

void PolicyStore::commit(json ops, OvsdbClient::Reply done) {
  // ovsdb-server sends a session's pending monitor updates before any reply on it
  // (ovsdb_jsonrpc_session_send flushes them first), and our monitor of this database is
  // on the same session: when the reply comes, the update it caused has been handled
  // (rows read, the plugin changed).  So when `done` runs, this agent's view (list_rules,
  // status, ...) already shows the change and the rules are in force.
  policy_db_->transact(kDb, std::move(ops), std::move(done));
}

}  // namespace vpf::agent
