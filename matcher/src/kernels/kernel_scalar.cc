// Classifier kernel: portable scalar code (the reference every SIMD kernel must equal).
#include "kernel_body.h"

namespace vpf::matcher::layout {
namespace {
struct ScalarMatch {
  static inline void hash_batch(const PacketKey* keys, const uint8_t* open, uint32_t nopen, const TableView* tb,
                                uint32_t* hash) {
    hash_batch_scalar(keys, open, nopen, tb, hash);
  }
  static inline uint32_t child(const TreeNode& nd, uint32_t v) { return child_scalar(nd, v); }
  static inline bool in_box(const uint32_t* v, const TreeBox& b) { return in_box_scalar(v, b); }
  static inline bool match(const uint32_t* f, const EntryBlock* b) {
    for (int i = 0; i < kTestsPerBlock; ++i) {
      const uint32_t v = f[b->idx[i]] & b->mask[i];
      if (v < b->lo[i] || v > b->hi[i]) return false;
    }
    return true;
  }
};
}  // namespace

void classify_scalar(const SnapshotView* s, const PacketRef* p, const PacketKey* k, uint32_t n, Decision* out) {
  classify_body<ScalarMatch>(s, p, k, n, out);
}

}  // namespace vpf::matcher::layout
