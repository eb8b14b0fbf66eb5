// The classifier's immutable, flat data layout, as the ISA kernels read it.
//
// This header holds plain structs of raw pointers and integers only: the kernel source
// files include it while compiled with ISA flags, so nothing here may be an inline
// function that another translation unit could instantiate with different flags.
//
//   SnapshotView ─▶ TableView[] (sorted by min_rank) ─▶ SegmentView[] ─▶ Item[] ─▶ Entry
//
// A table hashes a few (field, mask) pairs of the key (its "tuple"); every entry in it
// fixes at least those bits, so a packet only needs the entries of one bucket.  Buckets are
// grouped 64 to a segment so that one change copies one segment, not the table.
//
//   SnapshotView ─▶ TreeView ─▶ TreeNode[] ─▶ TreeLeaf[] ─▶ items ─▶ TreeBox / Entry
//
// The split tree (split_tree.h) serves the entries in force when it was built; the
// tables then hold only the entries added since.
#pragma once

#include <cstdint>

#include "vpf/matcher/classifier.h"
#include "vpf/matcher/packet_key.h"

namespace vpf::matcher::layout {

inline constexpr int kTestsPerBlock = 8;
inline constexpr int kMaxBlocks = 4;
inline constexpr int kMaxTests = kTestsPerBlock * kMaxBlocks;
inline constexpr int kMaxHashFields = 8;
inline constexpr int kSegmentBits = 6;
inline constexpr uint32_t kSegmentBuckets = 1u << kSegmentBits;

// 8 tests: for lane i, (key.f[idx[i]] & mask[i]) must lie in [lo[i], hi[i]].  Unused
// lanes have mask 0, lo 0, hi ~0 (always true).  Packed (4-byte aligned): the kernels
// load it unaligned, so that an entry of one block fills exactly two cache lines; idx
// first, so that in the first block (at offset 24) no array crosses a line.
struct EntryBlock {
  uint8_t idx[kTestsPerBlock];
  uint32_t mask[kTestsPerBlock];
  uint32_t lo[kTestsPerBlock];
  uint32_t hi[kTestsPerBlock];
};
static_assert(sizeof(EntryBlock) == 104);

// One conjunction of one rule.  Followed in memory by `nblocks` EntryBlocks; allocated
// 64-byte aligned, so header and first block share two cache lines (a 5-tuple entry of
// IPv4 needs one block, of IPv6 two).
struct Entry {
  uint64_t rank;               // lower decides first
  const BpfJit::Call* bpf;     // non-null: the packet must also pass this program, called
                               // as bpf->fn(bpf->ctx, data, len, len)
  uint32_t rule_id;
  uint8_t kind;                // RuleKind
  uint8_t action;              // Action
  uint8_t nblocks;             // 1 to kMaxBlocks
  uint8_t reserved;
  const EntryBlock* blocks() const { return reinterpret_cast<const EntryBlock*>(this + 1); }
};
static_assert(sizeof(Entry) == 24 && sizeof(Entry) + sizeof(EntryBlock) == 128);

struct Item {
  uint64_t rank;
  uint32_t hash;
  uint32_t reserved;
  const Entry* entry;
};

struct SegmentView {
  const Item* items;                      // grouped by bucket, by rank within a bucket
  uint32_t start[kSegmentBuckets + 1];    // bucket b's items: [start[b], start[b+1])
};

struct TableView {
  uint64_t min_rank;                      // no entry in the table ranks lower
  uint32_t nfields;
  uint32_t bucket_mask;                   // buckets - 1 (a power of two, >= 64)
  uint8_t field[kMaxHashFields];
  uint32_t mask[kMaxHashFields];
  const SegmentView* const* segs;         // (bucket_mask + 1) / 64 segments
  // Membership filter: bit filter_bit(h) is set for every entry hash h in the table (and
  // maybe for hashes since removed).  A clear bit means no entry can match.
  const uint64_t* filter;
  uint32_t filter_mask;                   // bits - 1 (a power of two)
};

// The filter bit of hash h: rotated so that it does not reuse the bucket index bits first.
#define VPF_FILTER_BIT(h, mask) ((((h) << 16) | ((h) >> 16)) & (mask))

// The split tree (split_tree.h).  An inner node sends a packet with value v of `field`
// to kid[c], c = the number of cut values <= v (unused cuts are ~0u and the kids after
// the last real one repeat it).
struct alignas(64) TreeNode {
  uint32_t cut[7];
  uint8_t field;
  uint8_t reserved[3];
  int32_t kid[8];  // >= 0: a node; < 0: the leaf ~kid
};
static_assert(sizeof(TreeNode) == 64);

// A leaf item: the index of an entry (into TreeView::entries and boxes), with the top bit
// set when the entry's box is exactly its tests (prefixes and ranges on box fields only, no
// program), so that a packet in the box needs no further test.
inline constexpr uint32_t kItemExact = 1u << 31;
inline constexpr uint32_t kItemIndex = kItemExact - 1;

struct TreeLeaf {
  uint32_t first, count;  // items [first, first + count), in rank order
};

inline constexpr uint32_t kMaxTrees = 4;
inline constexpr int kBoxFields = 7;

// An entry of the tree as its leaves first test it, in one cache line: its intervals on
// the tree's kBoxFields most telling fields (a superset of what it matches) in lanes
// 0..6, and its rank in lane 7 (low half in lo, high half in hi).
struct alignas(64) TreeBox {
  uint32_t lo[8];
  uint32_t hi[8];
};
static_assert(sizeof(TreeBox) == 64);

struct TreeView {
  const TreeNode* nodes;
  const TreeLeaf* leaves;
  const uint32_t* items;        // leaf items (kItemExact | index into entries and boxes)
  const Entry* const* entries;
  const TreeBox* boxes;
  uint8_t box_field[kBoxFields];
  const uint64_t* dead;         // bit i: entries[i] was removed after the build (or null)
  uint32_t ntrees;
  int32_t root[kMaxTrees];      // as kids
};

struct SnapshotView {
  const TableView* const* tables;
  uint32_t ntables;
  const TreeView* tree;  // null: no tree; the tables hold every entry
};

// A kernel classifies n <= 32 packets whose keys are complete (dynamic slots included).
using ClassifyKernel = void (*)(const SnapshotView* s, const PacketRef* pkts, const PacketKey* keys,
                                uint32_t n, Decision* out);

void classify_scalar(const SnapshotView*, const PacketRef*, const PacketKey*, uint32_t, Decision*);
void classify_sse42(const SnapshotView*, const PacketRef*, const PacketKey*, uint32_t, Decision*);
void classify_avx2(const SnapshotView*, const PacketRef*, const PacketKey*, uint32_t, Decision*);
void classify_avx512(const SnapshotView*, const PacketRef*, const PacketKey*, uint32_t, Decision*);

}  // namespace vpf::matcher::layout
