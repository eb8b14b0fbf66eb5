// vpf-agent, part 1 of 4 (see agent.h): the OVSDB databases.
//
// Owns the connections to ovsdb-server and what the agent reads from them: the
// Open_vSwitch database's VM ports, which become adapters, and the vportfilter database's
// rows — adapter ids (stable across restarts), instances and their settings, rules.  Every
// write to the vportfilter database goes through commit(), whose callback runs once this
// agent has seen the change (see commit()).  When rows change it tells the others: the
// plugin link (adapters, rules, configuration), the client API (adapter notifications) and
// the event router (client channel settings).
//
// Runs on the io_context's thread.
#pragma once

#include <map>
#include <memory>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "adapters.h"
#include "agent.h"
#include "ovsdb_client.h"

namespace vpf::agent {

// An instance (the seed's product GUID) as its Instance row and the defaults make it.
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

class PolicyStore {
 public:
  explicit PolicyStore(Agent& a) : a_(a) { load_instances(); }

  // Connects to the server(s), makes sure the vportfilter database exists (created, or
  // converted to this schema, and added to the local server) and monitors both databases.
  // Throws std::runtime_error naming what could not be done.
  void start();

  // A transaction of the vportfilter database: `done` runs after the commit and after
  // this agent's monitor has seen it.
  void commit(nlohmann::json ops, OvsdbClient::Reply done);
  // Writes `changes` (settings key -> text, or "altitude"/"allowed_controllers") into the
  // instance's row, creating it when missing; replies after the commit.
  void set_instance(const std::string& guid, const nlohmann::json& changes, const Reply& reply);

  Instance instance(const std::string& guid) const;  // the defaults when it has no row
  const std::map<std::string, Instance>& instances() const { return instances_; }  // "default" always there
  const std::map<std::string, Adapter>& adapters() const { return adapters_; }      // by key; id -1 until assigned
  const std::map<std::string, nlohmann::json>& rule_rows() const { return rule_rows_; }  // uuid -> row
  // The rules of `instance` (of `kind`, or all) in evaluation order, as rule objects.
  nlohmann::json instance_rules(const std::string& instance, const std::string& kind) const;

 private:
  void connect_ovsdb();
  bool ensure_policy_db();  // true if it had to be created or converted
  void on_ovs_update(const nlohmann::json& updates);
  void on_policy_update(const nlohmann::json& updates);
  void assign_ids();
  void load_instances();

  Agent& a_;
  std::shared_ptr<OvsdbClient> ovs_db_, policy_db_;
  OvsView view_;
  std::map<std::string, Adapter> adapters_;
  std::set<std::string> assigning_;  // keys with an insert in flight
  std::map<std::string, nlohmann::json> adapter_rows_, instance_rows_, rule_rows_;  // uuid -> row
  std::map<std::string, Instance> instances_;
};

}  // namespace vpf::agent
