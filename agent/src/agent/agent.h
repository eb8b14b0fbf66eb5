// vpf-agent: maps Open vSwitch ports to adapters, keeps rules in the vportfilter OVSDB
// database, feeds the plugin, and serves clients.
//
// Lifecycle: (1) start(): connect to ovsdb-server, make sure the vportfilter database
// exists (created and added to the local server if missing), monitor the Open_vSwitch
// database's Bridge/Port/Interface tables and the vportfilter database's tables, listen
// on the client socket; (2) every change (a port, a rule row, an adapter id) recomputes
// what the plugin needs and pushes it; the plugin is (re)attached whenever its control
// socket is there; (3) stop() closes everything.
//
// Threads: everything runs on the io_context's single thread.
#pragma once

#include <utility>  // before Asio: its awaitable.hpp uses std::exchange without it
#include <boost/asio.hpp>
#include <map>
#include <memory>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "adapters.h"
#include "ovsdb_client.h"
#include "vpf/channel_client.h"

namespace vpf::agent {

struct Options {
  std::string ovsdb;          // unix:PATH of the Open_vSwitch database's server
  std::string policy_db;      // unix:PATH of the server holding the vportfilter database ("" = ovsdb)
  std::string db_file;        // file for the vportfilter database when it must be created
  std::string schema;         // vportfilter.ovsschema
  std::string plugin_socket;  // the plugin's control socket
  std::string socket;         // the agent's client socket
  std::set<std::string> vm_types = default_vm_types();
};

// A client request failed: `code` is a JSON-RPC code, `seed` the seed's error code.
struct ApiError : std::runtime_error {
  ApiError(int code, int seed, const std::string& msg) : std::runtime_error(msg), code(code), seed(seed) {}
  int code, seed;
};

class Agent {
 public:
  Agent(boost::asio::io_context& io, Options opts);
  ~Agent();
  void start();  // throws std::runtime_error naming what could not be done

  // Client API (the JSON-RPC methods of docs/protocol.md).  `reply` is called once, maybe
  // later (after a transaction commits); it receives a result or throws nothing.
  using Reply = std::function<void(const nlohmann::json& result, const ApiError* error)>;
  void handle(const std::string& method, const nlohmann::json& params, Reply reply);

  bool authorized(int uid, const std::string& exe) const;

 private:
  void connect_ovsdb();
  bool ensure_policy_db();  // true if it had to be created
  void on_ovs_update(const nlohmann::json& updates);
  void on_policy_update(const nlohmann::json& updates);
  void assign_ids();
  void push_adapters();
  void push_rules();
  void try_plugin();
  void accept();
  void add_rule(const nlohmann::json& params, const Reply& reply);
  void delete_rules(const nlohmann::json& params, const Reply& reply);
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
  std::unique_ptr<channel::ChannelClient> plugin_;
  boost::asio::steady_timer plugin_timer_;
  std::unique_ptr<boost::asio::local::stream_protocol::acceptor> acceptor_;
  nlohmann::json last_rules_pushed_, last_adapters_pushed_;  // what the plugin has
  std::map<std::string, std::string> checked_;  // rule text -> error ("" = valid)
};

}  // namespace vpf::agent
