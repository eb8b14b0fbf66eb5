// Lays a lowered BPF expression out for the vector evaluator (bpf_vector.h).  Built without
// ISA flags; the evaluator itself is in bpf_vector_avx512.cc.
#include "bpf_vector.h"

#include <algorithm>
#include <vector>

#include "vpf/matcher/isa.h"

namespace vpf::matcher {
namespace {

constexpr unsigned kLanes = 16;
constexpr uint32_t kWindow = 128;   // bytes the evaluator reads
constexpr uint32_t kMaxHeaderLen = 60;  // 4 * 0xf

struct Lane {
  uint16_t load;
  uint32_t mask, lo, hi;
  friend bool operator==(const Lane&, const Lane&) = default;
};

// Every load must be readable from the window; the x + k loads must share their x.
// Returns false if not; sets *msh to the x + k loads' header length offset.
bool loads_fit(const std::vector<BpfLoad>& loads, uint32_t* msh) {
  bool have_msh = false;
  *msh = 0;
  for (const BpfLoad& l : loads) {
    if (l.kind == BpfLoad::Len) continue;
    if (l.kind == BpfLoad::Abs && uint64_t(l.off) + l.size > kWindow) return false;
    if (l.kind == BpfLoad::Ind) {
      if (uint64_t(l.off) + l.size + kMaxHeaderLen > kWindow || l.msh_off >= kWindow) return false;
      if (have_msh && l.msh_off != *msh) return false;
      have_msh = true;
      *msh = l.msh_off;
    }
  }
  return true;
}

// Lane i takes load loads[i]: byte indices, end, the length and x + k lane bits.
void place_load(BpfVector& v, unsigned i, const BpfLoad& l) {
  v.lanes |= uint16_t(1u << i);
  if (l.kind == BpfLoad::Len) {
    v.len_lanes |= uint16_t(1u << i);
    return;
  }
  v.end[i] = l.off + l.size;
  if (l.kind == BpfLoad::Ind) v.ind_lanes |= uint16_t(1u << i);
  // Lane byte b (little-endian) holds packet byte off + size - 1 - b: network order.
  for (uint32_t b = 0; b < l.size; ++b) {
    const unsigned at = 4 * i + b;
    v.idx[at] = uint8_t(l.off + l.size - 1 - b);
    v.used_bytes |= uint64_t(1) << at;
    if (l.kind == BpfLoad::Ind) v.ind_bytes |= uint64_t(1) << at;
  }
}

// True if load `a` in bounds means load `b` is in bounds too (so a conjunction that tests a
// needs no lane for requiring b).
bool implies(const BpfLoad& a, const BpfLoad& b) {
  if (a == b || b.kind == BpfLoad::Len) return true;
  const uint64_t b_end = uint64_t(b.off) + b.size;
  switch (a.kind) {
    case BpfLoad::Abs: return b.kind == BpfLoad::Abs && b_end <= uint64_t(a.off) + a.size;
    case BpfLoad::Ind:
      // In bounds: the header length byte is, and so is everything up to off + size (x >= 0).
      if (b.kind == BpfLoad::Abs) return b_end <= std::max(uint64_t(a.msh_off) + 1, uint64_t(a.off) + a.size);
      return b.msh_off == a.msh_off && b_end <= uint64_t(a.off) + a.size;
    case BpfLoad::Len: return false;
  }
  return false;
}

std::shared_ptr<BpfVector> empty_vector(uint32_t msh) {
  auto v = std::make_shared<BpfVector>();
  std::fill(std::begin(v->idx), std::end(v->idx), uint8_t(0));
  std::fill(std::begin(v->end), std::end(v->end), 0u);
  std::fill(std::begin(v->mask), std::end(v->mask), 0u);
  std::fill(std::begin(v->lo), std::end(v->lo), 0u);
  std::fill(std::begin(v->range), std::end(v->range), ~0u);
  std::fill(std::begin(v->need), std::end(v->need), 0u);
  v->msh_off = uint8_t(msh);
  return v;
}

}  // namespace

std::shared_ptr<const BpfVector> make_bpf_slot_loader(const BpfLoad* slot_load, uint32_t slot_mask) {
  if (!cpu_has_avx512_vbmi() || slot_mask == 0 || slot_mask >> kLanes) return nullptr;
  std::vector<BpfLoad> loads;
  for (uint32_t m = slot_mask; m; m &= m - 1) loads.push_back(slot_load[__builtin_ctz(m)]);
  uint32_t msh = 0;
  if (!loads_fit(loads, &msh)) return nullptr;
  auto v = empty_vector(msh);
  for (uint32_t m = slot_mask; m; m &= m - 1) {
    const unsigned i = unsigned(__builtin_ctz(m));
    place_load(*v, i, slot_load[i]);
    v->mask[i] = ~0u;  // the lane's test: any value, in bounds
  }
  return v;
}

std::shared_ptr<const BpfVector> make_bpf_vector(const BpfLowering& low) {
  if (!low.lowered || !cpu_has_avx512_vbmi()) return nullptr;
  if (low.conjunctions.size() > kLanes) return nullptr;
  uint32_t msh = 0;
  if (!loads_fit(low.loads, &msh)) return nullptr;
  // One lane per distinct test; a load a conjunction needs in bounds but does not test
  // gets a test that always holds.
  std::vector<Lane> lanes;
  std::vector<uint32_t> need;
  auto lane_of = [&](const Lane& t) -> int {
    auto it = std::find(lanes.begin(), lanes.end(), t);
    if (it != lanes.end()) return int(it - lanes.begin());
    if (lanes.size() == kLanes) return -1;
    lanes.push_back(t);
    return int(lanes.size() - 1);
  };
  for (const BpfConjunction& c : low.conjunctions) {
    uint32_t bits = 0;
    for (const BpfTerm& t : c.terms) {
      const int i = lane_of(Lane{t.load, t.mask, t.lo, t.hi});
      if (i < 0) return nullptr;
      bits |= 1u << i;
    }
    for (uint16_t r : c.required) {
      const bool implied = std::any_of(c.terms.begin(), c.terms.end(), [&](const BpfTerm& t) {
        return implies(low.loads.at(t.load), low.loads.at(r));
      });
      if (implied) continue;
      const int i = lane_of(Lane{r, 0, 0, ~0u});
      if (i < 0) return nullptr;
      bits |= 1u << i;
    }
    need.push_back(bits);
  }

  auto v = empty_vector(msh);
  for (size_t j = 0; j < need.size(); ++j) {
    v->need[j] = need[j];
    v->conjunctions |= uint16_t(1u << j);
  }
  if (lanes.size() <= BpfVector::kTableLanes) {
    v->table_bytes.assign(size_t(1) << lanes.size(), 0);
    for (size_t holds = 0; holds < v->table_bytes.size(); ++holds)
      v->table_bytes[holds] = std::any_of(need.begin(), need.end(), [&](uint32_t n) { return (holds & n) == n; });
    v->table = v->table_bytes.data();
  }
  for (size_t i = 0; i < lanes.size(); ++i) {
    const Lane& t = lanes[i];
    place_load(*v, unsigned(i), low.loads.at(t.load));
    v->mask[i] = t.mask;
    v->lo[i] = t.lo;
    v->range[i] = t.hi - t.lo;
    if (t.lo > t.hi) {  // an empty interval: never holds
      v->mask[i] = 0;
      v->lo[i] = 1;
      v->range[i] = 0;
    }
  }
  return v;
}

}  // namespace vpf::matcher
