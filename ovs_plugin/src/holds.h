// Packets held for a capture verdict.
//
// One HoldTable per event ring.  The ring's producer (the datapath thread that owns the
// ring, or whichever thread holds the shared ring's lock) is the only thread that takes
// free slots; the control thread is the only one that finishes held packets (verdict,
// expiry, agent gone).  A slot's state moves Free -> Held (producer, release) -> Busy
// (control thread, CAS) -> Free (control thread, release).  The producer may also take a
// slot it just published back (Held -> Free, CAS) when the capture event could not be
// written; whichever CAS wins owns the packet, so a packet is never finished twice.
//
// A capture id names a slot and its use: (generation << 32) | (ring << 16) | slot, so a
// verdict for a slot's earlier use is recognised as stale.
//
// A held packet keeps its Port (port.h): the port's `holds` counts it from hold() until
// unhold() or release().
//
// Owner: 0 when the agent decides the packet; a client channel's serial when the capture
// went straight to that client (clients.h): only that channel's verdicts are accepted
// for it (another client's is "foreign"), and `expiry` (a VerdictAction, 0: the plugin's
// own) is what the packet gets when its deadline passes or its channel closes.
#pragma once

#include <openvswitch/packet-hook.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "port.h"
#include "vpf/matcher/packet_key.h"

namespace vpf::plugin {

enum HoldState : uint32_t { kFree = 0, kHeld = 1, kBusy = 2 };

struct HoldSlot {
  std::atomic<uint32_t> state{kFree};
  uint32_t generation = 0;
  ovs_packet* packet = nullptr;
  Port* port = nullptr;
  matcher::Direction direction = matcher::Direction::Outgoing;
  uint32_t len = 0;
  uint64_t deadline_ns = 0;  // CLOCK_MONOTONIC; UINT64_MAX: none
  uint32_t owner = 0;        // 0: the agent; else the deciding client channel's serial
  uint8_t expiry = 0;        // VerdictAction on expiry; 0: the plugin's expiry action
  // A pended connect request (docs/connections.md): the connection the SYN opened, and
  // its rule's decision (packed), settled allowed or blocked when the SYN is finished.
  std::atomic<uint64_t> conn_id{0};  // 0: a captured packet (atomic: listings read it from any thread)
  uint64_t conn_word = 0;
};

class HoldTable {
 public:
  static constexpr uint32_t kSlots = 4096;

  explicit HoldTable(uint32_t ring) : ring_(ring), slots_(new HoldSlot[kSlots]) {}

  // Producer.  Takes a free slot for `packet` and returns it with its capture id, or
  // nullptr if the next few slots are all busy (the caller applies the policy).
  HoldSlot* hold(ovs_packet* packet, Port* port, matcher::Direction dir, uint32_t len, uint64_t deadline_ns,
                 uint64_t* capture_id, uint32_t owner = 0, uint8_t expiry = 0, uint64_t conn_id = 0,
                 uint64_t conn_word = 0) {
    for (uint32_t tries = 0; tries < 8; ++tries) {
      const uint32_t i = cursor_++ & (kSlots - 1);
      HoldSlot& s = slots_[i];
      if (s.state.load(std::memory_order_acquire) != kFree) continue;
      s.generation = s.generation + 1 ? s.generation + 1 : 1;
      s.packet = packet;
      s.port = port;
      s.direction = dir;
      s.len = len;
      s.deadline_ns = deadline_ns;
      s.owner = owner;
      s.expiry = expiry;
      s.conn_id.store(conn_id, std::memory_order_relaxed);
      s.conn_word = conn_word;
      held_.fetch_add(1, std::memory_order_relaxed);
      port->holds.fetch_add(1, std::memory_order_relaxed);
      s.state.store(kHeld, std::memory_order_release);
      *capture_id = (uint64_t(s.generation) << 32) | (uint64_t(ring_) << 16) | i;
      return &s;
    }
    return nullptr;
  }

  // Producer: takes back a slot whose capture event could not be written.  False if the
  // control thread got it first (it then finishes the packet).
  bool unhold(HoldSlot* s) {
    uint32_t expected = kHeld;
    if (!s->state.compare_exchange_strong(expected, kFree, std::memory_order_acq_rel)) return false;
    held_.fetch_sub(1, std::memory_order_relaxed);
    s->port->holds.fetch_sub(1, std::memory_order_release);
    return true;
  }

  // Control thread: claims the slot named by `capture_id` if it is still held for that
  // use (and, unless `any_owner`, owned by `owner`); nullptr for a stale or unknown id,
  // with *foreign set when the packet is held for another owner.
  HoldSlot* claim(uint64_t capture_id, bool any_owner = true, uint32_t owner = 0, bool* foreign = nullptr) {
    const uint32_t i = uint32_t(capture_id & 0xffff);
    if (((capture_id >> 16) & 0xffff) != ring_ || i >= kSlots) return nullptr;
    HoldSlot& s = slots_[i];
    uint32_t expected = kHeld;
    if (!s.state.compare_exchange_strong(expected, kBusy, std::memory_order_acq_rel)) return nullptr;
    if (s.generation != uint32_t(capture_id >> 32) || (!any_owner && s.owner != owner)) {
      if (foreign && s.generation == uint32_t(capture_id >> 32)) *foreign = true;
      s.state.store(kHeld, std::memory_order_release);
      return nullptr;
    }
    return &s;
  }

  // Control thread: claims every held slot whose deadline is before `now_ns` (all of them
  // with now_ns = UINT64_MAX) and calls fn(slot) for each; fn must finish the packet.
  template <class Fn>
  void claim_expired(uint64_t now_ns, Fn&& fn) {
    claim_where([&](const HoldSlot& s) { return now_ns == UINT64_MAX || s.deadline_ns <= now_ns; }, fn);
  }

  // Control thread: the same for every held slot of `owner`.
  template <class Fn>
  void claim_owned(uint32_t owner, Fn&& fn) {
    claim_where([&](const HoldSlot& s) { return s.owner == owner; }, fn);
  }

  // Control thread: the same for the held SYN of connection `conn_id`'s request.
  template <class Fn>
  void claim_request(uint64_t conn_id, Fn&& fn) {
    claim_where([&](const HoldSlot& s) { return s.conn_id.load(std::memory_order_relaxed) == conn_id; }, fn);
  }

  // Any thread: appends the connections whose requests are held (a snapshot for listings:
  // a slot may change as it is read).
  void pending_requests(std::vector<uint64_t>* ids) const {
    if (held_.load(std::memory_order_relaxed) == 0) return;
    for (uint32_t i = 0; i < kSlots; ++i) {
      const HoldSlot& s = slots_[i];
      const uint64_t id = s.conn_id.load(std::memory_order_relaxed);
      if (id && s.state.load(std::memory_order_acquire) == kHeld) ids->push_back(id);
    }
  }

  // Control thread: the slot's packet is finished.
  void release(HoldSlot* s) {
    s->packet = nullptr;
    held_.fetch_sub(1, std::memory_order_relaxed);
    s->port->holds.fetch_sub(1, std::memory_order_release);
    s->state.store(kFree, std::memory_order_release);
  }

  uint32_t held() const { return held_.load(std::memory_order_relaxed); }
  static uint32_t ring_of(uint64_t capture_id) { return uint32_t((capture_id >> 16) & 0xffff); }

 private:
  // Claims every held slot for which pred(slot) holds, checked again once claimed (the
  // producer may have reused the slot in between), and calls fn(slot).
  template <class Pred, class Fn>
  void claim_where(Pred&& pred, Fn&& fn) {
    if (held_.load(std::memory_order_relaxed) == 0) return;
    for (uint32_t i = 0; i < kSlots; ++i) {
      HoldSlot& s = slots_[i];
      if (s.state.load(std::memory_order_acquire) != kHeld || !pred(s)) continue;
      uint32_t expected = kHeld;
      if (!s.state.compare_exchange_strong(expected, kBusy, std::memory_order_acq_rel)) continue;
      if (pred(s)) fn(s);
      else s.state.store(kHeld, std::memory_order_release);
    }
  }

  const uint32_t ring_;
  std::unique_ptr<HoldSlot[]> slots_;
  uint32_t cursor_ = 0;  // producer only
  std::atomic<uint32_t> held_{0};
};

}  // namespace vpf::plugin
