// The plugin's connection tracking (docs/connections.md): a conntrack::Tracker fed with
// the packets of every VM port that a batch lets through, in both directions; swept in
// small steps by the datapath threads themselves (no thread of its own); listed by
// `ovs-appctl vportfilter/conn-list` and counted in `vportfilter/stats`.
//
// On for the adapters that connection rules are in force on (Port::tracked), with a table
// of conns=N connections (default kDefaultConns; conns=0: off, connection rules then
// decide each packet alone).  A tracked port hands the plugin both directions (the tracker
// must see the replies) and the switch remembers no pass of the plugin's on it (hook ABI
// 6): every packet is followed.
//
// Connection rules then decide connections, not packets: the connection rule that decided
// the packet opening a connection (in the direction it was opened) also decides its
// replies, until the rules change; the opener's next packet after a change decides it
// again, and a reply that comes first is decided again from the connection's key turned
// round (turn_round: the opener's view of it, which rules that read only headers decide
// as they would the opener's packet).  So `allow` on the VM's outgoing connections lets their replies through a filter
// rule that drops inbound packets of their kind (reflexive allow), and `block` drops the
// replies of a connection it governs.  Passthrough and filter rules keep their meaning
// for each packet otherwise (Plugin::BatchRun::govern).  A packet whose own decision drops
// it opens no connection.
//
// Thread-safety: follow() on any datapath threads at once; list() and stats() on any.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "vpf/channel.h"
#include "vpf/conntrack/tracker.h"
#include "vpf/matcher/classifier.h"

namespace vpf::plugin {

class ConnTracking {
 public:
  static constexpr uint32_t kMaxConns = 1000000;
  static constexpr uint32_t kDefaultConns = 65536;
  explicit ConnTracking(conntrack::Limits limits);

  // The n packets of one batch of adapter `adapter` (VM `vm`) in direction `dir`, with
  // the decisions they bring (Tracker::Decisions: the connection rule that decided each,
  // packed; the packets that may not open a connection; the rules' generation).  gov[i]:
  // the decision that governs packet i's connection (set: false for none); keys[i]: the
  // packet as parsed.  Appends to `events` the connection events the packets raised, a
  // TcpConnectRequest for each SYN of the VM in `indicate` that opened a connection, and the
  // events of the connections this thread's share of the sweep removed (the sweep runs
  // here: one stripe every kSweepEveryNs at most, whichever thread comes).
  //
  // Pended connect requests: a SYN of the VM in `pend` that opens a TCP connection opens it
  // with its rule's decision turned into a drop and settled (conntrack::kSettledGen), so
  // that nothing but the application's completion (Tracker::settle, by settle_request)
  // lets the connection's packets through; requests[i] is its TcpConnectRequest (not in
  // `events`: the caller holds the SYN and sends the request with it).
  struct Followed {
    uint32_t replies = 0;    // bit i: packet i goes against the direction its connection was opened in
    uint32_t suspended = 0;  // bit i: packet i's connection is suspended
    uint32_t settled = 0;    // bit i: packet i's connection has a settled decision (pending or completed)
    uint32_t pended = 0;     // bit i: packet i is a SYN that opened a pended connection (requests[i])
  };
  Followed follow(const uint8_t* const* data, const uint32_t* len, uint32_t n, uint32_t adapter, uint32_t vm,
                  matcher::Direction dir, uint64_t now_ns, const conntrack::Tracker::Decisions& d, uint32_t indicate,
                  uint32_t pend, conntrack::Governing* gov, matcher::PacketKey* keys,
                  std::vector<conntrack::Event>* events, conntrack::Event* requests);
  // Completes the pended request of connection `id`, whose SYN is `frame` (len bytes) on
  // `adapter` (VM `vm`): the connection keeps `word` (its rule, allowed or blocked) for
  // good.  False if the connection is gone.
  bool settle_request(const uint8_t* frame, uint32_t len, uint32_t adapter, uint32_t vm, uint64_t id, uint64_t word);
  // A pended request's outcome, for stats(): 0 pended, 1 allowed, 2 blocked.
  void count_request(int outcome) { requests_[outcome].fetch_add(1, std::memory_order_relaxed); }
  // The decision `w` (packed) with another action.
  static uint64_t with_action(uint64_t w, matcher::Action a) {
    matcher::Decision d = unpack(w);
    d.action = a;
    return pack(d);
  }
  // A connection event as the event rings carry it (channel::ConnectionRecord).
  static channel::ConnectionRecord record_of(const conntrack::Event& e, uint64_t now_ns);
  bool set_suspended(uint64_t id, bool on) { return tracker_.set_suspended(id, on); }
  // Tracker::redecide for the packet parsed as `key`.
  conntrack::Governing redecide(const matcher::PacketKey& key, uint64_t word, uint64_t gen) {
    return tracker_.redecide(key, word, gen);
  }
  // Writes into `out` (len bytes) the frame of `len` bytes parsed as `key` turned round:
  // its Ethernet and IP addresses and its ports swapped, the rest as it was.
  static void turn_round(const uint8_t* frame, uint32_t len, const matcher::PacketKey& key, uint8_t* out);

  // A classifier decision as the word a connection keeps, and back.
  static uint64_t pack(const matcher::Decision& d) {
    return uint64_t(d.rule_id) | uint64_t(d.kind) << 32 | uint64_t(d.action) << 40;
  }
  static matcher::Decision unpack(uint64_t w) {
    return matcher::Decision{uint32_t(w), matcher::RuleKind(uint8_t(w >> 32)), matcher::Action(uint8_t(w >> 40))};
  }

  // One line per connection, by id: "id=… adapter=… vm=… tcp|udp LOCAL:PORT -> REMOTE:PORT
  // opened=outgoing|incoming state=… packets=OUT/IN bytes=OUT/IN" (OUT: opener → peer).
  std::string list() const;
  // The connections as JSON objects (docs/protocol.md, list_connections), by id: those of
  // `adapter` (-1: all), or the one of id `id` (0: all); `pending` (sorted): the ids of the
  // connections whose connect request waits for its completion.
  nlohmann::json list_json(int64_t adapter, uint64_t id, uint64_t now_ns, const std::vector<uint64_t>& pending) const;
  nlohmann::json stats() const;
  static nlohmann::json idle_stats(const conntrack::Limits& limits);  // of a table not made yet
  // A connection event written (or lost: no agent, a full ring), for stats().
  void count_event(bool written) { (written ? events_ : events_lost_).fetch_add(1, std::memory_order_relaxed); }

 private:
  std::vector<conntrack::ConnInfo> sorted() const;  // by id
  static nlohmann::json stats_json(const conntrack::Limits& limits, const conntrack::Stats& s);
  conntrack::Tracker tracker_;
  std::atomic<uint64_t> last_sweep_{0};
  std::atomic<uint64_t> events_{0}, events_lost_{0};
  std::atomic<uint64_t> requests_[3] = {};
};

}  // namespace vpf::plugin
