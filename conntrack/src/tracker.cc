// The connection tracker's table: see tracker.h.
//
// Each stripe holds a fixed array of connection records (a free list of the unused ones)
// and an index of buckets of eight (signature, record) slots; a key has two candidate
// buckets in its stripe and goes to the first with a free slot.  The stripe's records are
// sized for its share of Limits::total with half as much again to spare (keys do not
// spread evenly), its index for twice its records.
#include "vpf/conntrack/tracker.h"

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <thread>

namespace vpf::conntrack {

using matcher::PacketKey;

namespace {

constexpr uint32_t kSlotsPerBucket = 8;
constexpr uint64_t kNs = 1000000000ull;

// A lock held for a few hundred nanoseconds at most: spin, then let others run.
class SpinLock {
 public:
  void lock() {
    for (uint32_t spins = 0; flag_.test_and_set(std::memory_order_acquire); ++spins) {
      if (spins < 64) _mm_pause();
      else std::this_thread::yield();
    }
  }
  void unlock() { flag_.clear(std::memory_order_release); }

 private:
  std::atomic_flag flag_ = ATOMIC_FLAG_INIT;
};

struct Guard {
  explicit Guard(SpinLock& l) : l_(l) { l_.lock(); }
  ~Guard() { l_.unlock(); }
  SpinLock& l_;
};

}  // namespace

struct Conn {
  ConnInfo info;
  Governing gov;
  Side fin_from = Side::Opener;
  bool connected_told = false, closed_told = false;
  bool windows = false;  // opened by a SYN whose numbers were read: segments are checked
  TcpPeer peer[2];       // by Side
};

struct Tracker::Stripe {
  struct Slot {
    uint32_t sig = 0;  // 0: free
    uint32_t rec = 0;
  };
  mutable SpinLock lock;
  std::vector<Conn> recs;
  std::vector<uint32_t> free_recs;
  std::vector<Slot> slots;  // nbuckets * kSlotsPerBucket
  uint32_t bucket_mask = 0;

  void init(uint32_t nrecs) {
    recs.resize(nrecs);
    free_recs.resize(nrecs);
    for (uint32_t i = 0; i < nrecs; ++i) free_recs[i] = nrecs - 1 - i;
    const uint32_t nbuckets = std::bit_ceil(std::max<uint32_t>(2, 2 * nrecs / kSlotsPerBucket + 1));
    slots.assign(size_t(nbuckets) * kSlotsPerBucket, Slot{});
    bucket_mask = nbuckets - 1;
  }
  static uint32_t sig_of(uint64_t h) { return uint32_t(h) | 1u; }
  // The first slot of the key's candidate bucket `which` (0 or 1).
  Slot* bucket(uint64_t h, int which) const {
    const uint32_t b = uint32_t(h >> 32);
    const uint32_t at = (which == 0 ? b : b ^ ((sig_of(h) * 0x9e3779b1u) >> 7 | 1u)) & bucket_mask;
    return const_cast<Slot*>(&slots[size_t(at) * kSlotsPerBucket]);
  }
  // The slot of `key`, or null.
  Slot* find(const ConnKey& key, uint64_t h) {
    const uint32_t sig = sig_of(h);
    for (int w = 0; w < 2; ++w) {
      Slot* b = bucket(h, w);
      for (uint32_t i = 0; i < kSlotsPerBucket; ++i)
        if (b[i].sig == sig && recs[b[i].rec].info.key == key) return &b[i];
    }
    return nullptr;
  }
  // A free record placed in a free slot of one of the key's buckets, or null.
  Slot* insert(uint64_t h) {
    if (free_recs.empty()) return nullptr;
    for (int w = 0; w < 2; ++w) {
      Slot* b = bucket(h, w);
      for (uint32_t i = 0; i < kSlotsPerBucket; ++i)
        if (b[i].sig == 0) {
          // Atomic stores: fetch_records() reads slots without the lock.
          std::atomic_ref<uint32_t>(b[i].rec).store(free_recs.back(), std::memory_order_relaxed);
          std::atomic_ref<uint32_t>(b[i].sig).store(sig_of(h), std::memory_order_relaxed);
          free_recs.pop_back();
          recs[b[i].rec] = Conn{};
          return &b[i];
        }
    }
    return nullptr;
  }
  void remove(Slot* s) {
    free_recs.push_back(s->rec);
    std::atomic_ref<uint32_t>(s->sig).store(0, std::memory_order_relaxed);
  }
  // Requests the key's buckets.
  void fetch_buckets(uint64_t h) const {
    __builtin_prefetch(bucket(h, 0));
    __builtin_prefetch(bucket(h, 1));
  }
  // Requests the record of each slot of the key's buckets with its signature: read without
  // the lock, so a guess (the lookup under the lock decides).
  void fetch_records(uint64_t h) const {
    const uint32_t sig = sig_of(h);
    for (int w = 0; w < 2; ++w) {
      Slot* b = bucket(h, w);
      for (uint32_t i = 0; i < kSlotsPerBucket; ++i)
        if (std::atomic_ref<uint32_t>(b[i].sig).load(std::memory_order_relaxed) == sig) {
          const char* r = reinterpret_cast<const char*>(
              &recs[std::min<size_t>(std::atomic_ref<uint32_t>(b[i].rec).load(std::memory_order_relaxed), recs.size() - 1)]);
          for (size_t line = 0; line < sizeof(Conn); line += 64) __builtin_prefetch(r + line);
        }
    }
  }
};

Tracker::Tracker(Limits limits, Timeouts timeouts) : limits_(limits), timeouts_(timeouts) {
  nstripes_ = std::clamp<uint32_t>(std::bit_floor(std::max<uint32_t>(1, limits_.total / 64)), 1, 64);
  stripes_ = std::make_unique<Stripe[]>(nstripes_);
  const uint32_t share = (limits_.total + nstripes_ - 1) / nstripes_;
  for (uint32_t i = 0; i < nstripes_; ++i) stripes_[i].init(share + share / 2 + 8);
  per_adapter_ = std::make_unique<std::atomic<uint32_t>[]>(kAdapterSlots);
  for (uint32_t i = 0; i < kAdapterSlots; ++i) per_adapter_[i].store(0, std::memory_order_relaxed);
}

Tracker::~Tracker() = default;

// Scalar code: the key was just written field by field, and GCC's vector form of these
// 64-bit products (emulated with 32-bit ones, after a 16-byte load that cannot take its
// bytes from those stores) measured slower than the whole lookup.
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-tree-vectorize")))
#endif
uint64_t Tracker::hash(const ConnKey& k) {
  // Each 64-bit word of the key times its own odd constant, summed (the products are
  // independent), then mixed so that every key bit reaches the high bits (stripe and
  // bucket) and the low ones (signature).
  uint64_t h = (uint64_t(k.adapter) << 32 | uint64_t(k.ip_ver) << 24 | uint64_t(k.proto) << 16) * 0x9e3779b97f4a7c15ull +
               (uint64_t(k.local_port) << 16 | k.remote_port) * 0xc2b2ae3d27d4eb4full;
  constexpr uint64_t kMul[4] = {0x165667b19e3779f9ull, 0xd6e8feb86659fd93ull, 0xff51afd7ed558ccdull, 0xc4ceb9fe1a85ec53ull};
  for (int w = 0; w < 4; ++w) h += (uint64_t(k.local_ip[w]) << 32 | k.remote_ip[w]) * kMul[w];
  h ^= h >> 31;
  h *= 0x94d049bb133111ebull;
  return h ^ (h >> 29);
}

bool Tracker::key_of(const PacketKey& k, ConnKey* key, bool* invalid) {
  using namespace matcher;
  const uint32_t flags = k.f[F_PARSE_FLAGS], ver = k.f[F_IP_VER], proto = k.f[F_IP_PROTO];
  const uint32_t broken = PARSE_TRUNCATED | PARSE_BAD_IP_HEADER | PARSE_BAD_EXT_HEADER;
  *invalid = false;
  if (ver != 4 && ver != 6) {
    *invalid = (flags & PARSE_BAD_IP_HEADER) != 0;
    return false;
  }
  if (proto != 6 && proto != 17) return false;
  if (k.f[F_IP_FRAG] & FRAG_IS_FRAGMENT) return false;
  const uint32_t dir = k.f[F_DIRECTION];
  if ((flags & broken) || !(flags & PARSE_PORTS) || dir > uint32_t(Direction::Incoming)) {
    *invalid = true;
    return false;
  }
  const bool out = dir == uint32_t(Direction::Outgoing);
  *key = ConnKey{};
  key->adapter = k.f[F_ADAPTER];
  key->ip_ver = uint8_t(ver);
  key->proto = uint8_t(proto);
  key->local_port = uint16_t(k.f[out ? F_SRC_PORT : F_DST_PORT]);
  key->remote_port = uint16_t(k.f[out ? F_DST_PORT : F_SRC_PORT]);
  for (int w = 0; w < 4; ++w) {
    key->local_ip[w] = k.f[(out ? F_SRC_IP0 : F_DST_IP0) + w];
    key->remote_ip[w] = k.f[(out ? F_DST_IP0 : F_SRC_IP0) + w];
  }
  return true;
}

bool Tracker::reserve(uint32_t adapter) {
  if (active_.fetch_add(1, std::memory_order_relaxed) >= limits_.total) {
    active_.fetch_sub(1, std::memory_order_relaxed);
    return false;
  }
  std::atomic<uint32_t>& a = per_adapter_[adapter & (kAdapterSlots - 1)];
  if (a.fetch_add(1, std::memory_order_relaxed) >= limits_.per_adapter) {
    a.fetch_sub(1, std::memory_order_relaxed);
    active_.fetch_sub(1, std::memory_order_relaxed);
    return false;
  }
  return true;
}

void Tracker::release(uint32_t adapter) {
  per_adapter_[adapter & (kAdapterSlots - 1)].fetch_sub(1, std::memory_order_relaxed);
  active_.fetch_sub(1, std::memory_order_relaxed);
}

uint64_t Tracker::timeout_ns(const ConnInfo& c) const {
  if (c.key.proto == 6) return uint64_t(timeouts_.tcp[int(c.tcp)]) * kNs;
  return uint64_t(c.replied ? timeouts_.udp_replied : timeouts_.udp_unreplied) * kNs;
}

struct Tracker::Prepared {
  ConnKey key;
  bool tcp = false, numbered = false;
  Segment seg = Segment::Ack;
  TcpSegment nums;
  Direction dir = Direction::Outgoing;
  uint32_t len = 0, vm = 0;
  uint64_t h = 0;
};

bool Tracker::prepare(const PacketKey& k, const uint8_t* frame, uint32_t frame_len, Prepared* p, Observed* o) {
  bool invalid = false;
  *o = Observed{};
  if (!key_of(k, &p->key, &invalid)) {
    o->verdict = invalid ? Verdict::Invalid : Verdict::Untracked;
    (invalid ? invalid_ : untracked_).fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  p->tcp = p->key.proto == 6;
  p->seg = p->tcp ? classify_segment(k.f[matcher::F_TCP_FLAGS]) : Segment::Ack;
  p->numbered = p->tcp && frame && read_segment(frame, frame_len, k, &p->nums);
  if (p->seg == Segment::Invalid || (p->tcp && frame && !p->numbered)) {  // impossible flags, broken options
    o->verdict = Verdict::Invalid;
    invalid_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  p->dir = Direction(k.f[matcher::F_DIRECTION]);
  p->len = k.f[matcher::F_FRAME_LEN];
  p->vm = k.f[matcher::F_VM];
  p->h = hash(p->key);
  return true;
}

Tracker::Stripe& Tracker::stripe_of(uint64_t h) const {
  return stripes_[nstripes_ == 1 ? 0 : h >> (64 - std::countr_zero(nstripes_))];
}

Observed Tracker::track(const PacketKey& k, const uint8_t* frame, uint32_t frame_len, uint64_t now_ns,
                        ConnInfo* event_conn) {
  Prepared p;
  Observed o;
  return prepare(k, frame, frame_len, &p, &o) ? apply(p, now_ns, kNoWord, true, 0, 0, event_conn) : o;
}

void Tracker::track_batch(const PacketKey* const* keys, const uint8_t* const* frames, const uint32_t* frame_lens,
                          uint32_t n, uint64_t now_ns, Observed* out, ConnInfo* events) {
  track_batch(keys, frames, frame_lens, n, now_ns, Decisions{}, out, events);
}

void Tracker::track_batch(const PacketKey* const* keys, const uint8_t* const* frames, const uint32_t* frame_lens,
                          uint32_t n, uint64_t now_ns, const Decisions& d, Observed* out, ConnInfo* events) {
  n = std::min(n, kBatch);
  Prepared p[kBatch];
  uint32_t live = 0;
  for (uint32_t i = 0; i < n; ++i) {
    const bool ok = prepare(*keys[i], frames ? frames[i] : nullptr, frames ? frame_lens[i] : 0, &p[i], &out[i]);
    live |= uint32_t(ok) << i;
    if (ok) stripe_of(p[i].h).fetch_buckets(p[i].h);
  }
  for (uint32_t m = live; m; m &= m - 1) {
    const uint32_t i = uint32_t(std::countr_zero(m));
    stripe_of(p[i].h).fetch_records(p[i].h);
  }
  for (uint32_t m = live; m; m &= m - 1) {
    const uint32_t i = uint32_t(std::countr_zero(m));
    out[i] = apply(p[i], now_ns, d.words ? d.words[i] : kNoWord, !(d.no_open >> i & 1), d.gen,
                   uint8_t((d.suspend >> i & 1) * kOpenSuspended | (d.settle >> i & 1) * kOpenSettled),
                   events ? &events[i] : nullptr);
  }
}

Observed Tracker::apply(const Prepared& p, uint64_t now_ns, uint64_t word, bool may_open, uint64_t gen, uint8_t opening,
                        ConnInfo* event_conn) {
  Observed o;
  const ConnKey& key = p.key;
  const bool tcp = p.tcp, numbered = p.numbered;
  const Segment seg = p.seg;
  const TcpSegment& nums = p.nums;
  const Direction dir = p.dir;
  const uint32_t len = p.len;
  const uint64_t h = p.h;
  Stripe& s = stripe_of(h);
  Guard g(s.lock);
  Stripe::Slot* slot = s.find(key, h);
  if (slot && tcp && seg == Segment::Syn && may_open) {
    const TcpState st = s.recs[slot->rec].info.tcp;
    if (st == TcpState::TimeWait || st == TcpState::Closed) {  // the key is used again
      s.remove(slot);
      release(key.adapter);
      removed_.fetch_add(1, std::memory_order_relaxed);
      slot = nullptr;
    }
  }
  // A packet that opens nothing, counted under its verdict.
  auto refuse = [&](Verdict v, std::atomic<uint64_t>& counter) {
    o.verdict = v;
    counter.fetch_add(1, std::memory_order_relaxed);
    return o;
  };
  // The packet's connection as Observed says it, and as the event tells it.
  auto observe = [&](Verdict v, const Conn& c, bool reply) {
    o.verdict = v;
    o.reply = reply;
    o.id = c.info.id;
    o.tcp = c.info.tcp;
    o.suspended = c.info.suspended;
    if (v != Verdict::Invalid) o.gov = c.gov;
    if (o.event != EventKind::None && event_conn) *event_conn = c.info;
    return o;
  };
  if (!slot) {
    TcpTrack t;
    const bool create = may_open && (!tcp || seg == Segment::Syn || tcp_pick_up(seg, &t));
    if (!create) return refuse(Verdict::Untracked, untracked_);
    if (!reserve(key.adapter)) return refuse(Verdict::Full, full_);
    slot = s.insert(h);
    if (!slot) {
      release(key.adapter);
      return refuse(Verdict::Full, full_);
    }
    Conn& c = s.recs[slot->rec];
    c.info.id = next_id_.fetch_add(1, std::memory_order_relaxed);
    c.info.key = key;
    c.info.vm = p.vm;
    c.info.opened = dir;
    c.info.tcp = t.state;
    c.fin_from = t.fin_from;
    if (numbered && seg == Segment::Syn) {
      bool acks_fin = false;
      c.windows = tcp_window(c.peer[int(Side::Opener)], c.peer[int(Side::Responder)], nums, &acks_fin);
    }
    c.info.created_ns = c.info.last_ns = now_ns;
    c.info.packets[0] = 1;
    c.info.bytes[0] = len;
    c.gov = Governing{word, opening & kOpenSettled ? kSettledGen : gen, word != kNoWord};
    c.info.suspended = opening & kOpenSuspended;
    created_.fetch_add(1, std::memory_order_relaxed);
    if (!tcp) {
      o.event = EventKind::UdpCreated;
    } else if (c.info.tcp == TcpState::Established) {  // picked up open
      o.event = EventKind::TcpConnected;
      c.connected_told = true;
    }
    return observe(Verdict::New, c, false);
  }
  Conn& c = s.recs[slot->rec];
  const bool reply = dir != c.info.opened;
  const Side from = reply ? Side::Responder : Side::Opener;
  bool acks_fin = true;  // without the numbers, the next ACK of the other side counts
  if (tcp && c.windows && numbered) {
    TcpPeer& src = c.peer[int(from)];
    TcpPeer& dst = c.peer[1 - int(from)];
    if (!tcp_window(src, dst, nums, &acks_fin)) {
      invalid_.fetch_add(1, std::memory_order_relaxed);
      out_of_window_.fetch_add(1, std::memory_order_relaxed);
      return observe(Verdict::Invalid, c, reply);
    }
  }
  ++c.info.packets[reply];
  c.info.bytes[reply] += len;
  c.info.last_ns = std::max(c.info.last_ns, now_ns);
  c.info.replied = c.info.replied || reply;
  if (tcp) {
    bool unexpected = false;
    const TcpTrack next = tcp_next({c.info.tcp, c.fin_from}, seg, from, acks_fin, &unexpected);
    if (unexpected) unexpected_.fetch_add(1, std::memory_order_relaxed);
    if (next.state == TcpState::Established && !c.connected_told) {
      o.event = EventKind::TcpConnected;
      c.connected_told = true;
    } else if ((next.state == TcpState::TimeWait || next.state == TcpState::Closed) && c.connected_told &&
               !c.closed_told) {
      o.event = EventKind::TcpClosed;
      c.closed_told = true;
    }
    c.info.tcp = next.state;
    c.fin_from = next.fin_from;
  }
  if (!reply && c.gov.gen < gen) c.gov = Governing{word, gen, word != kNoWord};  // re-decided by its opener
  return observe(Verdict::Known, c, reply);
}

bool Tracker::set_suspended(uint64_t id, bool on) {
  for (uint32_t i = 0; i < nstripes_; ++i) {
    Stripe& s = stripes_[i];
    Guard g(s.lock);
    for (Stripe::Slot& slot : s.slots) {
      if (!slot.sig || s.recs[slot.rec].info.id != id) continue;
      s.recs[slot.rec].info.suspended = on;
      return true;
    }
  }
  return false;
}

bool Tracker::settle(const PacketKey& k, uint64_t id, uint64_t word) {
  ConnKey key;
  bool invalid = false;
  if (!key_of(k, &key, &invalid)) return false;
  const uint64_t h = hash(key);
  Stripe& s = stripe_of(h);
  Guard g(s.lock);
  Stripe::Slot* slot = s.find(key, h);
  if (!slot || s.recs[slot->rec].info.id != id) return false;
  s.recs[slot->rec].gov = Governing{word, kSettledGen, word != kNoWord};
  return true;
}

Governing Tracker::redecide(const PacketKey& k, uint64_t word, uint64_t gen) {
  ConnKey key;
  bool invalid = false;
  if (!key_of(k, &key, &invalid)) return Governing{};
  const uint64_t h = hash(key);
  Stripe& s = stripe_of(h);
  Guard g(s.lock);
  Stripe::Slot* slot = s.find(key, h);
  if (!slot) return Governing{};
  Conn& c = s.recs[slot->rec];
  if (c.gov.gen < gen) c.gov = Governing{word, gen, word != kNoWord};
  return c.gov;
}

size_t Tracker::expire_stripe(Stripe& s, uint64_t now_ns, std::vector<Event>* events) {
  size_t n = 0;
  Guard g(s.lock);
  for (Stripe::Slot& slot : s.slots) {
    if (!slot.sig) continue;
    const Conn& c = s.recs[slot.rec];
    if (now_ns < c.info.last_ns || now_ns - c.info.last_ns < timeout_ns(c.info)) continue;
    if (events) {
      if (c.info.key.proto == 17) events->push_back({EventKind::UdpClosed, c.info, c.gov});
      else if (c.connected_told && !c.closed_told) events->push_back({EventKind::TcpClosed, c.info, c.gov});
    }
    release(c.info.key.adapter);
    s.remove(&slot);
    ++n;
  }
  removed_.fetch_add(n, std::memory_order_relaxed);
  return n;
}

size_t Tracker::expire(uint64_t now_ns, std::vector<Event>* events) {
  size_t n = 0;
  for (uint32_t i = 0; i < nstripes_; ++i) n += expire_stripe(stripes_[i], now_ns, events);
  return n;
}

size_t Tracker::expire_step(uint64_t now_ns, std::vector<Event>* events) {
  return expire_stripe(stripes_[next_sweep_.fetch_add(1, std::memory_order_relaxed) % nstripes_], now_ns, events);
}

std::vector<ConnInfo> Tracker::list() const {
  std::vector<ConnInfo> out;
  for (uint32_t i = 0; i < nstripes_; ++i) {
    const Stripe& s = stripes_[i];
    Guard g(s.lock);
    for (const Stripe::Slot& slot : s.slots)
      if (slot.sig) out.push_back(s.recs[slot.rec].info);
  }
  return out;
}

std::vector<ConnInfo> Tracker::list(uint32_t adapter) const {
  std::vector<ConnInfo> out = list();
  std::erase_if(out, [&](const ConnInfo& c) { return c.key.adapter != adapter; });
  return out;
}

Stats Tracker::stats() const {
  Stats st;
  st.active = active_.load(std::memory_order_relaxed);
  st.created = created_.load(std::memory_order_relaxed);
  st.removed = removed_.load(std::memory_order_relaxed);
  st.untracked = untracked_.load(std::memory_order_relaxed);
  st.invalid = invalid_.load(std::memory_order_relaxed);
  st.full = full_.load(std::memory_order_relaxed);
  st.unexpected = unexpected_.load(std::memory_order_relaxed);
  st.out_of_window = out_of_window_.load(std::memory_order_relaxed);
  return st;
}

}  // namespace vpf::conntrack
