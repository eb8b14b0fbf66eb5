// Client channels: events that go from the datapath straight to the client that decides
// them, and its verdicts straight back, without the agent in between (docs/channel.md,
// "Client channels").
//
// The agent opens a channel for an instance whose client started its filter
// (client_open): a Region like the agent's own (event rings written by datapath threads,
// one ring the client writes verdicts into) and two eventfds, handed to the agent and by
// it to the client (SCM_RIGHTS).  Which events go there is decided per rule: each capture
// or notify rule the agent gives the plugin carries its route (the channel's number, and
// the rule's id as its instance knows it).  A datapath thread that matches such a rule
// while the route's channel is open writes the event into that channel instead of the
// agent's ring (and, when the agent asks for it, a copy flagged kFlagMirrored into the
// agent's ring for monitors and logging).
//
// Trust: the client is not trusted.  Everything it writes is checked (channel::Ring) and
// a verdict is applied only to a packet held for this very channel; a ring it corrupts
// closes the channel (its held packets get their expiry action, its events go through
// the agent again).
//
// Threads.  Datapath threads read the route map and the channel table between enter()
// and leave() (one store each, no lock, no wait); the control thread or the main thread
// change them (under the table's mutex) and never free what a datapath thread may still
// read: old route maps and closed channels are retired through an epoch domain.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "vpf/channel.h"
#include "vpf/mutex.h"
#include "vpf/matcher/epoch.h"

namespace vpf::plugin {

// Where a rule's events go.
struct Route {
  uint16_t client = 0;   // the channel number (1..kMaxRoutes-1)
  uint32_t rule_id = 0;  // the rule's id as its instance knows it
};

struct ClientOptions {
  uint64_t timeout_ns = 0;  // a held packet's deadline after capture; 0: the plugin's hold timeout
  bool deny_expired = false;
  bool mirror = false;  // also a kFlagMirrored copy of each event to the agent
};

class ClientChannel {
 public:
  ClientChannel(uint16_t route, uint32_t serial, uint32_t event_rings, uint64_t ring_bytes, const ClientOptions& o);
  ~ClientChannel();
  ClientChannel(const ClientChannel&) = delete;
  ClientChannel& operator=(const ClientChannel&) = delete;

  void set_options(const ClientOptions& o);
  ClientOptions options() const;
  channel::VerdictAction expiry() const {
    return deny_expired_.load(std::memory_order_relaxed) ? channel::VerdictAction::Drop : channel::VerdictAction::Send;
  }

  const uint16_t route;
  const uint32_t serial;  // unique per channel opened by this plugin (a hold's owner)
  channel::Region region;
  int events_efd = -1;    // the plugin wakes the client
  int verdicts_efd = -1;  // the client wakes the plugin
  std::atomic<uint64_t> timeout_ns{0};
  std::atomic<bool> mirror{false};
  // Counters (events written and lost are the event rings' own): verdicts applied,
  // verdicts for a packet held for someone else, for no packet held (late, decided,
  // unknown), and records refused (bad sizes or actions).
  std::atomic<uint64_t> verdicts{0}, foreign{0}, stale{0}, bad{0};

 private:
  std::atomic<bool> deny_expired_{false};
};

class ClientTable {
 public:
  static constexpr uint16_t kMaxRoutes = 256;
  static constexpr uint64_t kRingBytes = uint64_t(1) << 20;
  using RouteMap = std::unordered_map<uint64_t, Route>;  // RuleHits::key(kind, plugin id) ->

  // ---- datapath threads (slot: the thread's own, below kSlots) ----
  static constexpr int kSlots = matcher::EpochDomain::kSlots;
  void enter(int slot) { epoch_.enter(slot); }
  void leave(int slot) { epoch_.leave(slot); }
  const RouteMap* routes() const { return routes_.load(std::memory_order_acquire); }
  ClientChannel* channel(uint16_t route) const {
    return route < kMaxRoutes ? channels_[route].load(std::memory_order_acquire) : nullptr;
  }

  // ---- control and main threads ----
  // Opens a channel for `route` (replacing one open there: returned in *replaced, closed
  // for datapath threads).  Throws std::runtime_error.
  std::shared_ptr<ClientChannel> open(uint16_t route, uint32_t event_rings, const ClientOptions& o,
                                      std::shared_ptr<ClientChannel>* replaced);
  // Takes the channel of `route` away from datapath threads and returns it once none of
  // them can still be writing to it (null if none was open).
  std::shared_ptr<ClientChannel> close(uint16_t route);
  std::shared_ptr<ClientChannel> find(uint16_t route) const;
  std::vector<std::shared_ptr<ClientChannel>> open_channels() const;
  // Route changes: every key in `removed` loses its route, then `added` are set;
  // `replace_all`: the map becomes `added`.
  void change_routes(const std::vector<uint64_t>& removed, const std::vector<std::pair<uint64_t, Route>>& added,
                     bool replace_all);
  size_t route_count() const;

 private:
  void synchronize() VPF_REQUIRES(mu_);  // waits until no datapath thread reads what was retired

  mutable Mutex mu_;
  matcher::EpochDomain epoch_;
  std::array<std::atomic<ClientChannel*>, kMaxRoutes> channels_{};
  std::map<uint16_t, std::shared_ptr<ClientChannel>> owned_ VPF_GUARDED_BY(mu_);
  std::shared_ptr<const RouteMap> route_map_ VPF_GUARDED_BY(mu_) = std::make_shared<RouteMap>();
  std::atomic<const RouteMap*> routes_{route_map_.get()};
  uint32_t next_serial_ VPF_GUARDED_BY(mu_) = 1;
};

}  // namespace vpf::plugin
