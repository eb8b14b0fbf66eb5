// vpf-agent: maps Open vSwitch ports to adapters, keeps rules in the vportfilter OVSDB
// database, feeds the plugin, and serves clients.
//
// Four parts, each in its own files with a header that says what it owns:
//   PolicyStore  (policy_store.h)  the two OVSDB databases: VM ports → adapters and their
//                                  ids, instances, rule rows; every write (commit)
//   PluginLink   (plugin_link.h)   the plugin's control channel and what the plugin holds:
//                                  adapters, configuration, rules (sent as differences)
//   EventRouter  (event_router.h)  events from the plugin to clients, verdicts back, expiry,
//                                  the client channels, the plugin's rule ids
//   ClientApi    (client_api.h)    the client socket, sessions, the JSON-RPC method table
// Agent only wires them: it owns the four, gives each the others through its accessors,
// and is what sessions call.
//
// Lifecycle: (1) start(): connect to ovsdb-server, make sure the vportfilter database
// exists (created and added to the local server if missing), monitor the Open_vSwitch
// database's Bridge/Port/Interface tables and the vportfilter database's tables, listen
// on the client socket; (2) every change (a port, a rule row, an adapter id) updates what
// the plugin needs and sends it the difference; the plugin is (re)attached whenever its
// control socket is there; (3) the destructor closes everything.
//
// Threads: everything runs on the io_context's single thread (no part takes a lock).
#pragma once

#include <utility>  // before Asio: its awaitable.hpp uses std::exchange without it
#include <boost/asio.hpp>
#include <functional>
#include <memory>
#include <set>
#include <span>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

#include "adapters.h"
#include "session.h"
#include "vpf/protocol.h"

namespace vpf::agent {

struct Options {
  std::string ovsdb;          // unix:PATH of the Open_vSwitch database's server
  std::string policy_db;      // unix:PATH of the server holding the vportfilter database ("" = ovsdb)
  std::string db_file;        // file for the vportfilter database when it must be created
  std::string schema;         // vportfilter.ovsschema
  std::string plugin_socket;  // the plugin's control socket
  std::string socket;         // the agent's client socket
  std::set<std::string> vm_types = default_vm_types();  // Interface types that are VM ports
  size_t client_queue_bytes = Session::kDefaultMaxQueuedEventBytes;  // per client, events not yet written
};

// A client request failed: `code` is a JSON-RPC code (vpf::rpc::Code), `seed` the seed's
// error code (vpf::ErrorCode).
struct ApiError : std::runtime_error {
  ApiError(int code, int seed, const std::string& msg) : std::runtime_error(msg), code(code), seed(seed) {}
  int code, seed;
};

// A client request's answer: called once, maybe later (after a transaction commits), with
// a result or an error.
using Reply = std::function<void(const nlohmann::json& result, const ApiError* error)>;

// For a transaction's answer: if ovsdb-server refused it (`error` set), answers `reply`
// with the seed error `seed` and "the database refused<what>: <error>", and returns true.
inline bool database_refused(const Reply& reply, const nlohmann::json& error, int seed, const char* what = "") {
  if (error.is_null()) return false;
  const ApiError e(rpc::kRefused, seed, std::string("the database refused") + what + ": " + error.dump());
  reply(nullptr, &e);
  return true;
}

class PolicyStore;
class PluginLink;
class EventRouter;
class ClientApi;

class Agent {
 public:
  Agent(boost::asio::io_context& io, Options opts);
  ~Agent();
  void start();  // throws std::runtime_error naming what could not be done

  // What sessions call (session.cc).
  void handle(Session& s, const std::string& method, const nlohmann::json& params, Reply reply);
  void on_verdict(Session& s, const protocol::VerdictFrame& v, std::span<const uint8_t> data);
  void on_session_closed(Session& s);

  // The parts, for each other.
  PolicyStore& store() { return *store_; }
  PluginLink& link() { return *link_; }
  EventRouter& events() { return *events_; }
  ClientApi& api() { return *api_; }
  const PolicyStore& store() const { return *store_; }
  const PluginLink& link() const { return *link_; }
  const EventRouter& events() const { return *events_; }
  const ClientApi& api() const { return *api_; }
  boost::asio::io_context& io() { return io_; }
  const Options& options() const { return opts_; }

 private:
  boost::asio::io_context& io_;
  Options opts_;
  std::unique_ptr<PolicyStore> store_;
  std::unique_ptr<PluginLink> link_;
  std::unique_ptr<EventRouter> events_;
  std::unique_ptr<ClientApi> api_;
};

}  // namespace vpf::agent
