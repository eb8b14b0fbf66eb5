// Classifier kernel: AVX2 (8 tests per instruction; key fields gathered by index).
#include <immintrin.h>

#include "kernel_body.h"

namespace vpf::matcher::layout {
namespace {
struct Avx2Match {
  static inline bool match(const uint32_t* f, const EntryBlock* b) {
    const __m128i idx8 = _mm_load_si128(reinterpret_cast<const __m128i*>(b->idx));
    __m256i all = _mm256_set1_epi32(-1);
    for (int h = 0; h < 2; ++h) {
      const __m256i idx = _mm256_cvtepu8_epi32(h ? _mm_srli_si128(idx8, 8) : idx8);
      const __m256i v = _mm256_and_si256(_mm256_i32gather_epi32(reinterpret_cast<const int*>(f), idx, 4),
                                         _mm256_load_si256(reinterpret_cast<const __m256i*>(b->mask + 8 * h)));
      const __m256i lo = _mm256_load_si256(reinterpret_cast<const __m256i*>(b->lo + 8 * h));
      const __m256i hi = _mm256_load_si256(reinterpret_cast<const __m256i*>(b->hi + 8 * h));
      const __m256i ge = _mm256_cmpeq_epi32(_mm256_max_epu32(v, lo), v);
      const __m256i le = _mm256_cmpeq_epi32(_mm256_min_epu32(v, hi), v);
      all = _mm256_and_si256(all, _mm256_and_si256(ge, le));
    }
    return _mm256_movemask_epi8(all) == -1;
  }
};
}  // namespace

void classify_avx2(const SnapshotView* s, const PacketRef* p, const PacketKey* k, uint32_t n, Decision* out) {
  classify_body<Avx2Match>(s, p, k, n, out);
}

}  // namespace vpf::matcher::layout
