// vpf-agent, part 3 of 4 (see agent.h): events and verdicts.
//
// While the plugin is attached, waits on its events eventfd, reads the event rings when it
// fires, and routes each event to the client that started the deciding rule's instance
// (captures: with a deadline; the expiry verdict when no client can take them) and copies
// it to monitors.  Verdicts from clients go straight to the plugin's command ring.  Owns
// the plugin's rule ids (unique across instances, never reused: a deleted rule's id is
// retired, its late events still find their instance for ten minutes) and the client
// channels (event_router_channels.cc): the plugin's rings that take an instance's events
// straight to its client and its verdicts straight back, which the agent opens, keeps in
// step and closes, and never sits on the path of.
//
// Runs on the io_context's thread.
#pragma once

#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent.h"
#include "vpf/channel_client.h"
#include "vpf/matcher/rule.h"

namespace vpf::agent {

// Which instance's rule a plugin rule id is.
struct RuleOrigin {
  std::string instance;
  matcher::RuleKind kind;
  uint32_t rule_id;
  bool retired;  // the rule was deleted: kept for its late events only
};

class EventRouter {
 public:
  explicit EventRouter(Agent& a) : a_(a) {}

  void plugin_attached(const std::shared_ptr<channel::ChannelClient>& plugin);  // starts reading events
  void plugin_detached();  // stops; clients' channels and undecided captures are gone with it

  void on_verdict(Session& s, const protocol::VerdictFrame& v, std::span<const uint8_t> data);
  // Gives a capture its expiry verdict (deny: drop, else send).
  void expire(uint64_t capture_id, bool deny);
  // Gives the session's captures that wait for a verdict until `until` (all of them by
  // default: the client stopped or went) the instance's expiry verdict; the session's
  // expiry timer then waits for the next one.  Returns how many.
  size_t expire_pending(Session& s, Session::Clock::time_point until = Session::Clock::time_point::max());

  // The plugin's id of an instance's rule (made on first use), and its retirement.
  uint32_t internal_id(const std::string& instance, matcher::RuleKind kind, uint32_t rule_id);
  void retire_id(const std::tuple<std::string, int, uint32_t>& id);
  void purge_retired();
  const std::map<std::tuple<std::string, int, uint32_t>, uint32_t>& internal_ids() const { return internal_ids_; }
  const RuleOrigin* origin(uint32_t plugin_rule_id) const;  // null if unknown

  // Client channels (docs/channel.md): open_channel asks the plugin for one and hands its
  // descriptors to the client; close_channel when the client stops or goes (the plugin
  // then gives its held packets their expiry verdict); sync_channels keeps their settings
  // (timeout, DenyExpiredRequests, whether monitors or logging need copies) in step.
  void open_channel(Session& s, const Reply& reply);
  void close_channel(Session& s);
  void sync_channels();
  uint16_t route_slot(const std::string& instance);  // the instance's channel number; 0: none left

  nlohmann::json counters() const;  // the events part of the status method

 private:
  void pump_events();  // reads the event rings, routes, then waits on the eventfd again
  void route(std::vector<std::string> batch);
  void arm_expiry(Session& s);
  nlohmann::json channel_options(const Session& s) const;

  Agent& a_;
  std::unique_ptr<boost::asio::posix::stream_descriptor> events_wait_;  // the plugin's events eventfd (a dup)
  std::map<uint32_t, RuleOrigin> origins_;  // the plugin's rule id -> the instance's
  std::map<std::tuple<std::string, int, uint32_t>, uint32_t> internal_ids_;  // (instance, kind, id) -> the plugin's
  std::deque<std::pair<std::chrono::steady_clock::time_point, uint32_t>> retired_order_;  // oldest first
  static constexpr auto kRetiredKeep = std::chrono::seconds(10);
  static constexpr size_t kRetiredMax = 16384;
  uint32_t next_internal_id_ = 1;
  uint64_t events_received_ = 0, events_unrouted_ = 0, expired_by_agent_ = 0, verdicts_lost_ = 0, bad_verdicts_ = 0;
  std::map<std::string, uint16_t> route_slots_;        // instance -> its client channel's number
  std::map<uint16_t, nlohmann::json> channel_pushed_;  // open channels' settings as the plugin has them
};

}  // namespace vpf::agent
