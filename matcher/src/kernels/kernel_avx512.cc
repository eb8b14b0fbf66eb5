// Classifier kernel: AVX-512 (all 16 tests of a block in one instruction each; key
// fields selected with two-table permutes from the four key registers).
#include <immintrin.h>

#include "kernel_body.h"

namespace vpf::matcher::layout {
namespace {
struct Avx512Match {
  static inline bool match(const uint32_t* f, const EntryBlock* b) {
    const __m512i idx = _mm512_maskz_cvtepu8_epi32(0xffff, _mm_load_si128(reinterpret_cast<const __m128i*>(b->idx)));
    const __m512i k0 = _mm512_load_si512(f), k1 = _mm512_load_si512(f + 16);
    const __m512i k2 = _mm512_load_si512(f + 32), k3 = _mm512_load_si512(f + 48);
    const __m512i low = _mm512_permutex2var_epi32(k0, idx, k1);   // fields 0..31
    const __m512i high = _mm512_permutex2var_epi32(k2, idx, k3);  // fields 32..63
    const __mmask16 upper = _mm512_test_epi32_mask(idx, _mm512_set1_epi32(32));
    __m512i v = _mm512_mask_blend_epi32(upper, low, high);
    v = _mm512_and_si512(v, _mm512_load_si512(b->mask));
    const __mmask16 ge = _mm512_cmp_epu32_mask(v, _mm512_load_si512(b->lo), _MM_CMPINT_NLT);
    const __mmask16 le = _mm512_mask_cmp_epu32_mask(ge, v, _mm512_load_si512(b->hi), _MM_CMPINT_LE);
    return le == 0xffff;
  }
};
}  // namespace

void classify_avx512(const SnapshotView* s, const PacketRef* p, const PacketKey* k, uint32_t n, Decision* out) {
  classify_body<Avx512Match>(s, p, k, n, out);
}

}  // namespace vpf::matcher::layout
