// The split tree: a decision tree over key fields that narrows a packet down to the few
// entries that can match it.
//
// Each inner node cuts one field of the key into up to eight intervals (seven cut
// values); a packet goes to the child whose interval holds its value.  A leaf lists, in
// rank order, every entry whose tests leave room for a packet in the leaf's region, so
// the first entry of the leaf that passes its full tests is the best match among the
// tree's entries.  The tree is only a filter: an entry is kept wherever it might match
// and tested whole, so a field the tree cannot express (a mask that is not a prefix, a
// BPF program) costs a larger leaf, never a wrong answer.  Where an entry's box (its
// intervals on the leaves' box fields) says all its tests say, the box test is the whole
// test (the item is marked exact).
//
// Building (HyperSplit-like, multiway): at a node, for every field, the cut points are
// the starts and ends of the entries' intervals inside the node's region; the cuts are
// chosen so that the largest child holds as few entries as possible (a greedy walk over
// the cut points, for the smallest child bound that leaves at most eight children); the
// field whose largest child is smallest wins (fewer copies break ties).  A node with few
// entries, or that no field can split, is a leaf.  Entries that span a cut are copied
// into both sides; the total of copies is bounded (kMaxCopies per entry), past which
// nodes become leaves.  So that wide entries are not copied across the cuts of narrow
// ones, the entries are first partitioned by the field each narrows most, and the
// largest groups get a tree each (at most layout::kMaxTrees); a packet walks them all.
//
// The classifier builds a tree in the background from the entries of a snapshot and
// keeps the entries added since in its tuple tables (classifier.cc).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "classifier_layout.h"

namespace vpf::matcher::tree {

// A node with at most this many entries is a leaf: kLeafEntries in a tree of at most
// kLargeTree entries, kLargeLeafEntries in a larger one (where each level more is a cache
// miss more, while a leaf's box tests read consecutive lines), and kSmallSetLeafEntries
// in every tree when the whole build has at most kLargeTree entries (its nodes stay in
// cache, so a level more costs less than the box tests it saves).  Measured, 4
// interleaved rounds, ns/pkt with 16 / 32 everywhere: ACL 1k 52.3 / 60.0, 10k 83.9 /
// 75.7, 100k 267.6 / 233.9, fw 10k 217.8 / 179.4, ipc 10k 151.5 / 146.5.  Small sets, 3
// interleaved rounds, TSC cycles/pkt with leaves of 2 / 4 / 8 / 16: ACL 1k 87.3 / 86.6 /
// 92.9 / 93.6, 100 BPF rules 45.8 / 42.2 / 48.7 / 48.9.  (Leaves of 4 also in the small
// groups of large sets declined the whole fw 10k forest: not done.)
inline constexpr uint32_t kSmallSetLeafEntries = 4;
inline constexpr uint32_t kLeafEntries = 16;
inline constexpr uint32_t kLargeLeafEntries = 32;
inline constexpr size_t kLargeTree = 4096;
inline constexpr uint32_t kMaxDepth = 24;
inline constexpr uint32_t kMaxCopies = 32;   // leaf items per entry, at most (on average)
// A field partitions the entries (see build()) when they hold at least this many distinct
// intervals of it.
inline constexpr uint32_t kPartitionDistinct = 16;
// Weights of the lookup cost estimate that chooses between forests (measured: a tree walk
// of a batch costs about as much as three node visits besides its nodes and leaves).
inline constexpr double kTreeCost = 3, kNodeCost = 1, kBoxCost = 0.6;
// ... and of a forest that leaves all entries to the tables (their share of it, otherwise).
// Measured against the ClassBench-like sets (costs estimated at random points of the
// entries' boxes): the 10k fw set's best forest estimates 107 and runs slower than its
// tables (350 against 200 ns); the 100k ACL set's 4-tree forest estimates 42 and runs
// faster (206 ns) than its 2-tree forest with 41% of the entries left to tables (360 ns),
// which estimates 13 + 0.41 x this.
inline constexpr double kDeclinedCost = 90;

struct Built {
  std::vector<layout::TreeNode> nodes;
  std::vector<layout::TreeLeaf> leaves;
  std::vector<uint32_t> items;  // indices into the entries given to build(), | kItemExact
  std::vector<layout::TreeBox> boxes;  // one per entry given to build()
  uint8_t box_field[layout::kBoxFields] = {};
  std::vector<uint32_t> declined;  // entries left to the tables: no tree served them well
  std::vector<int32_t> roots;   // one per tree, as kids: >= 0 a node, < 0 the leaf ~root
  uint32_t depth = 0;           // the longest path, in inner nodes
  size_t bytes() const {
    return nodes.size() * sizeof(layout::TreeNode) + leaves.size() * sizeof(layout::TreeLeaf) +
           items.size() * sizeof(uint32_t) + boxes.size() * sizeof(layout::TreeBox);
  }
};

// The interval [lo, hi] of field values that an entry's tests allow; the whole range
// when a field is tested only under masks that are not prefixes.
struct Box {
  uint32_t lo[F_COUNT], hi[F_COUNT];
};
Box entry_box(const layout::Entry* e);
// True if a value in the entry's box on the fields box_field[0..kBoxFields) passes all of
// its tests: each tests a box field under a prefix mask, and it has no program.
bool box_is_exact(const layout::Entry* e, const uint8_t* box_field);

// Builds the tree of `entries`, which must be in rank order (lowest first).
Built build(const std::vector<const layout::Entry*>& entries);

}  // namespace vpf::matcher::tree
