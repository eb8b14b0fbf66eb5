// vpf-agent, part 4 of 4 (see agent.h): the clients.
//
// Owns the client socket and the sessions on it: checks each peer's credentials (root,
// or an allowed controller of some instance), and answers the JSON-RPC methods of
// docs/protocol.md from one table (methods()): name, who may call it, its parameters, its
// handler.  Tells clients when adapters come and go.
//
// Runs on the io_context's thread.
#pragma once

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent.h"

namespace vpf::agent {

class ClientApi {
 public:
  explicit ClientApi(Agent& a) : a_(a) {}
  ~ClientApi();
  void listen();  // the client socket (a stale file is replaced); throws on failure

  void handle(Session& s, const std::string& method, const nlohmann::json& params, Reply reply);
  void on_session_closed(Session& s);
  bool authorized(const Peer& p) const;  // may this peer connect at all?

  // Who may call a method: any client that could connect (authorized()), a client that may
  // act on the instance the request names (check_access()), or root only.
  enum class Access { Client, Instance, Root };
  struct Method {
    const char* name;
    Access access;
    const char* params;  // the parameters it takes, as docs/protocol.md lists them
    void (*run)(ClientApi&, Session&, const nlohmann::json& params, const Reply&);
  };
  static const std::vector<Method>& methods();

  const std::set<std::shared_ptr<Session>>& sessions() const { return sessions_; }
  Session* owner_of(const std::string& guid) const;  // the client that started the instance
  void announce_adapters();  // adapter_added/removed to the clients that asked

 private:
  void accept();
  // Throws ApiError unless the peer may act on `guid` (root; an allowed controller unless
  // the instance forces the permission check).
  void check_access(const Session& s, const std::string& guid) const;
  std::string instance_of(const nlohmann::json& params) const;

  // The methods' handlers.
  nlohmann::json status() const;
  nlohmann::json list_adapters() const;
  void set_adapter(const nlohmann::json& params, const Reply& reply);
  void add_rule(const nlohmann::json& params, const Reply& reply);
  // Adds a whole rules file in one transaction (all or nothing); replace: instead of the
  // instance's rules.
  void import_rules(const nlohmann::json& params, const Reply& reply);
  void change_rule(const std::string& method, const nlohmann::json& params, const Reply& reply);
  void delete_rules(const nlohmann::json& params, const Reply& reply);
  nlohmann::json list_rules(const nlohmann::json& params) const;
  static nlohmann::json check_bpf(const nlohmann::json& params);
  nlohmann::json statistics();
  // list_connections ({adapter?} -> {tracking, connections}) and get_connection ({id} ->
  // the connection): the plugin's connection table (docs/connections.md).
  nlohmann::json connections(const nlohmann::json& params, bool one);
  // set_connection_state ({id, suspended}): a connection's packets raise no events of its
  // connection rule while suspended.
  nlohmann::json set_connection_state(const nlohmann::json& params);
  // complete_connect_request ({id, verdict: allow|block}): completes connection id's pended
  // connect request, whichever client it was sent to.
  nlohmann::json complete_connect_request(const nlohmann::json& params);
  void install(const nlohmann::json& params, const Reply& reply);
  void uninstall(const nlohmann::json& params, const Reply& reply);
  nlohmann::json driver_status(const nlohmann::json& params) const;
  void config(Session& s, const nlohmann::json& params, const Reply& reply);
  void set_active(const nlohmann::json& params, const Reply& reply);
  void start_filter(Session& s, const nlohmann::json& params, const Reply& reply);
  void stop_filter(Session& s, const Reply& reply);
  void subscribe(Session& s, const nlohmann::json& params, const Reply& reply);
  void inject(const nlohmann::json& params, uint8_t direction, const Reply& reply);

  Agent& a_;
  std::unique_ptr<boost::asio::local::stream_protocol::acceptor> acceptor_;
  std::set<std::shared_ptr<Session>> sessions_;
  std::map<int32_t, std::string> announced_;  // adapter id -> key, as told to clients
  uint64_t closed_sessions_dropped_ = 0;      // events dropped for clients that are gone
};

}  // namespace vpf::agent
