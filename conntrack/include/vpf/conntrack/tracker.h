// The connection tracker: the TCP connections and UDP flows of VM ports, keyed by their
// 5-tuple on one adapter, with the VM's side as "local" (docs/connections.md).
//
// What a connection is
// ====================
// A packet's key (adapter, IP version, protocol, the VM's address and port, the peer's
// address and port) is the same in both directions: an outgoing packet's source is the
// VM's side, an incoming packet's destination is.  The connection's direction is the
// direction of the packet that opened it: `Outgoing` when the VM opened it (its SYN, its
// first UDP datagram), `Incoming` when the peer did.  A TCP connection seen first on a
// segment that is not a SYN (open before tracking started) is picked up as established,
// opened in that segment's direction.  A SYN for a connection in TimeWait or Closed
// starts a new connection on the same key (a new id).
//
// Not tracked (Verdict::Untracked): packets that are not TCP or UDP, fragments (a later
// fragment has no ports), a RST or stray SYN-ACK of no known connection.  Counted as
// invalid and changing nothing (Verdict::Invalid): headers the parser found truncated or
// broken, TCP flag combinations no stack sends in a connection (tcp_state.h), segments out
// of their connection's window (tcp_window.h; given the frame).
//
// Limits: at most Limits::total connections in all and Limits::per_adapter on one
// adapter.  A packet that would open one more is not tracked (Verdict::Full, counted);
// the connections in the table are never evicted to make room, so a flood of new flows
// cannot push out live connections.  Idle connections leave at their state's timeout
// (Timeouts), when expire() runs.
//
// Events: a packet that changes what an application would be told returns one event
// (Observed::event): UdpCreated for a new UDP flow, TcpConnected when a connection becomes
// established, TcpClosed when it enters TimeWait or Closed; expire() returns TcpClosed
// (if not told yet) and UdpClosed for the connections it removes.
//
// Thread-safety: track(), expire(), list() and stats() may run on any threads at once.
// The table is split into stripes by the key's hash, each with its own lock and its own
// records; a lock is held for one packet's update (or one stripe's sweep) and nothing
// allocates after construction.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "vpf/conntrack/tcp_state.h"
#include "vpf/conntrack/tcp_window.h"
#include "vpf/matcher/packet_key.h"

namespace vpf::conntrack {

using matcher::Direction;

// A connection's key: both directions' packets give the same one.
struct ConnKey {
  uint32_t adapter = 0;
  uint8_t ip_ver = 0;  // 4 or 6
  uint8_t proto = 0;   // 6 (TCP) or 17 (UDP)
  uint16_t local_port = 0, remote_port = 0;
  uint32_t local_ip[4] = {}, remote_ip[4] = {};  // IPv4 in word 0; most significant word first
  bool operator==(const ConnKey&) const = default;
};

// Idle timeouts in seconds, per TCP state and for UDP (defaults as in the Linux tracker).
struct Timeouts {
  uint32_t tcp[kTcpStates] = {120, 60, 432000, 120, 60, 30, 120, 10};  // in TcpState order
  uint32_t udp_unreplied = 30;  // no datagram back from the side that did not open it yet
  uint32_t udp_replied = 120;
};

struct Limits {
  uint32_t total = 65536;
  uint32_t per_adapter = 65536;
};

enum class Verdict : uint8_t {
  New,        // this packet opened a connection
  Known,      // a packet of a tracked connection
  Untracked,  // not a packet the tracker follows (see above)
  Invalid,    // broken headers or flags: counted, nothing changed
  Full,       // would open a connection past a limit: not tracked, counted
};

// TcpConnectRequest is the caller's (a SYN that opened a connection, told before the
// handshake); the tracker raises the others.
enum class EventKind : uint8_t { None, TcpConnected, TcpClosed, UdpCreated, UdpClosed, TcpConnectRequest };

// What a connection is, as events and listings give it.
struct ConnInfo {
  uint64_t id = 0;  // unique for the tracker's life, never 0
  ConnKey key;
  uint32_t vm = 0;
  Direction opened = Direction::Outgoing;  // who opened it: the VM (Outgoing) or the peer
  TcpState tcp = TcpState::SynSent;        // TCP only
  bool replied = false;                    // a packet came from the side that did not open it
  bool suspended = false;                  // the caller's: its packets raise no events (set_suspended)
  uint64_t created_ns = 0, last_ns = 0;
  uint64_t packets[2] = {}, bytes[2] = {};  // [0] opener → peer, [1] peer → opener (frame bytes)
};

// A decision the caller keeps with a connection, opaque to the tracker (the plugin: the
// connection rule that governs it), with the generation of the rules it came from.
struct Governing {
  uint64_t word = 0;
  uint64_t gen = 0;
  bool set = false;
};
inline constexpr uint64_t kNoWord = ~uint64_t(0);  // a packet that brings no decision
// The generation of a decision the application settled for one connection (a connect
// request it pended, then completed): newer than every generation of the rules, so no
// rule change decides the connection again.
inline constexpr uint64_t kSettledGen = ~uint64_t(0);

struct Observed {
  Verdict verdict = Verdict::Untracked;
  Governing gov;  // the connection's, after this packet (New, Known)
  bool reply = false;  // the packet goes from the side that did not open the connection
  bool suspended = false;  // the connection's (New, Known)
  uint64_t id = 0;     // the connection's (New, Known)
  TcpState tcp = TcpState::SynSent;
  EventKind event = EventKind::None;
};

struct Event {
  EventKind kind = EventKind::None;
  ConnInfo conn;
  Governing gov;  // the caller's decision kept with the connection
};

struct Stats {
  uint64_t active = 0, created = 0, removed = 0, untracked = 0, invalid = 0, full = 0, unexpected = 0;
  uint64_t out_of_window = 0;  // TCP segments outside their connection's window (also in invalid)
};

class Tracker {
 public:
  explicit Tracker(Limits limits = {}, Timeouts timeouts = {});
  ~Tracker();
  Tracker(const Tracker&) = delete;
  Tracker& operator=(const Tracker&) = delete;

  // The key of a parsed packet, and whether the tracker follows it (TCP or UDP with its
  // ports, not a fragment, headers whole).  `invalid` tells a broken header apart from a
  // packet of another kind.
  static bool key_of(const matcher::PacketKey& k, ConnKey* key, bool* invalid);

  // Follows one parsed packet (its F_DIRECTION says which way it goes) seen at `now_ns`
  // (a monotonic clock): creates, updates or closes its connection.  `event_conn`: the
  // connection as the packet left it, when the packet raises an event (Observed::event;
  // at most one per packet).  With the frame the key was parsed from, the segments of a
  // TCP connection opened by a SYN are also checked against its sequence numbers and
  // windows (tcp_window.h): one out of window is Invalid and changes nothing; without
  // the frame (or for a connection picked up open, whose window scale is unknown) the
  // flags alone move the state.
  Observed track(const matcher::PacketKey& k, const uint8_t* frame, uint32_t frame_len, uint64_t now_ns,
                 ConnInfo* event_conn = nullptr);
  Observed track(const matcher::PacketKey& k, uint64_t now_ns, ConnInfo* event_conn = nullptr) {
    return track(k, nullptr, 0, now_ns, event_conn);
  }

  // track() on the n <= kBatch packets of a batch, in order, with the table's memory for
  // all of them requested first (the datapath's form: the lookups' cache misses overlap).
  // frames and frame_lens may be null (flags only); events may be null, else events[i] is
  // set when out[i].event is.
  static constexpr uint32_t kBatch = 32;
  void track_batch(const matcher::PacketKey* const* keys, const uint8_t* const* frames, const uint32_t* frame_lens,
                   uint32_t n, uint64_t now_ns, Observed* out, ConnInfo* events = nullptr);

  // What a batch brings besides its packets (track_batch's form for a caller that keeps a
  // decision with each connection): words[i], the decision packet i brings (kNoWord:
  // none); bit i of no_open, packet i may not open a connection (it is dropped); gen, the
  // generation of the rules the words come from.  A connection takes the word of the
  // packet that opens it, and again that of its opener's next packet once `gen` has moved
  // on (re-decided after a rule change); Observed::gov is the connection's.
  struct Decisions {
    const uint64_t* words = nullptr;
    uint32_t no_open = 0;
    uint64_t gen = 0;
    uint32_t suspend = 0;  // bit i: a connection packet i opens starts suspended
    uint32_t settle = 0;   // bit i: a connection packet i opens keeps its word with kSettledGen
  };
  void track_batch(const matcher::PacketKey* const* keys, const uint8_t* const* frames, const uint32_t* frame_lens,
                   uint32_t n, uint64_t now_ns, const Decisions& d, Observed* out, ConnInfo* events = nullptr);

  // Decides the connection of packet `k` again with `word` from the rules of generation
  // `gen`, if what it keeps is older (the caller re-decided a reply from the connection's
  // key turned round, before its opener sent again).  Returns the connection's decision
  // (set: false when the packet has no connection).
  Governing redecide(const matcher::PacketKey& k, uint64_t word, uint64_t gen);

  // Gives the connection of packet `k`, if its id is `id`, the decision `word` for good
  // (generation kSettledGen: no rule change decides it again).  False if that connection
  // is not in the table (closed and gone, or its key now names a newer one).
  bool settle(const matcher::PacketKey& k, uint64_t id, uint64_t word);

  // Suspends or resumes the connection of id `id` (ConnInfo::suspended); false if there is
  // none.  Walks the table: a control-plane call.
  bool set_suspended(uint64_t id, bool on);

  // Removes the connections idle past their timeout at `now_ns`; appends an event for
  // each whose closing was not told yet.  Returns how many it removed.
  size_t expire(uint64_t now_ns, std::vector<Event>* events);
  // The same for the next stripe only (round robin over the calls): a datapath thread's
  // share of the sweep, bounded (a whole sweep takes as many calls as there are stripes).
  size_t expire_step(uint64_t now_ns, std::vector<Event>* events);
  uint32_t stripes() const { return nstripes_; }

  // The connections in the table (optionally of one adapter), in no particular order.
  std::vector<ConnInfo> list() const;
  std::vector<ConnInfo> list(uint32_t adapter) const;
  Stats stats() const;
  const Limits& limits() const { return limits_; }
  const Timeouts& timeouts() const { return timeouts_; }

  static uint64_t hash(const ConnKey& k);

 private:
  struct Stripe;
  struct Prepared;  // one packet's key, segment and hash: what needs no lock
  // Fills *p; false (with *o set) if the packet is not tracked or invalid.
  bool prepare(const matcher::PacketKey& k, const uint8_t* frame, uint32_t frame_len, Prepared* p, Observed* o);
  Stripe& stripe_of(uint64_t h) const;
  // `opening`: what a connection the packet opens starts with (kOpen* bits).
  static constexpr uint8_t kOpenSuspended = 1, kOpenSettled = 2;
  Observed apply(const Prepared& p, uint64_t now_ns, uint64_t word, bool may_open, uint64_t gen, uint8_t opening,
                 ConnInfo* event_conn);
  Limits limits_;
  Timeouts timeouts_;
  uint32_t nstripes_;
  std::unique_ptr<Stripe[]> stripes_;
  std::atomic<uint64_t> next_id_{1};
  std::atomic<uint64_t> active_{0};
  // Connections per adapter, counted in a fixed table of counters indexed by the adapter's
  // hash (an adapter shares its counter with others only past kAdapterSlots adapters; the
  // limit then holds for the set of them).
  static constexpr uint32_t kAdapterSlots = 4096;
  std::unique_ptr<std::atomic<uint32_t>[]> per_adapter_;
  mutable std::atomic<uint64_t> untracked_{0}, invalid_{0}, full_{0}, created_{0}, removed_{0}, unexpected_{0},
      out_of_window_{0};
  bool reserve(uint32_t adapter);
  void release(uint32_t adapter);
  uint64_t timeout_ns(const ConnInfo& c) const;
  size_t expire_stripe(Stripe& s, uint64_t now_ns, std::vector<Event>* events);
  std::atomic<uint32_t> next_sweep_{0};
};

}  // namespace vpf::conntrack
