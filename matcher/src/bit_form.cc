// Building the bit form (bit_form.h).
#include "bit_form.h"

#include <algorithm>
#include <bit>
#include <map>

namespace vpf::matcher {
namespace {

using layout::Entry;
using layout::EntryBlock;
using layout::kTestsPerBlock;

// A test lo <= (v & mask) <= hi: of a source's whole value as an entry makes it, or of a
// chunk's value (at most 16 bits).
struct Test {
  uint32_t mask, lo, hi;
  bool holds(uint32_t u) const { return (u & mask) >= lo && (u & mask) <= hi; }
  friend bool operator==(const Test&, const Test&) = default;
};

struct Term {
  uint32_t entry;
  Test test;
};

void add(EntrySet& s, uint32_t j) { s.w[j / 64] |= uint64_t(1) << (j % 64); }
void drop(EntrySet& s, uint32_t j) { s.w[j / 64] &= ~(uint64_t(1) << (j % 64)); }
bool has(const EntrySet& s, uint32_t j) { return (s.w[j / 64] >> (j % 64)) & 1; }

struct ChunkTerms {
  std::vector<Term> terms;
  unsigned width = 16;            // the chunk's values are below 1 << width
  std::vector<uint32_t> required;  // entries that need the slot's load in bounds
};

// The source of a field's value in a packet, or -1 if the form cannot have it.
int source_of(uint8_t field) {
  if (field >= F_DYN0 && field < F_DYN0 + 16) return field - F_DYN0;
  switch (field) {
    case F_BPF_VALID: return kSrcValid;
    case F_FRAME_LEN: return kSrcLen;
    case F_ADAPTER: return kSrcAdapter;
    case F_DIRECTION: return kSrcDirection;
    case F_VM: return kSrcVm;
    default: return -1;
  }
}

// Bits a source's value can have.
unsigned width_of(int src, const BpfLoad* slot_load) {
  if (src < 16) return slot_load[src].kind == BpfLoad::Len ? 32 : 8u * slot_load[src].size;
  if (src == kSrcValid) return 16;
  if (src == kSrcDirection) return 8;
  return 32;
}

bool splits(uint32_t mask, uint32_t lo, uint32_t hi) {
  return (mask & 0xffff) == 0 || (mask >> 16) == 0 || (lo >> 16) == (hi >> 16);
}

// A test as the entry makes it, on the source's whole value.
struct RawTest {
  uint32_t entry;
  Test t;
};

// Puts one chunk's table and class sets into `f`.  `dead` collects entries that no packet
// can satisfy.  False if the chunk needs too many classes.
bool build_chunk(uint8_t src, uint8_t shift, const ChunkTerms& ct, BitForm& f, EntrySet& dead) {
  std::vector<Test> distinct;
  std::vector<uint32_t> term_id;
  for (const Term& t : ct.terms) {
    auto it = std::find(distinct.begin(), distinct.end(), t.test);
    term_id.push_back(uint32_t(it - distinct.begin()));
    if (it == distinct.end()) distinct.push_back(t.test);
  }
  const uint32_t nvals = 1u << ct.width, words = uint32_t(distinct.size() + 63) / 64;
  std::vector<uint64_t> sig(size_t(nvals) * words, 0);
  for (uint32_t t = 0; t < distinct.size(); ++t)
    for (uint32_t u = 0; u < nvals; ++u)
      if (distinct[t].holds(u)) sig[size_t(u) * words + t / 64] |= uint64_t(1) << (t % 64);
  std::map<std::vector<uint64_t>, uint16_t> classes;
  std::vector<const std::vector<uint64_t>*> class_sig;
  std::vector<uint16_t> table(nvals);
  for (uint32_t u = 0; u < nvals; ++u) {
    std::vector<uint64_t> s(sig.begin() + ptrdiff_t(size_t(u) * words), sig.begin() + ptrdiff_t(size_t(u + 1) * words));
    auto [it, fresh] = classes.try_emplace(std::move(s), uint16_t(classes.size()));
    if (fresh) {
      if (classes.size() > kBitFormMaxClasses) return false;
      class_sig.push_back(&it->first);
    }
    table[u] = it->second;
  }
  auto holds = [&](uint32_t c, uint32_t t) { return ((*class_sig[c])[t / 64] >> (t % 64)) & 1; };
  if (class_sig.size() == 1 && ct.required.empty()) {  // every value alike: nothing to decide
    for (size_t k = 0; k < ct.terms.size(); ++k)
      if (!holds(0, term_id[k])) add(dead, ct.terms[k].entry);
    return true;
  }
  const uint32_t set_base = uint32_t(f.sets.size());
  if (set_base + class_sig.size() + 1 > 65536 || f.chunks.size() == kBitFormMaxChunks) return false;
  f.sets.resize(set_base + class_sig.size(), f.sets[0]);  // sets[0]: every entry
  for (uint32_t c = 0; c < class_sig.size(); ++c)
    for (size_t k = 0; k < ct.terms.size(); ++k)
      if (!holds(c, term_id[k])) drop(f.sets[set_base + c], ct.terms[k].entry);
  const uint32_t class_base = uint32_t(f.class_of.size());
  for (uint16_t c : table) f.class_of.push_back(uint16_t(set_base + c));
  // A load out of bounds reads 0, and its required entries are out.
  uint32_t invalid = class_base;
  if (!ct.required.empty()) {
    EntrySet out = f.sets[f.class_of[class_base]];
    for (uint32_t j : ct.required) drop(out, j);
    invalid = uint32_t(f.class_of.size());
    f.class_of.push_back(uint16_t(f.sets.size()));
    f.sets.push_back(out);
  }
  f.chunks.push_back(BitChunk{src, shift, uint16_t(nvals - 1), class_base, invalid});
  return true;
}

// Tests every entry makes alike become gates (bit_form.h), tested on the whole value in
// the packet's first pass, and leave the chunks; so does the part of the in-bounds bits
// that every entry requires.
void take_gates(std::vector<RawTest>* by_src, uint32_t n, BitForm& f) {
  auto add_gate = [&](int src, const Test& t) {
    const int g = std::popcount(f.gate_lanes);
    if (g == 16) return false;
    f.gate_src[g] = uint32_t(src);
    f.gate_mask[g] = t.mask;
    f.gate_lo[g] = t.lo;
    f.gate_range[g] = t.hi - t.lo;
    f.gate_lanes = uint16_t(f.gate_lanes << 1 | 1);
    return true;
  };
  auto every_entry = [n](const std::vector<RawTest>& ts, auto&& pred) {
    std::vector<bool> seen(n);
    for (const RawTest& r : ts)
      if (pred(r)) seen[r.entry] = true;
    return std::all_of(seen.begin(), seen.end(), [](bool b) { return b; });
  };
  // The in-bounds bits: tests (v & req) == req.
  std::vector<RawTest>& valid = by_src[kSrcValid];
  if (!valid.empty() &&
      std::all_of(valid.begin(), valid.end(), [](const RawTest& r) { return r.t.lo == r.t.mask && r.t.hi == r.t.mask; }) &&
      every_entry(valid, [](const RawTest&) { return true; })) {
    uint32_t common = ~0u;
    std::vector<uint32_t> req(n, 0);
    for (const RawTest& r : valid) req[r.entry] |= r.t.mask;
    for (uint32_t r : req) common &= r;
    if (common && add_gate(kSrcValid, Test{common, common, common})) {
      std::vector<RawTest> rest;
      for (RawTest r : valid) {
        r.t.mask &= ~common;
        r.t.lo = r.t.hi = r.t.mask;
        if (r.t.mask) rest.push_back(r);
      }
      valid = std::move(rest);
    }
  }
  for (int src = 0; src < kSources; ++src) {
    std::vector<RawTest>& ts = by_src[src];
    std::vector<Test> kinds;  // the distinct tests, in first-seen order
    for (const RawTest& r : ts)
      if (std::find(kinds.begin(), kinds.end(), r.t) == kinds.end()) kinds.push_back(r.t);
    for (const Test& k : kinds) {
      auto same = [&](const RawTest& r) { return r.t == k; };
      if (!every_entry(ts, same) || !add_gate(src, k)) continue;
      ts.erase(std::remove_if(ts.begin(), ts.end(), same), ts.end());
    }
  }
}

}  // namespace

size_t BitForm::bytes() const {
  return sizeof(BitForm) + chunks.size() * sizeof(BitChunk) + class_of.size() * sizeof(uint16_t) +
         sets.size() * sizeof(EntrySet) + decision.size() * sizeof(Decision);
}

std::shared_ptr<const BitForm> make_bit_form(const std::vector<const Entry*>& entries, const BpfLoad* slot_load) {
  if (entries.empty() || entries.size() > kBitFormEntries) return nullptr;
  auto f = std::make_shared<BitForm>();
  const uint32_t n = uint32_t(entries.size());
  EntrySet dead{};
  auto kill = [&](uint32_t j) { add(dead, j); };
  // Set 0 holds every entry, and class_of[0] is 0: the lanes of no chunk read them.
  f->sets.emplace_back();
  for (uint32_t j = 0; j < n; ++j) add(f->sets[0], j);
  f->class_of.push_back(0);
  std::vector<RawTest> by_src[kSources];
  for (uint32_t j = 0; j < n; ++j) {
    const Entry* e = entries[j];
    if (e->bpf) return nullptr;
    f->decision.push_back(Decision{e->rule_id, RuleKind(e->kind), Action(e->action)});
    const EntryBlock* blk = e->blocks();
    for (unsigned b = 0; b < e->nblocks; ++b)
      for (int i = 0; i < kTestsPerBlock; ++i) {
        const uint32_t mask = blk[b].mask[i], lo = blk[b].lo[i], hi = blk[b].hi[i];
        if (mask == 0) {  // a constant: 0 in [lo, hi]
          if (lo != 0) kill(j);
          continue;
        }
        const int src = source_of(blk[b].idx[i]);
        if (src < 0) return nullptr;
        by_src[src].push_back(RawTest{j, Test{mask, lo, hi}});
      }
  }
  take_gates(by_src, n, *f);
  for (int src = 0; src < kSources; ++src) {
    if (by_src[src].empty()) continue;
    const unsigned width = width_of(src, slot_load);
    const bool narrow = width <= 16 || std::any_of(by_src[src].begin(), by_src[src].end(),
                                                   [](const RawTest& r) { return !splits(r.t.mask, r.t.lo, r.t.hi); });
    if (narrow && width > 16) f->guard |= 1u << src;
    ChunkTerms low, high;
    low.width = width <= 8 ? 8 : 16;
    for (const RawTest& r : by_src[src]) {
      const Test& t = r.t;
      const uint32_t m_hi = t.mask >> 16, m_lo = t.mask & 0xffff;
      if (narrow || m_hi == 0) {  // the value (or its tested part) is below 0x10000
        if (t.lo > 0xffff) kill(r.entry);
        else low.terms.push_back(Term{r.entry, Test{m_lo, t.lo, std::min<uint32_t>(t.hi, 0xffff)}});
      } else if (m_lo == 0) {  // (v & mask) is a multiple of 0x10000
        const uint64_t clo = (uint64_t(t.lo) + 0xffff) >> 16, chi = t.hi >> 16;
        if (clo > chi) kill(r.entry);
        else high.terms.push_back(Term{r.entry, Test{m_hi, uint32_t(clo), uint32_t(chi)}});
      } else {  // both ends share their high half
        high.terms.push_back(Term{r.entry, Test{m_hi, t.lo >> 16, t.lo >> 16}});
        low.terms.push_back(Term{r.entry, Test{m_lo, t.lo & 0xffff, t.hi & 0xffff}});
      }
    }
    // The in-bounds bit of a slot that has a chunk is tested there (the out-of-bounds class).
    if (src < 16 && (!low.terms.empty() || !high.terms.empty())) {
      ChunkTerms& at = low.terms.empty() ? high : low;
      std::vector<RawTest>& valid = by_src[kSrcValid];
      for (RawTest& r : valid)
        if ((r.t.mask >> src) & 1) {
          at.required.push_back(r.entry);
          r.t.mask &= ~(1u << src);
          r.t.lo = r.t.hi = r.t.mask;
        }
      valid.erase(std::remove_if(valid.begin(), valid.end(), [](const RawTest& r) { return r.t.mask == 0; }), valid.end());
    }
    if ((!low.terms.empty() || !low.required.empty()) && !build_chunk(uint8_t(src), 0, low, *f, dead)) return nullptr;
    if ((!high.terms.empty() || !high.required.empty()) && !build_chunk(uint8_t(src), 16, high, *f, dead))
      return nullptr;
  }
  for (uint32_t j = 0; j < n; ++j)
    if (!has(dead, j)) add(f->all, j);
  // Entries past n are in no set; [kBitFormEntries + 64]: what a packet no entry matches
  // gets (word 8, no bit).
  f->decision.resize(kBitFormEntries + 65);
  for (size_t i = 0; i < f->chunks.size(); ++i) {
    const BitChunk& c = f->chunks[i];
    f->lane_src[i] = c.src;
    f->lane_shift[i] = c.shift;
    f->lane_mask[i] = c.idx_mask;
    f->lane_base[i] = c.class_base;
    f->lane_invalid[i] = c.invalid;
    if (c.src < 16) f->chunk_slots = uint16_t(f->chunk_slots | 1u << c.src);
    f->uses_meta |= c.src > kSrcValid;
  }
  for (int g = 0; g < std::popcount(f->gate_lanes); ++g) f->uses_meta |= f->gate_src[g] > kSrcValid;
  f->uses_meta |= (f->guard >> (kSrcValid + 1)) != 0;
  for (int src = 0; src < kSources; ++src)
    if ((f->guard >> src) & 1) {
      f->guard_src[std::popcount(f->guard_lanes)] = uint32_t(src);
      f->guard_lanes = uint16_t(f->guard_lanes << 1 | 1);
    }
  return f;
}

}  // namespace vpf::matcher
