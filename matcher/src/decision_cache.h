// The decision cache: a per-reader memo of "this flow got this decision" in
// front of the classifier's tables.
//
// What a cache key is
// ===================
// A decision depends only on the key fields the current rules test.  For a
// packet of a plain *shape* (Ethernet, at most one VLAN tag, IPv4 without
// options and not a fragment, or IPv6 without extension headers, with a
// complete transport header and an IP length that fits the frame) every parsed
// field is a fixed run of header bytes, and the parse flags, the fragment bits,
// the IP version and the BPF load validity are constants of the shape.  So for
// each shape the snapshot computes a *plan*: up to kWords 8-byte words at fixed
// offsets with bit masks that keep exactly the bytes of the tested fields (plus
// the bytes that define the shape: ethertypes, the IP version/IHL byte, the
// protocol), and the frame length as a *size class* (how many of the size
// tests' boundaries lie at or below it).  A packet's key is the header word
// (adapter, direction, VM, shape, size class) and the masked words.  Two
// packets with the same key get the same decision from the tables, so a cached
// decision is exact, never a guess.
//
// Kept out of the cache, exactly: packets of any other shape, packets shorter
// than the plan's last word, and every packet while the rule set holds a rule
// whose BPF program runs in the executor (it may read any byte).  A shape is
// not cached when the BPF loads of the rules need more than kWords words or
// address bytes through an IHL that is not the shape's own.  These packets are
// classified by the tables, as without a cache.
//
// The structure
// =============
// Keys are made eight packets at a time with AVX-512 where the CPU has it, for the
// untagged IPv4 shapes whose key is at most two words with no size class (FastPlan; the
// 5-tuple plan is one), and one packet at a time for the rest; both give the same key.
//
// Two tables, by the key's length:
// - A key of at most two words after the header word (the 5-tuple plan's, and most
//   others) is a *short key*, kept in a table of lines: a cache line holds two entries of
//   four words each (the header word, the two key words, and the decision word: rule id,
//   kind, action and the 16-bit tag of the rule set it was decided under).  A key may sit
//   in either of two lines (two hashes of the key); a new one goes to the first line with
//   a free entry, else replaces an entry of its first line.  There are twice as many lines
//   as flows, so that most keys sit in their first line: a lookup prefetches that line,
//   compares its two entries with one vector compare, and reads the second line only when
//   the first does not hold the key (while batches find nothing in the cache, as in a
//   flood of new flows, it prefetches both).
// - A longer key sits in a table of buckets of one cache line: the snapshot generation
//   the bucket was filled under and 8 signatures; the 8 ways' entries (64 bytes each: key
//   and decision) sit in a parallel array.
// A batch is hashed and its lines and buckets prefetched before any compare; a hit writes
// nothing.  A rule change invalidates both tables in O(1): a bucket of another generation
// is empty, and so is an entry of another tag (the tag counts the rule sets this cache
// has seen; when it has counted 65,535 the lines are cleared and it starts again).  A
// miss is classified by the tables with the other misses of the batch and then inserted.
//
// Thread-safety: a DecisionCache belongs to one Reader, hence to one thread.
// Its counters are atomics so that other threads may read them.
#pragma once

#include <emmintrin.h>  // SSE2: part of x86-64 itself, no ISA flag needed

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <vector>

#include "classifier_layout.h"
#include "vpf/matcher/bpf.h"
#include "vpf/matcher/classifier.h"

namespace vpf::matcher::cache {

inline constexpr int kWords = 6;
inline constexpr int kWays = 8;
// Shape index: bit 3 tagged, bit 2 IPv6, bits 0..1 the transport class.
inline constexpr int kShapes = 16;
enum L4Class : uint8_t { kTcp = 0, kPorts = 1, kIcmp = 2, kOther = 3 };

// What the entries that can match packets of one shape test, kept up to date by
// the writer as entries come and go.  An entry that tests a field the shape
// fixes (the ethertype, the IP version, a protocol, a port that is always 0,
// ...) with a value the shape never has cannot match such packets and is not
// counted for the shape.
struct Usage {
  uint32_t field_entries[kFixedFields] = {};
  uint32_t slot_entries[kDynamicSlots] = {};  // tested or required BPF loads
  // Per BPF load, the masks tests apply to its value -> entries testing under each: a
  // shape keeps only the tested bits it does not fix (e.g. no fragment bits for a
  // fragment test on an IPv4 shape, which admits no fragment).
  std::map<uint32_t, uint32_t> slot_masks[kDynamicSlots];
  std::map<uint32_t, uint32_t> len_bounds;    // size-class boundary -> entries using it
  uint32_t raw_len_entries = 0;               // size tests under a partial mask
  uint32_t jit_entries = 0;                   // entries that run a BPF program
  void count(const layout::Entry* e, int sign);
};

// The shapes (bit i: shape i) an entry can match; `slot_load` gives its dynamic
// loads.
uint32_t live_shapes(const layout::Entry* e, const BpfLoad* slot_load);

struct Shape {
  bool enabled = false;
  bool raw_len = false;  // size class = the length itself
  bool uses_vm = false;
  uint8_t nwords = 0;  // words the key uses (the rest are not read, hashed or compared)
  uint16_t end = 0;    // the frame must hold this many bytes
  uint16_t off[kWords] = {};
  uint64_t mask[kWords] = {};    // 0 for unused words
  std::vector<uint32_t> bounds;  // sorted; class = number of bounds <= length
};

// The untagged IPv4 shapes (0..3) again, for the vector key path: what a shape needs
// if its key is at most two words with no size class (the common 5-tuple plan).  A shape
// that does not qualify (ok = 0) is keyed one packet at a time like the others.
struct FastPlan {
  bool enabled = false;  // some untagged IPv4 shape qualifies
  uint64_t ok[4] = {}, end[4] = {}, uses_vm[4] = {};  // uses_vm: 0 or ~0
  uint64_t off[2][4] = {}, mask[2][4] = {};                          // [word][shape]
  uint8_t shape_of[256] = {};  // the L4 class of each IP protocol (l4_class)
};

struct Plan {
  bool enabled = false;  // false: every packet goes to the tables
  Shape shape[kShapes];
  FastPlan fast;
  // Bit i (untagged IPv4 shapes 0..3 only): a key of shape i holds only bytes that a
  // switch's exact flow key also determines (memo_shapes), so the decision holds for every
  // packet of that flow key (PacketBatch::memo).
  uint32_t memo_shapes = 0;
  uint32_t shapes_enabled() const;  // bit i: shape i is cached
};

// Builds the plan of a snapshot from what the entries of each shape test.
Plan make_plan(const Usage* per_shape, const BpfLoad* slot_load);
// Fills plan.fast from the plan's shapes (make_plan does).
void make_fast_plan(Plan* plan);
// The plan's memo_shapes (make_plan fills them).
uint32_t memo_shapes(const Plan& plan);
// Whether the switch's flow key of an IPv4 packet of protocol `proto` holds the transport
// fields this classifier reads for it (PacketBatch::memo): not for UDP-Lite, nor for
// ICMPv6 numbers in IPv4, whose ports or type the switch does not parse.
inline bool memo_proto(uint32_t proto) { return proto != 136 && proto != 58; }

struct alignas(64) Bucket {
  uint64_t gen;         // 0: never filled
  uint32_t sig[kWays];  // 0: free way
  uint32_t next;        // round-robin victim
  uint32_t pad[5];
};
static_assert(sizeof(Bucket) == 64);

struct alignas(64) Slot {
  uint64_t key[kWords + 1];  // header word, then the masked words
  uint32_t rule_id;
  uint8_t kind, action;
  uint16_t pad;
};
static_assert(sizeof(Slot) == 64);

inline constexpr uint64_t kHashMul[kWords + 1] = {0x9e3779b97f4a7c15ull, 0xc2b2ae3d27d4eb4full, 0x165667b19e3779f9ull,
                                                 0xd6e8feb86659fd93ull, 0xff51afd7ed558ccdull, 0xc4ceb9fe1a85ec53ull,
                                                 0x94d049bb133111ebull};

// A line of the short-key table: two entries of four words (the header word, key words 1
// and 2, the decision word).
struct alignas(64) Line {
  uint64_t e[2][4];
};
static_assert(sizeof(Line) == 64);

// The decision word of a short-key entry: the rule id, kind and action, and in the top 16
// bits the tag of the rule set (0: a free entry).
inline uint64_t pack_decision(const Decision& d, uint64_t tag) {
  return uint64_t(d.rule_id) | uint64_t(d.kind) << 32 | uint64_t(d.action) << 40 | tag << 48;
}
// Writes a decision word as the Decision it packs: one store, whose low six bytes are the
// Decision's fields and whose tag lands in the Decision's padding.
inline void store_decision(Decision* d, uint64_t w) {
  static_assert(sizeof(Decision) == 8 && offsetof(Decision, kind) == 4 && offsetof(Decision, action) == 5);
  std::memcpy(static_cast<void*>(d), &w, 8);
}
inline constexpr uint64_t kTagMask = 0xffffull << 48;
inline constexpr uint32_t kLine2Mul = 0x9e3779b1u;  // the second line: from the hash's low half

// The keys of a batch: long keys one array per word (so that eight packets' words are one
// vector), with each key's word count, bucket and signature; short keys one row each (the
// header word, key words 1 and 2 (0 where unused), 0) with their two lines.
struct BatchKeys {
  alignas(64) uint64_t w[kWords + 1][kMaxBatch];  // w[0]: header words
  alignas(64) uint64_t row[kMaxBatch][4];
  uint32_t bucket[kMaxBatch], sig[kMaxBatch];
  uint32_t line[2][kMaxBatch];
  uint8_t nwords[kMaxBatch];
  uint32_t short_keys;  // bit i: packet i's key is a short one (row, lines)
  uint32_t plain_ipv4;  // the vector path's header checks passed (PacketBatch::plain_ipv4)
};

// Where a table of 2^bits lines puts a hash: its high bits choose the first line, its low
// half (multiplied) the second.
struct LineHash {
  uint32_t shift1 = 64, shift2 = 32;
  explicit LineHash(uint32_t bits = 0) : shift1(64 - bits), shift2(32 - bits) {}
  uint32_t first(uint64_t h) const { return uint32_t(h >> shift1); }
  uint32_t second(uint64_t h) const { return (uint32_t(h) * kLine2Mul) >> shift2; }
};

// PacketBatch::plain_ipv4's definition for one frame, written out byte by byte: the
// reference the vector path's header checks are tested and fuzzed against.
inline bool is_plain_ipv4(const uint8_t* f, uint32_t len) {
  if (len < 34 || f[12] != 0x08 || f[13] != 0x00 || f[14] != 0x45 || ((f[20] << 8 | f[21]) & 0x3fff)) return false;
  const uint32_t tot = uint32_t(f[16] << 8 | f[17]);
  uint32_t need = 0;  // the transport header the vector path reads
  switch (f[23]) {
    case 6: need = 20; break;
    case 17: case 136: case 1: case 58: need = 8; break;
    case 132: need = 12; break;
    default: break;
  }
  return tot >= 20 + need && tot + 14 <= len;
}

// Keys the packets of the batch (one metadata for all) that the fast plan covers, eight
// at a time with AVX-512 (decision_cache_avx512.cc); returns them as a bit set.  Exactly
// the short keys (rows and lines) that make_keys' one-packet path gives those packets.
// Sets k.plain_ipv4 to the packets that passed the header checks, whatever the plan.
uint32_t fast_keys_avx512(const FastPlan& fp, const PacketBatch& b, LineHash lh, BatchKeys& k);

// Looks up the short keys `todo` in their lines (the first, then the second): a hit
// writes out[i], and its bit in *matched if a rule matched.  Returns the hits.  `tag`:
// the current rule set's.  probe_lines_avx512 (decision_cache_avx512.cc) does the same
// with one vector compare per line; the CPU must have AVX-512.
inline uint32_t probe_lines(const Line* lines, const BatchKeys& k, uint32_t todo, uint64_t tag, Decision* out,
                            uint32_t* matched) {
  uint32_t hit = 0, mt = 0;
  for (; todo; todo &= todo - 1) {
    const uint32_t i = uint32_t(std::countr_zero(todo));
    const uint64_t* r = k.row[i];
    for (int l = 0; l < 2; ++l)
      for (const uint64_t* e : lines[k.line[l][i]].e)
        if (!((e[0] ^ r[0]) | (e[1] ^ r[1]) | (e[2] ^ r[2]) | ((e[3] ^ tag << 48) & kTagMask))) {
          store_decision(&out[i], e[3]);
          mt |= uint32_t(uint32_t(e[3]) != kNoRule) << i;
          hit |= 1u << i;
          l = 2;
          break;
        }
  }
  *matched |= mt;
  return hit;
}
uint32_t probe_lines_avx512(const Line* lines, const BatchKeys& k, uint32_t todo, uint64_t tag, Decision* out,
                            uint32_t* matched);

// PacketBatch::memo before the decisions: the keyed packets of a memo shape whose
// protocol the switch parses as this classifier does.
inline uint32_t memo_bits(const Plan& plan, const PacketBatch& b, const BatchKeys& k, uint32_t keyed) {
  uint32_t m = 0;
  for (; keyed; keyed &= keyed - 1) {
    const uint32_t i = uint32_t(std::countr_zero(keyed));
    const uint64_t header = (k.short_keys >> i & 1) ? k.row[i][0] : k.w[0][i];
    const uint32_t shape = uint32_t(header >> 22) & (kShapes - 1);
    m |= uint32_t((plan.memo_shapes >> shape & 1) && memo_proto(b.data[i][23])) << i;
  }
  return m;
}

// Bit i: out[i] names a rule.
inline uint32_t matched_bits(const Decision* out, uint32_t n) {
  uint32_t m = 0;
  for (uint32_t i = 0; i < n; ++i) m |= uint32_t(out[i].matched()) << i;
  return m;
}

class DecisionCache {
 public:
  // Room for `flows` flows: 2 * flows lines (rounded up to a power of two) and
  // buckets * kWays >= 2 * flows.
  explicit DecisionCache(uint32_t flows);
  ~DecisionCache();
  DecisionCache(const DecisionCache&) = delete;
  DecisionCache& operator=(const DecisionCache&) = delete;

  // Classifies a batch: hits from the cache, the rest through
  // `classify_misses(refs, m, out)`, which must classify with the snapshot the
  // plan and `gen` belong to.  Returns the packets a rule matched as a bit set.
  template <class Fn>
  uint32_t classify(const Plan& plan, uint64_t gen, const PacketBatch& b, Decision* out, Fn&& classify_misses);

  uint32_t capacity() const { return nbuckets_ * kWays; }
  std::atomic<uint64_t> hits{0}, misses{0}, bypassed{0};

  // Fills the keys of the packets the plan caches (rows and lines of short keys; words,
  // buckets and signatures of the others) and returns them as a bit set; `vector`: the
  // packets the fast plan covers through fast_keys_avx512 (the CPU must have AVX-512),
  // the others one at a time.
  uint32_t make_keys(const Plan& plan, const PacketBatch& b, BatchKeys& k, bool vector) const;

 private:
  // Writes packet i's key (the header word and the shape's words) and returns the number
  // of words after the header word; -1 if the packet has no shape the plan caches.
  static int make_key(const Plan& plan, const PacketRef& p, BatchKeys& k, uint32_t i);
  static uint64_t hash(const BatchKeys& k, uint32_t i, int nwords) {
    uint64_t h = k.w[0][i] * kHashMul[0];
    for (int w = 1; w <= nwords; ++w) h += k.w[w][i] * kHashMul[w];
    // Buckets come from the high bits; the high half folded into the low one makes the
    // signature (low bits) depend on every key bit, not only on the words' low halves.
    return h ^ (h >> 32);
  }
  // A rule set this cache has not seen: the next tag (clearing the lines when the tags
  // run out).
  void new_tag(uint64_t gen);
  // Inserts short key i with its decision, under the current tag.
  void insert_short(const BatchKeys& k, uint32_t i, const Decision& d);
  // Inserts long key i with its decision, under generation `gen`.
  void insert_long(const BatchKeys& k, uint32_t i, const Decision& d, uint64_t gen);
  bool vector_keys_ = false;  // the CPU has AVX-512

  // A flood of new flows: after kColdBatches batches in a row where at most a quarter of
  // the packets hit (then the lookups and insertions cost about what the hits save), only
  // one batch in kColdBatches is looked up (and inserted); the others go straight to the
  // tables, so a trace where every packet is new pays almost nothing for the cache.  A
  // batch with more hits ends it.
  static constexpr uint32_t kColdBatches = 16;
  uint32_t cold_ = 0, skip_ = 0;

  uint32_t nlines_;
  LineHash line_hash_;
  Line* lines_;
  uint64_t tag_ = 1, tag_gen_ = 0;  // the current tag, and the generation it stands for
  uint32_t victim_ = 0;             // which entry of a full first line a new key replaces
  uint32_t nbuckets_, bucket_shift_;
  Bucket* buckets_;
  Slot* slots_;
};

// ---- the key ----

inline uint32_t be16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return __builtin_bswap16(v);
}

// The transport class of an IP protocol and the transport header bytes the
// parser needs to find it whole (parser.cc: parse_l4).
inline L4Class l4_class(uint32_t proto, uint32_t* need) {
  switch (proto) {
    case 6:
      *need = 20;
      return kTcp;
    case 17:
    case 136:
      *need = 8;
      return kPorts;
    case 132:
      *need = 12;
      return kPorts;
    case 1:
    case 58:
      *need = 8;
      return kIcmp;
    default:
      *need = 0;
      return kOther;
  }
}

// IPv6 next-header values the parser walks or stops at as extension headers.
inline bool ipv6_ext_header(uint32_t nh) {
  switch (nh) {
    case 0:
    case 43:
    case 44:
    case 50:
    case 51:
    case 60:
    case 135:
    case 139:
    case 140:
      return true;
    default:
      return false;
  }
}

// Writes the packet's key (the header word and the shape's words) and returns the
// shape's number of words, or -1 if the packet has no shape the plan caches.  The
// conditions are exactly those under which parse_frame() finds the shape whole, with no
// error flag.
__attribute__((always_inline)) inline int DecisionCache::make_key(const Plan& plan, const PacketRef& p,
                                                                  BatchKeys& k, uint32_t i) {
  const uint8_t* d = p.data;
  const uint32_t len = p.len;
  if (len < 34) return -1;
  uint32_t et = be16(d + 12), o = 14, shape = 0;
  if (et == 0x8100 || et == 0x88a8 || et == 0x9100) {
    if (len < 38) return -1;
    et = be16(d + 16);
    o = 18;
    shape = 8;
  }
  uint32_t proto, l4len;
  if (et == 0x0800) {
    if (d[o] != 0x45) return -1;
    const uint32_t tot = be16(d + o + 2);
    if (tot < 20 || tot > len - o || (be16(d + o + 6) & 0x3fff)) return -1;
    proto = d[o + 9];
    l4len = tot - 20;
  } else if (et == 0x86dd) {
    if (len < o + 40 || (d[o] >> 4) != 6) return -1;
    l4len = be16(d + o + 4);
    proto = d[o + 6];
    if (l4len > len - o - 40 || ipv6_ext_header(proto)) return -1;
    shape |= 4;
  } else {
    return -1;
  }
  uint32_t need;
  shape |= l4_class(proto, &need);
  if (l4len < need) return -1;
  const Shape& sh = plan.shape[shape];
  if (!sh.enabled || len < sh.end) return -1;
  uint64_t cls = 0;
  if (sh.raw_len) {
    cls = len;
  } else if (!sh.bounds.empty()) {
    const auto& b = sh.bounds;
    if (b.size() <= 8) {
      for (uint32_t v : b) cls += v <= len;
    } else {
      cls = uint64_t(std::upper_bound(b.begin(), b.end(), len) - b.begin());
    }
  }
  const uint64_t vm = sh.uses_vm ? p.meta.vm : 0;
  if (p.meta.adapter >= (1u << 20) || vm >= (1u << 22)) return -1;
  k.w[0][i] = uint64_t(p.meta.adapter) | uint64_t(p.meta.direction) << 20 | uint64_t(shape) << 22 | cls << 26 | vm << 42;
  const int nw = sh.nwords;
  for (int w = 0; w < nw; ++w) {
    uint64_t v;
    std::memcpy(&v, d + sh.off[w], 8);
    k.w[w + 1][i] = v & sh.mask[w];
  }
  for (int w = nw; w < 2; ++w) k.w[w + 1][i] = 0;  // a short key: zeros after its words
  return nw;
}

inline uint32_t DecisionCache::make_keys(const Plan& plan, const PacketBatch& b, BatchKeys& k, bool vector) const {
  k.plain_ipv4 = 0;
  const uint32_t fast = vector && plan.fast.enabled && !b.metas ? fast_keys_avx512(plan.fast, b, line_hash_, k) : 0;
  uint32_t keyed = fast;
  k.short_keys = fast;
  for (uint32_t rest = ~fast & (b.n == kMaxBatch ? ~0u : (1u << b.n) - 1); rest; rest &= rest - 1) {
    const uint32_t i = uint32_t(std::countr_zero(rest));
    const int nw = make_key(plan, b.ref(i), k, i);
    if (nw < 0) continue;
    keyed |= 1u << i;
    k.nwords[i] = uint8_t(nw);
    const uint64_t h = hash(k, i, nw);
    if (nw <= 2) {
      k.short_keys |= 1u << i;
      k.row[i][0] = k.w[0][i];
      k.row[i][1] = k.w[1][i];
      k.row[i][2] = k.w[2][i];
      k.row[i][3] = 0;
      k.line[0][i] = line_hash_.first(h);
      k.line[1][i] = line_hash_.second(h);
    } else {
      k.bucket[i] = uint32_t(h >> bucket_shift_);
      k.sig[i] = uint32_t(h) | 1u;
    }
  }
  return keyed;
}

// ---- the batch loop ----

template <class Fn>
uint32_t DecisionCache::classify(const Plan& plan, uint64_t gen, const PacketBatch& b, Decision* out,
                                 Fn&& classify_misses) {
  const uint32_t n = b.n;
  if (!plan.enabled || skip_) {
    skip_ -= skip_ > 0;
    PacketRef refs[kMaxBatch];
    for (uint32_t i = 0; i < n; ++i) refs[i] = b.ref(i);
    classify_misses(refs, n, out);
    bypassed.store(bypassed.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
    return matched_bits(out, n);
  }
  if (gen != tag_gen_) new_tag(gen);
  BatchKeys keys;
  const uint32_t cacheable = make_keys(plan, b, keys, vector_keys_);  // bit i: packet i has a key
  if (b.plain_ipv4) *b.plain_ipv4 = keys.plain_ipv4;
  if (b.memo) *b.memo = plan.memo_shapes ? memo_bits(plan, b, keys, cacheable) : 0;
  const uint32_t shorts = keys.short_keys, longs = cacheable & ~shorts;
  const uint32_t* const bucket = keys.bucket;
  const uint32_t* const sig = keys.sig;
  for (uint32_t m = shorts; m; m &= m - 1) __builtin_prefetch(&lines_[keys.line[0][std::countr_zero(m)]]);
  if (cold_)
    for (uint32_t m = shorts; m; m &= m - 1) __builtin_prefetch(&lines_[keys.line[1][std::countr_zero(m)]]);
  for (uint32_t m = longs; m; m &= m - 1) __builtin_prefetch(&buckets_[bucket[std::countr_zero(m)]]);
  uint32_t matched = 0;
  uint32_t hit = shorts ? (vector_keys_ ? probe_lines_avx512 : probe_lines)(lines_, keys, shorts, tag_, out, &matched)
                        : 0;
  // Long keys: which way's signature matches, once the bucket is in cache; prefetch that
  // slot.
  int8_t way[kMaxBatch];
  for (uint32_t todo = longs; todo; todo &= todo - 1) {
    const uint32_t i = uint32_t(std::countr_zero(todo));
    way[i] = -1;
    const Bucket& b = buckets_[bucket[i]];
    if (b.gen != gen) continue;
    const __m128i s = _mm_set1_epi32(int(sig[i]));
    const __m128i lo = _mm_cmpeq_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(&b.sig[0])), s);
    const __m128i hi = _mm_cmpeq_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(&b.sig[4])), s);
    const uint32_t m = uint32_t(_mm_movemask_ps(_mm_castsi128_ps(lo))) | uint32_t(_mm_movemask_ps(_mm_castsi128_ps(hi)))
                                                                             << 4;
    if (!m) continue;
    way[i] = int8_t(std::countr_zero(m));  // insertion never leaves two ways with one signature
    __builtin_prefetch(&slots_[size_t(bucket[i]) * kWays + uint32_t(way[i])]);
  }
  for (uint32_t todo = longs; todo; todo &= todo - 1) {
    const uint32_t i = uint32_t(std::countr_zero(todo));
    if (way[i] < 0) continue;
    const Slot& s = slots_[size_t(bucket[i]) * kWays + uint32_t(way[i])];
    uint64_t diff = 0;
    for (int k = 0; k <= keys.nwords[i]; ++k) diff |= s.key[k] ^ keys.w[k][i];
    if (diff) continue;
    out[i] = Decision{s.rule_id, RuleKind(s.kind), Action(s.action)};
    matched |= uint32_t(out[i].matched()) << i;
    hit |= 1u << i;
  }
  const uint32_t all = n == kMaxBatch ? ~0u : (1u << n) - 1;
  uint32_t nmiss = 0;
  if (const uint32_t miss = all & ~hit) {
    uint8_t miss_idx[kMaxBatch];
    PacketRef miss_refs[kMaxBatch];
    Decision miss_out[kMaxBatch];
    for (uint32_t m = miss; m; m &= m - 1) {
      miss_idx[nmiss] = uint8_t(std::countr_zero(m));
      miss_refs[nmiss] = b.ref(miss_idx[nmiss]);
      ++nmiss;
    }
    classify_misses(miss_refs, nmiss, miss_out);
    for (uint32_t m = 0; m < nmiss; ++m) {
      const uint32_t i = miss_idx[m];
      out[i] = miss_out[m];
      matched |= uint32_t(out[i].matched()) << i;
      if (shorts >> i & 1) insert_short(keys, i, out[i]);
      else if (longs >> i & 1) insert_long(keys, i, out[i], gen);
    }
  }
  const uint32_t nhit = uint32_t(std::popcount(hit));
  cold_ = nhit * 4 > n ? 0 : cold_ + 1;
  if (cold_ >= kColdBatches) skip_ = kColdBatches - 1;
  const uint32_t nbypass = n - uint32_t(std::popcount(cacheable));
  hits.store(hits.load(std::memory_order_relaxed) + nhit, std::memory_order_relaxed);
  misses.store(misses.load(std::memory_order_relaxed) + (nmiss - nbypass), std::memory_order_relaxed);
  if (nbypass) bypassed.store(bypassed.load(std::memory_order_relaxed) + nbypass, std::memory_order_relaxed);
  return matched;
}

}  // namespace vpf::matcher::cache
