// Epoch-based reclamation for the classifier's snapshots.
//
// Readers: enter(slot) before loading the published pointer, leave(slot) when done; both
// are one atomic store, readers never wait.  Writer (single): retire() an object after
// publishing its replacement; it is destroyed once every reader slot is idle or entered
// after the retirement.
//
// Why it is safe: the writer publishes the new pointer, then takes the retirement tag with
// epoch.fetch_add (both seq_cst).  A reader stores its entry epoch, then loads the pointer
// (both seq_cst).  A reader that entered with an epoch above the tag loaded the pointer
// after the publish, so it holds the new object.  A reader with an epoch at or below the
// tag is visible to the writer's scan, which then keeps the object.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

namespace vpf::matcher {

class EpochDomain {
 public:
  static constexpr int kSlots = 130;

  // Returns a free slot or -1.
  int acquire_slot() {
    for (int i = 0; i < kSlots; ++i) {
      bool expected = false;
      if (slots_[i].used.compare_exchange_strong(expected, true)) return i;
    }
    return -1;
  }
  void release_slot(int i) {
    slots_[i].active.store(0, std::memory_order_release);
    slots_[i].used.store(false, std::memory_order_release);
  }

  void enter(int i) { slots_[i].active.store(epoch_.load(std::memory_order_seq_cst), std::memory_order_seq_cst); }
  void leave(int i) { slots_[i].active.store(0, std::memory_order_release); }

  // Writer only.
  void retire(std::shared_ptr<const void> obj) {
    const uint64_t tag = epoch_.fetch_add(1, std::memory_order_seq_cst);
    retired_.emplace_back(tag, std::move(obj));
    reclaim();
  }

  void reclaim() {
    uint64_t oldest = ~uint64_t(0);
    for (const auto& s : slots_) {
      const uint64_t a = s.active.load(std::memory_order_seq_cst);
      if (a != 0 && a < oldest) oldest = a;
    }
    std::erase_if(retired_, [&](const auto& r) { return r.first < oldest; });
  }

  size_t pending() const { return retired_.size(); }

 private:
  struct alignas(64) Slot {
    std::atomic<uint64_t> active{0};
    std::atomic<bool> used{false};
  };
  std::atomic<uint64_t> epoch_{1};
  Slot slots_[kSlots];
  std::vector<std::pair<uint64_t, std::shared_ptr<const void>>> retired_;
};

}  // namespace vpf::matcher
