// The vector evaluator of lowered BPF expressions (bpf_vector.h), AVX-512 with VBMI.
// Compiled with those flags; called only for a BpfVector that make_bpf_vector() made.
#include <immintrin.h>

#include "bpf_vector_lanes.h"

namespace vpf::matcher {
namespace {

using lanes::Regs;
using lanes::load_lanes;

inline uint32_t match_one(const BpfVector& v, const Regs& r, const uint8_t* pkt, uint32_t len) {
  __mmask16 ok;
  const __m512i val = load_lanes(v, r, pkt, len, &ok);
  const __m512i t = _mm512_sub_epi32(_mm512_and_si512(val, r.mask), r.lo);
  const __mmask16 holds = _mm512_mask_cmple_epu32_mask(ok, t, r.range);
  if (v.table) return v.table[holds];  // 0 or 1
  // Conjunction j is missing a test when (~holds & need[j]) != 0.
  const __mmask16 missing = _mm512_test_epi32_mask(_mm512_set1_epi32(int(uint16_t(~holds))), r.need);
  return (v.conjunctions & uint16_t(~missing)) != 0;
}

}  // namespace

bool bpf_vector_match(const BpfVector& v, const uint8_t* pkt, uint32_t len) { return match_one(v, Regs(v), pkt, len) != 0; }

uint32_t bpf_vector_match_bits(const BpfVector& v, const PacketRef* pkts, uint32_t candidates) {
  const Regs r(v);
  uint32_t hits = 0;
  while (candidates) {
    const int i = __builtin_ctz(candidates);
    candidates &= candidates - 1;
    hits |= match_one(v, r, pkts[i].data, pkts[i].len) << i;
  }
  return hits;
}

void bpf_vector_load_slots(const BpfVector& v, const PacketRef* pkts, uint32_t n, uint32_t* slots,
                           uint32_t* valid, size_t stride) {
  const Regs r(v);
  for (uint32_t k = 0; k < n; ++k) {
    __mmask16 ok;
    const __m512i val = load_lanes(v, r, pkts[k].data, pkts[k].len, &ok);
    _mm512_storeu_si512(slots + k * stride, _mm512_maskz_mov_epi32(ok, val));
    valid[k * stride] = ok;
  }
}

}  // namespace vpf::matcher
