// The batch loop shared by every classifier kernel.  Included only by the kernel source
// files, each compiled with its own ISA flags; everything here has internal linkage
// (static, or a template instantiated with a TU-local policy type), so no function
// compiled for one ISA can be picked by the linker for another.
//
// Algorithm, for a batch of n <= 32 packets:
//   if the snapshot has a split tree: for each of its trees, walk every packet down to its
//     leaf (the batch one level at a time) and test the leaf's entries in rank order, a
//     one-line box test first (for most entries the only one); the first that passes is
//     the packet's best so far;
//   then for each table (the entries changed since the tree was built), in ascending
//   min_rank:
//     the packets whose best match so far ranks above the table's min_rank are "open";
//     hash each open packet's tuple fields, prefetch its bucket;
//     walk each open packet's bucket in rank order until an item ranks at or above the
//     packet's best: an item whose hash equals the packet's and whose tests pass (the
//     ISA-specific part: MatchPolicy::match) becomes the packet's best.
//   A packet's decision is its best entry, or "no match".
#pragma once

#include <cstdint>

#include "../classifier_layout.h"
#include "../table_hash.h"

namespace vpf::matcher::layout {
namespace {

// The portable batch hash: hash[o] for packet open[o].  The SIMD policies compute the
// same function (table_hash.h) 8 or 16 packets at a time.
static inline void hash_batch_scalar(const PacketKey* keys, const uint8_t* open, uint32_t nopen,
                                     const TableView* tb, uint32_t* hash) {
  for (uint32_t o = 0; o < nopen; ++o) hash[o] = table_hash(keys[open[o]].f, tb);
}

// The kid of a node for value v: how many cut values are <= v (portable form).
static inline uint32_t child_scalar(const TreeNode& nd, uint32_t v) {
  uint32_t c = 0;
  for (int j = 0; j < 7; ++j) c += v >= nd.cut[j];
  return c;
}

// True if the packet's values v (lanes 0..6) lie in the box's intervals (portable form).
static inline bool in_box_scalar(const uint32_t* v, const TreeBox& b) {
  bool in = true;
  for (int j = 0; j < kBoxFields; ++j) in &= v[j] - b.lo[j] <= b.hi[j] - b.lo[j];
  return in;
}

// An entry's full tests (and its program), as the tables' stage 4 and the tree's leaves
// run them.
template <class MatchPolicy>
static inline bool entry_matches(const Entry* e, const PacketRef& p, const PacketKey& key) {
  const EntryBlock* blk = e->blocks();
  for (unsigned b = 0; b < e->nblocks; ++b)
    if (!MatchPolicy::match(key.f, blk + b)) return false;
  return !e->bpf || e->bpf->fn(e->bpf->ctx, p.data, p.len, p.len) != 0;
}

// The split tree (split_tree.h): every packet walks down to its leaf, the batch one level
// at a time so that the next level's loads of all packets are in flight together; then
// each leaf's entries are tested in rank order and the first that passes is the packet's
// best so far.
template <class MatchPolicy>
static inline void tree_body(const TreeView* tv, int32_t root, const PacketRef* pkts, const PacketKey* keys,
                             const uint32_t (*box_vals)[8], uint32_t n, uint64_t* best, const Entry** win) {
  int32_t at[32];
  const uint32_t all = n >= 32 ? ~0u : (1u << n) - 1;
  for (uint32_t i = 0; i < n; ++i) at[i] = root;
  uint32_t inner = root >= 0 ? all : 0;
  while (inner) {
    for (uint32_t m = inner; m; m &= m - 1) {
      const uint32_t i = uint32_t(__builtin_ctz(m));
      const TreeNode& nd = tv->nodes[at[i]];
      const int32_t k = nd.kid[MatchPolicy::child(nd, keys[i].f[nd.field])];
      at[i] = k;
      if (k >= 0) {
        __builtin_prefetch(&tv->nodes[k]);
      } else {
        inner &= ~(1u << i);
        __builtin_prefetch(&tv->leaves[~k]);
      }
    }
  }
  for (uint32_t i = 0; i < n; ++i) {
    const TreeLeaf lf = tv->leaves[~at[i]];
    if (lf.count) __builtin_prefetch(&tv->boxes[tv->items[lf.first] & kItemIndex]);
  }
  for (uint32_t i = 0; i < n; ++i) {
    const TreeLeaf lf = tv->leaves[~at[i]];
    const uint32_t* items = tv->items + lf.first;
    for (uint32_t k = 0; k < lf.count; ++k) {
      const uint32_t it = items[k];
      const uint32_t x = it & kItemIndex;
      const TreeBox& bx = tv->boxes[x];
      const uint64_t rank = uint64_t(bx.hi[7]) << 32 | bx.lo[7];
      if (rank >= best[i]) break;
      if (!MatchPolicy::in_box(box_vals[i], bx)) continue;
      if (tv->dead && (tv->dead[x >> 6] >> (x & 63) & 1)) continue;
      const Entry* e = tv->entries[x];
      if ((it & kItemExact) || entry_matches<MatchPolicy>(e, pkts[i], keys[i])) {
        best[i] = rank;
        win[i] = e;
        break;
      }
    }
  }
}

template <class MatchPolicy>
static inline void classify_body(const SnapshotView* s, const PacketRef* pkts, const PacketKey* keys,
                                 uint32_t n, Decision* out) {
  uint64_t best[32];
  const Entry* win[32];
  // Indexed by position in open[], not by packet.
  alignas(64) uint32_t hash[32];
  uint32_t first[32], last[32];
  const SegmentView* seg[32];
  alignas(16) uint8_t open[32 + 16];
  for (uint32_t i = 0; i < n; ++i) {
    best[i] = ~uint64_t(0);
    win[i] = nullptr;
  }
  if (const TreeView* tv = s->tree) {
    // Each packet's values of the boxes' fields (lane 7 unused), for every tree's leaves.
    alignas(32) uint32_t box_vals[32][8];
    for (uint32_t i = 0; i < n; ++i) {
      for (int j = 0; j < kBoxFields; ++j) box_vals[i][j] = keys[i].f[tv->box_field[j]];
      box_vals[i][7] = 0;
    }
    for (uint32_t t = 0; t < tv->ntrees; ++t)
      tree_body<MatchPolicy>(tv, tv->root[t], pkts, keys, box_vals, n, best, win);
  }
  for (uint32_t t = 0; t < s->ntables; ++t) {
    const TableView* tb = s->tables[t];
    uint32_t nopen = 0;
    for (uint32_t i = 0; i < n; ++i)
      if (best[i] > tb->min_rank) open[nopen++] = uint8_t(i);
    if (nopen == 0) break;  // tables are sorted: no later table can improve any packet
    // The stages below each touch one level of the table for every open packet and
    // prefetch the next level, so the cache misses of a batch overlap.
    // Stage 1: hash every open packet (the ISA policy may do many at once), find the
    // segment, prefetch the bucket's bounds.
    MatchPolicy::hash_batch(keys, open, nopen, tb, hash);
    // Drop the packets whose hash the table's filter rules out (most of them, usually).
    uint32_t kept = 0;
    for (uint32_t o = 0; o < nopen; ++o) {
      const uint32_t bit = VPF_FILTER_BIT(hash[o], tb->filter_mask);
      if (!((tb->filter[bit >> 6] >> (bit & 63)) & 1)) continue;
      open[kept] = open[o];
      hash[kept] = hash[o];
      ++kept;
    }
    nopen = kept;
    for (uint32_t o = 0; o < nopen; ++o) {
      const uint32_t b = hash[o] & tb->bucket_mask;
      seg[o] = tb->segs[b >> kSegmentBits];
      __builtin_prefetch(&seg[o]->start[b & (kSegmentBuckets - 1)]);
    }
    // Stage 2: read the bounds, prefetch the first item.
    for (uint32_t o = 0; o < nopen; ++o) {
      const uint32_t lb = hash[o] & tb->bucket_mask & (kSegmentBuckets - 1);
      first[o] = seg[o]->start[lb];
      last[o] = seg[o]->start[lb + 1];
      __builtin_prefetch(seg[o]->items + first[o]);
    }
    // Stage 3: skip items of other hashes, prefetch the candidate entry.
    for (uint32_t o = 0; o < nopen; ++o) {
      const uint32_t i = open[o];
      const Item* items = seg[o]->items;
      uint32_t k = first[o];
      while (k < last[o] && items[k].hash != hash[o] && items[k].rank < best[i]) ++k;
      first[o] = k;
      if (k < last[o]) {
        __builtin_prefetch(items[k].entry);
        __builtin_prefetch(reinterpret_cast<const char*>(items[k].entry) + 64);
      }
    }
    // Stage 4: test candidates in rank order; the first that passes is the packet's best.
    for (uint32_t o = 0; o < nopen; ++o) {
      const uint32_t i = open[o];
      const uint32_t h = hash[o];
      const Item* items = seg[o]->items;
      for (uint32_t k = first[o]; k < last[o]; ++k) {
        const Item& it = items[k];
        if (it.rank >= best[i]) break;
        if (it.hash != h) continue;
        const Entry* e = it.entry;
        if (entry_matches<MatchPolicy>(e, pkts[i], keys[i])) {
          best[i] = it.rank;
          win[i] = e;
          break;
        }
      }
    }
  }
  for (uint32_t i = 0; i < n; ++i) {
    if (win[i]) {
      out[i].rule_id = win[i]->rule_id;
      out[i].kind = static_cast<RuleKind>(win[i]->kind);
      out[i].action = static_cast<Action>(win[i]->action);
    } else {
      out[i] = Decision{};
    }
  }
}

}  // namespace
}  // namespace vpf::matcher::layout
