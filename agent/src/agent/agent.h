// vpf-agent: maps Open vSwitch ports to adapters, keeps rules in the vportfilter OVSDB
// database, feeds the plugin, and serves clients.
//
// Lifecycle: (1) start(): connect to ovsdb-server, make sure the vportfilter database
// exists (created and added to the local server if missing), monitor the Open_vSwitch
// database's Bridge/Port/Interface tables and the vportfilter database's tables, listen
// on the client socket; (2) every change (a port, a rule row, an adapter id) updates what
// the plugin needs and sends it the difference (for rules: the rules that changed, see
// push_rules); the plugin is (re)attached whenever its control socket is there; (3)
// stop() closes everything.
//
// Events: while the plugin is attached, the io_context's thread waits on the plugin's
// events eventfd, reads the event rings when it fires, and routes each event to the client
// that started the deciding rule's instance (captures: with a deadline; the expiry verdict
// when the client cannot take them) and copies it to monitors.  Verdicts from clients go
// straight to the plugin's command ring.
//
// Threads: everything runs on the io_context's single thread.
#pragma once

#include <utility>  // before Asio: its awaitable.hpp uses std::exchange without it
#include <boost/asio.hpp>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include <atomic>
#include <span>
#include <thread>
#include <tuple>
#include <vector>

#include "adapters.h"
#include "ovsdb_client.h"
#include "session.h"
#include "vpf/channel_client.h"
#include "vpf/matcher/rule.h"
#include "vpf/protocol.h"

namespace vpf::agent {

struct Options {
  std::string ovsdb;          // unix:PATH of the Open_vSwitch database's server
  std::string policy_db;      // unix:PATH of the server holding the vportfilter database ("" = ovsdb)
  std::string db_file;        // file for the vportfilter database when it must be created
  std::string schema;         // vportfilter.ovsschema
  std::string plugin_socket;  // the plugin's control socket
  std::string socket;         // the agent's client socket
  std::set<std::string> vm_types = default_vm_types();
  size_t client_queue_bytes = Session::kDefaultMaxQueuedEventBytes;  // per client, events not yet written
};

// A client request failed: `code` is a JSON-RPC code, `seed` the seed's error code.
struct ApiError : std::runtime_error {
  ApiError(int code, int seed, const std::string& msg) : std::runtime_error(msg), code(code), seed(seed) {}
  int code, seed;
};

// For a transaction's answer: if ovsdb-server refused it (`error` set), answers `reply`
// with the seed error `seed` and "the database refused<what>: <error>", and returns true.
template <class Reply>
bool database_refused(const Reply& reply, const nlohmann::json& error, int seed, const char* what = "") {
  if (error.is_null()) return false;
  const ApiError e(rpc::kRefused, seed, std::string("the database refused") + what + ": " + error.dump());
  reply(nullptr, &e);
  return true;
}

class Agent {
 public:
  Agent(boost::asio::io_context& io, Options opts);
  ~Agent();
  void start();  // throws std::runtime_error naming what could not be done

  // Client API (the JSON-RPC methods of docs/protocol.md).  `reply` is called once, maybe
  // later (after a transaction commits); it receives a result or throws nothing.
  using Reply = std::function<void(const nlohmann::json& result, const ApiError* error)>;
  void handle(Session& s, const std::string& method, const nlohmann::json& params, Reply reply);
  void on_verdict(Session& s, const protocol::VerdictFrame& v, std::span<const uint8_t> data);

  // Who may call a method: any client that could connect (authorized()), a client that may
  // act on the instance the request names (check_access()), or root only.
  enum class Access { Client, Instance, Root };
  struct Method {
    const char* name;
    Access access;
    const char* params;  // the parameters it takes, as docs/protocol.md lists them
    void (*run)(Agent&, Session&, const nlohmann::json& params, const Reply&);
  };
  // The client API, one row per JSON-RPC method (client_api.cc).
  static const std::vector<Method>& methods();
  void on_session_closed(Session& s);

  // May this peer connect at all (root, or an allowed controller of some instance)?
  bool authorized(const Peer& p) const;

 private:
  // An instance (the seed's product GUID) as the Instance table and defaults make it.
  struct Instance {
    std::string guid;
    int64_t altitude = 0;
    bool exists = false;  // has a row ("default" works without one)
    bool active = true;   // its rules are in force (settings:active, default true)
    bool deny_expired = false;
    bool force_check = false;
    bool logging = false;
    std::set<std::string> allowed;
    std::map<std::string, std::string> settings;
  };
  struct RuleOrigin {
    std::string instance;
    matcher::RuleKind kind;
    uint32_t rule_id;
    bool retired;  // the rule was deleted: kept for its late events only
  };
  void load_instances();  // instances_ from the Instance rows
  Instance instance(const std::string& guid) const;
  // Throws ApiError unless the peer may act on `guid` (root; an allowed controller unless
  // the instance forces the permission check).
  void check_access(const Session& s, const std::string& guid) const;
  Session* owner_of(const std::string& guid) const;
  void set_instance(const std::string& guid, const nlohmann::json& changes, const Reply& reply);
  void start_filter(Session& s, const nlohmann::json& params, const Reply& reply);
  // Client channels (docs/channel.md): the plugin writes an instance's events straight to
  // the client that started it, and takes its verdicts straight back.  open_channel asks
  // the plugin for one and hands its descriptors to the client; the agent keeps control:
  // it closes the channel when the client stops or goes (the plugin then gives the
  // client's held packets their expiry verdict) and keeps its settings (timeout,
  // DenyExpiredRequests, whether monitors or logging need copies) in step.
  void open_channel(Session& s, const Reply& reply);
  void close_channel(Session& s);
  void sync_channels();
  nlohmann::json channel_options(const Session& s) const;
  uint16_t route_slot(const std::string& instance);  // 0: none left
  void stop_filter(Session& s, const Reply& reply);
  void inject(const nlohmann::json& params, uint8_t direction, const Reply& reply);
  void set_adapter(const nlohmann::json& params, const Reply& reply);
  void config(Session& s, const nlohmann::json& params, const Reply& reply);
  void install(const nlohmann::json& params, const Reply& reply);
  void uninstall(const nlohmann::json& params, const Reply& reply);
  void set_active(const nlohmann::json& params, const Reply& reply);
  void subscribe(Session& s, const nlohmann::json& params, const Reply& reply);
  static nlohmann::json check_bpf(const nlohmann::json& params);
  nlohmann::json status() const;
  nlohmann::json list_adapters() const;
  nlohmann::json driver_status(const nlohmann::json& params) const;
  // A transaction of the vportfilter database for a client: `done` runs after the commit
  // and after this agent's monitor has seen it.
  void commit(nlohmann::json ops, OvsdbClient::Reply done);
  void announce_adapters();
  void push_config();
  void attach_plugin();
  void detach_plugin(const std::string& why);
  void pump_events();  // reads the event rings, routes, then waits on the eventfd again
  void route(std::vector<std::string> batch);
  void expire(uint64_t capture_id, bool deny);
  void expire_due(const std::shared_ptr<Session>& s);
  void arm_expiry(Session& s);
  uint32_t internal_id(const std::string& instance, matcher::RuleKind kind, uint32_t rule_id);
  void purge_retired();

  void connect_ovsdb();
  bool ensure_policy_db();  // true if it had to be created
  void on_ovs_update(const nlohmann::json& updates);
  void on_policy_update(const nlohmann::json& updates);
  void assign_ids();
  void push_adapters();
  // The plugin's rules.  Each Rule row is read once when it changes (learn_row/forget_row)
  // into `wanted_`, the plugin's rules in evaluation order; send_rule_changes() then sends
  // the plugin the difference to what it holds (`pushed_`): removes, and adds placed
  // before their successor, so a change costs what the rows that changed cost.
  // push_rules() re-reads every row (instances, sessions and attach change them all).
  void push_rules();
  void push_rule_rows(const nlohmann::json& changed);  // the Rule table's part of an update
  void learn_row(const std::string& uuid);
  void forget_row(const std::string& uuid, bool retire);
  void retire_id(const std::tuple<std::string, int, uint32_t>& id);
  void send_rule_changes();
  void try_plugin();
  void accept();
  void add_rule(const nlohmann::json& params, const Reply& reply);
  void delete_rules(const nlohmann::json& params, const Reply& reply);
  // Adds a whole rules file in one transaction (all or nothing); replace: instead of the
  // instance's rules.
  void import_rules(const nlohmann::json& params, const Reply& reply);
  void change_rule(const std::string& method, const nlohmann::json& params, const Reply& reply);
  nlohmann::json list_rules(const nlohmann::json& params) const;
  // The rules of `instance` (of `kind`, or all) in evaluation order, as rule objects.
  nlohmann::json instance_rules(const std::string& instance, const std::string& kind) const;
  nlohmann::json statistics();
  std::string instance_of(const nlohmann::json& params) const;

  boost::asio::io_context& io_;
  Options opts_;
  std::shared_ptr<OvsdbClient> ovs_db_, policy_db_;
  OvsView view_;
  std::map<std::string, Adapter> adapters_;        // by key; id -1 until assigned
  std::map<std::string, nlohmann::json> adapter_rows_, instance_rows_, rule_rows_;  // uuid -> row
  std::set<std::string> assigning_;                // keys with an insert in flight
  std::shared_ptr<channel::ChannelClient> plugin_;
  std::unique_ptr<boost::asio::posix::stream_descriptor> events_wait_;  // the plugin's events eventfd (a dup)
  std::set<std::shared_ptr<Session>> sessions_;
  std::map<std::string, Instance> instances_;  // "default" is always there
  std::map<uint32_t, RuleOrigin> origins_;  // the plugin's rule id -> the instance's
  // (instance, kind, id) of each rule that exists -> the plugin's id, never reused: a
  // deleted rule's id is retired, so a new rule with the same id starts with no hits.
  std::map<std::tuple<std::string, int, uint32_t>, uint32_t> internal_ids_;
  // Retired ids, oldest first: their origins_ go ten minutes after.
  std::deque<std::pair<std::chrono::steady_clock::time_point, uint32_t>> retired_order_;
  uint32_t next_internal_id_ = 1;
  std::map<int32_t, std::string> announced_;  // adapter id -> key, as told to clients
  nlohmann::json last_config_pushed_;
  uint64_t events_received_ = 0, events_unrouted_ = 0, expired_by_agent_ = 0, verdicts_lost_ = 0,
           bad_verdicts_ = 0, closed_sessions_dropped_ = 0;
  boost::asio::steady_timer plugin_timer_;
  std::unique_ptr<boost::asio::local::stream_protocol::acceptor> acceptor_;
  nlohmann::json last_adapters_pushed_;  // what the plugin has
  // A plugin rule's place: instance altitude (higher first), instance, kind, priority
  // (higher first), position, id (one row per instance, kind and id is wanted).
  using OrderKey = std::tuple<int64_t, std::string, std::string, int64_t, int64_t, int64_t>;
  struct PluginRule {
    matcher::RuleKind kind;
    uint32_t id;       // the plugin's
    std::string text;  // the rule object sent
    nlohmann::json route;  // capture and notify rules: {"client", "rule_id"} (null: none)
  };
  using Place = std::pair<int, OrderKey>;  // group (0: passthrough, 1: the others), key
  static bool names(const Place& p, const std::string& instance, const std::string& kind, uint32_t rule_id) {
    return std::get<1>(p.second) == instance && std::get<2>(p.second) == kind && std::get<5>(p.second) == int64_t(rule_id);
  }
  // A rule as the plugin should hold it, into wanted_ (nothing if its instance is not
  // active or the rule is bad); *text: its key in checked_, where `checked` (a parse of
  // `spec` already checked) goes instead of parsing and compiling it again.
  std::optional<Place> want_rule(const std::string& instance, const std::string& kind, uint32_t rule_id, int64_t position,
                                 nlohmann::json spec, std::string* text, const matcher::Rule* checked = nullptr);
  // add_rule's provisional rule taken back unless its row claimed it.
  void drop_provisional(const std::string& instance, const std::string& kind, uint32_t rule_id);
  std::map<OrderKey, PluginRule> wanted_[2], pushed_[2];
  std::set<Place> dirty_;   // places whose wanted and pushed rule may differ
  std::set<Place> provisional_;  // wanted by add_rule before its row came
  bool rules_synced_ = false;  // pushed_ is what the plugin holds (else: send the whole set)
  struct RowEntry {
    std::string instance, kind;
    uint32_t rule_id = 0;
    int64_t position = 0;
    std::optional<Place> place;  // in wanted_
    std::string text;            // its key in checked_
  };
  std::map<std::string, RowEntry> row_entries_;  // Rule row uuid ->
  std::map<std::tuple<std::string, std::string, uint32_t>, std::set<std::string>> rows_by_id_;  // (instance, kind, id) -> row uuids
  std::map<std::pair<std::string, std::string>, std::multiset<int64_t>> positions_;  // (instance, kind) ->
  struct Checked {
    std::string error;  // "" = valid
    matcher::Rule rule;
  };
  // Rule text -> its parse: each distinct text is parsed and checked once (add_rule puts
  // what it checked; a row that changes or goes takes its text out).
  std::map<std::string, Checked> checked_;
  std::map<std::string, uint16_t> route_slots_;  // instance -> its client channel's number
  std::map<uint16_t, nlohmann::json> channel_pushed_;  // open channels' settings as the plugin has them
  // Sends `params` with `method` unless the plugin has them already (`last`); a refusal is
  // logged ("the plugin refused the WHAT"), a broken channel detaches the plugin.
  void push(const char* method, const nlohmann::json& params, nlohmann::json& last, const char* what);
};

}  // namespace vpf::agent
