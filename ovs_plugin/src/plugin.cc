// vportfilter's packet-hook plugin: see plugin.h.
#include "plugin.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <sstream>
#include <stdexcept>

#include "uninit.h"
#include "vpf/matcher/parser.h"
#include "vpf/matcher/rules_json.h"

namespace vpf::plugin {

using channel::PacketEvent;
using channel::VerdictAction;
using matcher::Action;
using matcher::Decision;
using matcher::Direction;
using matcher::PacketRef;
using matcher::RuleKind;
using nlohmann::json;

namespace {

std::atomic<uint64_t> g_generation{0};

// The slot of this thread for the plugin instance of generation tls_gen.  Initial-exec:
// the plugin is dlopen()ed, and the default model would call __tls_get_addr on every
// batch; 12 bytes fit in the static TLS surplus the C library keeps for such modules.
__attribute__((tls_model("initial-exec"))) thread_local uint64_t tls_gen = 0;
__attribute__((tls_model("initial-exec"))) thread_local int tls_slot = -1;

// What the switch counted for the batches of one direction that the hook did not get.
void add_switch_counts(const ovs_packet_hook_port_state* st, Direction dir, uint64_t* packets, uint64_t* bytes) {
  if (!st) return;
  for (const auto& c : st->counted[dir == Direction::Outgoing ? OVS_PACKET_HOOK_RX : OVS_PACKET_HOOK_TX]) {
    *packets += __atomic_load_n(&c.packets, __ATOMIC_RELAXED);
    *bytes += __atomic_load_n(&c.bytes, __ATOMIC_RELAXED);
  }
}

}  // namespace

LocalCounters Plugin::totals(const Port& p, Direction dir) const {
  const DirCounters& c = dir == Direction::Outgoing ? p.out : p.in;
  LocalCounters t;
  for (int k = 0; k < kCounters; ++k) t.v[k] = c.v[k].load();
  add_switch_counts(p.state, dir, &t.v[kPackets], &t.v[kBytes]);
  if (p.index >= kLocalPorts) return t;
  for (const auto& slot : local_) {
    const LocalCounters* l = slot.load(std::memory_order_acquire);
    if (!l) continue;
    l += p.index * 2 + uint32_t(dir);
    for (int k = 0; k < kCounters; ++k) t.v[k] += __atomic_load_n(&l->v[k], __ATOMIC_RELAXED);
  }
  return t;
}

json Plugin::counters_json(const LocalCounters& t) {
  json j = json::object();
  for (int k = 0; k < kCounters; ++k) j[kCounterNames[k]] = t.v[k];
  return j;
}

namespace {

const char* policy_name(Policy p) { return p == Policy::FailOpen ? "fail-open" : "fail-closed"; }
const char* mode_name(Mode m) { return m == Mode::Filter ? "filter" : "stat"; }

std::optional<Policy> parse_policy(const std::string& s) {
  if (s == "fail-open") return Policy::FailOpen;
  if (s == "fail-closed") return Policy::FailClosed;
  return std::nullopt;
}

std::optional<Mode> parse_mode(const std::string& s) {
  if (s == "filter") return Mode::Filter;
  if (s == "stat") return Mode::Stat;
  return std::nullopt;
}

}  // namespace

uint64_t mono_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

uint64_t real_ns() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

Plugin::Plugin(const ovs_packet_hook_host* host, uint32_t cache_flows, conntrack::Limits conns)
    : host_(host),
      cache_flows_(cache_flows),
      conn_limits_(conns),
      conns_size_(conns.total),
      generation_(++g_generation),
      region_(channel::Region::create(kEventRings + 1, kRingBytes)) {
  for (uint32_t i = 0; i < kEventRings; ++i) {
    rings_[i].ring = region_.ring(i);
    rings_[i].holds = std::make_unique<HoldTable>(i);
  }
  events_efd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  commands_efd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (events_efd_ < 0 || commands_efd_ < 0) throw std::runtime_error("eventfd failed");
}

Plugin::~Plugin() {
  // Held packets still belong to us: free them.
  for (auto& r : rings_)
    r.holds->claim_expired(UINT64_MAX, [&](HoldSlot& s) {
      host_->packet_free(s.packet);
      r.holds->release(&s);
    });
  if (events_efd_ >= 0) close(events_efd_);
  if (commands_efd_ >= 0) close(commands_efd_);
}

// ---------------------------------------------------------------------------------------
// Datapath.

int Plugin::thread_slot() {
  if (tls_gen != generation_) {
    tls_gen = generation_;
    tls_slot = next_slot_.fetch_add(1);
    if (tls_slot > kMaxThreads) tls_slot = kMaxThreads;
    if (tls_slot < kMaxThreads) open_reader(tls_slot);
  }
  return tls_slot;
}

void Plugin::open_reader(int slot) {
  auto& r = readers_[size_t(slot)].emplace(classifier_.reader());
  if (cache_flows_) r.enable_cache(cache_flows_);
  reader_ptrs_[size_t(slot)].store(&r, std::memory_order_release);
}
matcher::Classifier::CacheStats Plugin::cache_stats() const {
  matcher::Classifier::CacheStats sum;
  for (const auto& p : reader_ptrs_) {
    const matcher::Classifier::Reader* r = p.load(std::memory_order_acquire);
    if (!r) continue;
    const auto c = r->cache_stats();
    sum.hits += c.hits;
    sum.misses += c.misses;
    sum.bypassed += c.bypassed;
    sum.capacity = c.capacity;
  }
  return sum;
}
uint32_t Plugin::classify(int slot, const matcher::PacketBatch& batch, Decision* out) {
  if (slot < kMaxThreads) return readers_[size_t(slot)]->classify(batch, out);
  MutexLock lock(overflow_mu_);
  if (!readers_[kMaxThreads]) open_reader(kMaxThreads);
  return readers_[kMaxThreads]->classify(batch, out);
}

RuleHits& Plugin::hits(int slot) {
  RuleHits* h = hits_[size_t(slot)].load(std::memory_order_acquire);
  if (h) return *h;
  MutexLock lock(hits_mu_);  // once per thread
  h = hits_[size_t(slot)].load(std::memory_order_relaxed);
  if (!h) {
    hits_owned_.push_back(std::make_unique<RuleHits>(slot == kMaxThreads));
    h = hits_owned_.back().get();
    hits_[size_t(slot)].store(h, std::memory_order_release);
  }
  return *h;
}

LocalCounters* Plugin::local_counters(int slot, const Port& p, Direction dir) {
  if (slot >= kMaxThreads || p.index >= kLocalPorts) return nullptr;
  LocalCounters* l = local_[size_t(slot)].load(std::memory_order_acquire);
  if (!l) {
    MutexLock lock(hits_mu_);  // once per thread
    local_owned_.push_back(std::make_unique<LocalCounters[]>(kLocalPorts * 2));
    l = local_owned_.back().get();
    local_[size_t(slot)].store(l, std::memory_order_release);
  }
  return l + p.index * 2 + uint32_t(dir);
}

namespace {
// Adds to a counter that only this thread writes.
inline void bump(uint64_t& c, uint64_t v) { __atomic_store_n(&c, c + v, __ATOMIC_RELAXED); }

}  // namespace

// One batch's decisions: what hook() does, step by step.  Lives on the datapath thread's
// stack for one call; takes the event ring and the client channels only when the batch
// raises its first event.
class Plugin::BatchRun {
 public:
  BatchRun(Plugin& p, Port* port, Direction dir, ovs_packet_hook_batch* b, int32_t adapter)
      : p_(p), port_(port), dir_(dir), b_(b), adapter_(adapter), n_(b->count), slot_(p.thread_slot()) {
    data_ = b->data;
    len_ = b->len;
    if (b->version < 2) {  // ABI 1 asks per packet; ABI 2 gives the switch's arrays as they are
      for (uint32_t i = 0; i < n_; ++i) {
        data_buf_.v[i] = p.host_->packet_data(b->packets[i]);
        len_buf_.v[i] = p.host_->packet_size(b->packets[i]);
      }
      data_ = data_buf_.v;
      len_ = len_buf_.v;
    }
    for (uint32_t i = 0; i < n_; ++i) bytes_ += len_[i];
    closed_ = p.policy_.load(std::memory_order_relaxed) == Policy::FailClosed;
    stat_mode_ = p.mode_.load(std::memory_order_relaxed) == Mode::Stat;
    events_on_ = !stat_mode_ && p.attached_.load(std::memory_order_acquire);
    const uint32_t snap = port->snaplen.load(std::memory_order_relaxed);
    snaplen_ = snap ? snap : kDefaultSnaplen;
  }

  // Classifies the batch; returns the matched packets as a bit set (out_[i] for each).
  // ABI 5: hands the switch the packets whose headers the classifier checked, so that it
  // does not parse them again (the hook changes no packet it lets pass).
  uint32_t classify() {
    rules_gen_ = p_.rules_gen_.load(std::memory_order_acquire);  // before the snapshot is read
    const matcher::PacketMeta meta{uint32_t(adapter_), dir_, port_->vm.load(std::memory_order_relaxed)};
    matcher::PacketBatch pb{data_, len_, n_, meta};
    const bool plain = dir_ == Direction::Outgoing && b_->version >= 5 && b_->size >= sizeof(ovs_packet_hook_batch);
    if (plain) pb.plain_ipv4 = &b_->plain_ipv4;
    // ABI 6: of the packets whose pass the switch can remember (none when it calls the
    // hook before its own flow lookup), the passes that hold for their whole flow until
    // the port's memo_gen changes (update_want): the classifier's candidates that no
    // rule matched.
    uint32_t memo = 0;
    // A tracked port's packets are all seen (the tracker follows each).
    const bool memo_on = plain && b_->version >= 6 && b_->memo && !port_->tracked.load(std::memory_order_relaxed);
    if (memo_on) pb.memo = &memo;
    const uint32_t matched = p_.classify(slot_, pb, out_.v);
    if (memo_on) b_->memo &= memo & ~matched;
    return matched;
  }

  // Applies the decisions of the matched packets: counts their rules' hits (a run of
  // packets of one rule as one add), then drops them or raises their events.
  void apply(uint32_t matched, RuleHits& rh) {
    uint64_t run_key = 0, run_len = 0;
    for (uint32_t m = matched; m; m &= m - 1) {
      const Decision& d = out_.v[std::countr_zero(m)];
      const uint64_t key = RuleHits::key(d.kind, d.rule_id);
      if (key != run_key) {
        if (run_len) rh.add(run_key, run_len);
        run_key = key;
        run_len = 0;
      }
      ++run_len;
    }
    rh.add(run_key, run_len);
    for (uint32_t m = matched; m; m &= m - 1) apply_one(uint32_t(std::countr_zero(m)));
  }

  // Applies packet i's decision (its rule's hit counted): drops it or raises its event.
  void apply_one(uint32_t i) {
    const Decision& d = out_.v[i];
    if (d.kind != RuleKind::Passthrough) {
      ++fpackets_;
      fbytes_ += len_[i];
    }
    if (taken_ >> i & 1) return;  // held already (a pended connect request)
    bool drop = false;
    if (d.action == Action::Drop) {
      drop = true;
    } else if (d.action == Action::Capture || d.action == Action::Notify) {
      if (stat_mode_) {
        // counted above; the packet passes
      } else if (!events_on_) {
        ++lost_;
        drop = closed_;
      } else {
        drop = raise_event(i, d, RuleHits::key(d.kind, d.rule_id));
      }
    }
    if (drop) {
      b_->verdicts[i] = OVS_PACKET_DROP;
      ++dropped_;
      dropped_bytes_ += len_[i];
    }
  }

  // Releases the ring, wakes whoever the batch's events are for, adds the counters.
  void finish() {
    if (er_locked_) er_->busy.clear(std::memory_order_release);
    if (to_agent_) channel::wake_consumer(p_.region_.header()->agent_waiting, p_.events_efd_);
    for (uint32_t t = 0; t < ntouched_; ++t)
      channel::wake_consumer(touched_[t]->region.header()->agent_waiting, touched_[t]->events_efd);
    if (routes_) p_.clients_.leave(slot_);
    // A new hold: the control thread polls for its verdict (and learns its deadline).  The
    // wake-up runs beside the event's way to the client, not after it.
    if (held_any_) channel::wake_consumer(p_.region_.header()->plugin_waiting, p_.commands_efd_);
    const uint64_t add[kCounters] = {n_, bytes_, fpackets_, fbytes_, dropped_, dropped_bytes_, events_, lost_};
    if (LocalCounters* l = p_.local_counters(slot_, *port_, dir_)) {
      for (int k = 0; k < kCounters; ++k)
        if (add[k]) bump(l->v[k], add[k]);
      return;
    }
    DirCounters& c = dir_ == Direction::Outgoing ? port_->out : port_->in;
    for (int k = 0; k < kCounters; ++k)
      if (add[k]) c.v[k].fetch_add(add[k], std::memory_order_relaxed);
  }

  int slot() const { return slot_; }

  // The batch to the connection tracker (before its decisions are applied): a reply of a
  // connection that a connection rule governs takes that rule's decision (decided for the
  // packet that opened it, in the direction it was opened: conn_tracking.h) — unless a
  // passthrough rule matched it, or the rule allows and a filter rule captures, notifies
  // or counts it (filter and passthrough rules keep their meaning for each packet; an
  // allow overrides only a drop: the reflexive allow).  A packet whose own decision drops
  // it opens nothing.  A reply of a connection decided under older rules decides it again
  // first (redecide).  The connection events the batch raised go to the instances of the
  // governing rules (raise_connection_event); a suspended connection's packets raise none
  // of its rule's packet events; a rule with indicate_connect_requests has the VM's SYN
  // raise a connect request.  Returns the matched packets.
  uint32_t govern(uint32_t matched, ConnTracking& ct) {
    uint64_t words[kHookBatch];
    uint32_t no_open = 0, suspend = 0, indicate = 0, pend = 0;
    // Only loaded where such rules exist (the shared pointer's load takes a lock).
    const auto acting = p_.conn_flags_any_.load(std::memory_order_acquire) ? p_.conn_flags_.load() : nullptr;
    for (uint32_t i = 0; i < n_; ++i) {
      const Decision& d = out_.v[i];
      const bool m = matched >> i & 1;
      words[i] = m && d.kind == RuleKind::Connection ? ConnTracking::pack(d) : conntrack::kNoWord;
      no_open |= uint32_t(m && d.action == Action::Drop) << i;
      if (acting && words[i] != conntrack::kNoWord) {
        const uint32_t f = conn_flags_of(*acting, d.rule_id);
        suspend |= uint32_t((f & matcher::nf_flag::kSuspended) != 0) << i;
        indicate |= uint32_t((f & matcher::nf_flag::kIndicateConnectRequests) != 0) << i;
        pend |= uint32_t((f & matcher::nf_flag::kPendConnectRequest) != 0) << i;
      }
    }
    conntrack::Governing gov[kHookBatch];
    Uninit<matcher::PacketKey, kHookBatch> keys;
    Uninit<conntrack::Event, kHookBatch> requests;  // written for the pended SYNs only
    static thread_local std::vector<conntrack::Event> events;  // kept: no allocation per batch
    events.clear();
    const ConnTracking::Followed f = ct.follow(
        data_, len_, n_, uint32_t(adapter_), port_->vm.load(std::memory_order_relaxed), dir_, mono_ns(),
        conntrack::Tracker::Decisions{words, no_open, rules_gen_, suspend}, indicate & ~pend, pend, gov, keys.v,
        &events, requests.v);
    const uint32_t replies = f.replies, suspended = f.suspended;
    for (const conntrack::Event& e : events) raise_connection_event(e, ct);
    uint32_t stale = 0;  // replies whose connection was decided under older rules
    for (uint32_t m = replies; m; m &= m - 1) {
      const uint32_t i = uint32_t(std::countr_zero(m));
      stale |= uint32_t(gov[i].gen < rules_gen_) << i;
    }
    if (stale) redecide(stale, keys.v, gov, ct);
    // A reply takes its connection's decision; so does every packet of a connection whose
    // decision is settled (a pended request: blocked until completed, then as completed).
    for (uint32_t m = (replies | f.settled) & ~f.pended; m; m &= m - 1) {
      const uint32_t i = uint32_t(std::countr_zero(m));
      if (!gov[i].set) continue;
      const Decision& own = out_.v[i];
      const Decision g = ConnTracking::unpack(gov[i].word);
      if (matched >> i & 1) {
        if (own.kind == RuleKind::Passthrough) continue;
        if (g.action == Action::Pass && own.kind == RuleKind::Filter && own.action != Action::Drop) continue;
      }
      out_.v[i] = g;
      matched |= 1u << i;
    }
    // A suspended connection's packets raise no events of its connection rule: captured or
    // notified, they pass (still counted as the rule's).
    for (uint32_t m = suspended & matched; m; m &= m - 1) {
      Decision& d = out_.v[std::countr_zero(m)];
      if (d.kind == RuleKind::Connection && (d.action == Action::Capture || d.action == Action::Notify))
        d.action = Action::Pass;
    }
    // The pended SYNs: held with their requests; one that cannot be held is decided now as
    // an expired request would be, and its connection settled so.
    for (uint32_t m = f.pended; m; m &= m - 1) {
      const uint32_t i = uint32_t(std::countr_zero(m));
      bool drop = false;
      if (hold_connect_request(i, requests.v[i], ct, &drop)) {
        taken_ |= 1u << i;
        continue;
      }
      const uint64_t w = ConnTracking::with_action(requests.v[i].gov.word, drop ? Action::Drop : Action::Pass);
      ct.settle_request(data_[i], len_[i], uint32_t(adapter_), port_->vm.load(std::memory_order_relaxed),
                        requests.v[i].conn.id, w);
      out_.v[i] = ConnTracking::unpack(w);
    }
    return matched;
  }

 private:
  // The connections of the `stale` replies decided again under the rules in force, each
  // from its reply turned round (the opener's view: ConnTracking::turn_round) classified
  // in the direction the connection was opened in; gov[i] becomes what they keep.
  void redecide(uint32_t stale, const matcher::PacketKey* keys, conntrack::Governing* gov, ConnTracking& ct) {
    const uint8_t* tdata[kHookBatch];
    uint32_t tlen[kHookBatch], at[kHookBatch], n = 0;
    size_t bytes = 0;
    for (uint32_t m = stale; m; m &= m - 1) bytes += len_[std::countr_zero(m)];
    std::vector<uint8_t> frames(bytes);  // only after a rule change: not the usual path
    bytes = 0;
    for (uint32_t m = stale; m; m &= m - 1, ++n) {
      const uint32_t i = uint32_t(std::countr_zero(m));
      ConnTracking::turn_round(data_[i], len_[i], keys[i], frames.data() + bytes);
      tdata[n] = frames.data() + bytes;
      tlen[n] = len_[i];
      at[n] = i;
      bytes += len_[i];
    }
    const Direction opened = dir_ == Direction::Outgoing ? Direction::Incoming : Direction::Outgoing;
    const matcher::PacketBatch pb{tdata, tlen, n, {uint32_t(adapter_), opened, port_->vm.load(std::memory_order_relaxed)}};
    Uninit<Decision, kHookBatch> d;
    const uint32_t matched = p_.classify(slot_, pb, d.v);
    for (uint32_t j = 0; j < n; ++j) {
      const bool conn_rule = (matched >> j & 1) && d.v[j].kind == RuleKind::Connection;
      gov[at[j]] = ct.redecide(keys[at[j]], conn_rule ? ConnTracking::pack(d.v[j]) : conntrack::kNoWord, rules_gen_);
    }
  }

  // True if the thread has an event ring of its own; the threads beyond share the last one.
  bool own_ring() const { return slot_ < int(kEventRings) - 1; }

  // The thread's event ring (the shared last one only if free: never waits), taken on the
  // batch's first event; null when the shared ring is busy.
  EventRing* take_ring() {
    if (er_ || er_unavailable_) return er_;
    EventRing* cand = &p_.rings_[own_ring() ? uint32_t(slot_) : kEventRings - 1];
    if (!own_ring()) {
      if (cand->busy.test_and_set(std::memory_order_acquire)) {
        er_unavailable_ = true;
        return nullptr;
      }
      er_locked_ = true;
    }
    er_ = cand;
    now_real_ = real_ns();
    const uint64_t t = p_.hold_timeout_ns_.load(std::memory_order_relaxed);
    deadline_ = t ? mono_ns() + t : UINT64_MAX;
    return er_;
  }

  // The client channel packet i's rule routes to (clients.h), if any: only threads with
  // their own event ring use channels (the shared ring's threads use the agent's path).
  const Route* route_of(uint64_t key) {
    if (!own_ring()) return nullptr;
    if (!routes_) {
      p_.clients_.enter(slot_);
      routes_ = p_.clients_.routes();
    }
    if (routes_->empty()) return nullptr;
    const auto it = routes_->find(key);
    return it == routes_->end() ? nullptr : &it->second;
  }

  // Packet i's notify copy or capture: to its client's channel when its rule has a route
  // there, else to the agent's ring.  Returns true if the packet is to be dropped.
  bool raise_event(uint32_t i, const Decision& d, uint64_t key) {
    const Route* route = route_of(key);
    ClientChannel* cc = route ? p_.clients_.channel(route->client) : nullptr;
    EventRing* ring = take_ring();  // the agent's (also the thread's hold table)
    if (!ring) {
      ++lost_;  // the shared ring was busy
      return closed_ && d.action == Action::Capture;
    }
    PacketEvent e{};
    e.adapter = uint32_t(adapter_);
    e.direction = uint8_t(dir_);
    e.rule_kind = uint8_t(d.kind);
    e.rule_id = d.rule_id;
    e.orig_len = len_[i];
    e.timestamp_ns = now_real_;
    const bool notify = d.action == Action::Notify;
    e.cap_len = notify && len_[i] > snaplen_ ? snaplen_ : len_[i];
    e.l3_offset = uint16_t(matcher::l3_offset(data_[i], e.cap_len));
    const uint16_t type = notify ? channel::kNotify : channel::kCapture;
    const HoldTerms terms = hold_terms(cc);
    // What a capture that cannot be held or written gets: the client's expiry action, or
    // without a client channel the policy.
    const bool refuse_drops = cc ? cc->expiry() == VerdictAction::Drop : closed_;
    HoldSlot* hs = nullptr;
    if (!notify) {
      e.deadline_ns = terms.deadline;
      hs = ring->holds->hold(b_->packets[i], port_, dir_, len_[i], terms.deadline, &e.capture_id, terms.owner,
                             terms.expiry);
      if (!hs) {
        p_.cc_.hold_full.fetch_add(1, std::memory_order_relaxed);
        ++lost_;
        return refuse_drops;
      }
    }
    const bool written = cc ? write_to_client(*cc, *route, *ring, type, e, data_[i]) : write_to_agent(*ring, type, e, data_[i]);
    if (notify) {
      written ? ++events_ : ++lost_;  // a lost copy: the packet passes
      return false;
    }
    if (written) {
      b_->verdicts[i] = OVS_PACKET_TAKEN;
      ++events_;
      held_any_ = true;
      return false;
    }
    if (ring->holds->unhold(hs)) {
      ++lost_;
      return refuse_drops;
    }
    b_->verdicts[i] = OVS_PACKET_TAKEN;  // already expired by the control thread
    return false;
  }

  // How long a packet held now waits and who decides it: the client's channel (its
  // timeout and expiry action) or the agent (the plugin's timeout and expiry action).
  struct HoldTerms {
    uint64_t deadline;
    uint32_t owner = 0;
    uint8_t expiry = 0;
  };
  HoldTerms hold_terms(ClientChannel* cc) const {
    HoldTerms t{deadline_};
    if (cc) {
      const uint64_t ns = cc->timeout_ns.load(std::memory_order_relaxed);
      if (ns) t.deadline = mono_ns() + ns;
      t.owner = cc->serial;
      t.expiry = uint8_t(cc->expiry());
    }
    return t;
  }

  // The event header of a connection record: the connection's adapter, the direction it
  // was opened in, the governing rule `g`.
  PacketEvent connection_header(const conntrack::Event& ev, const Decision& g) const {
    PacketEvent e{};
    e.adapter = ev.conn.key.adapter;
    e.direction = uint8_t(ev.conn.opened);
    e.rule_kind = uint8_t(g.kind);
    e.rule_id = g.rule_id;
    e.orig_len = e.cap_len = sizeof(channel::ConnectionRecord);
    e.timestamp_ns = now_real_;
    return e;
  }

  // A connection event (docs/connections.md) for the instance whose connection rule
  // governs the connection, when that rule's packets go to it (capture or notify) or the
  // event is a connect request (the rule asked for them): to its client's channel or the
  // agent, as the rule's packet events go.
  void raise_connection_event(const conntrack::Event& ev, ConnTracking& ct) {
    if (!ev.gov.set || stat_mode_) return;
    const Decision g = ConnTracking::unpack(ev.gov.word);
    if (g.kind != RuleKind::Connection) return;
    if (g.action != Action::Capture && g.action != Action::Notify && ev.kind != conntrack::EventKind::TcpConnectRequest)
      return;
    EventRing* ring = events_on_ ? take_ring() : nullptr;
    if (!ring) return ct.count_event(false);
    const uint64_t key = RuleHits::key(g.kind, g.rule_id);
    const Route* route = route_of(key);
    ClientChannel* cc = route ? p_.clients_.channel(route->client) : nullptr;
    const PacketEvent e = connection_header(ev, g);
    const channel::ConnectionRecord rec = ConnTracking::record_of(ev, mono_ns());
    const auto* data = reinterpret_cast<const uint8_t*>(&rec);
    ct.count_event(cc ? write_to_client(*cc, *route, *ring, channel::kConnection, e, data)
                      : write_to_agent(*ring, channel::kConnection, e, data));
  }

  // A pended connect request (docs/connections.md): the VM's SYN held as a capture is, and
  // its request (the connection record, with the hold's capture id and deadline) sent to
  // the instance of the rule, through its client's channel or the agent.  The completion
  // is the verdict on that id (finish_hold settles the connection).  False if the SYN
  // could not be held or the request not written: *drop then says what the SYN gets (what
  // an expired request would: the client's expiry action, else the policy).
  bool hold_connect_request(uint32_t i, const conntrack::Event& ev, ConnTracking& ct, bool* drop) {
    const Decision g = ConnTracking::unpack(ev.gov.word);
    const uint64_t key = RuleHits::key(g.kind, g.rule_id);
    const Route* route = route_of(key);
    ClientChannel* cc = route ? p_.clients_.channel(route->client) : nullptr;
    *drop = cc ? cc->expiry() == VerdictAction::Drop : closed_;
    if (stat_mode_) {  // statistics mode decides nothing: the connection goes on
      *drop = false;
      return false;
    }
    EventRing* ring = events_on_ ? take_ring() : nullptr;
    if (!ring) {
      ++lost_;
      ct.count_event(false);
      return false;
    }
    PacketEvent e = connection_header(ev, g);
    const HoldTerms terms = hold_terms(cc);
    e.deadline_ns = terms.deadline;
    HoldSlot* hs = ring->holds->hold(b_->packets[i], port_, dir_, len_[i], terms.deadline, &e.capture_id, terms.owner,
                                     terms.expiry, ev.conn.id, ev.gov.word);
    if (!hs) {
      p_.cc_.hold_full.fetch_add(1, std::memory_order_relaxed);
      ++lost_;
      ct.count_event(false);
      return false;
    }
    const channel::ConnectionRecord rec = ConnTracking::record_of(ev, mono_ns());
    const auto* data = reinterpret_cast<const uint8_t*>(&rec);
    const bool written = cc ? write_to_client(*cc, *route, *ring, channel::kConnection, e, data)
                            : write_to_agent(*ring, channel::kConnection, e, data);
    ct.count_event(written);
    if (!written && ring->holds->unhold(hs)) {
      ++lost_;
      return false;
    }
    // Written (or, if not, already expired by the control thread, which settled it).
    b_->verdicts[i] = OVS_PACKET_TAKEN;
    ++events_;
    held_any_ = true;
    return true;
  }

  bool write_to_agent(EventRing& ring, uint16_t type, const PacketEvent& e, const uint8_t* data) {
    const bool written = ring.ring.push(type, &e, sizeof e, data, e.cap_len);
    to_agent_ = to_agent_ || written;
    return written;
  }

  // To the client's ring of this thread, with the rule id as its instance knows it, and a
  // mirrored copy to the agent when monitors or logging want one.
  bool write_to_client(ClientChannel& cc, const Route& route, EventRing& ring, uint16_t type, const PacketEvent& e,
                       const uint8_t* data) {
    PacketEvent ce = e;
    ce.rule_id = route.rule_id;
    if (!cc.region.ring(uint32_t(slot_)).push(type, &ce, sizeof ce, data, ce.cap_len)) return false;
    uint32_t t = 0;
    while (t < ntouched_ && touched_[t] != &cc) ++t;
    if (t == ntouched_) touched_[ntouched_++] = &cc;
    if (cc.mirror.load(std::memory_order_relaxed) &&
        ring.ring.push(type, &e, sizeof e, data, e.cap_len, channel::kFlagMirrored))
      to_agent_ = true;
    return true;
  }

  Plugin& p_;
  Port* const port_;
  const Direction dir_;
  ovs_packet_hook_batch* const b_;
  const int32_t adapter_;
  const uint32_t n_;
  const int slot_;
  const uint8_t* const* data_;
  const uint32_t* len_;
  Uninit<const uint8_t*, kHookBatch> data_buf_;
  Uninit<uint32_t, kHookBatch> len_buf_;
  Uninit<Decision, kHookBatch> out_;
  bool closed_ = false, stat_mode_ = false, events_on_ = false;
  uint32_t snaplen_ = 0;
  uint64_t bytes_ = 0, fpackets_ = 0, fbytes_ = 0, dropped_ = 0, dropped_bytes_ = 0, events_ = 0, lost_ = 0;
  bool to_agent_ = false;  // something written to the agent's ring
  EventRing* er_ = nullptr;
  bool er_locked_ = false, er_unavailable_ = false;
  uint64_t now_real_ = 0, deadline_ = 0;
  const ClientTable::RouteMap* routes_ = nullptr;
  ClientChannel* touched_[kHookBatch];
  uint32_t ntouched_ = 0;
  bool held_any_ = false;
  uint32_t taken_ = 0;  // bit i: packet i is held already (govern: a pended connect request)
  uint64_t rules_gen_ = 0;  // of the snapshot classify() used (or an older one)
};

void Plugin::hook(Port* port, Direction dir, ovs_packet_hook_batch* b) {
  const int32_t adapter = port->adapter.load(std::memory_order_relaxed);
  if (adapter < 0 || b->count == 0) return;
  if (b->count > kHookBatch) return hook_slices(port, dir, b);
  BatchRun run(*this, port, dir, b, adapter);
  uint32_t matched = run.classify();
  if (port->tracked.load(std::memory_order_relaxed))
    if (ConnTracking* ct = conns_.load(std::memory_order_acquire)) matched = run.govern(matched, *ct);
  if (matched) {
    run.apply(matched, hits(run.slot()));
  }
  run.finish();
}

// A batch larger than the switch's largest (NETDEV_MAX_BURST): decided in slices, never cut
// short (packets past a cut would pass unfiltered).
void Plugin::hook_slices(Port* port, Direction dir, ovs_packet_hook_batch* b) {
  for (uint32_t off = 0; off < b->count; off += kHookBatch) {
    ovs_packet_hook_batch slice{};
    std::memcpy(&slice, b, std::min<size_t>(b->size, sizeof slice));
    slice.count = std::min(kHookBatch, b->count - off);
    slice.packets = b->packets + off;
    slice.verdicts = b->verdicts + off;
    if (b->version >= 2) {
      slice.data = b->data + off;
      slice.len = b->len + off;
    }
    hook(port, dir, &slice);
  }
}

// ---------------------------------------------------------------------------------------
// Ports.

void Plugin::apply_mapping(Port& p, const Mapping& m) {
  p.vm.store(m.vm);
  p.snaplen.store(m.snaplen);
  p.adapter.store(m.adapter);
  update_want(p);
}

void Plugin::update_want(Port& p) const {
  if (!p.state) return;
  const int32_t a = p.adapter.load();
  uint32_t want = 0;
  const bool tracked = conns_size_ && scope_.covers(a, RuleScope::kConnections);
  p.tracked.store(tracked, std::memory_order_relaxed);
  if (a >= 0) {
    want = OVS_PACKET_HOOK_COUNT_RX | OVS_PACKET_HOOK_COUNT_TX;
    if (tracked || scope_.covers(a, int(Direction::Outgoing))) want |= OVS_PACKET_HOOK_WANT_RX;
    if (tracked || scope_.covers(a, int(Direction::Incoming))) want |= OVS_PACKET_HOOK_WANT_TX;
  }
  __atomic_store_n(&p.state->want, want, __ATOMIC_RELAXED);
  // Called after every change of the port's mapping and of the rules: a new generation
  // for the verdicts the switch remembers (ABI 6), never 0.  Only the plugin writes it, so
  // it goes on from the state's value, also after a reload: no generation of the plugin
  // loaded before is repeated.
  if (p.state->version >= 6) {
    uint32_t gen = __atomic_load_n(&p.state->memo_gen, __ATOMIC_RELAXED) + 1;
    if (gen == 0) gen = 1;
    __atomic_store_n(&p.state->memo_gen, gen, __ATOMIC_RELEASE);
  }
}

void Plugin::RuleScope::add(const matcher::Rule& r, int sign) {
  for (int d = 0; d < 3; ++d) {
    if (d == kConnections ? r.kind != matcher::RuleKind::Connection
                          : r.direction != Direction::Any && int(r.direction) != d)
      continue;
    if (r.adapter == matcher::kAllAdapters) {
      every[d] += sign;
    } else if ((adapters[d][r.adapter] += sign) <= 0) {
      adapters[d].erase(r.adapter);
    }
  }
}

void Plugin::set_scope(RuleScope scope) {
  MutexLock lock(ports_mu_);
  scope_ = std::move(scope);
  for (const auto& p : ports_) update_want(*p);
}

void Plugin::port_attach(Port* port, ovs_packet_hook_port_state* state) {
  MutexLock lock(ports_mu_);
  port->state = state;
  update_want(*port);
}

Port* Plugin::port_open(const char* name, const char* type) {
  Port* p = nullptr;
  {
    MutexLock lock(ports_mu_);
    // A closed port that still holds packets comes back as it was.
    for (auto it = closing_.begin(); it != closing_.end(); ++it) {
      if ((*it)->name != name) continue;
      p = it->get();
      ports_.push_back(std::move(*it));
      closing_.erase(it);
      closing_count_.fetch_sub(1, std::memory_order_release);
      p->type = type;  // no datapath thread reads a closed port's type
      p->open.store(true);
      break;
    }
    if (!p) {
      auto np = std::make_unique<Port>();
      if (free_indices_.empty()) {
        np->index = next_index_++;
      } else {
        np->index = free_indices_.back();
        free_indices_.pop_back();
      }
      np->name = name;
      np->type = type;
      // An adapter's port that comes back goes on counting from where it stopped.
      if (const auto r = retired_.find(name); r != retired_.end()) {
        for (int k = 0; k < kCounters; ++k) {
          np->out.v[k].store(r->second.out.v[k], std::memory_order_relaxed);
          np->in.v[k].store(r->second.in.v[k], std::memory_order_relaxed);
        }
        retired_.erase(r);
      }
      p = np.get();
      ports_.push_back(std::move(np));
    }
    const auto it = mappings_.find(name);
    if (it != mappings_.end()) apply_mapping(*p, it->second);
  }
  reap_closed_ports();
  return p;
}

void Plugin::port_close(Port* port) {
  {
    MutexLock lock(ports_mu_);
    port->open.store(false);
    for (Direction d : {Direction::Outgoing, Direction::Incoming}) {  // the switch's counts stay with the port
      uint64_t packets = 0, bytes = 0;
      add_switch_counts(port->state, d, &packets, &bytes);
      DirCounters& c = d == Direction::Outgoing ? port->out : port->in;
      c.v[kPackets] += packets;
      c.v[kBytes] += bytes;
    }
    port->state = nullptr;
    const auto it = std::find_if(ports_.begin(), ports_.end(), [&](const auto& q) { return q.get() == port; });
    if (it != ports_.end()) {
      closing_.push_back(std::move(*it));
      ports_.erase(it);
      closing_count_.fetch_add(1, std::memory_order_release);
    }
  }
  reap_closed_ports();
}

void Plugin::reap_closed_ports() {
  if (closing_count_.load(std::memory_order_acquire) == 0) return;
  MutexLock lock(ports_mu_);
  for (auto it = closing_.begin(); it != closing_.end();) {
    // The switch no longer calls the hook for a closed port, so no hold can be added.
    if ((*it)->holds.load(std::memory_order_acquire) != 0) {
      ++it;
      continue;
    }
    retire(**it);
    it = closing_.erase(it);
    closing_count_.fetch_sub(1, std::memory_order_release);
  }
}

void Plugin::retire(Port& p) {
  if (mappings_.count(p.name)) retired_[p.name] = Retired{p.type, totals(p, Direction::Outgoing), totals(p, Direction::Incoming)};
  // The threads that counted this index did so before the port closed; the next port to
  // get the index starts from zero.
  if (p.index < kLocalPorts) {
    for (auto& slot : local_) {
      LocalCounters* l = slot.load(std::memory_order_acquire);
      if (!l) continue;
      for (uint32_t d = 0; d < 2; ++d)
        for (int k = 0; k < kCounters; ++k) __atomic_store_n(&l[p.index * 2 + d].v[k], 0, __ATOMIC_RELAXED);
    }
  }
  free_indices_.push_back(p.index);
}

std::optional<std::string> Plugin::port_of_adapter(uint32_t adapter) const {
  MutexLock lock(ports_mu_);
  for (const auto& p : ports_)
    if (p->adapter.load() == int32_t(adapter)) return p->name;
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------
// Agent requests (control thread).

json Plugin::attach(int pid) {
  // Forget what a previous agent left: events of the past, commands half written.
  for (uint32_t i = 0; i < kEventRings; ++i) region_.drain(i);
  region_.reset(kEventRings);
  region_.header()->agent_waiting.store(0);
  agent_pid_ = pid;
  attached_.store(true, std::memory_order_release);
  return {{"channel_version", channel::kVersion},
          {"event_rings", kEventRings},
          {"ring_bytes", kRingBytes},
          {"hold_slots", HoldTable::kSlots * kEventRings},
          {"ports", ports()}};
}

void Plugin::detach() {
  attached_.store(false, std::memory_order_release);
  agent_pid_ = 0;
  for (const auto& ch : clients_.open_channels()) close_client(ch->route, "");
  expire_holds();  // every held packet gets the expiry action now
}

void Plugin::replace_rules(const std::vector<matcher::Rule>& rules) {
  MutexLock lock(rules_mu_);
  // Only what changed is recompiled: the rules that the old and the new list share at
  // their start stay (so appending a rule compiles one rule, not the whole set); the rest
  // of the old list is removed and the rest of the new one added, in one snapshot: all or
  // nothing, in the new list's order.
  const auto current = classifier_.rules();
  size_t keep = 0;
  while (keep < current.size() && keep < rules.size() && current[keep].rule == rules[keep]) ++keep;
  std::vector<matcher::RuleRef> removes;
  for (size_t i = keep; i < current.size(); ++i) removes.push_back({current[i].rule.kind, current[i].rule.id});
  change_rules(removes, matcher::at_tail(std::vector<matcher::Rule>(rules.begin() + long(keep), rules.end())));
}

void Plugin::change_rules(const std::vector<matcher::RuleRef>& removes, const std::vector<matcher::RuleAdd>& adds) {
  RuleScope before, wide;  // ports the new rules need get batches before the rules apply
  {
    MutexLock lock(ports_mu_);
    before = wide = scope_;
  }
  for (const auto& a : adds) wide.add(a.rule);
  RuleScope after = wide;  // narrowed by the removes once they are gone
  for (const auto& ref : removes)
    if (const auto* info = classifier_.find(ref)) after.add(info->rule, -1);
  if (conns_size_ && wide.any_connections() && !conns_owned_) {  // before a port is tracked
    conns_owned_ = std::make_unique<ConnTracking>(conn_limits_);
    conns_.store(conns_owned_.get(), std::memory_order_release);
  }
  if (!conns_size_)
    for (const auto& a : adds)
      if (a.rule.kind == matcher::RuleKind::Connection && (a.rule.nf_flags & kConnActing))
        throw matcher::RuleError(a.rule, "flags",
                                 "suspended, indicate_connect_requests and pend_connect_request need connection "
                                 "tracking, which the plugin runs without (conns=0)");
  set_scope(wide);
  try {
    classifier_.apply(removes, adds);
  } catch (...) {
    set_scope(std::move(before));
    throw;
  }
  update_conn_flags(removes, adds);
  // After the snapshot is out: a batch that read the new generation classifies with it.
  rules_gen_.fetch_add(1, std::memory_order_release);
  set_scope(std::move(after));
}

namespace {

// A rule's route: {"client": 1..255, "rule_id": N} (clients.h).
Route route_from(const json& j) {
  if (!j.is_object() || !j.contains("client") || !j["client"].is_number_unsigned() || j["client"].get<uint64_t>() == 0 ||
      j["client"].get<uint64_t>() >= ClientTable::kMaxRoutes || !j.contains("rule_id") || !j["rule_id"].is_number_unsigned() ||
      j["rule_id"].get<uint64_t>() > 0xffffffffu)
    throw std::invalid_argument("a route is {\"client\": 1.." + std::to_string(ClientTable::kMaxRoutes - 1) +
                                ", \"rule_id\": N}: " + j.dump());
  return {j["client"].get<uint16_t>(), j["rule_id"].get<uint32_t>()};
}

}  // namespace

json Plugin::set_rules(const json& params) {
  if (!params.is_object() || !params.contains("rules"))
    throw std::invalid_argument("set_rules needs {\"rules\": [...], \"routes\"?: [...]}");
  const auto rules = matcher::rules_from_json(params["rules"]);  // RuleError names the rule
  std::vector<std::pair<uint64_t, Route>> routes;
  if (params.contains("routes")) {
    if (!params["routes"].is_array()) throw std::invalid_argument("set_rules: 'routes' is an array");
    for (const auto& r : params["routes"]) {
      const auto kind = r.is_object() && r.contains("kind") && r["kind"].is_string()
                            ? matcher::rule_kind_from(r["kind"].get<std::string>())
                            : std::nullopt;
      if (!kind || !r.contains("id") || !r["id"].is_number_unsigned() || r["id"].get<uint64_t>() > 0xffffffffu)
        throw std::invalid_argument("set_rules: a route names its rule by \"kind\" and \"id\": " + r.dump());
      routes.emplace_back(RuleHits::key(*kind, r["id"].get<uint32_t>()), route_from(r));
    }
  }
  replace_rules(rules);
  clients_.change_routes({}, routes, true);
  return {{"rules", rules.size()}, {"routes", routes.size()}};
}

json Plugin::change_rules(const json& params) {
  if (!params.is_object()) throw std::invalid_argument("change_rules needs {\"remove\": [...], \"add\": [...]}");
  for (const auto& [k, v] : params.items())
    if (k != "remove" && k != "add") throw std::invalid_argument("change_rules: unknown member '" + k + "'");
  auto ref_of = [](const json& j, const char* what) {
    if (!j.is_object() || !j.contains("kind") || !j["kind"].is_string() || !j.contains("id") || !j["id"].is_number_unsigned() ||
        j["id"].get<uint64_t>() > 0xffffffffu)
      throw std::invalid_argument(std::string("change_rules: ") + what + " must be {\"kind\": KIND, \"id\": N}: " + j.dump());
    if (const auto k = matcher::rule_kind_from(j["kind"].get<std::string>())) return matcher::RuleRef{*k, j["id"].get<uint32_t>()};
    throw std::invalid_argument(std::string("change_rules: ") + what + " names no rule kind: " + j.dump());
  };
  const json none = json::array();
  const json& rm = params.contains("remove") ? params["remove"] : none;
  const json& add = params.contains("add") ? params["add"] : none;
  if (!rm.is_array() || !add.is_array()) throw std::invalid_argument("change_rules: 'remove' and 'add' are arrays");
  std::vector<matcher::RuleRef> removes;
  for (const auto& j : rm) removes.push_back(ref_of(j, "a removed rule"));
  std::vector<matcher::RuleAdd> adds;
  std::vector<std::pair<uint64_t, Route>> routes;
  for (const auto& j : add) {
    if (!j.is_object() || !j.contains("rule"))
      throw std::invalid_argument("change_rules: an added rule is {\"rule\": {...}, \"before\"?: {...}, \"route\"?: {...}}: " +
                                  j.dump());
    adds.push_back({matcher::rule_from_json(j["rule"]),
                    j.contains("before") && !j["before"].is_null() ? std::optional(ref_of(j["before"], "'before'")) : std::nullopt});
    if (j.contains("route") && !j["route"].is_null())
      routes.emplace_back(RuleHits::key(adds.back().rule.kind, adds.back().rule.id), route_from(j["route"]));
  }
  std::vector<uint64_t> unrouted;
  for (const auto& r : removes) unrouted.push_back(RuleHits::key(r.kind, r.id));
  MutexLock lock(rules_mu_);
  change_rules(removes, adds);  // RuleError names the rule
  clients_.change_routes(unrouted, routes, false);
  return {{"removed", removes.size()}, {"added", adds.size()}};
}

json Plugin::set_adapters(const json& params) {
  if (!params.is_object() || !params.contains("adapters") || !params["adapters"].is_array())
    throw std::invalid_argument("set_adapters needs {\"adapters\": [{\"port\": NAME, \"adapter\": ID}, ...]}");
  std::map<std::string, Mapping> next;
  std::map<int32_t, std::string> ids;
  for (const auto& a : params["adapters"]) {
    if (!a.is_object() || !a.contains("port") || !a["port"].is_string() || !a.contains("adapter") ||
        !a["adapter"].is_number_integer())
      throw std::invalid_argument("adapter entry needs a string 'port' and an integer 'adapter': " + a.dump());
    Mapping m;
    const auto id = a["adapter"].get<int64_t>();
    if (id < 0 || id > 0x7fffffff) throw std::invalid_argument("adapter id out of range: " + a.dump());
    m.adapter = int32_t(id);
    const std::string port = a["port"].get<std::string>();
    if (auto [it, fresh] = ids.emplace(m.adapter, port); !fresh)
      throw std::invalid_argument("adapter id " + std::to_string(id) + " given to both " + it->second + " and " + port);
    if (a.contains("vm")) {
      if (!a["vm"].is_number_unsigned() || a["vm"].get<uint64_t>() > 0xffffffffu)
        throw std::invalid_argument("'vm' must be a 32-bit unsigned integer: " + a.dump());
      m.vm = a["vm"].get<uint32_t>();
    }
    if (a.contains("snaplen")) {
      if (!a["snaplen"].is_number_unsigned() || a["snaplen"].get<uint64_t>() > kDefaultSnaplen)
        throw std::invalid_argument("'snaplen' must be 0.." + std::to_string(kDefaultSnaplen) + ": " + a.dump());
      m.snaplen = a["snaplen"].get<uint32_t>();
    }
    if (!next.emplace(port, m).second) throw std::invalid_argument("port listed twice: " + port);
  }
  MutexLock lock(ports_mu_);
  mappings_ = std::move(next);
  for (auto it = retired_.begin(); it != retired_.end();)  // an adapter that is gone and unmapped is forgotten
    it = mappings_.count(it->first) ? std::next(it) : retired_.erase(it);
  size_t mapped = 0;
  for (const auto& p : ports_) {
    const auto it = mappings_.find(p->name);
    apply_mapping(*p, it != mappings_.end() ? it->second : Mapping{});
    mapped += it != mappings_.end() && p->open.load();
  }
  return {{"adapters", mappings_.size()}, {"present", mapped}};
}

json Plugin::set_config(const json& params) {
  if (!params.is_object()) throw std::invalid_argument("set_config needs an object");
  // Check everything first: a bad key changes nothing.
  std::optional<Policy> policy;
  std::optional<Mode> mode;
  std::optional<uint64_t> timeout;
  std::optional<bool> deny;
  for (const auto& [k, v] : params.items()) {
    if (k == "policy" && v.is_string() && parse_policy(v))
      policy = parse_policy(v);
    else if (k == "mode" && v.is_string() && parse_mode(v))
      mode = parse_mode(v);
    else if (k == "hold_timeout_ms" && v.is_number_unsigned() && v.get<uint64_t>() <= 86400000)
      timeout = v.get<uint64_t>() * 1000000;
    else if (k == "deny_expired" && v.is_boolean())
      deny = v.get<bool>();
    else
      throw std::invalid_argument("bad setting '" + k + "': " + v.dump() +
                                  " (policy fail-open|fail-closed, mode filter|stat, hold_timeout_ms 0..86400000, "
                                  "deny_expired true|false)");
  }
  if (policy) policy_ = *policy;
  if (mode) mode_ = *mode;
  if (timeout) hold_timeout_ns_ = *timeout;
  if (deny) deny_expired_ = *deny;
  return {{"policy", policy_name(policy_.load())},
          {"mode", mode_name(mode_.load())},
          {"hold_timeout_ms", hold_timeout_ns_.load() / 1000000},
          {"deny_expired", deny_expired_.load()}};
}

json Plugin::ports() const {
  json a = json::array();
  MutexLock lock(ports_mu_);
  for (const auto& p : ports_)
    if (p->open.load()) a.push_back({{"port", p->name}, {"type", p->type}, {"adapter", p->adapter.load()}});
  return a;
}

json Plugin::stats() const {
  json adapters = json::array();
  json ports;
  {
    MutexLock lock(ports_mu_);
    ports = {{"open", ports_.size()}, {"closing", closing_.size()}, {"gone_adapters", retired_.size()}};
    for (const auto* list : {&ports_, &closing_}) {
      for (const auto& p : *list) {
        if (p->adapter.load() < 0) continue;
        adapters.push_back({{"adapter", p->adapter.load()},
                            {"port", p->name},
                            {"type", p->type},
                            {"vm", p->vm.load()},
                            {"present", p->open.load()},
                            {"outgoing", counters_json(totals(*p, Direction::Outgoing))},
                            {"incoming", counters_json(totals(*p, Direction::Incoming))}});
      }
    }
    for (const auto& [name, r] : retired_) {
      const Mapping& m = mappings_.at(name);
      adapters.push_back({{"adapter", m.adapter},
                          {"port", name},
                          {"type", r.type},
                          {"vm", m.vm},
                          {"present", false},
                          {"outgoing", counters_json(r.out)},
                          {"incoming", counters_json(r.in)}});
    }
  }
  std::map<uint64_t, uint64_t> sums;
  uint64_t unaccounted = 0;
  for (const auto& h : hits_) {
    const RuleHits* t = h.load(std::memory_order_acquire);
    if (t) t->sum_into(sums, &unaccounted);
  }
  json rules = json::array();
  for (const auto& [k, v] : sums)
    rules.push_back({{"kind", matcher::to_string(RuleKind((k >> 32) - 1))}, {"id", uint32_t(k)}, {"hits", v}});
  json rings = json::array();
  for (uint32_t i = 0; i <= kEventRings; ++i) {
    const channel::Ring r = region_.ring(i);
    rings.push_back({{"ring", i},
                     {"role", i < kEventRings ? "events" : "commands"},
                     {"used", r.used()},
                     {"capacity", r.capacity()},
                     {"pushed", r.pushed()},
                     {"dropped", r.dropped()}});
  }
  const auto cs = cache_stats();
  json clients = json::array();
  for (const auto& ch : clients_.open_channels()) {
    const auto o = ch->options();
    uint64_t used = 0, events = 0, lost = 0;
    for (uint32_t i = 0; i < kEventRings; ++i) {
      const channel::Ring r = ch->region.ring(i);
      used += r.used();
      events += r.pushed();
      lost += r.dropped();
    }
    clients.push_back({{"route", ch->route},
                       {"serial", ch->serial},
                       {"events", events},
                       {"lost", lost},
                       {"verdicts", ch->verdicts.load()},
                       {"foreign_verdicts", ch->foreign.load()},
                       {"stale_verdicts", ch->stale.load()},
                       {"bad_records", ch->bad.load()},
                       {"ring_used", used},
                       {"timeout_ms", o.timeout_ns / 1000000},
                       {"deny_expired", o.deny_expired},
                       {"mirror", o.mirror}});
  }
  return {{"adapters", adapters},
          {"clients", clients},
          {"routes", clients_.route_count()},
          {"rules", rules},
          {"decision_cache",
           {{"flows_per_thread", cache_flows_}, {"hits", cs.hits}, {"misses", cs.misses}, {"bypassed", cs.bypassed}}},
          {"connections", conn_stats()},
          {"hits_unaccounted", unaccounted},
          {"rings", rings},
          {"held", held()},
          {"ports", ports},
          {"channel",
           {{"verdicts", cc_.verdicts.load()},
            {"stale_verdicts", cc_.stale_verdicts.load()},
            {"bad_records", cc_.bad_records.load()},
            {"expired", cc_.expired.load()},
            {"released_on_detach", cc_.released_on_detach.load()},
            {"injected", cc_.injected.load()},
            {"inject_errors", cc_.inject_errors.load()},
            {"hold_full", cc_.hold_full.load()},
            {"plugin_errors", cc_.plugin_errors.load()},
            {"clients_broken", cc_.clients_broken.load()}}}};
}

// ---------------------------------------------------------------------------------------
// ovs-appctl commands (main thread).

std::string Plugin::show() const {
  std::ostringstream o;
  const auto s = classifier_.stats();
  o << "rules: " << s.rules << " (" << s.entries << " entries in " << s.tables << " tables, kernel "
    << matcher::isa_name(classifier_.isa()) << ")\n";
  const auto cs = cache_stats();
  if (cache_flows_) {
    o << "decision cache: " << cache_flows_ << " flows per thread, shapes cached " << std::popcount(s.cache_shapes) << "/16, hits "
      << cs.hits << " misses " << cs.misses << " bypassed " << cs.bypassed << "\n";
  } else {
    o << "decision cache: off\n";
  }
  o << "mode: " << mode_name(mode_.load()) << ", policy without agent: " << policy_name(policy_.load())
    << ", hold timeout: " << hold_timeout_ns_.load() / 1000000 << " ms, expired: "
    << (deny_expired_.load() ? "drop" : "send") << "\n";
  if (attached()) o << "agent: attached (pid " << agent_pid_.load() << ")\n";
  else o << "agent: not attached\n";
  const json st = stats();
  for (const auto& a : st["adapters"]) {
    o << "adapter " << a["adapter"].get<int>() << ": " << a["port"].get<std::string>() << " ("
      << a["type"].get<std::string>() << ", vm " << a["vm"] << (a["present"].get<bool>() ? "" : ", gone") << ")\n";
    for (const char* d : {"outgoing", "incoming"}) {
      const auto& c = a[d];
      o << "  " << d << ": packets " << c["packets"] << " bytes " << c["bytes"] << " filter_packets "
        << c["filter_packets"] << " dropped " << c["dropped"] << " dropped_bytes " << c["dropped_bytes"]
        << " events " << c["events"] << " events_lost " << c["events_lost"] << "\n";
    }
  }
  o << "rule hits:";
  for (const auto& r : st["rules"]) o << " " << r["kind"].get<std::string>() << ":" << r["id"] << "=" << r["hits"];
  o << "\nrings:";
  for (const auto& r : st["rings"])
    o << " " << r["ring"] << "(" << r["role"].get<std::string>() << " used " << r["used"] << "/" << r["capacity"]
      << " pushed " << r["pushed"] << " dropped " << r["dropped"] << ")";
  o << "\nheld: " << st["held"] << "\nports: " << st["ports"]["open"] << " open, " << st["ports"]["closing"]
    << " closed but holding packets, " << st["ports"]["gone_adapters"] << " adapters gone\nchannel: " << st["channel"].dump() << "\n";
  for (const auto& c : st["clients"]) o << "client channel " << c["route"] << ": " << c.dump() << "\n";
  return o.str();
}

std::string Plugin::rules_load(const std::string& path, bool* ok) {
  *ok = false;
  try {
    const auto rules = matcher::rules_from_file(path);
    replace_rules(rules);
    *ok = true;
    return "loaded " + std::to_string(rules.size()) + " rules from " + path;
  } catch (const std::exception& e) {
    return e.what();
  }
}

std::string Plugin::rule_add(const std::string& json_text, bool* ok) {
  *ok = false;
  try {
    const json j = json::parse(json_text);
    if (!j.is_object()) return "a rule is a JSON object: " + json_text;
    const matcher::Rule rule = matcher::rule_from_json(j);
    MutexLock lock(rules_mu_);
    change_rules({}, {{rule, std::nullopt}});
    *ok = true;
    return std::string("added ") + matcher::to_string(rule.kind) + ":" + std::to_string(rule.id);
  } catch (const json::parse_error& e) {
    return "not JSON: " + json_text + " (" + e.what() + ")";
  } catch (const std::exception& e) {
    return e.what();
  }
}

std::string Plugin::rule_remove(const std::string& ref, bool* ok) {
  *ok = false;
  const auto colon = ref.find(':');
  const std::string kind = ref.substr(0, colon == std::string::npos ? 0 : colon);
  const std::optional<RuleKind> k = matcher::rule_kind_from(kind);
  char* end = nullptr;
  const std::string id = colon == std::string::npos ? "" : ref.substr(colon + 1);
  const unsigned long n = std::strtoul(id.c_str(), &end, 10);
  if (!k || id.empty() || *end || !std::isdigit(static_cast<unsigned char>(id[0])) || n > 0xfffffffeul)
    return "'" + ref + "' is not KIND:ID (filter, passthrough or connection, and a rule id)";
  try {
    MutexLock lock(rules_mu_);
    change_rules({matcher::RuleRef{*k, uint32_t(n)}}, {});
    *ok = true;
    return "removed " + ref;
  } catch (const std::exception& e) {
    return e.what();
  }
}

std::string Plugin::adapter_set(const std::string& port, const std::string& id, const std::string& vm, bool* ok) {
  *ok = false;
  char* end = nullptr;
  const long a = std::strtol(id.c_str(), &end, 10);
  if (id.empty() || *end || a < -1 || a > 0x7fffffff) return "'" + id + "' is not an adapter id (0.., or -1 to release)";
  long v = 0;
  if (!vm.empty()) {
    v = std::strtol(vm.c_str(), &end, 10);
    if (*end || v < 0 || v > 0xffffffffL) return "'" + vm + "' is not a VM id";
  }
  MutexLock lock(ports_mu_);
  for (const auto& p : ports_) {
    if (p->name != port || !p->open.load()) continue;
    Mapping m{int32_t(a), uint32_t(v), p->snaplen.load()};
    apply_mapping(*p, m);
    if (a >= 0) mappings_[port] = m;
    else mappings_.erase(port);
    *ok = true;
    return "";
  }
  return "no port named '" + port + "'";
}

std::string Plugin::policy_set(const std::string& name, bool* ok) {
  const auto p = parse_policy(name);
  *ok = bool(p);
  if (!p) return "'" + name + "' is not fail-open or fail-closed";
  policy_ = *p;
  return "";
}

}  // namespace vpf::plugin
