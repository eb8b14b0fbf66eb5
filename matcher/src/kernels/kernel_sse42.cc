// Classifier kernel: SSE4.2 (4 tests per instruction; unsigned compares via min/max).
#include <nmmintrin.h>

#include "kernel_body.h"

namespace vpf::matcher::layout {
namespace {
struct Sse42Match {
  static inline void hash_batch(const PacketKey* keys, const uint8_t* open, uint32_t nopen, const TableView* tb,
                                uint32_t* hash) {
    hash_batch_scalar(keys, open, nopen, tb, hash);
  }
  static inline bool match(const uint32_t* f, const EntryBlock* b) {
    __m128i all = _mm_set1_epi32(-1);
    for (int q = 0; q < kTestsPerBlock; q += 4) {
      const __m128i v = _mm_and_si128(
          _mm_setr_epi32(int(f[b->idx[q]]), int(f[b->idx[q + 1]]), int(f[b->idx[q + 2]]), int(f[b->idx[q + 3]])),
          _mm_load_si128(reinterpret_cast<const __m128i*>(b->mask + q)));
      const __m128i lo = _mm_load_si128(reinterpret_cast<const __m128i*>(b->lo + q));
      const __m128i hi = _mm_load_si128(reinterpret_cast<const __m128i*>(b->hi + q));
      const __m128i ge = _mm_cmpeq_epi32(_mm_max_epu32(v, lo), v);
      const __m128i le = _mm_cmpeq_epi32(_mm_min_epu32(v, hi), v);
      all = _mm_and_si128(all, _mm_and_si128(ge, le));
    }
    return _mm_movemask_epi8(all) == 0xffff;
  }
};
}  // namespace

void classify_sse42(const SnapshotView* s, const PacketRef* p, const PacketKey* k, uint32_t n, Decision* out) {
  classify_body<Sse42Match>(s, p, k, n, out);
}

}  // namespace vpf::matcher::layout
