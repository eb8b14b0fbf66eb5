// vpf-agent, part 2 of 4 (see agent.h): the plugin.
//
// Owns the control channel to the plugin inside ovs-vswitchd (vpf/channel_client.h):
// attaches when its socket is there (checked every second), detaches when it goes, and
// keeps what the plugin holds equal to what the agent wants — the adapters, the
// configuration, and the rules in evaluation order.  Each Rule row is read once when it
// changes (learn_row/forget_row) into `wanted_`, the plugin's rules in evaluation order;
// send_rule_changes() then sends the plugin the difference to what it holds (`pushed_`):
// removes, and adds placed before their successor, so a change costs what the rows that
// changed cost.  push_rules() reads every row again (instances, sessions and attach
// change them all).  add_rule's rule is sent while its transaction commits
// (add_provisional) and taken back if the row does not come as guessed.
//
// Runs on the io_context's thread.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <tuple>

#include <nlohmann/json.hpp>

#include "agent.h"
#include "vpf/channel_client.h"
#include "vpf/matcher/rule.h"

namespace vpf::agent {

class PluginLink {
 public:
  explicit PluginLink(Agent& a);
  ~PluginLink();
  void start();  // looks for the plugin now and every second

  // The plugin's channel; null while detached.
  const std::shared_ptr<channel::ChannelClient>& plugin() const { return plugin_; }
  void detach_plugin(const std::string& why);  // why: logged unless empty

  // What the plugin should hold, sent when it differs from what it has.
  void push_adapters();
  void push_config();
  void push_rules();                                    // every row again
  void push_rule_rows(const nlohmann::json& changed);   // the Rule table's part of an update

  // The Rule rows of (instance, kind, id): null if none.
  const std::set<std::string>* rows_of(const std::string& instance, const std::string& kind, uint32_t rule_id) const;
  // The first and last position in (instance, kind)'s list, if it has rules.
  std::optional<std::pair<int64_t, int64_t>> positions(const std::string& instance, const std::string& kind) const;
  // add_rule's rule (already checked) into the plugin before its row comes, and taken back.
  void add_provisional(const std::string& instance, const matcher::Rule& rule, int64_t position,
                       const nlohmann::json& spec);
  void drop_provisional(const std::string& instance, const std::string& kind, uint32_t rule_id);
  // A delete's rows out of the plugin while it commits; back in if it was refused.
  void forget_rows(const std::set<std::string>& uuids);
  void restore_rows(const std::set<std::string>& uuids);

 private:
  void try_plugin();
  void attach_plugin();
  // Sends `params` with `method` unless the plugin has them already (`last`); a refusal is
  // logged ("the plugin refused the WHAT"), a broken channel detaches the plugin.
  void push(const char* method, const nlohmann::json& params, nlohmann::json& last, const char* what);

  // A plugin rule's place: instance altitude (higher first), instance, kind, priority
  // (higher first), position, id (one row per instance, kind and id is wanted).
  using OrderKey = std::tuple<int64_t, std::string, std::string, int64_t, int64_t, int64_t>;
  using Place = std::pair<int, OrderKey>;  // group (0: passthrough, 1: the others), key
  struct PluginRule {
    matcher::RuleKind kind;
    uint32_t id;           // the plugin's
    std::string text;      // the rule object sent
    nlohmann::json route;  // capture and notify rules: {"client", "rule_id"} (null: none)
  };
  struct RowEntry {
    std::string instance, kind;
    uint32_t rule_id = 0;
    int64_t position = 0;
    std::optional<Place> place;  // in wanted_
    std::string text;            // its key in checked_
  };
  struct Checked {
    std::string error;  // "" = valid
    matcher::Rule rule;
  };
  static bool names(const Place& p, const std::string& instance, const std::string& kind, uint32_t rule_id) {
    return std::get<1>(p.second) == instance && std::get<2>(p.second) == kind && std::get<5>(p.second) == int64_t(rule_id);
  }
  void learn_row(const std::string& uuid);
  void forget_row(const std::string& uuid, bool retire);
  // A rule as the plugin should hold it, into wanted_ (nothing if its instance is not
  // active or the rule is bad); *text: its key in checked_, where `checked` (a parse of
  // `spec` already checked) goes instead of parsing and compiling it again.
  std::optional<Place> want_rule(const std::string& instance, const std::string& kind, uint32_t rule_id, int64_t position,
                                 nlohmann::json spec, std::string* text, const matcher::Rule* checked = nullptr);
  void send_rule_changes();

  Agent& a_;
  std::shared_ptr<channel::ChannelClient> plugin_;
  boost::asio::steady_timer plugin_timer_;
  nlohmann::json last_config_pushed_, last_adapters_pushed_;  // what the plugin has
  std::map<OrderKey, PluginRule> wanted_[2], pushed_[2];
  std::set<Place> dirty_;        // places whose wanted and pushed rule may differ
  std::set<Place> provisional_;  // wanted by add_rule before its row came
  bool rules_synced_ = false;    // pushed_ is what the plugin holds (else: send the whole set)
  std::map<std::string, RowEntry> row_entries_;  // Rule row uuid ->
  std::map<std::tuple<std::string, std::string, uint32_t>, std::set<std::string>> rows_by_id_;  // (instance, kind, id) -> row uuids
  std::map<std::pair<std::string, std::string>, std::multiset<int64_t>> positions_;  // (instance, kind) ->
  // Rule text -> its parse: each distinct text is parsed and checked once (add_rule puts
  // what it checked; a row that changes or goes takes its text out).
  std::map<std::string, Checked> checked_;
};

}  // namespace vpf::agent
