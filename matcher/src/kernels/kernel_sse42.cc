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
  static inline uint32_t child(const TreeNode& nd, uint32_t v) {
    const __m128i x = _mm_set1_epi32(int(v));
    const __m128i c0 = _mm_load_si128(reinterpret_cast<const __m128i*>(nd.cut));
    const __m128i c1 = _mm_load_si128(reinterpret_cast<const __m128i*>(nd.cut) + 1);
    const __m128i ge0 = _mm_cmpeq_epi32(_mm_max_epu32(x, c0), x);
    const __m128i ge1 = _mm_cmpeq_epi32(_mm_max_epu32(x, c1), x);
    const int m = _mm_movemask_ps(_mm_castsi128_ps(ge0)) | _mm_movemask_ps(_mm_castsi128_ps(ge1)) << 4;
    return uint32_t(__builtin_popcount(m & 0x7f));
  }
  static inline bool in_box(const uint32_t* v, const TreeBox& b) {
    // v - lo <= hi - lo, unsigned: min(d, w) == d.
    const __m128i* pv = reinterpret_cast<const __m128i*>(v);
    const __m128i* lo = reinterpret_cast<const __m128i*>(b.lo);
    const __m128i* hi = reinterpret_cast<const __m128i*>(b.hi);
    const __m128i d0 = _mm_sub_epi32(_mm_load_si128(pv), _mm_load_si128(lo));
    const __m128i w0 = _mm_sub_epi32(_mm_load_si128(hi), _mm_load_si128(lo));
    const __m128i d1 = _mm_sub_epi32(_mm_load_si128(pv + 1), _mm_load_si128(lo + 1));
    const __m128i w1 = _mm_sub_epi32(_mm_load_si128(hi + 1), _mm_load_si128(lo + 1));
    const __m128i ok0 = _mm_cmpeq_epi32(_mm_min_epu32(d0, w0), d0);
    const __m128i ok1 = _mm_cmpeq_epi32(_mm_min_epu32(d1, w1), d1);
    return (_mm_movemask_ps(_mm_castsi128_ps(ok0)) | _mm_movemask_ps(_mm_castsi128_ps(ok1)) << 4 | 0x80) == 0xff;
  }
  static inline bool match(const uint32_t* f, const EntryBlock* b) {
    __m128i all = _mm_set1_epi32(-1);
    for (int q = 0; q < kTestsPerBlock; q += 4) {
      const __m128i v = _mm_and_si128(
          _mm_setr_epi32(int(f[b->idx[q]]), int(f[b->idx[q + 1]]), int(f[b->idx[q + 2]]), int(f[b->idx[q + 3]])),
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(b->mask + q)));
      const __m128i lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b->lo + q));
      const __m128i hi = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b->hi + q));
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
