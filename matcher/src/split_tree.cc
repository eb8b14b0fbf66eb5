// The split tree's builder: see split_tree.h.
#include "split_tree.h"

#include <algorithm>
#include <bit>
#include <functional>

namespace vpf::matcher::tree {

using layout::Entry;
using layout::EntryBlock;
using layout::kTestsPerBlock;

namespace {
// True if m is ones from the top, then zeros (0 is: no bits).
bool is_prefix(uint32_t m) { return std::countl_one(m) + std::countr_zero(m) == 32; }
}  // namespace

Box entry_box(const Entry* e) {
  Box b;
  std::fill(std::begin(b.lo), std::end(b.lo), 0u);
  std::fill(std::begin(b.hi), std::end(b.hi), ~0u);
  const EntryBlock* blk = e->blocks();
  for (unsigned k = 0; k < e->nblocks; ++k) {
    for (int i = 0; i < kTestsPerBlock; ++i) {
      const uint32_t m = blk[k].mask[i];
      if (m == 0 || !is_prefix(m)) continue;  // not a prefix
      // (v & m) in [lo, hi] with m a prefix and lo a multiple of its step:
      // v in [lo, (hi & m) | ~m].
      const uint8_t f = blk[k].idx[i];
      b.lo[f] = std::max(b.lo[f], blk[k].lo[i]);
      b.hi[f] = std::min(b.hi[f], (blk[k].hi[i] & m) | ~m);
    }
  }
  return b;
}

bool box_is_exact(const Entry* e, const uint8_t* box_field) {
  if (e->bpf) return false;
  const EntryBlock* blk = e->blocks();
  for (unsigned k = 0; k < e->nblocks; ++k) {
    for (int i = 0; i < kTestsPerBlock; ++i) {
      const uint32_t m = blk[k].mask[i];
      if (m == 0) {
        if (blk[k].lo[i] != 0) return false;  // a lane that no value passes
        continue;                              // an unused lane
      }
      if (!is_prefix(m) || (blk[k].lo[i] & ~m) != 0) return false;
      if (std::find(box_field, box_field + layout::kBoxFields, blk[k].idx[i]) == box_field + layout::kBoxFields)
        return false;
    }
  }
  return true;
}

namespace {

// Buffers of split_on, kept across its calls (a build makes millions of them).
struct SplitScratch {
  std::vector<uint32_t> a, b, p, tmp, upto, before;
};

struct Ctx {
  uint32_t n = 0;
  std::vector<uint8_t> dims;     // fields some entry narrows
  std::vector<uint32_t> lo, hi;  // [d * n + entry]
  std::vector<uint32_t> item;    // [entry]: its leaf item (layout::kItemExact | entry)
  Built out;
  int64_t budget = 0;  // copies left
  bool exhausted = false;  // a split was refused for want of copies: the tree is declined
  size_t leaf = kLeafEntries;  // entries a leaf may hold in the tree being built
  SplitScratch scratch;
};

struct Split {
  bool ok = false;
  uint32_t dim = 0;
  uint32_t ncuts = 0;
  uint32_t cut[7] = {};
  size_t max_child = 0, sum = 0;
};

// One least-significant-digit radix pass per digit of `bits` bits; a digit that every value
// shares is skipped.
template <int Bits>
void radix_sort(std::vector<uint32_t>& v, std::vector<uint32_t>& tmp) {
  constexpr uint32_t kDigits = 1u << Bits;
  tmp.resize(v.size());
  for (int shift = 0; shift < 32; shift += Bits) {
    uint32_t count[kDigits] = {};
    for (uint32_t x : v) ++count[(x >> shift) & (kDigits - 1)];
    if (count[(v[0] >> shift) & (kDigits - 1)] == v.size()) continue;  // one digit: already in order
    uint32_t at = 0;
    for (uint32_t& k : count) {
      const uint32_t c = k;
      k = at;
      at += c;
    }
    for (uint32_t x : v) tmp[count[(x >> shift) & (kDigits - 1)]++] = x;
    v.swap(tmp);
  }
}

// Sorts 32-bit values: std::sort for a few, radix sorts above (8-bit digits, then 11-bit
// digits once the array dwarfs their counters).
void sort_values(std::vector<uint32_t>& v, std::vector<uint32_t>& tmp) {
  if (v.size() < 64) std::sort(v.begin(), v.end());
  else if (v.size() < 4096) radix_sort<8>(v, tmp);
  else radix_sort<11>(v, tmp);
}

// The best split of `ids` on dimension d inside [rlo, rhi]: the fewest entries in the
// largest child, with at most 8 children.
Split split_on(const Ctx& c, const std::vector<uint32_t>& ids, uint32_t d, uint32_t rlo, uint32_t rhi,
               SplitScratch& w) {
  Split best;
  const size_t n = ids.size();
  std::vector<uint32_t>&a = w.a, &b = w.b, &p = w.p, &tmp = w.tmp;
  a.resize(n);
  b.resize(n);
  p.clear();
  bool narrows = false;
  for (size_t k = 0; k < n; ++k) {
    a[k] = std::max(c.lo[size_t(d) * c.n + ids[k]], rlo);
    b[k] = std::min(c.hi[size_t(d) * c.n + ids[k]], rhi);
    narrows = narrows || a[k] > rlo || b[k] < rhi;
  }
  if (!narrows) return best;
  sort_values(a, tmp);
  sort_values(b, tmp);
  // The cut points, sorted and distinct: starts above rlo (a suffix of a) merged with the
  // values just past ends below rhi (a prefix of b).
  p.reserve(2 * n);
  size_t i = size_t(std::upper_bound(a.begin(), a.end(), rlo) - a.begin());
  const size_t jend = size_t(std::lower_bound(b.begin(), b.end(), rhi) - b.begin());
  for (size_t j = 0; i < n || j < jend;) {
    const uint32_t v = j == jend || (i < n && a[i] <= b[j] + 1) ? a[i++] : b[j++] + 1;
    if (p.empty() || p.back() != v) p.push_back(v);
  }
  // Entries overlapping [s, e]: a <= e and b >= s.
  auto count = [&](uint32_t s, uint32_t e) {
    return size_t(std::upper_bound(a.begin(), a.end(), e) - a.begin()) -
           size_t(std::lower_bound(b.begin(), b.end(), s) - b.begin());
  };
  // The plan below only asks for children that start at rlo or at a cut point and end at
  // rhi or just before one: for cut point q, upto[q] entries start before p[q] and
  // before[q] end before it, so such a count is a difference of two of these.
  std::vector<uint32_t>&upto = w.upto, &before = w.before;
  upto.resize(p.size());
  before.resize(p.size());
  for (size_t q = 0, ia = 0, ib = 0; q < p.size(); ++q) {
    while (ia < n && a[ia] < p[q]) ++ia;
    while (ib < n && b[ib] < p[q]) ++ib;
    upto[q] = uint32_t(ia);
    before[q] = uint32_t(ib);
  }
  // Greedy: each child extends to the last cut that keeps it within `bound`.
  auto plan = [&](size_t bound, uint32_t* cuts, uint32_t* ncuts) {
    size_t ended = 0;  // entries that end before the child's start (none at rlo)
    size_t j = 0;      // first cut point above the child's start
    *ncuts = 0;
    while (true) {
      if (n - ended <= bound) return true;  // the child may run to rhi
      if (*ncuts == 7) return false;
      // The furthest cut point q (index >= j) with the child [start, p[q] - 1] in bound.
      size_t lo = j, hi = p.size();  // candidates [lo, hi)
      while (lo < hi) {
        const size_t mid = (lo + hi) / 2;
        if (upto[mid] - ended <= bound) lo = mid + 1;
        else hi = mid;
      }
      if (lo == j) return false;  // even the first elementary interval is too full
      cuts[(*ncuts)++] = p[lo - 1];
      ended = before[lo - 1];
      j = lo;
    }
  };
  size_t lo = 1, hi = n;  // the smallest feasible bound in [lo, hi]; n always is
  while (lo < hi) {
    const size_t mid = (lo + hi) / 2;
    uint32_t cuts[7], k;
    if (plan(mid, cuts, &k)) hi = mid;
    else lo = mid + 1;
  }
  if (lo >= n) return best;  // no child smaller than the node
  best.ok = plan(lo, best.cut, &best.ncuts);
  best.dim = d;
  best.max_child = 0;
  best.sum = 0;
  for (uint32_t g = 0; g <= best.ncuts; ++g) {
    const uint32_t s = g == 0 ? rlo : best.cut[g - 1];
    const uint32_t e = g == best.ncuts ? rhi : best.cut[g] - 1;
    const size_t k = count(s, e);
    best.max_child = std::max(best.max_child, k);
    best.sum += k;
  }
  return best;
}

int32_t make_leaf(Ctx& c, const std::vector<uint32_t>& ids) {
  layout::TreeLeaf lf{uint32_t(c.out.items.size()), uint32_t(ids.size())};
  for (uint32_t id : ids) c.out.items.push_back(c.item[id]);  // ids are in rank order
  c.out.leaves.push_back(lf);
  return ~int32_t(c.out.leaves.size() - 1);
}

int32_t make(Ctx& c, const std::vector<uint32_t>& ids, std::vector<uint32_t>& rlo, std::vector<uint32_t>& rhi,
             uint32_t depth) {
  if (ids.size() <= c.leaf || depth >= kMaxDepth || c.exhausted) return make_leaf(c, ids);
  Split best;
  for (uint32_t d = 0; d < c.dims.size(); ++d) {
    const Split s = split_on(c, ids, d, rlo[d], rhi[d], c.scratch);
    if (!s.ok) continue;
    if (!best.ok || s.max_child < best.max_child || (s.max_child == best.max_child && s.sum < best.sum)) best = s;
  }
  if (best.ok && int64_t(best.sum - ids.size()) > c.budget) c.exhausted = true;
  if (!best.ok || c.exhausted) return make_leaf(c, ids);
  c.budget -= int64_t(best.sum - ids.size());
  c.out.depth = std::max(c.out.depth, depth + 1);
  const size_t at = c.out.nodes.size();
  c.out.nodes.emplace_back();
  layout::TreeNode node{};
  node.field = c.dims[best.dim];
  const uint32_t d = best.dim;
  const uint32_t rl = rlo[d], rh = rhi[d];
  std::vector<uint32_t> child;
  for (uint32_t g = 0; g < 8; ++g) {
    if (g < 7) node.cut[g] = g < best.ncuts ? best.cut[g] : ~0u;
    if (g > best.ncuts) {
      node.kid[g] = node.kid[best.ncuts];
      continue;
    }
    const uint32_t s = g == 0 ? rl : best.cut[g - 1];
    const uint32_t e = g == best.ncuts ? rh : best.cut[g] - 1;
    child.clear();
    for (uint32_t id : ids)
      if (c.lo[size_t(d) * c.n + id] <= e && c.hi[size_t(d) * c.n + id] >= s) child.push_back(id);
    rlo[d] = s;
    rhi[d] = e;
    node.kid[g] = make(c, child, rlo, rhi, depth + 1);
  }
  rlo[d] = rl;
  rhi[d] = rh;
  c.out.nodes[at] = node;
  return int32_t(at);
}

// A value in [lo, hi], drawn from `seed` (deterministic: a build depends only on its input).
uint32_t draw_in(uint32_t lo, uint32_t hi, uint64_t seed) {
  uint64_t z = seed + 0x9e3779b97f4a7c15ull;  // splitmix64
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  const uint64_t span = uint64_t(hi) - lo + 1;
  return lo + uint32_t(z % span);
}

// The estimated cost of a lookup in the forest: the mean over a sample of the entries
// (a packet at a pseudo-random point of each one's box: where an entry leaves a field
// open, traffic takes any value of it) of the nodes visited and leaf boxes tested, with a
// fixed cost per tree.
double lookup_cost(const Ctx& c, const std::vector<uint32_t>& ids, const layout::TreeBox* boxes) {
  if (ids.empty()) return 0;
  const size_t step = std::max<size_t>(1, ids.size() / 512);
  double total = 0;
  size_t samples = 0;
  uint32_t v[F_COUNT] = {};
  for (size_t k = 0; k < ids.size(); k += step, ++samples) {
    for (int j = 0; j < layout::kBoxFields; ++j) v[c.out.box_field[j]] = boxes[ids[k]].lo[j];
    for (uint32_t d = 0; d < c.dims.size(); ++d)
      v[c.dims[d]] = draw_in(c.lo[size_t(d) * c.n + ids[k]], c.hi[size_t(d) * c.n + ids[k]], uint64_t(k) << 8 | d);
    for (int32_t at : c.out.roots) {
      total += kTreeCost;
      while (at >= 0) {
        const layout::TreeNode& nd = c.out.nodes[size_t(at)];
        uint32_t ch = 0;
        for (int j = 0; j < 7; ++j) ch += v[nd.field] >= nd.cut[j];
        at = nd.kid[ch];
        total += kNodeCost;
      }
      const layout::TreeLeaf& lf = c.out.leaves[size_t(~at)];
      for (uint32_t x = 0; x < lf.count; ++x) {
        total += kBoxCost;
        const layout::TreeBox& b = boxes[c.out.items[lf.first + x] & layout::kItemIndex];
        bool in = true;
        for (int j = 0; j < layout::kBoxFields; ++j) in &= v[c.out.box_field[j]] - b.lo[j] <= b.hi[j] - b.lo[j];
        if (in) break;  // most likely the match: the rest of the leaf ranks lower
      }
    }
  }
  return total / double(samples);
}

}  // namespace

Built build(const std::vector<const Entry*>& entries) {
  Ctx c;
  c.n = uint32_t(entries.size());
  std::vector<Box> boxes(entries.size());
  bool used[F_COUNT] = {}, tested[F_COUNT] = {};
  std::vector<uint32_t> ids;
  for (uint32_t i = 0; i < c.n; ++i) {
    boxes[i] = entry_box(entries[i]);
    bool empty = false;
    for (int f = 0; f < F_COUNT; ++f) {
      empty = empty || boxes[i].lo[f] > boxes[i].hi[f];
      // A field is worth cutting only where the entries' intervals differ.
      used[f] = used[f] || boxes[i].lo[f] != boxes[0].lo[f] || boxes[i].hi[f] != boxes[0].hi[f];
      tested[f] = tested[f] || boxes[i].lo[f] != 0 || boxes[i].hi[f] != ~0u;
    }
    if (!empty) ids.push_back(i);  // an entry with an empty interval never matches
  }
  // Partition: each entry goes with the field it narrows most (fewest values left), so
  // that an entry narrow in one field is not copied across the cuts of another; the
  // largest groups get a tree each, the rest share the last one.
  // Only fields with many distinct intervals partition (a protocol does not), and an
  // entry counts as narrow in a field when it keeps at most half of the field's bits
  // (the field's width: the bits of its largest value among the entries).
  bool partitions[F_COUNT] = {};
  std::vector<std::pair<size_t, int>> telling;  // (distinct intervals, field)
  uint32_t domain_bits[F_COUNT] = {};
  for (int f = 0; f < F_COUNT; ++f) {
    if (!used[f]) continue;
    std::vector<uint64_t> iv;
    uint32_t top = 0;
    for (uint32_t i : ids) {
      iv.push_back(uint64_t(boxes[i].lo[f]) << 32 | boxes[i].hi[f]);
      top = std::max(top, boxes[i].hi[f] == ~0u ? boxes[i].lo[f] : boxes[i].hi[f]);
    }
    std::sort(iv.begin(), iv.end());
    const size_t distinct = size_t(std::unique(iv.begin(), iv.end()) - iv.begin());
    partitions[f] = distinct >= kPartitionDistinct;
    domain_bits[f] = std::max<uint32_t>(uint32_t(std::bit_width(top)), 1);
    telling.push_back({distinct, f});
  }
  // The leaves' first test: the fields with the most distinct intervals, then those that
  // every entry tests alike (a direction, a version), so that the box can be the whole test.
  std::sort(telling.begin(), telling.end(), std::greater<>());
  for (int f = 0; f < F_COUNT; ++f)
    if (tested[f] && !used[f]) telling.push_back({1, f});
  for (int j = 0; j < layout::kBoxFields; ++j)
    c.out.box_field[j] = j < int(telling.size()) ? uint8_t(telling[size_t(j)].second) : uint8_t(F_RESERVED_31);
  c.out.boxes.resize(c.n);
  c.item.resize(c.n);
  for (uint32_t i = 0; i < c.n; ++i) {
    c.item[i] = i | (box_is_exact(entries[i], c.out.box_field) ? layout::kItemExact : 0);
    layout::TreeBox& b = c.out.boxes[i];
    b.lo[7] = uint32_t(entries[i]->rank);
    b.hi[7] = uint32_t(entries[i]->rank >> 32);
    for (int j = 0; j < layout::kBoxFields; ++j) {
      const bool real = j < int(telling.size());
      b.lo[j] = real ? boxes[i].lo[c.out.box_field[j]] : 0;
      b.hi[j] = real ? boxes[i].hi[c.out.box_field[j]] : ~0u;
    }
  }
  std::vector<std::vector<uint32_t>> by_field(F_COUNT + 1);
  for (uint32_t i : ids) {
    int best = F_COUNT;
    double best_share = 0.5;
    for (int f = 0; f < F_COUNT; ++f) {
      if (!partitions[f]) continue;
      const double share = double(std::bit_width(boxes[i].hi[f] - boxes[i].lo[f])) / domain_bits[f];
      if (share <= best_share) {
        best_share = share;
        best = f;
      }
    }
    by_field[size_t(best)].push_back(i);
  }
  std::sort(by_field.begin(), by_field.end(), [](const auto& a, const auto& b) { return a.size() > b.size(); });
  while (!by_field.empty() && by_field.back().empty()) by_field.pop_back();
  for (int f = 0; f < F_COUNT; ++f)
    if (used[f]) c.dims.push_back(uint8_t(f));
  c.lo.resize(c.dims.size() * c.n);
  c.hi.resize(c.dims.size() * c.n);
  for (uint32_t d = 0; d < c.dims.size(); ++d)
    for (uint32_t i = 0; i < c.n; ++i) {
      c.lo[size_t(d) * c.n + i] = boxes[i].lo[c.dims[d]];
      c.hi[size_t(d) * c.n + i] = boxes[i].hi[c.dims[d]];
    }
  boxes.clear();
  boxes.shrink_to_fit();
  // Forests of 1, 2 and kMaxTrees trees (the largest groups each alone, the rest in the
  // last tree); the one with the lowest estimated lookup cost is kept.
  Built best;
  double best_cost = 0;
  const layout::TreeBox* tbox = c.out.boxes.data();
  size_t tried = 0;
  // The largest group is the first tree of every forest of 2 or more trees, built from the
  // same entries each time: its result (what it added to an empty forest) is kept.
  struct FirstTree {
    bool valid = false;
    std::vector<layout::TreeNode> nodes;
    std::vector<layout::TreeLeaf> leaves;
    std::vector<uint32_t> items, declined;
    std::vector<int32_t> roots;
    uint32_t depth = 0;
  } first;
  for (size_t want : {size_t(1), size_t(2), size_t(layout::kMaxTrees)}) {
    const size_t ntrees = std::max<size_t>(1, std::min(want, by_field.size()));
    if (ntrees == tried) continue;
    tried = ntrees;
    std::vector<std::vector<uint32_t>> groups;
    for (const auto& g : by_field) {
      if (groups.size() < ntrees) groups.push_back(g);
      else groups.back().insert(groups.back().end(), g.begin(), g.end());
    }
    if (groups.empty()) groups.emplace_back();  // no entries: one empty leaf
    Ctx t = c;  // the fields and intervals; an empty forest
    t.out.depth = 0;
    t.out.nodes.clear();
    t.out.leaves.clear();
    t.out.items.clear();
    t.out.roots.clear();
    t.out.declined.clear();
    std::vector<uint32_t> rlo(t.dims.size(), 0), rhi(t.dims.size(), ~0u);
    for (auto& g : groups) {
      const bool first_of_many = &g == &groups.front() && ntrees > 1;
      if (first_of_many && first.valid) {
        t.out.nodes = first.nodes;
        t.out.leaves = first.leaves;
        t.out.items = first.items;
        t.out.declined = first.declined;
        t.out.roots = first.roots;
        t.out.depth = first.depth;
        continue;
      }
      sort_values(g, t.scratch.tmp);  // rank order
      t.budget = int64_t(kMaxCopies) * int64_t(g.size());
      t.exhausted = false;
      t.leaf = c.n <= kLargeTree ? kSmallSetLeafEntries : g.size() > kLargeTree ? kLargeLeafEntries : kLeafEntries;
      const size_t nodes = t.out.nodes.size(), leaves = t.out.leaves.size(), items = t.out.items.size();
      const int32_t root = make(t, g, rlo, rhi, 0);
      std::vector<int32_t> roots;
      std::swap(roots, t.out.roots);
      t.out.roots.push_back(root);
      const double own = t.exhausted ? 0 : lookup_cost(t, g, tbox);
      std::swap(roots, t.out.roots);
      if (t.exhausted || own > kDeclinedCost) {
        // The copies ran out (the rest of the build was cut short: long leaves), or too
        // slow a tree: these entries are better served by the tuple tables.
        t.out.nodes.resize(nodes);
        t.out.leaves.resize(leaves);
        t.out.items.resize(items);
        t.out.declined.insert(t.out.declined.end(), g.begin(), g.end());
      } else {
        t.out.roots.push_back(root);
      }
      if (first_of_many) {
        first = FirstTree{true, t.out.nodes, t.out.leaves, t.out.items, t.out.declined, t.out.roots, t.out.depth};
      }
    }
    const double declined_share = ids.empty() ? 0 : double(t.out.declined.size()) / double(ids.size());
    const double cost = lookup_cost(t, ids, tbox) + kDeclinedCost * declined_share;
    if (ntrees == 1 || cost < best_cost) {
      best = std::move(t.out);
      best_cost = cost;
    }
  }
  return best;
}

}  // namespace vpf::matcher::tree
