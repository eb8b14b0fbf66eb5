// The decision cache's vector key path (see decision_cache.h): eight packets at a time,
// the untagged IPv4 shapes whose key is at most two words with no size class.  The same
// tests as DecisionCache::make_key, lane by lane: a packet that fails any of them is left
// to the one-packet path, which keys it or sends it to the tables.  Built with the AVX-512
// flags; called only where the CPU has them.
//
// Measured choices (docs/benchmarks.md): the header words and the key words are loaded
// one packet at a time and put into their lanes in registers (a vector load of words just
// stored by scalar stores waits for them to drain; in the switch, gathering the key words
// cost ~2 ns a packet more than these loads on this AMD core).
#include <immintrin.h>

#include <bit>
#include <cstddef>
#include <cstring>

#include "decision_cache.h"

// GCC 12's shift and permute intrinsics are built on _mm512_undefined_epi32(); the value
// is fully overwritten.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace vpf::matcher::cache {

namespace {

__m512i set1(uint64_t v) { return _mm512_set1_epi64(int64_t(v)); }
// Lanes 0..3 of a per-shape table; vpermq picks by shape.
__m512i table(const uint64_t* t) { return _mm512_maskz_loadu_epi64(0x0f, t); }
// What a lane whose frame is too short for its shape loads instead of key words.
constexpr uint8_t kZeros[8] = {};

}  // namespace

uint32_t fast_keys_avx512(const FastPlan& fp, const PacketBatch& b, LineHash lh, BatchKeys& k) {
  const __m512i t_ok = table(fp.ok), t_end = table(fp.end), t_vm = table(fp.uses_vm);
  const __m512i t_mask0 = table(fp.mask[0]), t_mask1 = table(fp.mask[1]);
  const __m512i lo32 = set1(0xffffffffu), zero = _mm512_setzero_si512();
  // The rows' transpose: two packets' (header word, word 1) and (word 2, 0) pairs.
  const __m512i pairs_lo = _mm512_set_epi64(11, 10, 3, 2, 9, 8, 1, 0), pairs_hi = _mm512_set_epi64(15, 14, 7, 6, 13, 12, 5, 4);
  const __m128i shift1 = _mm_cvtsi32_si128(int(lh.shift1)), shift2 = _mm_cvtsi32_si128(int(lh.shift2));
  const __m512i adapter = set1(b.meta.adapter), dir = set1(uint64_t(b.meta.direction)), vm_all = set1(b.meta.vm);
  uint32_t done = 0, plain = 0;
  for (uint32_t base = 0; base < b.n; base += 8) {
    const uint32_t cnt = b.n - base >= 8 ? 8 : b.n - base;
    const __mmask8 live = __mmask8((1u << cnt) - 1);
    const __m512i len = _mm512_cvtepu32_epi64(_mm256_maskz_loadu_epi32(live, b.len + base));
    // The header words, one packet at a time (scalar loads: AMD's gathers are slower),
    // put into their lanes in registers, not through memory: a vector load of what scalar
    // stores have just written waits for them to drain.
    // The key words too: at the offsets of the shape the protocol byte gives, from the
    // frame when it holds the shape's end (else zeros; the lane fails the tests below).
    __m512i w12 = zero, w20 = zero, k1 = zero, k2 = zero;
    for (uint32_t j = 0; j < cnt; ++j) {
      const uint32_t len_j = b.len[base + j];
      if (len_j < 34) continue;
      const uint8_t* d = b.data[base + j];
      uint64_t x, y, u, v;
      std::memcpy(&x, d + 12, 8);
      std::memcpy(&y, d + 20, 8);
      const uint32_t sh = fp.shape_of[uint8_t(y >> 24)];
      const bool whole = len_j >= fp.end[sh];
      std::memcpy(&u, whole ? d + fp.off[0][sh] : kZeros, 8);
      std::memcpy(&v, whole ? d + fp.off[1][sh] : kZeros, 8);
      const __mmask8 lane = __mmask8(1u << j);
      w12 = _mm512_mask_set1_epi64(w12, lane, int64_t(x));
      w20 = _mm512_mask_set1_epi64(w20, lane, int64_t(y));
      k1 = _mm512_mask_set1_epi64(k1, lane, int64_t(u));
      k2 = _mm512_mask_set1_epi64(k2, lane, int64_t(v));
    }
    __mmask8 m = _mm512_mask_cmpge_epu64_mask(live, len, set1(34));
    // Ethertype 0x0800 and the IPv4 version/IHL byte 0x45: bytes 12..14.
    m = _mm512_mask_cmpeq_epi64_mask(m, _mm512_and_si512(w12, set1(0xffffff)), set1(0x450008));
    // Not a fragment (bytes 20..21 & 0x3fff) and the protocol (byte 23).
    m = _mm512_mask_testn_epi64_mask(m, w20, set1(0xff3f));
    const __m512i proto = _mm512_and_si512(_mm512_srli_epi64(w20, 24), set1(0xff));
    const __mmask8 tcp = _mm512_cmpeq_epi64_mask(proto, set1(6));
    const __mmask8 udp = _mm512_cmpeq_epi64_mask(proto, set1(17)) | _mm512_cmpeq_epi64_mask(proto, set1(136));
    const __mmask8 sctp = _mm512_cmpeq_epi64_mask(proto, set1(132));
    const __mmask8 icmp = _mm512_cmpeq_epi64_mask(proto, set1(1)) | _mm512_cmpeq_epi64_mask(proto, set1(58));
    __m512i shape = set1(kOther), need = zero;  // as l4_class()
    shape = _mm512_mask_mov_epi64(shape, tcp, set1(kTcp));
    need = _mm512_mask_mov_epi64(need, tcp, set1(20));
    shape = _mm512_mask_mov_epi64(shape, udp | sctp, set1(kPorts));
    need = _mm512_mask_mov_epi64(need, udp, set1(8));
    need = _mm512_mask_mov_epi64(need, sctp, set1(12));
    shape = _mm512_mask_mov_epi64(shape, icmp, set1(kIcmp));
    need = _mm512_mask_mov_epi64(need, icmp, set1(8));
    // The IP total length (big-endian bytes 16..17): tot - 20 >= need and tot <= len - 14.
    const __m512i tot = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi64(w12, 24), set1(0xff00)),
                                        _mm512_and_si512(_mm512_srli_epi64(w12, 40), set1(0xff)));
    m = _mm512_mask_cmpge_epu64_mask(m, tot, _mm512_add_epi64(need, set1(20)));
    m = _mm512_mask_cmple_epu64_mask(m, tot, _mm512_sub_epi64(len, set1(14)));
    plain |= uint32_t(m) << base;
    // The shape's plan.
    m = _mm512_mask_test_epi64_mask(m, _mm512_permutexvar_epi64(shape, t_ok), _mm512_permutexvar_epi64(shape, t_ok));
    m = _mm512_mask_cmpge_epu64_mask(m, len, _mm512_permutexvar_epi64(shape, t_end));
    const __m512i vm = _mm512_and_si512(vm_all, _mm512_permutexvar_epi64(shape, t_vm));
    m = _mm512_mask_cmplt_epu64_mask(m, adapter, set1(1u << 20));
    m = _mm512_mask_cmplt_epu64_mask(m, vm, set1(1u << 22));
    if (!m) continue;
    const __m512i key0 = _mm512_or_si512(
        _mm512_or_si512(adapter, _mm512_slli_epi64(dir, 20)),
        _mm512_or_si512(_mm512_slli_epi64(shape, 22), _mm512_slli_epi64(vm, 42)));
    k1 = _mm512_and_si512(k1, _mm512_permutexvar_epi64(shape, t_mask0));
    k2 = _mm512_and_si512(k2, _mm512_permutexvar_epi64(shape, t_mask1));
    __m512i h = _mm512_add_epi64(_mm512_mullo_epi64(key0, set1(kHashMul[0])),
                                 _mm512_add_epi64(_mm512_mullo_epi64(k1, set1(kHashMul[1])),
                                                  _mm512_mullo_epi64(k2, set1(kHashMul[2]))));
    h = _mm512_xor_si512(h, _mm512_srli_epi64(h, 32));
    const __m512i line1 = _mm512_srl_epi64(h, shift1);
    const __m512i line2 = _mm512_srl_epi64(_mm512_and_si512(_mm512_mullo_epi32(h, _mm512_set1_epi32(int(kLine2Mul))), lo32),
                                           shift2);
    _mm512_mask_cvtepi64_storeu_epi32(&k.line[0][base], m, line1);
    _mm512_mask_cvtepi64_storeu_epi32(&k.line[1][base], m, line2);
    // The rows (header word, word 1, word 2, 0) of the eight packets, two per vector.
    const __m512i a = _mm512_unpacklo_epi64(key0, k1), c = _mm512_unpacklo_epi64(k2, zero);  // packets 0, 2, 4, 6
    const __m512i bb = _mm512_unpackhi_epi64(key0, k1), d = _mm512_unpackhi_epi64(k2, zero);  // packets 1, 3, 5, 7
    const __m512i ac_lo = _mm512_permutex2var_epi64(a, pairs_lo, c), ac_hi = _mm512_permutex2var_epi64(a, pairs_hi, c);
    const __m512i bd_lo = _mm512_permutex2var_epi64(bb, pairs_lo, d), bd_hi = _mm512_permutex2var_epi64(bb, pairs_hi, d);
    _mm512_store_si512(k.row[base + 0], _mm512_shuffle_i64x2(ac_lo, bd_lo, 0x44));
    _mm512_store_si512(k.row[base + 2], _mm512_shuffle_i64x2(ac_lo, bd_lo, 0xee));
    _mm512_store_si512(k.row[base + 4], _mm512_shuffle_i64x2(ac_hi, bd_hi, 0x44));
    _mm512_store_si512(k.row[base + 6], _mm512_shuffle_i64x2(ac_hi, bd_hi, 0xee));
    done |= uint32_t(m) << base;
  }
  k.plain_ipv4 = plain;
  return done;
}

uint32_t probe_lines_avx512(const Line* lines, const BatchKeys& k, uint32_t todo, uint64_t tag, Decision* out,
                            uint32_t* matched) {
  const int64_t t = int64_t(tag << 48), all = -1, tm = int64_t(kTagMask);
  const __m512i tags = _mm512_set_epi64(t, 0, 0, 0, t, 0, 0, 0), keep = _mm512_set_epi64(tm, all, all, all, tm, all, all, all);
  uint32_t hit = 0, mt = 0;
  for (; todo; todo &= todo - 1) {
    const uint32_t i = uint32_t(std::countr_zero(todo));
    const __m512i row = _mm512_or_si512(_mm512_broadcast_i64x4(_mm256_load_si256(reinterpret_cast<const __m256i*>(k.row[i]))), tags);
    for (int l = 0; l < 2; ++l) {
      const Line& line = lines[k.line[l][i]];
      // Bit j: word j of the line equals the row's (the decision words only in their tags).
      const uint32_t eq = _mm512_cmpeq_epi64_mask(_mm512_and_si512(_mm512_load_si512(&line), keep), row);
      const int e = (eq & 0x0f) == 0x0f ? 0 : eq >= 0xf0 ? 1 : -1;
      if (e < 0) continue;
      const uint64_t d = line.e[e][3];
      store_decision(&out[i], d);
      mt |= uint32_t(uint32_t(d) != kNoRule) << i;
      hit |= 1u << i;
      break;
    }
  }
  *matched |= mt;
  return hit;
}

}  // namespace vpf::matcher::cache
