// Epoch-based reclamation for the classifier's snapshots.
//
// Readers: enter(slot) before loading the published pointer, leave(slot) when done; both
// are one atomic store, readers never wait.  Writer (single): retire() an object after
// publishing its replacement; it is destroyed once every reader slot is idle or entered
// after the retirement.
//
// Why it is safe: the writer publishes the new pointer, then takes the retirement tag with
// epoch.fetch_add (both seq_cst).  A reader stores its entry epoch, then loads the pointer,
// with a full fence between.  A reader that entered with an epoch above the tag loaded
// the pointer after the publish, so it holds the new object.  A reader with an epoch at or
// below the tag is visible to the writer's scan, which then keeps the object.
//
// The fence is asymmetric where the kernel offers membarrier(2) (Linux 4.14+): the reader
// only stops the compiler from reordering, and the writer, before each scan, makes every
// thread of the process execute a full barrier (MEMBARRIER_CMD_PRIVATE_EXPEDITED).  Then a
// reader's entry store either precedes its barrier (and the scan sees it) or follows it
// (and its pointer load follows the publish).  A locked instruction per batch on the
// datapath becomes a few microseconds per rule change.  Without membarrier the reader
// fences itself (seq_cst), as before.
#pragma once

#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

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

  void enter(int i) {
    slots_[i].active.store(epoch_.load(std::memory_order_relaxed), std::memory_order_relaxed);
    if (asymmetric()) std::atomic_signal_fence(std::memory_order_seq_cst);
    else std::atomic_thread_fence(std::memory_order_seq_cst);
  }
  void leave(int i) { slots_[i].active.store(0, std::memory_order_release); }

  // Writer only.
  void retire(std::shared_ptr<const void> obj) {
    const uint64_t tag = epoch_.fetch_add(1, std::memory_order_seq_cst);
    retired_.emplace_back(tag, std::move(obj));
    reclaim();
  }

  void reclaim() {
    if (asymmetric()) syscall(__NR_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0);
    uint64_t oldest = ~uint64_t(0);
    for (const auto& s : slots_) {
      const uint64_t a = s.active.load(std::memory_order_seq_cst);
      if (a != 0 && a < oldest) oldest = a;
    }
    std::erase_if(retired_, [&](const auto& r) { return r.first < oldest; });
  }

  size_t pending() const { return retired_.size(); }

 private:
  // True once this process is registered for expedited private membarriers.
  static bool asymmetric() {
    static const bool on = [] {
      const long cmds = syscall(__NR_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
      return cmds > 0 && (cmds & MEMBARRIER_CMD_PRIVATE_EXPEDITED) &&
             syscall(__NR_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
    }();
    return on;
  }

  struct alignas(64) Slot {
    std::atomic<uint64_t> active{0};
    std::atomic<bool> used{false};
  };
  std::atomic<uint64_t> epoch_{1};
  Slot slots_[kSlots];
  std::vector<std::pair<uint64_t, std::shared_ptr<const void>>> retired_;
};

}  // namespace vpf::matcher
