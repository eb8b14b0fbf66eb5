// Classifier kernel: AVX2 (8 tests per instruction; key fields gathered by index).
#include <immintrin.h>

#include "kernel_body.h"

namespace vpf::matcher::layout {
namespace {
struct Avx2Match {
  // 8 packets per step; same arithmetic as table_hash().
  static inline void hash_batch(const PacketKey* keys, const uint8_t* open, uint32_t nopen, const TableView* tb,
                                uint32_t* hash) {
    const int stride = int(sizeof(PacketKey) / 4);
    const int* base = reinterpret_cast<const int*>(keys[0].f);
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (uint32_t o = 0; o < nopen; o += 8) {
      const __m256i live = _mm256_cmpgt_epi32(_mm256_set1_epi32(int(nopen - o)), lane);
      const __m256i pkt = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(open + o)));
      const __m256i row = _mm256_mullo_epi32(pkt, _mm256_set1_epi32(stride));
      __m256i h = _mm256_set1_epi32(int(0x811c9dc5u ^ tb->nfields));
      for (uint32_t j = 0; j < tb->nfields; ++j) {
        const __m256i idx = _mm256_add_epi32(row, _mm256_set1_epi32(tb->field[j]));
        __m256i v = _mm256_mask_i32gather_epi32(_mm256_setzero_si256(), base, idx, live, 4);
        v = _mm256_and_si256(v, _mm256_set1_epi32(int(tb->mask[j])));
        h = _mm256_xor_si256(h, v);
        h = _mm256_mullo_epi32(h, _mm256_set1_epi32(int(0x9e3779b1u)));
        h = _mm256_or_si256(_mm256_slli_epi32(h, 15), _mm256_srli_epi32(h, 17));
      }
      h = _mm256_xor_si256(h, _mm256_srli_epi32(h, 16));
      h = _mm256_mullo_epi32(h, _mm256_set1_epi32(int(0x85ebca6bu)));
      h = _mm256_xor_si256(h, _mm256_srli_epi32(h, 13));
      h = _mm256_mullo_epi32(h, _mm256_set1_epi32(int(0xc2b2ae35u)));
      h = _mm256_xor_si256(h, _mm256_srli_epi32(h, 16));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(hash + o), h);
    }
  }
  static inline uint32_t child(const TreeNode& nd, uint32_t v) {
    const __m256i x = _mm256_set1_epi32(int(v));
    const __m256i c = _mm256_load_si256(reinterpret_cast<const __m256i*>(nd.cut));
    const __m256i ge = _mm256_cmpeq_epi32(_mm256_max_epu32(x, c), x);
    return uint32_t(__builtin_popcount(_mm256_movemask_ps(_mm256_castsi256_ps(ge)) & 0x7f));
  }
  static inline bool in_box(const uint32_t* v, const TreeBox& b) {
    const __m256i lo = _mm256_load_si256(reinterpret_cast<const __m256i*>(b.lo));
    const __m256i d = _mm256_sub_epi32(_mm256_load_si256(reinterpret_cast<const __m256i*>(v)), lo);
    const __m256i w = _mm256_sub_epi32(_mm256_load_si256(reinterpret_cast<const __m256i*>(b.hi)), lo);
    const __m256i ok = _mm256_cmpeq_epi32(_mm256_min_epu32(d, w), d);
    return (_mm256_movemask_ps(_mm256_castsi256_ps(ok)) | 0x80) == 0xff;
  }
  static inline bool match(const uint32_t* f, const EntryBlock* b) {
    const __m256i idx = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(b->idx)));
    const __m256i v = _mm256_and_si256(_mm256_i32gather_epi32(reinterpret_cast<const int*>(f), idx, 4),
                                       _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b->mask)));
    const __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b->lo));
    const __m256i hi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b->hi));
    const __m256i ge = _mm256_cmpeq_epi32(_mm256_max_epu32(v, lo), v);
    const __m256i le = _mm256_cmpeq_epi32(_mm256_min_epu32(v, hi), v);
    return _mm256_movemask_epi8(_mm256_and_si256(ge, le)) == -1;
  }
};
}  // namespace

void classify_avx2(const SnapshotView* s, const PacketRef* p, const PacketKey* k, uint32_t n, Decision* out) {
  classify_body<Avx2Match>(s, p, k, n, out);
}

}  // namespace vpf::matcher::layout
