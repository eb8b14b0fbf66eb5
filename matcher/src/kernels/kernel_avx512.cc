// Classifier kernel: AVX-512 (all 8 tests of a block in one instruction each; key
// fields selected with two-table permutes from the four key registers).
#include <immintrin.h>

// GCC 12 reports "may be used uninitialized" inside its own avx512fintrin.h for intrinsics
// built on _mm512_undefined_epi32() (rol, srli); the value is fully overwritten.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include "kernel_body.h"

namespace vpf::matcher::layout {
namespace {
struct Avx512Match {
  // 16 packets per step: gather each tuple field, mask, mix; same arithmetic as table_hash().
  static inline void hash_batch(const PacketKey* keys, const uint8_t* open, uint32_t nopen, const TableView* tb,
                                uint32_t* hash) {
    const int stride = int(sizeof(PacketKey) / 4);
    const int* base = reinterpret_cast<const int*>(keys[0].f);
    for (uint32_t o = 0; o < nopen; o += 16) {
      const __mmask16 live = nopen - o >= 16 ? __mmask16(0xffff) : __mmask16((1u << (nopen - o)) - 1);
      const __m512i pkt = _mm512_maskz_cvtepu8_epi32(0xffff, _mm_loadu_si128(reinterpret_cast<const __m128i*>(open + o)));
      const __m512i row = _mm512_mullo_epi32(pkt, _mm512_set1_epi32(stride));
      __m512i h = _mm512_set1_epi32(int(0x811c9dc5u ^ tb->nfields));
      for (uint32_t j = 0; j < tb->nfields; ++j) {
        const __m512i idx = _mm512_add_epi32(row, _mm512_set1_epi32(tb->field[j]));
        __m512i v = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), live, idx, base, 4);
        v = _mm512_and_si512(v, _mm512_set1_epi32(int(tb->mask[j])));
        h = _mm512_xor_si512(h, v);
        h = _mm512_mullo_epi32(h, _mm512_set1_epi32(int(0x9e3779b1u)));
        h = _mm512_rol_epi32(h, 15);
      }
      h = _mm512_xor_si512(h, _mm512_srli_epi32(h, 16));
      h = _mm512_mullo_epi32(h, _mm512_set1_epi32(int(0x85ebca6bu)));
      h = _mm512_xor_si512(h, _mm512_srli_epi32(h, 13));
      h = _mm512_mullo_epi32(h, _mm512_set1_epi32(int(0xc2b2ae35u)));
      h = _mm512_xor_si512(h, _mm512_srli_epi32(h, 16));
      _mm512_store_si512(hash + o, h);
    }
  }
  static inline uint32_t child(const TreeNode& nd, uint32_t v) {
    const __m256i c = _mm256_load_si256(reinterpret_cast<const __m256i*>(nd.cut));
    return uint32_t(__builtin_popcount(_mm256_mask_cmpge_epu32_mask(0x7f, _mm256_set1_epi32(int(v)), c)));
  }
  static inline bool in_box(const uint32_t* v, const TreeBox& b) {
    const __m256i lo = _mm256_load_si256(reinterpret_cast<const __m256i*>(b.lo));
    const __m256i d = _mm256_sub_epi32(_mm256_load_si256(reinterpret_cast<const __m256i*>(v)), lo);
    const __m256i w = _mm256_sub_epi32(_mm256_load_si256(reinterpret_cast<const __m256i*>(b.hi)), lo);
    return (_mm256_cmple_epu32_mask(d, w) | 0x80) == 0xff;
  }
  static inline bool match(const uint32_t* f, const EntryBlock* b) {
    const __m512i idx = _mm512_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(b->idx)));
    const __m512i k0 = _mm512_load_si512(f), k1 = _mm512_load_si512(f + 16);
    const __m512i k2 = _mm512_load_si512(f + 32), k3 = _mm512_load_si512(f + 48);
    const __m512i low = _mm512_permutex2var_epi32(k0, idx, k1);   // fields 0..31
    const __m512i high = _mm512_permutex2var_epi32(k2, idx, k3);  // fields 32..63
    const __mmask16 upper = _mm512_test_epi32_mask(idx, _mm512_set1_epi32(32));
    __m256i v = _mm512_castsi512_si256(_mm512_mask_blend_epi32(upper, low, high));
    v = _mm256_and_si256(v, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b->mask)));
    const __mmask8 ge = _mm256_cmp_epu32_mask(v, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b->lo)), _MM_CMPINT_NLT);
    const __mmask8 le = _mm256_mask_cmp_epu32_mask(ge, v, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b->hi)), _MM_CMPINT_LE);
    return le == 0xff;
  }
};
}  // namespace

void classify_avx512(const SnapshotView* s, const PacketRef* p, const PacketKey* k, uint32_t n, Decision* out) {
  classify_body<Avx512Match>(s, p, k, n, out);
}

}  // namespace vpf::matcher::layout
