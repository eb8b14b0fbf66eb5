// The vector evaluator of lowered BPF expressions (bpf_vector.h), AVX-512 with VBMI.
// Compiled with those flags; called only for a BpfVector that make_bpf_vector() made.
#include <immintrin.h>

#include <array>

#include "bpf_vector.h"

namespace vpf::matcher {
namespace {

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
constexpr std::array<HalfMasks, 129> kHalfMasks = half_masks();

// An x that fails every x + k load (the header length byte is past the end).
constexpr uint32_t kNoX = 1u << 20;

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
