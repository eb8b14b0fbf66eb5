// Per-rule hit counters of the datapath.
//
// Keyed by (rule kind, rule id), so a counter survives the rule's replacement by a rule
// with the same id and every other rule change.  One table per datapath thread, so the
// counting thread touches only its own cache lines and adds with plain stores (no locked
// instruction per packet); a table shared by several threads adds atomically.  The
// control thread sums them.  An
// open-addressing table of fixed size: a key is claimed with a CAS and never removed;
// when the probe sequence is full the hit is counted in `unaccounted`.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>

#include "vpf/matcher/classifier.h"

namespace vpf::plugin {

class RuleHits {
 public:
  static constexpr uint32_t kSize = 8192;  // a power of two
  static constexpr uint32_t kProbes = 32;

  explicit RuleHits(bool shared = false) : shared_(shared), e_(new Entry[kSize]) {}

  static uint64_t key(matcher::RuleKind kind, uint32_t id) { return ((uint64_t(kind) + 1) << 32) | id; }

  void add(uint64_t key, uint64_t n) {
    uint32_t i = uint32_t((key * 0x9e3779b97f4a7c15ull) >> 51) & (kSize - 1);
    for (uint32_t p = 0; p < kProbes; ++p, i = (i + 1) & (kSize - 1)) {
      uint64_t k = e_[i].key.load(std::memory_order_acquire);
      if (k == 0 && e_[i].key.compare_exchange_strong(k, key, std::memory_order_acq_rel)) k = key;
      if (k == key) {
        if (shared_) e_[i].hits.fetch_add(n, std::memory_order_relaxed);
        else e_[i].hits.store(e_[i].hits.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
        return;
      }
    }
    unaccounted_.fetch_add(n, std::memory_order_relaxed);
  }

  // Adds this table's counters into `out` (key -> hits).
  void sum_into(std::map<uint64_t, uint64_t>& out, uint64_t* unaccounted) const {
    for (uint32_t i = 0; i < kSize; ++i) {
      const uint64_t k = e_[i].key.load(std::memory_order_acquire);
      if (k) out[k] += e_[i].hits.load(std::memory_order_relaxed);
    }
    *unaccounted += unaccounted_.load(std::memory_order_relaxed);
  }

 private:
  struct Entry {
    std::atomic<uint64_t> key{0};
    std::atomic<uint64_t> hits{0};
  };
  const bool shared_;
  std::unique_ptr<Entry[]> e_;
  std::atomic<uint64_t> unaccounted_{0};
};

}  // namespace vpf::plugin
