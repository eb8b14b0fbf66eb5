// The decision cache: plans (writer side) and storage.  See decision_cache.h.
#include "decision_cache.h"

#include <sys/mman.h>

#include <cstdlib>
#include <new>

#include "vpf/matcher/isa.h"

namespace vpf::matcher::cache {

using layout::Entry;
using layout::EntryBlock;
using layout::kTestsPerBlock;

void Usage::count(const Entry* e, int sign) {
  if (e->bpf) jit_entries += uint32_t(sign);
  const EntryBlock* blk = e->blocks();
  for (unsigned b = 0; b < e->nblocks; ++b)
    for (int i = 0; i < kTestsPerBlock; ++i) {
      const uint32_t mask = blk[b].mask[i];
      if (!mask) continue;
      const uint8_t f = blk[b].idx[i];
      if (f >= kFixedFields) {
        slot_entries[f - F_DYN0] += uint32_t(sign);
        uint32_t& c = slot_masks[f - F_DYN0][mask];
        c += uint32_t(sign);
        if (c == 0) slot_masks[f - F_DYN0].erase(mask);
        continue;
      }
      field_entries[f] += uint32_t(sign);
      if (f == F_BPF_VALID) {
        for (uint32_t m = mask; m; m &= m - 1) slot_entries[std::countr_zero(m)] += uint32_t(sign);
        continue;
      }
      if (f != F_FRAME_LEN) continue;
      if (mask != ~0u) {
        raw_len_entries += uint32_t(sign);
        continue;
      }
      // len in [lo, hi] <=> lo <= len and not hi + 1 <= len.
      auto bump = [&](uint32_t v) {
        uint32_t& c = len_bounds[v];
        c += uint32_t(sign);
        if (c == 0) len_bounds.erase(v);
      };
      bump(blk[b].lo[i]);
      if (blk[b].hi[i] != ~0u) bump(blk[b].hi[i] + 1);
    }
}

uint32_t Plan::shapes_enabled() const {
  uint32_t m = 0;
  for (int i = 0; i < kShapes; ++i) m |= uint32_t(enabled && shape[i].enabled) << i;
  return m;
}

namespace {

struct ShapeInfo {
  bool tagged, v6;
  L4Class cls;
  uint32_t l3, l4;
  uint32_t tpid = 0;  // tagged: one of the TPIDs the shape admits, when reasoning about it
  explicit ShapeInfo(int index)
      : tagged(index & 8), v6(index & 4), cls(L4Class(index & 3)), l3(tagged ? 18 : 14), l4(l3 + (v6 ? 40 : 20)) {}
};

constexpr uint32_t kTpids[] = {0x8100, 0x88a8, 0x9100};  // as make_key() admits them

// Bits of a value that every packet of a shape has: (value & mask) == bits.
struct Known {
  uint32_t mask = 0, bits = 0;
};

// The header bytes a shape fixes.
Known known_byte(const ShapeInfo& s, uint32_t off) {
  const uint32_t et = s.v6 ? 0x86dd : 0x0800;
  if (!s.tagged && off == 12) return {0xff, et >> 8};
  if (!s.tagged && off == 13) return {0xff, et & 0xff};
  if (s.tagged && off == 12) return {0xff, s.tpid >> 8};
  if (s.tagged && off == 13) return {0xff, s.tpid & 0xff};
  if (s.tagged && off == 16) return {0xff, et >> 8};
  if (s.tagged && off == 17) return {0xff, et & 0xff};
  if (off == s.l3) return s.v6 ? Known{0xf0, 0x60} : Known{0xff, 0x45};
  if (!s.v6 && off == s.l3 + 6) return {0x3f, 0};  // no fragment
  if (!s.v6 && off == s.l3 + 7) return {0xff, 0};
  if (s.cls == kTcp && off == s.l3 + (s.v6 ? 6 : 9)) return {0xff, 6};
  return {};
}

// A BPF load's known bits under a shape (big-endian bytes).
Known known_load(const ShapeInfo& s, const BpfLoad& l) {
  uint32_t off = l.off;
  if (l.kind == BpfLoad::Len) return {};
  if (l.kind == BpfLoad::Ind) {
    if (s.v6 || l.msh_off != s.l3) return {};
    off += 20;
  }
  Known k;
  k.mask = l.size >= 4 ? 0 : ~0u >> 8 * l.size;  // bits above the loaded bytes are 0
  for (uint32_t i = 0; i < l.size; ++i) {
    const Known b = known_byte(s, off + i);
    k.mask = k.mask << 8 | b.mask;
    k.bits = k.bits << 8 | b.bits;
  }
  return k;
}

// A parsed field's known bits under a shape (parser.cc, for a packet of the
// shape).
Known known_field(const ShapeInfo& s, int f) {
  const bool ports = s.cls == kTcp || s.cls == kPorts;
  switch (f) {
    case F_ETH_TYPE:
      return {~0u, s.v6 ? 0x86ddu : 0x0800u};
    case F_VLAN:
      return s.tagged ? Known{0xf0000fffu, 1u << 28} : Known{~0u, 0};
    case F_IP_VER:
      return {~0u, s.v6 ? 6u : 4u};
    case F_IP_FRAG:
      return {~0u, 0};
    case F_IP_PROTO:
      return s.cls == kTcp ? Known{~0u, 6} : Known{};
    case F_SRC_IP1:
    case F_SRC_IP2:
    case F_SRC_IP3:
    case F_DST_IP1:
    case F_DST_IP2:
    case F_DST_IP3:
      return s.v6 ? Known{} : Known{~0u, 0};
    case F_SRC_PORT:
    case F_DST_PORT:
      return ports ? Known{} : Known{~0u, 0};
    case F_TCP_FLAGS:
      return s.cls == kTcp ? Known{} : Known{~0u, 0};
    case F_ICMP_TYPE:
    case F_ICMP_CODE:
      return s.cls == kIcmp ? Known{} : Known{~0u, 0};
    case F_PARSE_FLAGS:
      return {~0u, PARSE_L2 | PARSE_L3 | (ports ? PARSE_L4 | PARSE_PORTS : 0) | (s.cls == kIcmp ? PARSE_L4 : 0)};
    case F_RESERVED_28:
    case F_RESERVED_29:
    case F_RESERVED_30:
    case F_RESERVED_31:
      return {~0u, 0};
    default:
      return {};
  }
}

// The bytes of one shape that a key must keep: offset -> bit mask of the byte.
class Needed {
 public:
  void add(uint32_t off, uint32_t n, uint8_t mask = 0xff) {
    for (uint32_t i = 0; i < n; ++i) bytes_[off + i] |= mask;
  }
  // Covers the bytes with at most kWords 8-byte words; false if they need more.
  bool place(Shape* sh) const {
    int w = -1;
    uint32_t end = 0;
    for (const auto& [off, mask] : bytes_) {
      if (w < 0 || off >= sh->off[w] + 8u) {
        if (++w == kWords || off > 0xffff - 8) return false;
        sh->off[w] = uint16_t(off);
        end = std::max(end, off + 8);
      }
      sh->mask[w] |= uint64_t(mask) << 8 * (off - sh->off[w]);
    }
    sh->end = uint16_t(end);
    sh->nwords = uint8_t(w + 1);
    return true;
  }

 private:
  std::map<uint32_t, uint8_t> bytes_;
};

// Fills the shape's plan; false if the shape cannot be cached under these
// rules.
bool plan_shape(int index, const Usage& u, const BpfLoad* slot_load, Shape* sh) {
  const ShapeInfo s(index);
  if (u.jit_entries) return false;
  const uint32_t o = s.l3, l4 = s.l4;
  Needed need;
  // What the shape leaves open of what defines it: the TPID of a tagged frame (three
  // are admitted) and the protocol of every class but TCP.  The ethertype, the IP
  // version (and the IPv4 IHL) and TCP's protocol number are constants of the shape,
  // which the header word holds.
  if (s.tagged) need.add(12, 2);
  if (s.cls != kTcp) need.add(o + (s.v6 ? 6 : 9), 1);
  auto tested = [&](int f) { return u.field_entries[f] > 0; };
  if (tested(F_ETH_DST_HI) || tested(F_ETH_DST_LO)) need.add(0, 6);
  if (tested(F_ETH_SRC_HI) || tested(F_ETH_SRC_LO)) need.add(6, 6);
  if (tested(F_VLAN) && s.tagged) {
    need.add(14, 1, 0x0f);
    need.add(15, 1);
  }
  for (int w = 0; w < 4; ++w) {
    if (s.v6) {
      if (tested(F_SRC_IP0 + w)) need.add(o + 8 + 4 * w, 4);
      if (tested(F_DST_IP0 + w)) need.add(o + 24 + 4 * w, 4);
    } else if (w == 0) {
      if (tested(F_SRC_IP0)) need.add(o + 12, 4);
      if (tested(F_DST_IP0)) need.add(o + 16, 4);
    }
  }
  if (s.cls == kTcp || s.cls == kPorts) {
    if (tested(F_SRC_PORT)) need.add(l4, 2);
    if (tested(F_DST_PORT)) need.add(l4 + 2, 2);
  }
  if (s.cls == kTcp && tested(F_TCP_FLAGS)) need.add(l4 + 13, 1);
  if (s.cls == kIcmp) {
    if (tested(F_ICMP_TYPE)) need.add(l4, 1);
    if (tested(F_ICMP_CODE)) need.add(l4 + 1, 1);
  }
  sh->raw_len = u.raw_len_entries > 0 || u.len_bounds.size() > 0xffff;
  uint32_t loads_end = 0;  // every load the entries test or require lies within the frame
  for (int i = 0; i < kDynamicSlots; ++i) {
    if (!u.slot_entries[i]) continue;
    const BpfLoad& l = slot_load[i];
    if (l.kind == BpfLoad::Len) {
      sh->raw_len = true;  // the packet length itself is tested
      continue;
    }
    // x = 4 * (byte & 0xf) is 20 only when the byte is this shape's IPv4 IHL byte.
    if (l.kind == BpfLoad::Ind && (s.v6 || l.msh_off != o)) return false;
    const uint32_t at = l.kind == BpfLoad::Ind ? 20 + l.off : l.off;
    // The bits the tests look at, less those every packet of the shape has the same.
    uint32_t tested = 0;
    for (const auto& [m, n] : u.slot_masks[i]) tested |= m;
    tested &= ~known_load(s, l).mask;
    for (uint32_t b = 0; b < l.size; ++b) {
      const uint8_t byte_mask = uint8_t(tested >> 8 * (l.size - 1 - b));
      if (byte_mask) need.add(at + b, 1, byte_mask);
    }
    loads_end = std::max(loads_end, at + l.size);
  }
  sh->uses_vm = tested(F_VM);
  if (!sh->raw_len)
    for (const auto& [v, n] : u.len_bounds) sh->bounds.push_back(v);
  if (!need.place(sh) || loads_end > 0xffff) return false;
  // A packet too short for a load is decided apart (its load is invalid): only frames
  // holding every load are keyed.
  sh->end = uint16_t(std::max<uint32_t>(sh->end, loads_end));
  return true;
}

// False if a test of the entry fails on every packet of the shape.
bool can_match(const Entry* e, const BpfLoad* slot_load, const ShapeInfo& s) {
  bool dead = false;
  const EntryBlock* blk = e->blocks();
  for (unsigned b = 0; b < e->nblocks && !dead; ++b)
    for (int i = 0; i < kTestsPerBlock && !dead; ++i) {
      const uint32_t mask = blk[b].mask[i];
      if (!mask) continue;
      const uint8_t f = blk[b].idx[i];
      const Known k = f >= kFixedFields ? known_load(s, slot_load[f - F_DYN0]) : known_field(s, f);
      if ((mask & k.mask) != mask) continue;  // depends on bits the shape leaves open
      const uint32_t v = k.bits & mask;
      dead = v < blk[b].lo[i] || v > blk[b].hi[i];
    }
  return !dead;
}

}  // namespace

uint32_t live_shapes(const Entry* e, const BpfLoad* slot_load) {
  uint32_t live = 0;
  for (int index = 0; index < kShapes; ++index) {
    ShapeInfo s(index);
    bool can = false;
    if (!s.tagged) {
      can = can_match(e, slot_load, s);
    } else {
      for (uint32_t t : kTpids) {
        s.tpid = t;
        can = can || can_match(e, slot_load, s);
      }
    }
    if (can) live |= 1u << index;
  }
  return live;
}

Plan make_plan(const Usage* per_shape, const BpfLoad* slot_load) {
  Plan p;
  for (int i = 0; i < kShapes; ++i) {
    Shape sh;
    if (plan_shape(i, per_shape[i], slot_load, &sh)) {
      sh.enabled = true;
      p.shape[i] = std::move(sh);
      p.enabled = true;
    }
  }
  make_fast_plan(&p);
  p.memo_shapes = memo_shapes(p);
  return p;
}

namespace {

// The bits of byte `off` of an untagged IPv4 frame with a 20-byte header and transport
// class `l4` that a switch's exact flow key determines: the Ethernet addresses and type,
// the IP version and header length (the switch checks byte 14 of the later packets),
// TOS, the fragment bits (all 0: not a fragment; the DF and reserved bits are not in the
// key), TTL, protocol and addresses, and the transport fields the switch parses: TCP
// ports and flags, UDP and SCTP ports, ICMP type and code.  Not the total length,
// identification, checksums or payload.
uint32_t flow_key_bits(uint32_t off, int l4) {
  if (off < 16 || off == 21 || off == 22 || off == 23 || (off >= 26 && off < 34)) return 0xff;
  if (off == 20) return 0x3f;
  if (off < 34) return 0;  // the total length, identification and checksum
  switch (l4) {
    case kTcp:
      if (off < 38 || off == 47) return 0xff;
      return off == 46 ? 0x0f : 0;
    case kPorts:
      return off < 38 ? 0xff : 0;
    case kIcmp:
      return off < 36 ? 0xff : 0;
    default:
      return 0;
  }
}

}  // namespace

uint32_t memo_shapes(const Plan& p) {
  uint32_t bits = 0;
  for (int i = 0; i < 4; ++i) {  // untagged IPv4: shape index = transport class
    const Shape& sh = p.shape[i];
    if (!p.enabled || !sh.enabled || sh.raw_len || !sh.bounds.empty()) continue;
    bool ok = true;
    for (int w = 0; w < sh.nwords && ok; ++w)
      for (uint32_t byte = 0; byte < 8 && ok; ++byte) {
        const uint32_t m = uint32_t(sh.mask[w] >> (8 * byte)) & 0xff;
        ok = !(m & ~flow_key_bits(sh.off[w] + byte, i));
      }
    bits |= uint32_t(ok) << i;
  }
  return bits;
}

void make_fast_plan(Plan* p) {
  FastPlan f;
  for (uint32_t proto = 0; proto < 256; ++proto) {
    uint32_t need;
    f.shape_of[proto] = l4_class(proto, &need);
  }
  for (int i = 0; i < 4; ++i) {  // untagged IPv4: shape index = transport class
    const Shape& sh = p->shape[i];
    if (!p->enabled || !sh.enabled || sh.nwords > 2 || sh.raw_len || !sh.bounds.empty()) continue;
    f.enabled = true;
    f.ok[i] = 1;
    f.end[i] = sh.end;
    f.uses_vm[i] = sh.uses_vm ? ~uint64_t(0) : 0;
    for (int w = 0; w < sh.nwords; ++w) {
      f.off[w][i] = sh.off[w];
      f.mask[w][i] = sh.mask[w];
    }
  }
  p->fast = f;
}

namespace {

// Memory for the cache, on 2 MiB boundaries and marked for transparent huge pages where
// the kernel offers them: a lookup touches two random lines, and with 4 KiB pages most
// of them would also miss the TLB.
void* huge_alloc(size_t bytes) {
  constexpr size_t kHuge = size_t(2) << 20;
  const size_t align = bytes >= kHuge ? kHuge : 64;
  bytes = (bytes + align - 1) / align * align;
  void* p = std::aligned_alloc(align, bytes);
  if (p && align == kHuge) madvise(p, bytes, MADV_HUGEPAGE);  // advice only: failure is fine
  return p;
}

}  // namespace

DecisionCache::DecisionCache(uint32_t flows) {
  uint32_t lines = 64, line_bits = 6;
  while (lines < 2 * uint64_t(flows) && lines < (1u << 25)) lines *= 2, ++line_bits;
  nlines_ = lines;
  line_hash_ = LineHash(line_bits);
  uint32_t buckets = 64;
  while (uint64_t(buckets) * kWays < 2 * uint64_t(flows) && buckets < (1u << 24)) buckets *= 2;
  nbuckets_ = buckets;
  bucket_shift_ = 64 - uint32_t(std::countr_zero(buckets));
  lines_ = static_cast<Line*>(huge_alloc(sizeof(Line) * lines));
  buckets_ = static_cast<Bucket*>(huge_alloc(sizeof(Bucket) * buckets));
  slots_ = static_cast<Slot*>(huge_alloc(sizeof(Slot) * buckets * kWays));
  if (!lines_ || !buckets_ || !slots_) {
    std::free(lines_);
    std::free(buckets_);
    std::free(slots_);
    throw std::bad_alloc();
  }
  // A slot is read only after its signature matched in a bucket of the current
  // generation, so only the buckets and the lines need clearing.
  std::memset(static_cast<void*>(lines_), 0, sizeof(Line) * lines);
  std::memset(static_cast<void*>(buckets_), 0, sizeof(Bucket) * buckets);
  vector_keys_ = isa_supported(Isa::Avx512);
}

DecisionCache::~DecisionCache() {
  std::free(lines_);
  std::free(buckets_);
  std::free(slots_);
}

void DecisionCache::new_tag(uint64_t gen) {
  tag_gen_ = gen;
  if (++tag_ > 0xffff) {  // every tag taken: entries of old rule sets would look current
    std::memset(static_cast<void*>(lines_), 0, sizeof(Line) * nlines_);
    tag_ = 1;
  }
}

void DecisionCache::insert_short(const BatchKeys& k, uint32_t i, const Decision& d) {
  const uint64_t* r = k.row[i];
  const uint64_t entry[4] = {r[0], r[1], r[2], pack_decision(d, tag_)};
  const auto put = [&](uint64_t* e) { std::memcpy(e, entry, sizeof entry); };
  const auto is_free = [&](const uint64_t* e) { return e[3] >> 48 != tag_; };
  Line* const l[2] = {&lines_[k.line[0][i]], &lines_[k.line[1][i]]};
  // The first line, then the second if the first is full (entries are freed only all at
  // once, by a new tag, so a key in its second line means its first was full): the key
  // already there (two packets of one new flow in a batch), else a free entry.
  for (Line* x : l) {
    uint64_t* free = nullptr;
    for (uint64_t* e : x->e) {
      if (is_free(e)) {
        if (!free) free = e;
      } else if (e[0] == r[0] && e[1] == r[1] && e[2] == r[2]) {
        return put(e);
      }
    }
    if (free) return put(free);
  }
  // Both lines full: one entry of the first line gives way (moving an entry to its other
  // line was tried: in a flood of new flows it reads two more lines per insertion).
  victim_ ^= 1;
  put(l[0]->e[victim_]);
}

void DecisionCache::insert_long(const BatchKeys& k, uint32_t i, const Decision& d, uint64_t gen) {
  Bucket& b = buckets_[k.bucket[i]];
  if (b.gen != gen) {
    std::memset(&b, 0, sizeof b);
    b.gen = gen;
  }
  // The way holding this signature already (one signature, one way), else a free one,
  // else the next in turn.
  int way = -1;
  for (int w = 0; w < kWays && way < 0; ++w)
    if (b.sig[w] == k.sig[i]) way = w;
  for (int w = 0; w < kWays && way < 0; ++w)
    if (b.sig[w] == 0) way = w;
  if (way < 0) way = int(b.next++ % kWays);
  Slot& s = slots_[size_t(k.bucket[i]) * kWays + uint32_t(way)];
  for (int w = 0; w <= k.nwords[i]; ++w) s.key[w] = k.w[w][i];
  s.rule_id = d.rule_id;
  s.kind = uint8_t(d.kind);
  s.action = uint8_t(d.action);
  b.sig[way] = k.sig[i];
}

}  // namespace vpf::matcher::cache
