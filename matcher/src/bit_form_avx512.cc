// The bit form's lookup (bit_form.h), AVX-512 with VBMI: a packet's slots come from the
// vector loader in one register, its chunk values and their table indices are computed
// in one more, each chunk's class picks a 64-byte entry set, and the sets are ANDed in a
// register; no branch follows the packet's bytes.  Compiled with those flags; called only
// where the snapshot has the loader (which exists only on such CPUs).
#include <immintrin.h>

#include <bit>
#include <cstring>

#include "bit_form.h"
#include "bpf_vector_lanes.h"

// GCC 12's shift and permute intrinsics are built on _mm512_undefined_epi32(); the value
// is fully overwritten.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace vpf::matcher {

uint32_t bit_form_classify(const BitForm& f, const BpfVector& loader, const PacketRef* pkts, uint32_t n,
                           Decision* out) {
  const lanes::Regs r(loader);
  const __m512i all = _mm512_load_si512(f.all.w);
  const __m512i src = _mm512_load_si512(f.lane_src), shift = _mm512_load_si512(f.lane_shift);
  const __m512i mask = _mm512_load_si512(f.lane_mask), base = _mm512_load_si512(f.lane_base);
  const __m512i invalid = _mm512_load_si512(f.lane_invalid), ones = _mm512_set1_epi32(-1);
  const __m512i guard_src = _mm512_load_si512(f.guard_src);
  const __m512i gate_src = _mm512_load_si512(f.gate_src), gate_mask = _mm512_load_si512(f.gate_mask);
  const __m512i gate_lo = _mm512_load_si512(f.gate_lo), gate_range = _mm512_load_si512(f.gate_range);
  const uint32_t nchunks = uint32_t(f.chunks.size());
  const uint16_t* const class_of = f.class_of.data();
  const EntrySet* const sets = f.sets.data();
  const Decision* const decision = f.decision.data();
  uint32_t left = 0;
  // Two passes, so that no load waits for a store just made: every packet's table indices
  // first, then every packet's sets.
  alignas(64) uint32_t idx[32][16];
  __mmask8 open[32];  // 0xff: the packet passed every gate
  for (uint32_t i = 0; i < n; ++i) {
    const PacketRef& p = pkts[i];
    __mmask16 ok;
    const __m512i loaded = lanes::load_lanes(loader, r, p.data, p.len, &ok);  // (sets ok first)
    const __m512i slots = _mm512_maskz_mov_epi32(ok, loaded);
    // Sources 16.. (bit_form.h): the in-bounds bits, length and metadata.
    __m512i meta = _mm512_castsi128_si512(_mm_cvtsi32_si128(int(uint32_t(ok))));
    if (f.uses_meta) {
      meta = _mm512_castsi128_si512(
          _mm_set_epi32(int(p.meta.direction), int(p.meta.adapter), int(p.len), int(uint32_t(ok))));
      meta = _mm512_mask_set1_epi32(meta, 1u << (kSrcVm - 16), int(p.meta.vm));
    }
    if (f.guard_lanes) {
      const __m512i g = _mm512_permutex2var_epi32(slots, guard_src, meta);
      if (_mm512_mask_test_epi32_mask(f.guard_lanes, g, _mm512_set1_epi32(int(0xffff0000u)))) left |= 1u << i;
    }
    const __m512i gv = _mm512_permutex2var_epi32(slots, gate_src, meta);
    const __mmask16 held = _mm512_mask_cmple_epu32_mask(
        f.gate_lanes, _mm512_sub_epi32(_mm512_and_si512(gv, gate_mask), gate_lo), gate_range);
    open[i] = held == f.gate_lanes ? 0xff : 0;
    const __m512i v = _mm512_permutex2var_epi32(slots, src, meta);
    __m512i at = _mm512_add_epi32(_mm512_and_si512(_mm512_srlv_epi32(v, shift), mask), base);
    if ((ok & f.chunk_slots) != f.chunk_slots) {
      // A chunk lane whose source is a slot out of bounds takes its chunk's "invalid" index.
      const __mmask16 in = _mm512_test_epi32_mask(_mm512_permutex2var_epi32(_mm512_movm_epi32(ok), src, ones), ones);
      at = _mm512_mask_mov_epi32(invalid, in, at);
    }
    _mm512_store_si512(idx[i], at);
  }
  for (uint32_t i = 0; i < n; ++i) {
    __m512i acc = _mm512_maskz_mov_epi64(open[i], all);
    const uint32_t* at = idx[i];
    auto set = [&](uint32_t c) { return _mm512_load_si512(sets[class_of[at[c]]].w); };
    switch (nchunks) {  // the usual counts without a loop
      case 0: break;
      case 1: acc = _mm512_and_si512(acc, set(0)); break;
      case 2: acc = _mm512_and_si512(acc, _mm512_and_si512(set(0), set(1))); break;
      case 3: acc = _mm512_and_si512(_mm512_and_si512(acc, set(0)), _mm512_and_si512(set(1), set(2))); break;
      case 4:
        acc = _mm512_and_si512(_mm512_and_si512(acc, set(0)), _mm512_and_si512(_mm512_and_si512(set(1), set(2)), set(3)));
        break;
      default:
        for (uint32_t c = 0; c < nchunks; ++c) acc = _mm512_and_si512(acc, set(c));
    }
    // The first non-zero word, moved to lane 0; none: word 8 (bit_form.h's "no rule").
    const __mmask8 nz = _mm512_test_epi64_mask(acc, acc);
    const uint64_t first = uint64_t(_mm_cvtsi128_si64(_mm512_castsi512_si128(_mm512_maskz_compress_epi64(nz, acc))));
    const uint32_t w = uint32_t(std::countr_zero(uint32_t(nz) | 0x100u));
    std::memcpy(&out[i], &decision[w * 64 + uint32_t(std::countr_zero(first))], sizeof(Decision));
  }
  return left;
}

}  // namespace vpf::matcher
