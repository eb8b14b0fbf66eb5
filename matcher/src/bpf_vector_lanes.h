// The vector evaluator's packet side (bpf_vector.h, steps 1-3): a packet's window read and
// every lane's load put into its lane.  Inline, for the translation units built with
// AVX-512 and VBMI (the evaluator and the bit form); nothing else may include it.
#pragma once

#include <immintrin.h>

#include <array>
#include <cstdint>

#include "bpf_vector.h"

namespace vpf::matcher::lanes {

// Byte masks of the window's two halves for a packet of n bytes (n <= 128).
struct HalfMasks {
  uint64_t first, second;
};
constexpr std::array<HalfMasks, 129> half_masks() {
  std::array<HalfMasks, 129> t{};
  for (unsigned n = 0; n <= 128; ++n) {
    t[n].first = n >= 64 ? ~uint64_t(0) : (uint64_t(1) << n) - 1;
    t[n].second = n >= 128 ? ~uint64_t(0) : n <= 64 ? 0 : (uint64_t(1) << (n - 64)) - 1;
  }
  return t;
}
inline constexpr std::array<HalfMasks, 129> kHalfMasks = half_masks();

// An x that fails every x + k load (the header length byte is past the end).
inline constexpr uint32_t kNoX = 1u << 20;

struct Regs {
  __m512i idx, end, mask, lo, range, need;
  explicit Regs(const BpfVector& v)
      : idx(_mm512_load_si512(v.idx)), end(_mm512_load_si512(v.end)), mask(_mm512_load_si512(v.mask)),
        lo(_mm512_load_si512(v.lo)), range(_mm512_load_si512(v.range)), need(_mm512_load_si512(v.need)) {}
};

// Steps 1-3 of bpf_vector.h: every lane's load, and the lanes whose load is in bounds.
// Reads the window.  Bytes past the end may be anything: only lanes whose load ends within
// the packet are valid, and those take no byte past it.  So a window that stays within the
// page of the packet's first byte is read whole (no fault is possible there); an empty
// packet, or a window that would cross into the next page, is read with byte masks at the
// packet's length.
__attribute__((no_sanitize("address", "undefined"))) inline void read_window(const uint8_t* pkt, uint32_t len,
                                                                             __m512i* a, __m512i* b) {
  const bool in_page = (reinterpret_cast<uintptr_t>(pkt) & 4095) <= 4096 - 128;
  if (__builtin_expect(len >= 128 || (len > 0 && in_page), 1)) {
    *a = _mm512_loadu_si512(pkt);
    *b = _mm512_loadu_si512(pkt + 64);
    return;
  }
  const HalfMasks& m = kHalfMasks[len < 128 ? len : 128];
  *a = _mm512_maskz_loadu_epi8(m.first, pkt);  // masked bytes are not read
  *b = _mm512_maskz_loadu_epi8(m.second, pkt + 64);
}

inline __m512i load_lanes(const BpfVector& v, const Regs& r, const uint8_t* pkt, uint32_t len, __mmask16* ok) {
  __m512i a, b;
  read_window(pkt, len, &a, &b);
  const uint32_t x = v.msh_off < len ? 4u * (pkt[v.msh_off] & 0xfu) : kNoX;
  const __m512i at = _mm512_add_epi8(r.idx, _mm512_maskz_set1_epi8(v.ind_bytes, char(x)));
  const __m512i val = _mm512_maskz_permutex2var_epi8(v.used_bytes, a, at, b);
  const __m512i plen = _mm512_set1_epi32(int(len));
  const __m512i ends = _mm512_add_epi32(r.end, _mm512_maskz_set1_epi32(v.ind_lanes, int(x)));
  *ok = _mm512_mask_cmple_epu32_mask(v.lanes, ends, plen);
  return _mm512_mask_mov_epi32(val, v.len_lanes, plen);
}

}  // namespace vpf::matcher::lanes
