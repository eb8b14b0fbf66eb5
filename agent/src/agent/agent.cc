// vpf-agent: see agent.h.
#include "agent.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <iostream>

#include "vpf/matcher/bpf.h"
#include "vpf/matcher/rules_json.h"

namespace vpf::agent {

using nlohmann::json;
namespace asio = boost::asio;
using local = asio::local::stream_protocol;

namespace {

constexpr const char* kDb = "vportfilter";
constexpr const char* kDefaultInstance = "default";

// Seed error codes (Win32 numbers, kept for their meaning).
constexpr int kErrInvalidParameter = 87;
constexpr int kErrNotFound = 1168;
constexpr int kErrAlreadyExists = 183;
constexpr int kErrNotReady = 21;

void log(const std::string& msg) {
  char ts[32];
  const std::time_t t = std::time(nullptr);
  std::strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  std::cerr << ts << " vpf-agent: " << msg << std::endl;
}


std::string str(const json& row, const char* col) {
  return row.contains(col) && row[col].is_string() ? row[col].get<std::string>() : "";
}
int64_t num(const json& row, const char* col) {
  return row.contains(col) && row[col].is_number_integer() ? row[col].get<int64_t>() : 0;
}

}  // namespace

Agent::Agent(asio::io_context& io, Options opts) : io_(io), opts_(std::move(opts)), plugin_timer_(io) {}

Agent::~Agent() {
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
                      {{"Adapter", {{"columns", {"key", "adapter_id", "name"}}}},
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
  if (std::find(dbs.begin(), dbs.end(), json(kDb)) != dbs.end()) return false;
  if (policy_db_ != ovs_db_)
    throw std::runtime_error("the server at " + opts_.policy_db + " has no vportfilter database");
  // Local server: create the file (if missing) and add it to the running server.
  if (::access(opts_.db_file.c_str(), F_OK) != 0) {
    const std::string cmd = "ovsdb-tool create '" + opts_.db_file + "' '" + opts_.schema + "'";
    if (std::system(cmd.c_str()) != 0) throw std::runtime_error("could not create the vportfilter database: " + cmd);
  }
  const std::string add = "ovs-appctl -t ovsdb-server ovsdb-server/add-db '" + opts_.db_file + "'";
  if (std::system(add.c_str()) != 0) throw std::runtime_error("could not add the vportfilter database: " + add);
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
  push_adapters();
}

// ---- vportfilter database: rules, instances, ids ----

void Agent::on_policy_update(const json& updates) {
  for (const auto& [table, rows] : updates.items()) {
    auto* t = table == "Adapter" ? &adapter_rows_ : table == "Instance" ? &instance_rows_ : table == "Rule" ? &rule_rows_ : nullptr;
    if (t) ovsdb_apply_rows(*t, rows);
  }
  assign_ids();
  push_rules();
}

json Agent::instance_rules(const std::string& instance, const std::string& kind) const {
  std::vector<const json*> rows;
  for (const auto& [u, row] : rule_rows_)
    if (str(row, "instance") == instance && (kind.empty() || str(row, "kind") == kind)) rows.push_back(&row);
  std::sort(rows.begin(), rows.end(), [](const json* a, const json* b) {
    return std::make_tuple(str(*a, "kind"), num(*a, "position"), num(*a, "rule_id")) <
           std::make_tuple(str(*b, "kind"), num(*b, "position"), num(*b, "rule_id"));
  });
  json out = json::array();
  for (const json* row : rows) {
    json spec = json::parse(str(*row, "spec"), nullptr, false);
    if (!spec.is_object()) spec = json::object();
    spec["kind"] = str(*row, "kind");
    spec["id"] = num(*row, "rule_id");
    out.push_back(std::move(spec));
  }
  return out;
}

// ---- the plugin ----

void Agent::try_plugin() {
  if (plugin_) {
    // Still there?  A closed control socket reads as EOF.
    pollfd p{plugin_->socket_fd(), POLLIN, 0};
    if (::poll(&p, 1, 0) > 0 && (p.revents & (POLLIN | POLLHUP | POLLERR))) {
      char c;
      if (::recv(plugin_->socket_fd(), &c, 1, MSG_PEEK | MSG_DONTWAIT) <= 0) {
        log("the plugin went away");
        plugin_.reset();
      }
    }
  }
  if (!plugin_ && ::access(opts_.plugin_socket.c_str(), F_OK) == 0) {
    try {
      plugin_ = std::make_unique<channel::ChannelClient>(opts_.plugin_socket);
      log("attached to the plugin at " + opts_.plugin_socket);
      last_rules_pushed_ = last_adapters_pushed_ = nullptr;
      push_adapters();
      push_rules();
    } catch (const std::exception& e) {
      log(std::string("cannot attach to the plugin: ") + e.what());
    }
  }
  plugin_timer_.expires_after(std::chrono::seconds(1));
  plugin_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec) try_plugin();
  });
}

void Agent::push_adapters() {
  json list = json::array();
  for (const auto& [key, a] : adapters_)
    if (a.id >= 0) list.push_back({{"port", a.name}, {"adapter", a.id}, {"vm", a.vm}});
  if (!plugin_ || list == last_adapters_pushed_) return;
  try {
    plugin_->call("set_adapters", {{"adapters", list}});
    last_adapters_pushed_ = list;
  } catch (const std::exception& e) {
    log(std::string("set_adapters: ") + e.what());
    plugin_.reset();
  }
}

void Agent::push_rules() {
  // The default instance's rules in their order (kind, then position).
  json rules = json::array();
  for (auto& spec : instance_rules(kDefaultInstance, "")) {
    // A row written by another client may be wrong: report it, skip it (checked once per
    // distinct text).
    const std::string text = spec.dump();
    auto it = checked_.find(text);
    if (it == checked_.end()) {
      std::string err;
      try {
        const matcher::Rule r = matcher::rule_from_json(spec);
        if (!r.bpf.empty()) matcher::compile_bpf(r.bpf);
      } catch (const std::exception& e) {
        err = e.what();
        log("rule row " + spec["kind"].get<std::string>() + " " + spec["id"].dump() + " ignored: " + err);
      }
      it = checked_.emplace(text, err).first;
    }
    if (it->second.empty()) rules.push_back(spec);
  }
  if (!plugin_ || rules == last_rules_pushed_) return;
  try {
    plugin_->call("set_rules", {{"rules", rules}});
    last_rules_pushed_ = rules;
  } catch (const channel::RpcError& e) {
    log(std::string("the plugin refused the rule set: ") + e.what());
  } catch (const std::exception& e) {
    log(std::string("set_rules: ") + e.what());
    plugin_.reset();
  }
}

// ---- clients ----

bool Agent::authorized(int uid, const std::string& exe) const {
  if (uid == 0) return true;
  for (const auto& [u, row] : instance_rows_)
    for (const auto& c : ovsdb_set(row.value("allowed_controllers", json())))
      if (c.is_string() && c.get<std::string>() == exe) return true;
  return false;
}

namespace {

struct Session : std::enable_shared_from_this<Session> {
  Session(local::socket s, Agent& a) : sock(std::move(s)), agent(a) {}
  local::socket sock;
  Agent& agent;
  asio::streambuf buf;
  std::deque<std::string> out;
  bool writing = false;

  void write(const json& msg) {
    out.push_back(msg.dump() + "\n");
    if (!writing) flush();
  }
  void flush() {
    if (out.empty()) {
      writing = false;
      return;
    }
    writing = true;
    auto self = shared_from_this();
    auto data = std::make_shared<std::string>(std::move(out.front()));
    out.pop_front();
    asio::async_write(sock, asio::buffer(*data), [self, data](const boost::system::error_code& ec, size_t) {
      if (ec) return;
      self->flush();
    });
  }
  void read() {
    auto self = shared_from_this();
    asio::async_read_until(sock, buf, '\n', [self](const boost::system::error_code& ec, size_t n) {
      if (ec) {
        if (ec == asio::error::not_found) {  // a line longer than the limit
          self->write({{"jsonrpc", "2.0"}, {"id", nullptr},
                       {"error", {{"code", -32600}, {"message", "request longer than 16 MiB"}}}});
        }
        return;
      }
      std::string line(asio::buffers_begin(self->buf.data()), asio::buffers_begin(self->buf.data()) + long(n));
      self->buf.consume(n);
      self->dispatch(line);
      self->read();
    });
  }
  void dispatch(const std::string& line) {
    const json req = json::parse(line, nullptr, false);
    auto error = [&](const json& id, int code, int seed, const std::string& msg) {
      write({{"jsonrpc", "2.0"}, {"id", id}, {"error", {{"code", code}, {"message", msg}, {"data", {{"seed_error", seed}}}}}});
    };
    if (req.is_discarded()) return error(nullptr, -32700, kErrInvalidParameter, "malformed JSON");
    if (!req.is_object() || !req.contains("method") || !req["method"].is_string())
      return error(req.is_object() ? req.value("id", json(nullptr)) : json(nullptr), -32600, kErrInvalidParameter,
                   "not a JSON-RPC request (an object with a string 'method')");
    const json id = req.value("id", json(nullptr));
    const json params = req.contains("params") ? req["params"] : json::object();
    auto self = shared_from_this();
    agent.handle(req["method"].get<std::string>(), params.is_object() ? params : json::object(),
                 [self, id](const json& result, const ApiError* e) {
                   if (e)
                     self->write({{"jsonrpc", "2.0"}, {"id", id},
                                  {"error", {{"code", e->code}, {"message", e->what()}, {"data", {{"seed_error", e->seed}}}}}});
                   else
                     self->write({{"jsonrpc", "2.0"}, {"id", id}, {"result", result}});
                 });
  }
};

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
    const std::string exe = exe_of(cred.pid);
    auto session = std::make_shared<Session>(std::move(s), *this);
    if (!authorized(int(cred.uid), exe)) {
      const std::string why = "permission denied: uid " + std::to_string(cred.uid) + " (" + (exe.empty() ? "?" : exe) +
                              ") is not root and not an allowed controller";
      log("client refused: " + why);
      session->write({{"jsonrpc", "2.0"}, {"id", nullptr},
                      {"error", {{"code", -32001}, {"message", why}, {"data", {{"seed_error", 1314}}}}}});
      // The session ends when the write completes (it holds the last reference).
    } else {
      session->read();
    }
    accept();
  });
}

std::string Agent::instance_of(const json& params) const {
  if (!params.contains("instance")) return kDefaultInstance;
  if (!params["instance"].is_string() || params["instance"].get<std::string>().empty())
    throw ApiError(-32602, kErrInvalidParameter, "'instance' must be a non-empty string");
  return params["instance"].get<std::string>();
}

void Agent::handle(const std::string& method, const json& params, Reply reply) {
  try {
    if (method == "list_adapters") {
      json out = json::array();
      for (const auto& [k, a] : adapters_)
        if (a.id >= 0) out.push_back(a.to_json());
      std::sort(out.begin(), out.end(), [](const json& a, const json& b) { return a["id"] < b["id"]; });
      return reply(out, nullptr);
    }
    if (method == "add_rule") return add_rule(params, reply);
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
    if (method == "status")
      return reply({{"plugin_attached", bool(plugin_)},
                    {"adapters", adapters_.size()},
                    {"rules", rule_rows_.size()},
                    {"protocol_version", 1}},
                   nullptr);
    throw ApiError(-32601, 1, "unknown method '" + method + "'");
  } catch (const ApiError& e) {
    reply(nullptr, &e);
  } catch (const std::exception& e) {
    const ApiError err(-32603, kErrInvalidParameter, e.what());
    reply(nullptr, &err);
  }
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
  int64_t lo = 0, hi = 0;
  bool any = false;
  for (const auto& [u, row] : rule_rows_) {
    if (str(row, "instance") != inst || str(row, "kind") != kind) continue;
    if (num(row, "rule_id") == rule.id)
      throw ApiError(-32602, kErrAlreadyExists, kind + " rule " + std::to_string(rule.id) + " exists already");
    lo = any ? std::min(lo, num(row, "position")) : num(row, "position");
    hi = any ? std::max(hi, num(row, "position")) : num(row, "position");
    any = true;
  }
  json spec = matcher::rule_to_json(rule);
  spec.erase("kind");
  spec.erase("id");
  const json row = {{"instance", inst}, {"kind", kind}, {"rule_id", rule.id},
                    {"position", !any ? 0 : at == "head" ? lo - 1 : hi + 1}, {"spec", spec.dump()}};
  policy_db_->transact(kDb, json::array({{{"op", "insert"}, {"table", "Rule"}, {"row", row}}}),
                       [reply](const json& result, const json& error) {
                         if (!error.is_null()) {
                           const ApiError e(-32000, kErrAlreadyExists, "the database refused the rule: " + error.dump());
                           return reply(nullptr, &e);
                         }
                         reply({{"uuid", result[0]["uuid"][1]}}, nullptr);
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
    if (!params["id"].is_number_unsigned()) throw ApiError(-32602, kErrInvalidParameter, "'id' must be a rule id");
    where.push_back({"rule_id", "==", params["id"]});
  }
  const bool one = params.contains("id");
  if (one && !params.contains("kind")) throw ApiError(-32602, kErrInvalidParameter, "delete_rule needs 'kind' and 'id'");
  policy_db_->transact(kDb, json::array({{{"op", "delete"}, {"table", "Rule"}, {"where", where}}}),
                       [reply, one](const json& result, const json& error) {
                         if (!error.is_null()) {
                           const ApiError e(-32000, kErrNotReady, "the database refused: " + error.dump());
                           return reply(nullptr, &e);
                         }
                         const int64_t n = result[0].value("count", 0);
                         if (one && n == 0) {
                           const ApiError e(-32602, kErrNotFound, "no such rule");
                           return reply(nullptr, &e);
                         }
                         reply({{"deleted", n}}, nullptr);
                       });
}

json Agent::list_rules(const json& params) const {
  const std::string inst = instance_of(params);
  if (params.contains("kind") && !params["kind"].is_string()) return json::array();  // no kind matches
  return instance_rules(inst, params.value("kind", std::string()));
}

json Agent::statistics() {
  if (!plugin_) throw ApiError(-32000, kErrNotReady, "the plugin is not attached");
  const json st = plugin_->call("stats");
  json adapters = json::array();
  for (const auto& a : st["adapters"]) {
    const json& in = a["incoming"];
    const json& out = a["outgoing"];
    // The seed's names, from the adapter's (the VM's NIC's) point of view: it receives
    // what OVS sends to it (incoming) and sends what OVS receives from it (outgoing).
    adapters.push_back({{"adapter_id", a["adapter"]},
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
  return {{"adapters", adapters}, {"rules", st["rules"]}, {"time_ns", uint64_t(std::time(nullptr)) * 1000000000ull}};
}

}  // namespace vpf::agent
