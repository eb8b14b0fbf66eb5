// vpf-agent: the clients (see client_api.h): the method table, handle(), the methods'
// handlers (docs/protocol.md), and the sessions (accept, authorize, close).
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>

#include "client_api.h"

#include "agent_common.h"
#include "event_router.h"
#include "plugin_link.h"
#include "policy_store.h"
#include "vpf/matcher/bpf.h"
#include "vpf/matcher/rules_json.h"

namespace vpf::agent {

using nlohmann::json;
namespace asio = boost::asio;
using local = asio::local::stream_protocol;

namespace {

// The version get_driver_version reports: four 16-bit words, as the seed packs them.
constexpr uint64_t kVersionWords = (uint64_t(0) << 48) | (uint64_t(1) << 32) | (uint64_t(0) << 16) | 0;
// Settings an instance keeps in its row (config method), with their seed names.
const std::map<std::string, std::string> kInstanceSettings = {
    {"denyexpiredrequests", "deny_expired"},
    {"forceapppermissioncheck", "force_app_permission_check"},
    {"loggingenabled", "logging"},
};

// A rule (or a rules file's content) from a request, checked as the classifier would take
// it (its BPF compiled); what is wrong refuses the request.
matcher::Rule rule_param(const json& j) {
  try {
    return matcher::rule_from_json(j, 0, matcher::Check::Compile);
  } catch (const std::exception& e) {
    throw ApiError(rpc::kInvalidParams, kErrorInvalidParameter, e.what());
  }
}
std::vector<matcher::Rule> rules_param(const json& j) {
  try {
    return matcher::rules_from_json(j, matcher::Check::Compile);
  } catch (const std::exception& e) {
    throw ApiError(rpc::kInvalidParams, kErrorInvalidParameter, e.what());
  }
}

std::string exe_of(int pid) {
  char buf[4096];
  const std::string link = "/proc/" + std::to_string(pid) + "/exe";
  const ssize_t n = ::readlink(link.c_str(), buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, size_t(n)) : "";
}


std::vector<uint8_t> hex_bytes(const json& params, const char* name) {
  if (!params.contains(name) || !params[name].is_string())
    throw ApiError(rpc::kInvalidParams, kErrorInvalidParameter, std::string("'") + name + "' must be the frame in hex");
  const std::string& h = params[name].get_ref<const std::string&>();
  if (h.size() % 2) throw ApiError(rpc::kInvalidParams, kErrorInvalidParameter, std::string("'") + name + "': odd number of hex digits");
  std::vector<uint8_t> out(h.size() / 2);
  for (size_t i = 0; i < out.size(); ++i) {
    auto nib = [&](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      throw ApiError(rpc::kInvalidParams, kErrorInvalidParameter, std::string("'") + name + "': '" + c + "' is not a hex digit");
    };
    out[i] = uint8_t(nib(h[2 * i]) << 4 | nib(h[2 * i + 1]));
  }
  return out;
}

int64_t int_param(const json& params, const char* name, int64_t def, int64_t lo, int64_t hi) {
  if (!params.contains(name)) return def;
  if (!params[name].is_number_integer() || params[name].get<int64_t>() < lo || params[name].get<int64_t>() > hi)
    throw ApiError(rpc::kInvalidParams, kErrorInvalidParameter,
                   std::string("'") + name + "' must be an integer in " + std::to_string(lo) + ".." + std::to_string(hi));
  return params[name].get<int64_t>();
}


}  // namespace

ClientApi::~ClientApi() {
  if (acceptor_) ::unlink(a_.options().socket.c_str());
}

void ClientApi::listen() {
  // A stale file from an earlier run is replaced.
  ::unlink(a_.options().socket.c_str());
  acceptor_ = std::make_unique<local::acceptor>(a_.io(), local::endpoint(a_.options().socket));
  ::chmod(a_.options().socket.c_str(), 0666);  // everyone reaches the credential check
  accept();
}

void ClientApi::announce_adapters() {
  std::map<int32_t, std::string> now;
  for (const auto& [key, a] : a_.store().adapters())
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

void ClientApi::check_access(const Session& s, const std::string& guid) const {
  if (s.peer().uid == 0) return;
  const Instance i = a_.store().instance(guid);
  if (i.force_check)
    throw ApiError(rpc::kNotAllowed, kErrorPrivilegeNotHeld,
                   "permission denied: instance '" + guid + "' requires root (ForceAppPermissionCheck)");
  if (!i.allowed.count(s.peer().exe))
    throw ApiError(rpc::kNotAllowed, kErrorPrivilegeNotHeld,
                   "permission denied: " + s.peer().exe + " is not an allowed controller of instance '" + guid + "'");
}

Session* ClientApi::owner_of(const std::string& guid) const {
  for (const auto& s : sessions_)
    if (!s->closed() && s->owned_instance == guid) return s.get();
  return nullptr;
}

bool ClientApi::authorized(const Peer& p) const {
  if (p.uid == 0) return true;
  for (const auto& [g, i] : a_.store().instances())
    if (i.allowed.count(p.exe)) return true;
  return false;
}

void ClientApi::accept() {
  acceptor_->async_accept([this](const boost::system::error_code& ec, local::socket s) {
    if (ec) return;
    ucred cred{};
    socklen_t len = sizeof cred;
    ::getsockopt(s.native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &len);
    Peer peer{int(cred.pid), int(cred.uid), exe_of(cred.pid)};
    auto session = std::make_shared<Session>(std::move(s), a_, peer, a_.options().client_queue_bytes);
    if (!authorized(peer)) {
      const std::string why = "permission denied: uid " + std::to_string(cred.uid) + " (" +
                              (peer.exe.empty() ? "?" : peer.exe) + ") is not root and not an allowed controller";
      log("client refused: " + why);
      session->refuse({{"code", rpc::kNotAllowed}, {"message", why}, {"data", {{"seed_error", kErrorPrivilegeNotHeld}}}});
    } else {
      sessions_.insert(session);
      session->start();
    }
    accept();
  });
}

void ClientApi::on_session_closed(Session& s) {
  closed_sessions_dropped_ += s.events_dropped;
  const bool owned = !s.owned_instance.empty();
  a_.events().close_channel(s);  // the plugin gives its held packets their expiry verdict
  if (owned) {
    if (const size_t n = a_.events().expire_pending(s))
      log("client pid " + std::to_string(s.peer().pid) + " went away holding " + std::to_string(n) +
          " captured packets: " + (a_.store().instance(s.owned_instance).deny_expired ? "dropped" : "sent on") +
          " (DenyExpiredRequests)");
    s.owned_instance.clear();
  }
  // Erase after this call returns: the session may be running one of its own handlers.
  asio::post(a_.io(), [this, p = s.shared_from_this(), owned] {
    sessions_.erase(p);
    if (owned) {
      a_.link().push_rules();
      a_.link().push_config();
    }
    a_.events().sync_channels();  // a monitor less
  });
}

std::string ClientApi::instance_of(const json& params) const {
  if (!params.contains("instance")) return kDefaultInstance;
  if (!params["instance"].is_string() || params["instance"].get<std::string>().empty())
    throw ApiError(rpc::kInvalidParams, kErrorInvalidParameter, "'instance' must be a non-empty string");
  return params["instance"].get<std::string>();
}

// The client API: every JSON-RPC method, who may call it, the parameters it takes, and its
// handler (docs/protocol.md describes each).  handle() checks access from this table alone.
const std::vector<ClientApi::Method>& ClientApi::methods() {
  using A = Access;
  static const std::vector<Method> table = {
      {"status", A::Client, "", [](ClientApi& a, Session&, const json&, const Reply& r) { r(a.status(), nullptr); }},
      {"list_adapters", A::Client, "", [](ClientApi& a, Session&, const json&, const Reply& r) { r(a.list_adapters(), nullptr); }},
      {"set_adapter", A::Client, "{adapter, max_packet_bytes?, collect_statistics?, buffer_size?, packet_timeout?}",
       [](ClientApi& a, Session&, const json& p, const Reply& r) { a.set_adapter(p, r); }},
      {"add_rule", A::Instance, "{rule, at?: head|tail, instance?}",
       [](ClientApi& a, Session&, const json& p, const Reply& r) { a.add_rule(p, r); }},
      {"import_rules", A::Instance, "{rules, replace?, instance?}",
       [](ClientApi& a, Session&, const json& p, const Reply& r) { a.import_rules(p, r); }},
      {"update_rule", A::Instance, "{kind, id, rule, instance?}",
       [](ClientApi& a, Session&, const json& p, const Reply& r) { a.change_rule("update_rule", p, r); }},
      {"move_rule", A::Instance, "{kind, id, to: up|down, instance?}",
       [](ClientApi& a, Session&, const json& p, const Reply& r) { a.change_rule("move_rule", p, r); }},
      {"delete_rule", A::Instance, "{kind, id, instance?}",
       [](ClientApi& a, Session&, const json& p, const Reply& r) { a.delete_rules(p, r); }},
      {"delete_all_rules", A::Instance, "{kind?, instance?}",
       [](ClientApi& a, Session&, const json& p, const Reply& r) { a.delete_rules(p, r); }},
      {"list_rules", A::Client, "{kind?, instance?}",
       [](ClientApi& a, Session&, const json& p, const Reply& r) { r(a.list_rules(p), nullptr); }},
      {"check_bpf", A::Client, "{expression}", [](ClientApi&, Session&, const json& p, const Reply& r) { r(check_bpf(p), nullptr); }},
      {"get_statistics", A::Client, "", [](ClientApi& a, Session&, const json&, const Reply& r) { r(a.statistics(), nullptr); }},
      {"list_connections", A::Client, "{adapter?}",
       [](ClientApi& a, Session&, const json& p, const Reply& r) { r(a.connections(p, false), nullptr); }},
      {"get_connection", A::Client, "{id}",
       [](ClientApi& a, Session&, const json& p, const Reply& r) { r(a.connections(p, true), nullptr); }},
      {"set_connection_state", A::Client, "{id, suspended}",
       [](ClientApi& a, Session&, const json& p, const Reply& r) { r(a.set_connection_state(p), nullptr); }},
      {"complete_connect_request", A::Client, "{id, verdict: allow|block}",
       [](ClientApi& a, Session&, const json& p, const Reply& r) { r(a.complete_connect_request(p), nullptr); }},
      {"install", A::Root, "{guid, altitude?, allowed_controllers?, force_app_permission_check?}",
       [](ClientApi& a, Session&, const json& p, const Reply& r) { a.install(p, r); }},
      {"uninstall", A::Root, "{guid}", [](ClientApi& a, Session&, const json& p, const Reply& r) { a.uninstall(p, r); }},
      {"get_driver_status", A::Client, "{guid?}",
       [](ClientApi& a, Session&, const json& p, const Reply& r) { r(a.driver_status(p), nullptr); }},
      {"get_driver_version", A::Client, "",
       [](ClientApi&, Session&, const json&, const Reply& r) {
         r({{"version", kVersionWords}, {"text", "0.1.0.0"}, {"protocol_version", protocol::kVersion}}, nullptr);
       }},
      {"config", A::Instance, "{name, value?, instance?}",
       [](ClientApi& a, Session& s, const json& p, const Reply& r) { a.config(s, p, r); }},
      {"set_active", A::Instance, "{active, instance?}",
       [](ClientApi& a, Session&, const json& p, const Reply& r) { a.set_active(p, r); }},
      {"start_filter", A::Instance, "{timeout_ms?, mode?: capture|stat, instance?}",
       [](ClientApi& a, Session& s, const json& p, const Reply& r) { a.start_filter(s, p, r); }},
      {"stop_filter", A::Client, "", [](ClientApi& a, Session& s, const json&, const Reply& r) { a.stop_filter(s, r); }},
      {"subscribe", A::Client, "{instance?: NAME|*, packets?, adapters?}",
       [](ClientApi& a, Session& s, const json& p, const Reply& r) { a.subscribe(s, p, r); }},
      {"open_channel", A::Client, "", [](ClientApi& a, Session& s, const json&, const Reply& r) { a.a_.events().open_channel(s, r); }},
      {"send_packet", A::Client, "{adapter, data: HEX, num_times?}",
       [](ClientApi& a, Session&, const json& p, const Reply& r) { a.inject(p, 0, r); }},
      {"insert_incoming_packet", A::Client, "{adapter, data: HEX, num_times?}",
       [](ClientApi& a, Session&, const json& p, const Reply& r) { a.inject(p, 1, r); }},
  };
  return table;
}

void ClientApi::handle(Session& s, const std::string& method, const json& params, Reply reply) {
  try {
    const auto& table = methods();
    const auto m = std::find_if(table.begin(), table.end(), [&](const Method& x) { return method == x.name; });
    if (m == table.end()) {
      std::string known;
      for (const Method& x : table) known += std::string(known.empty() ? "" : ", ") + x.name;
      throw ApiError(rpc::kMethodNotFound, 1, "unknown method '" + method + "' (methods: " + known + ")");
    }
    switch (m->access) {
      case Access::Client: break;  // authorized() let it connect
      case Access::Instance: check_access(s, instance_of(params)); break;
      case Access::Root:
        if (s.peer().uid != 0)
          throw ApiError(rpc::kNotAllowed, kErrorPrivilegeNotHeld, std::string(m->name) + " needs root");
        break;
    }
    try {
      m->run(*this, s, params, reply);
    } catch (const ApiError& e) {
      if (e.code != rpc::kInvalidParams || !*m->params) throw;
      throw ApiError(e.code, e.seed, std::string(e.what()) + " (" + m->name + " takes " + m->params + ")");
    }
  } catch (const ApiError& e) {
    reply(nullptr, &e);
  } catch (const std::exception& e) {
    const ApiError err(rpc::kInternalError, kErrorInvalidParameter, e.what());
    reply(nullptr, &err);
  }
}

json ClientApi::status() const {
  uint64_t client_drops = closed_sessions_dropped_;
  for (const auto& c : sessions_) client_drops += c->events_dropped;
  json events = a_.events().counters();
  events["client_events_dropped"] = client_drops;
  json inst = json::array();
  for (const auto& [g, i] : a_.store().instances()) {
    const Session* o = owner_of(g);
    inst.push_back({{"guid", g}, {"altitude", i.altitude}, {"active", i.active}, {"installed", i.exists},
                    {"client_pid", o ? json(o->peer().pid) : json(nullptr)},
                    {"client_channel", o != nullptr && o->direct_route != 0}});
  }
  return {{"plugin_attached", bool(a_.link().plugin())},
          {"adapters", a_.store().adapters().size()},
          {"rules", a_.store().rule_rows().size()},
          {"instances", inst},
          {"clients", sessions_.size()},
          {"events", events},
          {"protocol_version", protocol::kVersion}};
}

json ClientApi::list_adapters() const {
  json out = json::array();
  for (const auto& [k, a] : a_.store().adapters())
    if (a.id >= 0) out.push_back(a.to_json());
  std::sort(out.begin(), out.end(), [](const json& a, const json& b) { return a["id"] < b["id"]; });
  return out;
}

void ClientApi::set_active(const json& params, const Reply& reply) {
  if (!params.contains("active") || !params["active"].is_boolean())
    throw ApiError(rpc::kInvalidParams, kErrorInvalidParameter, "set_active needs 'active': true or false");
  a_.store().set_instance(instance_of(params), {{"active", params["active"].get<bool>() ? "true" : "false"}}, reply);
}

json ClientApi::check_bpf(const json& params) {
  if (!params.contains("expression") || !params["expression"].is_string())
    throw ApiError(rpc::kInvalidParams, kErrorInvalidParameter, "check_bpf needs {\"expression\": TEXT}");
  try {
    matcher::compile_bpf(params["expression"].get<std::string>());
    return {{"ok", true}};
  } catch (const std::exception& e) {
    return {{"ok", false}, {"error", e.what()}};
  }
}

void ClientApi::subscribe(Session& s, const json& params, const Reply& reply) {
  const std::string what = params.value("instance", std::string("*"));
  if (params.contains("instance") && !params["instance"].is_string())
    throw ApiError(rpc::kInvalidParams, kErrorInvalidParameter, "'instance' must be a name or \"*\"");
  if (params.contains("packets") && !params["packets"].is_boolean())
    throw ApiError(rpc::kInvalidParams, kErrorInvalidParameter, "'packets' must be true or false");
  if (params.contains("adapters") && !params["adapters"].is_boolean())
    throw ApiError(rpc::kInvalidParams, kErrorInvalidParameter, "'adapters' must be true or false");
  s.monitor = params.value("packets", true) ? what : "";
  s.adapter_events = params.value("adapters", s.adapter_events);
  a_.events().sync_channels();  // monitors get copies of events that go to client channels
  reply({{"ok", true}}, nullptr);
}

void ClientApi::start_filter(Session& s, const json& params, const Reply& reply) {
  const std::string inst = instance_of(params);
  const Instance i = a_.store().instance(inst);
  if (!i.exists && inst != kDefaultInstance)
    throw ApiError(rpc::kRefused, kErrorFileNotFound, "instance '" + inst + "' is not installed");
  const int64_t timeout = int_param(params, "timeout_ms", 0, 0, 86400000);
  if (timeout != 0 && timeout < 3000)
    throw ApiError(rpc::kInvalidParams, kErrorImplementationLimit, "timeout must be 0 or at least 3000 ms, not " + std::to_string(timeout));
  const std::string mode = params.value("mode", std::string("capture"));
  if (mode != "capture" && mode != "stat") throw ApiError(rpc::kInvalidParams, kErrorInvalidParameter, "'mode' must be capture or stat");
  if (!s.owned_instance.empty())
    throw ApiError(rpc::kRefused, kErrorConnectionActive, "this client has started instance '" + s.owned_instance + "' already");
  if (const Session* o = owner_of(inst))
    throw ApiError(rpc::kRefused, kErrorConnectionActive,
                   "instance '" + inst + "' is started by another client (pid " + std::to_string(o->peer().pid) + ")");
  s.owned_instance = inst;
  s.timeout_ms = uint32_t(timeout);
  s.stat_mode = mode == "stat";
  s.adapter_events = true;
  a_.link().push_config();
  if (!i.active) return a_.store().set_instance(inst, {{"active", "true"}}, reply);  // the monitor pushes the rules
  a_.link().push_rules();
  reply({{"ok", true}}, nullptr);
}

void ClientApi::stop_filter(Session& s, const Reply& reply) {
  if (s.owned_instance.empty()) return reply({{"ok", true}, {"was_started", false}}, nullptr);
  const std::string inst = s.owned_instance;
  a_.events().expire_pending(s);
  a_.events().close_channel(s);
  s.wants_direct = false;
  s.owned_instance.clear();
  s.stat_mode = false;
  a_.link().push_config();
  // The seed's stop_filter detaches the filter: the instance's rules leave the datapath.
  a_.store().set_instance(inst, {{"active", "false"}}, reply);
}

void ClientApi::inject(const json& params, uint8_t direction, const Reply& reply) {
  const int64_t adapter = int_param(params, "adapter", -1, 0, INT32_MAX);
  if (adapter < 0) throw ApiError(rpc::kInvalidParams, kErrorInvalidParameter, "'adapter' (an adapter id) is required");
  bool known = false;
  for (const auto& [k, a] : a_.store().adapters()) known |= a.id == adapter;
  if (!known) throw ApiError(rpc::kInvalidParams, kErrorNotFound, "no adapter " + std::to_string(adapter));
  const std::vector<uint8_t> frame = hex_bytes(params, "data");
  if (frame.size() < 14 || frame.size() > protocol::kMaxPacket)
    throw ApiError(rpc::kInvalidParams, kErrorInvalidParameter,
                   "a frame has 14.." + std::to_string(protocol::kMaxPacket) + " bytes, not " + std::to_string(frame.size()));
  const int64_t times = int_param(params, "num_times", 1, 1, 1000000);
  if (!a_.link().plugin()) throw ApiError(rpc::kRefused, kErrorNotReady, "the plugin is not attached");
  if (!a_.link().plugin()->inject(uint32_t(adapter), direction, uint32_t(times), frame))
    throw ApiError(rpc::kRefused, kErrorNotReady, "the plugin's command ring is full; try again");
  reply({{"ok", true}}, nullptr);
}

void ClientApi::set_adapter(const json& params, const Reply& reply) {
  const int64_t id = int_param(params, "adapter", -1, 0, INT32_MAX);
  std::string key;
  for (const auto& [k, a] : a_.store().adapters())
    if (a.id == id && id >= 0) key = k;
  if (key.empty()) throw ApiError(rpc::kInvalidParams, kErrorNotFound, "no adapter " + std::to_string(id));
  std::map<std::string, std::string> settings = a_.store().adapters().at(key).settings;
  for (const auto& [k, v] : params.items()) {
    if (k == "adapter") continue;
    if (k == "max_packet_bytes" || k == "buffer_size" || k == "packet_timeout") {
      const int64_t hi = k == "max_packet_bytes" ? Adapter::kDefaultMaxPacketBytes : INT32_MAX;
      settings[k] = std::to_string(int_param(params, k.c_str(), 0, 0, hi));
    } else if (k == "collect_statistics") {
      if (!v.is_boolean()) throw ApiError(rpc::kInvalidParams, kErrorInvalidParameter, "'collect_statistics' must be true or false");
      settings[k] = v.get<bool>() ? "true" : "false";
    } else if (k == "promiscuous_mode" || k == "wifi_monitor_mode") {
      if (v == false) continue;
      throw ApiError(rpc::kInvalidParams, kErrorNotSupported,
                     k == "promiscuous_mode"
                         ? "promiscuous mode is not supported: the filter already sees every frame of the VM's port"
                         : "WiFi monitor mode is not supported: VM ports are not WiFi adapters");
    } else {
      throw ApiError(rpc::kInvalidParams, kErrorInvalidParameter,
                     "unknown adapter property '" + k +
                         "' (max_packet_bytes, collect_statistics, buffer_size, packet_timeout)");
    }
  }
  a_.store().commit(json::array({{{"op", "update"}, {"table", "Adapter"},
                                     {"where", json::array({json::array({"key", "==", key})})},
                                     {"row", {{"settings", ovsdb_make_map(settings)}}}}}),
                       [reply](const json&, const json& error) {
                         if (database_refused(reply, error, kErrorNotReady)) return;
                         reply({{"ok", true}}, nullptr);
                       });
}

void ClientApi::config(Session& s, const json& params, const Reply& reply) {
  const std::string inst = instance_of(params);
  if (!params.contains("name") || !params["name"].is_string())
    throw ApiError(rpc::kInvalidParams, kErrorInvalidParameter, "config needs 'name'");
  std::string lname;
  for (char c : params["name"].get<std::string>()) lname += char(std::tolower(static_cast<unsigned char>(c)));
  const auto it = kInstanceSettings.find(lname);
  if (it == kInstanceSettings.end())
    throw ApiError(rpc::kInvalidParams, kErrorInvalidParameter,
                   "unknown setting '" + params["name"].get<std::string>() +
                       "' (the agent keeps DenyExpiredRequests, ForceAppPermissionCheck, LoggingEnabled)");
  const Instance i = a_.store().instance(inst);
  if (!params.contains("value")) {
    const auto v = i.settings.find(it->second);
    return reply({{"value", v != i.settings.end() && truthy(v->second) ? "True" : "False"}}, nullptr);
  }
  if (!params["value"].is_string() || !boolean_text(params["value"].get<std::string>()))
    throw ApiError(rpc::kInvalidParams, kErrorInvalidParameter,
                   "value of " + params["name"].get<std::string>() + " must be True, False, 1, 0, Yes or No");
  if (s.peer().uid != 0)
    throw ApiError(rpc::kNotAllowed, kErrorPrivilegeNotHeld, "changing " + params["name"].get<std::string>() + " needs root");
  a_.store().set_instance(inst, {{it->second, truthy(params["value"].get<std::string>()) ? "true" : "false"}}, reply);
}

void ClientApi::install(const json& params, const Reply& reply) {
  if (!params.contains("guid") || !params["guid"].is_string() || params["guid"].get<std::string>().empty())
    throw ApiError(rpc::kInvalidParams, kErrorInvalidParameter, "install needs 'guid' (the product GUID)");
  const std::string guid = params["guid"];
  json changes = {{"altitude", int_param(params, "altitude", 0, INT32_MIN, INT32_MAX)}};
  if (params.contains("allowed_controllers")) {
    if (!params["allowed_controllers"].is_array())
      throw ApiError(rpc::kInvalidParams, kErrorInvalidParameter, "'allowed_controllers' must be a list of executable paths");
    for (const auto& c : params["allowed_controllers"])
      if (!c.is_string() || c.get<std::string>().empty() || c.get<std::string>()[0] != '/')
        throw ApiError(rpc::kInvalidParams, kErrorInvalidParameter, "allowed controller " + c.dump() + " is not an absolute path");
    changes["allowed_controllers"] = params["allowed_controllers"];
  }
  if (params.contains("force_app_permission_check")) {
    if (!params["force_app_permission_check"].is_boolean())
      throw ApiError(rpc::kInvalidParams, kErrorInvalidParameter, "'force_app_permission_check' must be true or false");
    changes["force_app_permission_check"] = params["force_app_permission_check"].get<bool>() ? "true" : "false";
  }
  // A new instance is installed but not started (its rules wait for start_filter).
  if (!a_.store().instance(guid).exists) changes["active"] = "false";
  a_.store().set_instance(guid, changes, reply);
}

void ClientApi::uninstall(const json& params, const Reply& reply) {
  if (!params.contains("guid") || !params["guid"].is_string())
    throw ApiError(rpc::kInvalidParams, kErrorInvalidParameter, "uninstall needs 'guid'");
  const std::string guid = params["guid"];
  if (!a_.store().instance(guid).exists && guid != kDefaultInstance)
    throw ApiError(rpc::kInvalidParams, kErrorFileNotFound, "instance '" + guid + "' is not installed");
  const json ops = json::array({{{"op", "delete"}, {"table", "Rule"}, {"where", json::array({json::array({"instance", "==", guid})})}},
                                {{"op", "delete"}, {"table", "Instance"}, {"where", json::array({json::array({"guid", "==", guid})})}}});
  a_.store().commit(ops, [reply](const json& result, const json& error) {
    if (database_refused(reply, error, kErrorNotReady)) return;
    reply({{"ok", true}, {"rules_deleted", result[0].value("count", 0)}}, nullptr);
  });
}

json ClientApi::driver_status(const json& params) const {
  const std::string guid = instance_of(params.contains("guid") ? json{{"instance", params["guid"]}} : params);
  const Instance i = a_.store().instance(guid);
  // The seed's MODULE_STATUS_*: 0 not present, 1 stopped, 4 running.
  const int st = !i.exists && guid != kDefaultInstance ? 0 : a_.link().plugin() && i.active ? 4 : 1;
  return {{"status", st}, {"plugin_attached", bool(a_.link().plugin())}, {"active", i.active}};
}

void ClientApi::add_rule(const json& params, const Reply& reply) {
  const std::string inst = instance_of(params);
  if (!params.contains("rule") || !params["rule"].is_object())
    throw ApiError(rpc::kInvalidParams, kErrorInvalidParameter, "add_rule needs {\"rule\": {...}}");
  const matcher::Rule rule = rule_param(params["rule"]);
  const std::string at = params.value("at", std::string("tail"));
  if (at != "head" && at != "tail") throw ApiError(rpc::kInvalidParams, kErrorInvalidParameter, "'at' must be head or tail");
  const std::string kind = matcher::to_string(rule.kind);
  if (a_.link().rows_of(inst, kind, rule.id))
    throw ApiError(rpc::kInvalidParams, kErrorAlreadyExists, kind + " rule " + std::to_string(rule.id) + " exists already");
  const auto span = a_.link().positions(inst, kind);  // first and last, if the list has rules
  json spec = matcher::rule_to_json(rule);
  spec.erase("kind");
  spec.erase("id");
  const int64_t position = !span ? 0 : at == "head" ? span->first - 1 : span->second + 1;
  const json row = {{"instance", inst}, {"kind", kind}, {"rule_id", rule.id}, {"position", position}, {"spec", spec.dump()}};
  // The transaction goes out first; while the server commits it, the plugin gets the rule
  // as the row will make it (learn_row then finds it in place and sends nothing).  If the
  // row does not come as guessed (refused, or changed meanwhile), the guess is taken back.
  a_.store().commit(json::array({{{"op", "insert"}, {"table", "Rule"}, {"row", row}}}),
         [this, reply, inst, kind, id = rule.id](const json& result, const json& error) {
           a_.link().drop_provisional(inst, kind, id);
           if (database_refused(reply, error, kErrorAlreadyExists, " the rule")) return;
           reply({{"uuid", result[0]["uuid"][1]}}, nullptr);
         });
  a_.link().add_provisional(inst, rule, position, spec);
}

void ClientApi::import_rules(const json& params, const Reply& reply) {
  const std::string inst = instance_of(params);
  if (!params.contains("rules")) throw ApiError(rpc::kInvalidParams, kErrorInvalidParameter, "import_rules needs 'rules'");
  const std::vector<matcher::Rule> rules = rules_param(params["rules"]);  // names the rule and the field
  const bool replace = params.value("replace", false);
  json ops = json::array();
  int64_t next = 0;
  if (replace) {
    ops.push_back({{"op", "delete"}, {"table", "Rule"}, {"where", json::array({json::array({"instance", "==", inst})})}});
  } else {
    for (const auto& [u, row] : a_.store().rule_rows()) {
      if (str(row, "instance") != inst) continue;
      next = std::max(next, num(row, "position") + 1);
      for (const auto& r : rules)
        if (matcher::to_string(r.kind) == str(row, "kind") && r.id == num(row, "rule_id"))
          throw ApiError(rpc::kInvalidParams, kErrorAlreadyExists,
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
  a_.store().commit(ops, [reply, n](const json&, const json& error) {
    if (database_refused(reply, error, kErrorAlreadyExists, " the rules")) return;
    reply({{"imported", n}}, nullptr);
  });
}

// update_rule {kind, id, rule}: the rule replaced in place (its position kept; the new rule
// may carry another id, if that one is free).  move_rule {kind, id, to: up|down}: swaps
// it with its neighbour in evaluation order.  One transaction each.
void ClientApi::change_rule(const std::string& method, const json& params, const Reply& reply) {
  const std::string inst = instance_of(params);
  if (!params.contains("kind") || !params["kind"].is_string() || !params.contains("id") || !params["id"].is_number_unsigned())
    throw ApiError(rpc::kInvalidParams, kErrorInvalidParameter, method + " needs 'kind' and 'id'");
  const std::string kind = params["kind"];
  const int64_t id = params["id"].get<int64_t>();
  std::vector<std::pair<std::string, const json*>> rows;  // uuid, row: this kind, evaluation order
  for (const auto& [u, row] : a_.store().rule_rows())
    if (str(row, "instance") == inst && str(row, "kind") == kind) rows.emplace_back(u, &row);
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) {
    return std::make_pair(num(*a.second, "position"), num(*a.second, "rule_id")) <
           std::make_pair(num(*b.second, "position"), num(*b.second, "rule_id"));
  });
  const auto it = std::find_if(rows.begin(), rows.end(), [&](const auto& r) { return num(*r.second, "rule_id") == id; });
  if (it == rows.end()) throw ApiError(rpc::kInvalidParams, kErrorNotFound, kind + " rule " + std::to_string(id) + " does not exist");
  auto uuid_is = [](const std::string& u) { return json::array({json::array({"_uuid", "==", json::array({"uuid", u})})}); };
  json ops = json::array();
  if (method == "update_rule") {
    if (!params.contains("rule") || !params["rule"].is_object())
      throw ApiError(rpc::kInvalidParams, kErrorInvalidParameter, "update_rule needs {\"rule\": {...}}");
    json r = params["rule"];
    if (!r.contains("kind")) r["kind"] = kind;
    const matcher::Rule rule = rule_param(r);
    if (matcher::to_string(rule.kind) != kind) throw ApiError(rpc::kInvalidParams, kErrorInvalidParameter, "update_rule cannot change a rule's kind");
    if (rule.id != id)
      for (const auto& [u, row] : rows)
        if (num(*row, "rule_id") == rule.id)
          throw ApiError(rpc::kInvalidParams, kErrorAlreadyExists, kind + " rule " + std::to_string(rule.id) + " exists already");
    json spec = matcher::rule_to_json(rule);
    spec.erase("kind");
    spec.erase("id");
    ops.push_back({{"op", "update"}, {"table", "Rule"}, {"where", uuid_is(it->first)},
                   {"row", {{"rule_id", rule.id}, {"spec", spec.dump()}}}});
  } else {
    const std::string to = params.value("to", std::string());
    if (to != "up" && to != "down") throw ApiError(rpc::kInvalidParams, kErrorInvalidParameter, "'to' must be up or down");
    const auto other = to == "up" ? (it == rows.begin() ? rows.end() : it - 1) : it + 1;
    if (other == rows.end()) return reply({{"moved", false}}, nullptr);  // already first / last
    int64_t pa = num(*it->second, "position"), pb = num(*other->second, "position");
    if (pa == pb) pb += to == "up" ? -1 : 1;  // equal positions (rows written by others): make room
    ops.push_back({{"op", "update"}, {"table", "Rule"}, {"where", uuid_is(it->first)}, {"row", {{"position", pb}}}});
    ops.push_back({{"op", "update"}, {"table", "Rule"}, {"where", uuid_is(other->first)}, {"row", {{"position", pa}}}});
  }
  a_.store().commit(ops, [reply, method](const json&, const json& error) {
    if (database_refused(reply, error, kErrorNotReady)) return;
    reply(method == "move_rule" ? json{{"moved", true}} : json{{"ok", true}}, nullptr);
  });
}

void ClientApi::delete_rules(const json& params, const Reply& reply) {
  const std::string inst = instance_of(params);
  json where = json::array({json::array({"instance", "==", inst})});
  if (params.contains("kind")) {
    if (!params["kind"].is_string() || !std::set<std::string>{"filter", "passthrough", "connection"}.count(params["kind"]))
      throw ApiError(rpc::kInvalidParams, kErrorInvalidParameter, "'kind' must be filter, passthrough or connection");
    where.push_back({"kind", "==", params["kind"]});
  }
  if (params.contains("id")) {
    if (!params["id"].is_number_unsigned() || params["id"].get<uint64_t>() > 0xffffffffu)
      throw ApiError(rpc::kInvalidParams, kErrorInvalidParameter, "'id' must be a rule id");
    where.push_back({"rule_id", "==", params["id"]});
  }
  const bool one = params.contains("id");
  if (one && !params.contains("kind")) throw ApiError(rpc::kInvalidParams, kErrorInvalidParameter, "delete_rule needs 'kind' and 'id'");
  json ops = json::array({{{"op", "delete"}, {"table", "Rule"}, {"where", where}}});
  std::set<std::string> uuids;
  if (one) {
    // One rule: by its row's uuid (the server finds it at once; a condition on the other
    // columns makes it look at every row of the table).
    const auto* rows = a_.link().rows_of(inst, params["kind"].get<std::string>(), params["id"].get<uint32_t>());
    if (!rows) throw ApiError(rpc::kInvalidParams, kErrorNotFound, "no such rule");
    uuids = *rows;
    ops = json::array();
    for (const auto& u : uuids) ops.push_back({{"op", "delete"}, {"table", "Rule"}, {"where", {{"_uuid", "==", {"uuid", u}}}}});
  }
  a_.store().commit(ops, [this, reply, one, uuids](const json& result, const json& error) {
    if (!error.is_null()) {
      a_.link().restore_rows(uuids);  // still there: back into the plugin
      database_refused(reply, error, kErrorNotReady);
      return;
    }
    int64_t n = 0;
    for (const auto& r : result) n += r.value("count", 0);
    if (one && n == 0) {
      const ApiError e(rpc::kInvalidParams, kErrorNotFound, "no such rule");
      return reply(nullptr, &e);
    }
    reply({{"deleted", n}}, nullptr);
  });
  // The transaction is out: the rule leaves the plugin while the server commits it.
  a_.link().forget_rows(uuids);
}

json ClientApi::list_rules(const json& params) const {
  const std::string inst = instance_of(params);
  if (params.contains("kind") && !params["kind"].is_string()) return json::array();  // no kind matches
  return a_.store().instance_rules(inst, params.value("kind", std::string()));
}

json ClientApi::connections(const json& params, bool one) {
  json ask = json::object();
  if (one) {
    if (!params.contains("id") || !params["id"].is_number_unsigned() || params["id"].get<uint64_t>() == 0)
      throw ApiError(rpc::kInvalidParams, kErrorInvalidParameter, "'id' must be a connection id (1 or more)");
    ask["id"] = params["id"];
  } else if (params.contains("adapter")) {
    if (!params["adapter"].is_number_integer() || params["adapter"].get<int64_t>() < 0 ||
        params["adapter"].get<int64_t>() > INT32_MAX)
      throw ApiError(rpc::kInvalidParams, kErrorInvalidParameter, "'adapter' must be an adapter id (0 or more)");
    ask["adapter"] = params["adapter"];
  }
  if (!a_.link().plugin()) throw ApiError(rpc::kRefused, kErrorNotReady, "the plugin is not attached");
  json got = a_.link().plugin()->call("connections", ask);
  if (!one) return got;
  if (got["connections"].empty())
    throw ApiError(rpc::kInvalidParams, kErrorNotFound, "no connection with id " + params["id"].dump());
  return got["connections"][0];
}

json ClientApi::set_connection_state(const json& params) {
  if (!params.contains("id") || !params["id"].is_number_unsigned() || params["id"].get<uint64_t>() == 0)
    throw ApiError(rpc::kInvalidParams, kErrorInvalidParameter, "'id' must be a connection id (1 or more)");
  if (!params.contains("suspended") || !params["suspended"].is_boolean())
    throw ApiError(rpc::kInvalidParams, kErrorInvalidParameter, "'suspended' must be true or false");
  if (!a_.link().plugin()) throw ApiError(rpc::kRefused, kErrorNotReady, "the plugin is not attached");
  const json got = a_.link().plugin()->call("set_connection_state", {{"id", params["id"]}, {"suspended", params["suspended"]}});
  if (!got.value("found", false))
    throw ApiError(rpc::kInvalidParams, kErrorNotFound, "no connection with id " + params["id"].dump());
  return {{"ok", true}};
}

json ClientApi::complete_connect_request(const json& params) {
  if (!params.contains("id") || !params["id"].is_number_unsigned() || params["id"].get<uint64_t>() == 0)
    throw ApiError(rpc::kInvalidParams, kErrorInvalidParameter, "'id' must be a connection id (1 or more)");
  if (!params.contains("verdict") || (params["verdict"] != "allow" && params["verdict"] != "block"))
    throw ApiError(rpc::kInvalidParams, kErrorInvalidParameter, "'verdict' must be \"allow\" or \"block\"");
  if (!a_.link().plugin()) throw ApiError(rpc::kRefused, kErrorNotReady, "the plugin is not attached");
  const json got =
      a_.link().plugin()->call("complete_connect_request", {{"id", params["id"]}, {"allow", params["verdict"] == "allow"}});
  if (!got.value("found", false))
    throw ApiError(rpc::kInvalidParams, kErrorNotFound,
                   "connection " + params["id"].dump() + " has no connect request waiting (completed, expired, or none)");
  return {{"ok", true}};
}

json ClientApi::statistics() {
  if (!a_.link().plugin()) throw ApiError(rpc::kRefused, kErrorNotReady, "the plugin is not attached");
  const json st = a_.link().plugin()->call("stats");
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
    for (const auto& [k, ad] : a_.store().adapters())
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
    const RuleOrigin* o = a_.events().origin(r["id"].get<uint32_t>());
    if (!o || o->retired) continue;  // a deleted rule's
    rules.push_back({{"instance", o->instance}, {"kind", matcher::to_string(o->kind)}, {"id", o->rule_id}, {"hits", r["hits"]}});
  }
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return {{"adapters", adapters}, {"rules", rules}, {"time_ns", uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec)}};
}

}  // namespace vpf::agent
