// The classifier's writer side: rules -> entries -> tuple tables -> published snapshots.
// The reader side (the batch loop) is in kernels/; the layout both share is in
// classifier_layout.h.
#include "vpf/matcher/classifier.h"

#include <algorithm>
#include <atomic>
#include <bit>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <new>
#include <set>
#include <stdexcept>
#include <thread>
#include <unordered_map>

#include "bit_form.h"
#include "bpf_vector.h"
#include "classifier_layout.h"
#include "decision_cache.h"
#include "vpf/matcher/epoch.h"
#include "rule_compile.h"
#include "split_tree.h"
#include "table_hash.h"
#include "vpf/matcher/parser.h"

namespace vpf::matcher {

using namespace layout;

namespace {

ClassifyKernel kernel_for(Isa isa) {
  switch (isa) {
    case Isa::Scalar: return classify_scalar;
    case Isa::Sse42: return classify_sse42;
    case Isa::Avx2: return classify_avx2;
    case Isa::Avx512: return classify_avx512;
  }
  return classify_scalar;
}

// ---- entries ----

struct EntryFree {
  void operator()(const Entry* e) const { ::operator delete(const_cast<Entry*>(e), std::align_val_t(64)); }
};
using EntryPtr = std::shared_ptr<const Entry>;

size_t entry_bytes(unsigned nblocks) { return sizeof(Entry) + nblocks * sizeof(EntryBlock); }

// Per-field fixed bits of an entry: for the test "(v & m) in [lo, hi]", the bits of m above
// the highest bit where lo and hi differ must equal lo's.
struct Fixed {
  uint32_t mask[F_COUNT] = {};
  uint32_t value[F_COUNT] = {};
  bool contradictory = false;
};

Fixed fixed_bits(const Entry* e) {
  Fixed fx;
  const EntryBlock* blk = e->blocks();
  for (unsigned b = 0; b < e->nblocks; ++b) {
    for (int i = 0; i < kTestsPerBlock; ++i) {
      const uint32_t m = blk[b].mask[i], lo = blk[b].lo[i], hi = blk[b].hi[i];
      if (m == 0) continue;
      const uint32_t diff = lo ^ hi;
      const uint32_t free_bits = diff ? (~0u >> std::countl_zero(diff)) : 0;
      const uint32_t fm = m & ~free_bits;
      const uint8_t f = blk[b].idx[i];
      if ((fx.value[f] ^ lo) & fx.mask[f] & fm) fx.contradictory = true;
      fx.value[f] |= lo & fm;
      fx.mask[f] |= fm;
    }
  }
  return fx;
}

// ---- tables ----

struct Tuple {
  uint32_t nfields = 0;
  uint8_t field[kMaxHashFields] = {};
  uint32_t mask[kMaxHashFields] = {};
  bool operator<(const Tuple& o) const {
    if (nfields != o.nfields) return nfields < o.nfields;
    for (uint32_t i = 0; i < nfields; ++i) {
      if (field[i] != o.field[i]) return field[i] < o.field[i];
      if (mask[i] != o.mask[i]) return mask[i] < o.mask[i];
    }
    return false;
  }
  bool fits(const Fixed& fx) const {
    for (uint32_t i = 0; i < nfields; ++i)
      if ((fx.mask[field[i]] & mask[i]) != mask[i]) return false;
    return true;
  }
  int bits() const {
    int n = 0;
    for (uint32_t i = 0; i < nfields; ++i) n += std::popcount(mask[i]);
    return n;
  }
};

// A new table made for an entry that fits no table hashes only the entry's most specific
// fields: fewer, larger tables mean fewer probes per packet, and the few extra same-hash
// candidates cost less than a probe.  The collision limit splits tables that get crowded.
constexpr size_t kRelaxedFields = 3;

bool is_address_field(int f) { return f >= F_SRC_IP0 && f <= F_DST_IP3; }

// Fields that take few values across a rule set: hashing them spreads nothing, and
// putting them in tuples would only multiply tables.  Entries still test them.
bool is_low_entropy_field(int f) {
  return f == F_DIRECTION || f == F_IP_VER || f == F_PARSE_FLAGS || f == F_BPF_VALID || f == F_ETH_TYPE ||
         f == F_IP_FRAG;
}

Tuple tuple_from(const Fixed& fx, bool relax) {
  struct Cand {
    int field;
    uint32_t mask;
  };
  std::vector<Cand> c;
  for (int f = 0; f < F_COUNT; ++f) {
    uint32_t m = fx.mask[f];
    if (!m || is_low_entropy_field(f)) continue;
    if (relax && is_address_field(f)) {
      const int plen = std::countl_one(m);
      if (plen != 32) {
        // A prefix (or the prefix part of a mask) relaxed to a byte boundary.
        const int l = plen & ~7;
        m = l == 0 ? 0 : ~0u << (32 - l);
      }
    } else if (relax && m != ~0u) {
      // A partial range on a port or size says little ("below 65536"); leave it to the
      // entry's own tests.
      m = 0;
    }
    if (m) c.push_back({f, m});
  }
  std::stable_sort(c.begin(), c.end(), [](const Cand& a, const Cand& b) {
    return std::popcount(a.mask) > std::popcount(b.mask);
  });
  const size_t keep = relax ? kRelaxedFields : size_t(kMaxHashFields);
  if (c.size() > keep) c.resize(keep);
  std::sort(c.begin(), c.end(), [](const Cand& a, const Cand& b) { return a.field < b.field; });
  Tuple t;
  t.nfields = uint32_t(c.size());
  for (size_t i = 0; i < c.size(); ++i) {
    t.field[i] = uint8_t(c[i].field);
    t.mask[i] = c[i].mask;
  }
  return t;
}

struct Segment {
  SegmentView view{};
  std::vector<Item> items;
  std::vector<EntryPtr> owners;  // parallel to items
  uint64_t gen = 0;              // writer generation that created it (mutable until published)
  void sync() { view.items = items.data(); }
};

struct TableVersion {
  TableView view{};
  std::vector<std::shared_ptr<Segment>> segs;
  std::vector<const SegmentView*> seg_views;
  std::vector<uint64_t> filter;
  uint64_t gen = 0;
  void sync() {
    seg_views.resize(segs.size());
    for (size_t i = 0; i < segs.size(); ++i) seg_views[i] = &segs[i]->view;
    view.segs = seg_views.data();
    view.filter = filter.data();
    view.filter_mask = uint32_t(filter.size() * 64 - 1);
  }
  void set_filter(uint32_t h) {
    const uint32_t bit = VPF_FILTER_BIT(h, view.filter_mask);
    filter[bit >> 6] |= uint64_t(1) << (bit & 63);
  }
  // Recomputes the filter from the items (after removals left stale bits).
  void refilter() {
    std::fill(filter.begin(), filter.end(), 0);
    for (const auto& s : segs)
      for (const Item& it : s->items) set_filter(it.hash);
  }
};

// Filter bits per bucket: with at most two items per bucket, >= 8 bits per item.
constexpr uint32_t kFilterBitsPerBucket = 16;

struct TableState {
  Tuple tuple;
  std::shared_ptr<TableVersion> cur;
  uint32_t count = 0;
  uint64_t min_rank = ~uint64_t(0);
  uint32_t stale_filter_bits = 0;  // removals since the filter was last recomputed
  std::unordered_map<uint32_t, uint32_t> per_hash;
};

// A rule of a tiny rule set, evaluated directly: its metadata tests, then its program (its
// branch-free vector form when it has one and the AVX-512 kernel is in use, else its
// machine code).
struct DirectRule {
  uint64_t rank;
  uint32_t rule_id;
  RuleKind kind;
  Action action;
  int32_t adapter;
  Direction direction;
  uint32_t min_len, max_len;
  BpfJit::Call call;
  const BpfVector* vec;  // non-null: used instead of call

  bool any_meta() const { return adapter < 0 && direction == Direction::Any && min_len == 0 && max_len == ~0u; }
};

// Up to this many enabled rules that test nothing but metadata, size and a BPF program are
// run directly (one program call each, in order) instead of through the tables: below it,
// the fixed cost of loads, hashing and probing exceeds the programs' own cost.
constexpr size_t kDirectRules = 4;

// The builder thread starts a split tree when at least this many entries are in force and
// at least this many (or a sixteenth of them, if more) are outside the current tree.
constexpr uint32_t kTreeMinEntries = 64;

struct Snapshot {
  SnapshotView view{};
  std::vector<DirectRule> direct;  // non-empty: classify with these, not the tables
  std::vector<std::shared_ptr<const TableVersion>> tables;
  std::vector<const TableView*> views;
  uint32_t slot_mask = 0;  // dynamic slots in use
  std::shared_ptr<const BpfVector> slot_loader;  // loads them all at once (bpf_vector.h), if set
  bool needs_parse = true; // some entry tests a field only the parser fills
  BpfLoad slot_load[kDynamicSlots];
  ClassifyKernel kernel = classify_scalar;
  uint64_t gen = 0;        // unique per publish: decision caches key their buckets by it
  cache::Plan cache_plan;  // what a decision cache keeps of a packet (decision_cache.h)
  std::shared_ptr<const struct TreeSet> tree;
  std::shared_ptr<const std::vector<uint64_t>> dead;
  TreeView tree_view{};
  std::shared_ptr<const BitForm> bits;  // set: it decides (with slot_loader), not the tables
};

// A split tree (split_tree.h) and the entries it was built from, in rank order.
struct TreeSet {
  tree::Built built;
  std::vector<EntryPtr> owners;
  std::vector<const Entry*> entries;
  size_t bytes() const { return built.bytes() + entries.size() * (sizeof(const Entry*) + sizeof(EntryPtr)); }
};

// True if the tables would hold every one of `entries` in a single table (placed in rank
// order as Impl::place places them, collisions aside).  One table is one probe a packet:
// measured faster than any tree over the same entries (100 lowered BPF rules, 300 entries:
// 43.5-44.9 TSC cycles a packet against 64-72 through a tree of depth 3), while the tree's
// cost estimate, which prices the tables it declines to as a constant, picks the tree.
bool one_table_holds(const std::vector<const Entry*>& entries) {
  std::vector<Tuple> tuples;
  for (const Entry* e : entries) {
    const Fixed fx = fixed_bits(e);
    if (std::none_of(tuples.begin(), tuples.end(), [&](const Tuple& t) { return t.fits(fx); })) {
      tuples.push_back(tuple_from(fx, true));
      if (tuples.size() > 1) return false;
    }
  }
  return true;
}

std::shared_ptr<const TreeSet> make_tree_set(std::vector<EntryPtr> owners) {
  auto ts = std::make_shared<TreeSet>();
  ts->owners = std::move(owners);
  for (const auto& e : ts->owners) ts->entries.push_back(e.get());
  if (one_table_holds(ts->entries)) {  // every entry declined: the tables serve them all
    for (uint32_t i = 0; i < ts->entries.size(); ++i) ts->built.declined.push_back(i);
    return ts;
  }
  ts->built = tree::build(ts->entries);
  return ts;
}

struct Placed {
  TableState* table;  // null while the entry is in the tree
  EntryPtr entry;
  uint32_t hash;
  uint32_t live_shapes = 0;  // the packet shapes the entry can match (decision_cache.h)
  uint32_t tree_index = 0;   // its index in the tree's entries, when table is null
};

// True if the entry tests a field that parse_frame() computes (not metadata, frame length
// or BPF loads).
bool tests_parsed_field(const Entry* e) {
  const EntryBlock* blk = e->blocks();
  for (unsigned b = 0; b < e->nblocks; ++b)
    for (int i = 0; i < kTestsPerBlock; ++i) {
      const uint8_t f = blk[b].idx[i];
      if (blk[b].mask[i] && f > F_FRAME_LEN && f < F_BPF_VALID) return true;
    }
  return false;
}

struct RuleState {
  RuleInfo info;
  uint64_t rank = 0;
  std::vector<Placed> placed;
  std::vector<int> slots;                 // dynamic slots referenced (one per load)
  std::shared_ptr<const BpfJit> jit;      // keeps the code alive while entries point at it
  std::shared_ptr<const BpfJit> direct_jit;
  std::shared_ptr<const BpfVector> direct_vector;
  bool direct_ok = false;                 // only metadata, size and BPF: may run directly
  bool direct_jitted = false;             // direct_ok and its program is machine code
};

// A rank is group (1 bit) | 65535 - priority (16 bits) | sequence (47 bits); rules of one
// group and priority (a "band") are ordered by their sequence numbers.  Adds at the tail
// or head step kSeqGap away from the band's ends; an add before a rule takes the middle of
// the room between that rule and its predecessor (16 inserts at one spot before the room
// is used up).
constexpr int kSeqBits = 47;
constexpr uint64_t kSeqMask = (uint64_t(1) << kSeqBits) - 1;
constexpr int64_t kSeqLimit = int64_t(1) << kSeqBits;
constexpr uint64_t kSeqBias = uint64_t(1) << 46;
constexpr int64_t kSeqGap = int64_t(1) << 16;

uint64_t make_rank(const Rule& r, int64_t seq) {
  const uint64_t group = r.kind == RuleKind::Passthrough ? 0 : 1;
  return group << 63 | uint64_t(kMaxPriority - r.priority) << 47 | uint64_t(seq);
}

}  // namespace

struct Classifier::Impl {
  std::map<RuleRef, RuleState> rules;
  std::vector<std::unique_ptr<TableState>> tables;
  std::map<Tuple, TableState*> by_tuple;
  BpfLoad slot_load[kDynamicSlots];
  uint32_t slot_refs[kDynamicSlots] = {};
  uint64_t parsed_field_entries = 0;  // entries for which tests_parsed_field()
  cache::Usage cache_usage[cache::kShapes];  // what the placed entries test, per shape

  void count_for_cache(Placed& p, int sign) {
    if (sign > 0) p.live_shapes = cache::live_shapes(p.entry.get(), slot_load);
    for (uint32_t m = p.live_shapes; m; m &= m - 1) cache_usage[std::countr_zero(m)].count(p.entry.get(), sign);
  }
  size_t enabled_rules = 0;           // rules with enabled set
  size_t direct_rules = 0;            // enabled rules with direct_ok
  size_t direct_jitted_rules = 0;     // enabled rules with direct_jitted
  bool vector_bpf = false;            // the AVX-512 kernel is in use: BpfVectors may run
  // Programs that rules removed since the last publish still pointed at (entries and
  // direct rules of the published snapshot call them): retired with that snapshot.
  std::vector<std::shared_ptr<const void>> dropped_code;
  std::map<uint64_t, RuleRef> by_rank;  // evaluation order
  uint64_t moved_rules = 0;
  int64_t next_tail = int64_t(kSeqBias);
  int64_t next_head = int64_t(kSeqBias) - kSeqGap;
  uint64_t gen = 1;  // current (unpublished) generation

  // ---- the split tree: entries of the rule set at its build; the tables hold the rest ----
  std::shared_ptr<const TreeSet> tree;
  std::shared_ptr<std::vector<uint64_t>> dead;  // bit i: tree entry i was removed since
  uint64_t dead_gen = 0;                        // generation that made `dead` (copy on write)
  uint32_t dead_count = 0;
  uint32_t declined_live = 0;                   // entries the tree's build left to the tables
  uint32_t live_entries = 0;                    // placed entries, in the tree or in tables
  Classifier::TreeMode tree_mode = Classifier::TreeMode::Background;
  uint64_t tree_builds = 0;

  // ---- the bit form (bit_form.h): built from the whole rule set, used while it is current ----
  uint64_t entries_version = 0;  // changes whenever an entry is placed or removed
  std::shared_ptr<const BitForm> bit_form;
  uint64_t bit_form_version = ~uint64_t(0);  // entries_version it was built from
  uint64_t bit_form_tried = ~uint64_t(0);    // the last entries_version a build was made for

  // The writer's state is guarded by `mu`: the public writer calls and the builder thread
  // (which builds without it and installs with it) take it.
  std::mutex mu;
  std::condition_variable build_cv;
  std::thread builder;
  bool build_wanted = false, bits_wanted = false, stopping = false;

  ~Impl() {
    {
      std::lock_guard lk(mu);
      stopping = true;
    }
    build_cv.notify_all();
    if (builder.joinable()) builder.join();
  }

  EpochDomain epoch;
  std::atomic<const Snapshot*> current{nullptr};
  std::shared_ptr<const Snapshot> current_owner;
  ClassifyKernel kernel = classify_scalar;

  // ---- segments and tables (copy on write, in place within one generation) ----

  std::shared_ptr<Segment> writable(std::shared_ptr<Segment>& s) {
    if (s->gen != gen) {
      auto c = std::make_shared<Segment>(*s);
      c->gen = gen;
      c->sync();
      s = c;
    }
    return s;
  }

  TableVersion& writable(TableState& t) {
    if (t.cur->gen != gen) {
      auto c = std::make_shared<TableVersion>(*t.cur);
      c->gen = gen;
      c->sync();
      t.cur = c;
    }
    return *t.cur;
  }

  void rebuild(TableState& t, uint32_t nbuckets) {
    std::vector<std::pair<Item, EntryPtr>> all;
    if (t.cur)
      for (const auto& s : t.cur->segs)
      for (size_t i = 0; i < s->items.size(); ++i) all.emplace_back(s->items[i], s->owners[i]);
    auto v = std::make_shared<TableVersion>();
    v->gen = gen;
    v->view = t.cur ? t.cur->view : TableView{};
    v->view.nfields = t.tuple.nfields;
    std::memcpy(v->view.field, t.tuple.field, sizeof v->view.field);
    std::memcpy(v->view.mask, t.tuple.mask, sizeof v->view.mask);
    v->view.bucket_mask = nbuckets - 1;
    std::stable_sort(all.begin(), all.end(), [&](const auto& a, const auto& b) {
      const uint32_t ba = a.first.hash & (nbuckets - 1), bb = b.first.hash & (nbuckets - 1);
      return ba != bb ? ba < bb : a.first.rank < b.first.rank;
    });
    const uint32_t nsegs = nbuckets / kSegmentBuckets;
    v->segs.resize(nsegs);
    size_t k = 0;
    for (uint32_t si = 0; si < nsegs; ++si) {
      auto s = std::make_shared<Segment>();
      s->gen = gen;
      for (uint32_t b = 0; b < kSegmentBuckets; ++b) {
        s->view.start[b] = uint32_t(s->items.size());
        const uint32_t bucket = si * kSegmentBuckets + b;
        while (k < all.size() && (all[k].first.hash & (nbuckets - 1)) == bucket) {
          s->items.push_back(all[k].first);
          s->owners.push_back(all[k].second);
          ++k;
        }
      }
      s->view.start[kSegmentBuckets] = uint32_t(s->items.size());
      s->sync();
      v->segs[si] = s;
    }
    v->filter.assign(size_t(nbuckets) * kFilterBitsPerBucket / 64, 0);
    v->sync();
    v->refilter();
    t.stale_filter_bits = 0;
    t.cur = v;
  }

  TableState* table_for(const Tuple& tuple) {
    if (auto it = by_tuple.find(tuple); it != by_tuple.end()) return it->second;
    auto t = std::make_unique<TableState>();
    t->tuple = tuple;
    TableState* raw = t.get();
    tables.push_back(std::move(t));
    by_tuple[tuple] = raw;
    rebuild(*raw, kSegmentBuckets);
    return raw;
  }

  void drop_table(TableState* t) {
    by_tuple.erase(t->tuple);
    std::erase_if(tables, [&](const auto& p) { return p.get() == t; });
  }

  uint32_t hash_entry(const Fixed& fx, const TableState& t) {
    uint32_t f[F_COUNT] = {};
    for (uint32_t i = 0; i < t.tuple.nfields; ++i) f[t.tuple.field[i]] = fx.value[t.tuple.field[i]];
    return table_hash(f, &t.cur->view);
  }

  void insert_item(TableState& t, const EntryPtr& e, uint32_t h) {
    t.count++;
    t.per_hash[h]++;
    t.min_rank = std::min(t.min_rank, e->rank);
    const uint32_t nb = t.cur->view.bucket_mask + 1;
    if (t.count > 2 * nb) {
      rebuild(t, nb * 2);  // amortised growth of one table
    }
    TableVersion& v = writable(t);
    v.view.min_rank = t.min_rank;
    const uint32_t b = h & v.view.bucket_mask;
    auto seg = writable(v.segs[b >> kSegmentBits]);
    v.seg_views[b >> kSegmentBits] = &seg->view;
    const uint32_t lb = b & (kSegmentBuckets - 1);
    uint32_t pos = seg->view.start[lb];
    while (pos < seg->view.start[lb + 1] && seg->items[pos].rank <= e->rank) ++pos;
    v.set_filter(h);
    seg->items.insert(seg->items.begin() + pos, Item{e->rank, h, 0, e.get()});
    seg->owners.insert(seg->owners.begin() + pos, e);
    for (uint32_t x = lb + 1; x <= kSegmentBuckets; ++x) seg->view.start[x]++;
    seg->sync();
  }

  void remove_item(TableState& t, const Entry* e, uint32_t h) {
    TableVersion& v = writable(t);
    const uint32_t b = h & v.view.bucket_mask;
    auto seg = writable(v.segs[b >> kSegmentBits]);
    v.seg_views[b >> kSegmentBits] = &seg->view;
    const uint32_t lb = b & (kSegmentBuckets - 1);
    for (uint32_t pos = seg->view.start[lb]; pos < seg->view.start[lb + 1]; ++pos) {
      if (seg->items[pos].entry != e) continue;
      seg->items.erase(seg->items.begin() + pos);
      seg->owners.erase(seg->owners.begin() + pos);
      for (uint32_t x = lb + 1; x <= kSegmentBuckets; ++x) seg->view.start[x]--;
      break;
    }
    seg->sync();
    t.count--;
    if (--t.per_hash[h] == 0) t.per_hash.erase(h);
    if (++t.stale_filter_bits > t.count / 4 + 16) {
      v.refilter();
      t.stale_filter_bits = 0;
    }
    if (e->rank == t.min_rank) {
      t.min_rank = ~uint64_t(0);
      for (const auto& s : v.segs)
        for (const Item& it : s->items) t.min_rank = std::min(t.min_rank, it.rank);
      v.view.min_rank = t.min_rank;
    }
  }

  // Puts one entry in the table it fits best (see the header for the policy).
  Placed place(const EntryPtr& e, const Fixed& fx) {
    TableState* best = nullptr;
    int best_bits = -1;
    for (const auto& t : tables) {
      if (!t->tuple.fits(fx)) continue;
      const int bits = t->tuple.bits();
      if (bits > best_bits) {
        best = t.get();
        best_bits = bits;
      }
    }
    if (best) {
      const uint32_t h = hash_entry(fx, *best);
      auto it = best->per_hash.find(h);
      if (it != best->per_hash.end() && it->second >= Classifier::kCollisionLimit) {
        const Tuple exact = tuple_from(fx, false);
        if (exact < best->tuple || best->tuple < exact) best = table_for(exact);
      }
    } else {
      best = table_for(tuple_from(fx, true));
    }
    const uint32_t h = hash_entry(fx, *best);
    insert_item(*best, e, h);
    return Placed{best, e, h};
  }

  // ---- dynamic slots ----

  // Maps each of the rule's loads to a slot; false (and nothing taken) if they do not fit.
  bool take_slots(const CompiledRule& c, std::vector<int>* out) {
    std::vector<int> got;
    uint32_t taken_now = 0;
    for (const BpfLoad& l : c.loads) {
      int slot = -1;
      for (int s = 0; s < kDynamicSlots; ++s)
        if ((slot_refs[s] || (taken_now >> s & 1)) && slot_load[s] == l) slot = s;
      if (slot < 0) {
        for (int s = 0; s < kDynamicSlots && slot < 0; ++s)
          if (!slot_refs[s] && !(taken_now >> s & 1)) slot = s;
        if (slot < 0) return false;
        taken_now |= 1u << slot;
        slot_load[slot] = l;
      }
      got.push_back(slot);
    }
    for (int s : got) slot_refs[s]++;
    *out = std::move(got);
    return true;
  }

  void release_slots(const std::vector<int>& slots) {
    for (int s : slots) slot_refs[s]--;
  }

  // ---- rules ----

  EntryPtr make_entry(const CompiledRule& c, const EntrySpec& spec, const std::vector<int>& slots,
                      uint64_t rank, const BpfJit* jit) {
    const size_t ntests = spec.tests.size() + (spec.required.empty() ? 0 : 1);
    const unsigned nblocks = unsigned(std::max<size_t>(1, (ntests + kTestsPerBlock - 1) / kTestsPerBlock));
    if (nblocks > unsigned(kMaxBlocks)) throw std::logic_error("entry with more tests than kMaxTests");
    void* mem = ::operator new(entry_bytes(nblocks), std::align_val_t(64));
    std::memset(mem, 0, entry_bytes(nblocks));
    Entry* e = static_cast<Entry*>(mem);
    e->rank = rank;
    e->rule_id = c.rule.id;
    e->kind = uint8_t(c.rule.kind);
    e->action = uint8_t(c.action);
    e->nblocks = uint8_t(nblocks);
    e->bpf = jit ? jit->call() : nullptr;
    EntryBlock* blk = const_cast<EntryBlock*>(e->blocks());
    for (unsigned b = 0; b < nblocks; ++b)
      for (int i = 0; i < kTestsPerBlock; ++i) {
        blk[b].idx[i] = F_RESERVED_31;
        blk[b].hi[i] = ~0u;
      }
    size_t lane = 0;
    auto put = [&](uint8_t field, uint32_t mask, uint32_t lo, uint32_t hi) {
      EntryBlock& bk = blk[lane / kTestsPerBlock];
      const size_t i = lane % kTestsPerBlock;
      bk.idx[i] = field;
      bk.mask[i] = mask;
      bk.lo[i] = lo & mask;
      bk.hi[i] = hi;
      ++lane;
    };
    for (const TestSpec& t : spec.tests)
      put(t.dynamic ? uint8_t(F_DYN0 + slots[t.load]) : t.field, t.mask, t.lo, t.hi);
    if (!spec.required.empty()) {
      uint32_t bits = 0;
      for (uint16_t r : spec.required) bits |= 1u << slots[r];
      put(F_BPF_VALID, bits, bits, bits);
    }
    return EntryPtr(e, EntryFree{});
  }

  // ---- where a rule goes ----

  int64_t tail_seq() {
    if (next_tail >= kSeqLimit) renumber_all();
    const int64_t seq = next_tail;
    next_tail += kSeqGap;
    return seq;
  }
  int64_t head_seq() {
    if (next_head < 0) renumber_all();
    const int64_t seq = next_head;
    next_head -= kSeqGap;
    return seq;
  }
  // The rules from rank `from` on (to the end of its band, or of all), taken out in order.
  std::vector<Rule> take_rules(uint64_t from, bool band_only) {
    std::vector<Rule> out;
    for (auto m = by_rank.lower_bound(from); m != by_rank.end() && (!band_only || (m->first >> kSeqBits) == (from >> kSeqBits)); ++m)
      out.push_back(rules.at(m->second).info.rule);
    for (const auto& r : out) erase_rule({r.kind, r.id});
    return out;
  }
  void add_at_tail(const std::vector<Rule>& rs) {
    for (const auto& r : rs) insert_rule(compile_rule(r, BpfMode::Lower), tail_seq());
  }
  // Every rule re-added at the tail in its order: sequence numbers start afresh (after
  // about 2^30 adds at one end).
  void renumber_all() {
    const auto all = take_rules(0, false);
    next_tail = int64_t(kSeqBias);
    next_head = int64_t(kSeqBias) - kSeqGap;
    add_at_tail(all);
  }
  // `c` is compiled, its (kind, id) is free and `before` (if any) is a rule of its band.
  void place_rule(CompiledRule c, Placement where, const std::optional<RuleRef>& before) {
    if (!before) {
      insert_rule(std::move(c), where == Placement::Head ? head_seq() : tail_seq());
      return;
    }
    const uint64_t rx = rules.at(*before).rank;
    const uint64_t band = rx >> kSeqBits;
    const int64_t sx = int64_t(rx & kSeqMask);
    const auto it = by_rank.find(rx);
    const bool first = it == by_rank.begin() || (std::prev(it)->first >> kSeqBits) != band;
    const int64_t lo = first ? sx - 2 * kSeqGap : int64_t(std::prev(it)->first & kSeqMask);
    if (lo >= 0 && sx - lo >= 2) {
      const int64_t seq = lo + (sx - lo) / 2;
      next_head = std::min(next_head, seq - kSeqGap);  // a later head add still goes first
      insert_rule(std::move(c), seq);
      return;
    }
    // No room: the rule, then `before` and the rest of its band, go to the band's tail.
    const auto moved = take_rules(rx, true);
    moved_rules += moved.size();
    insert_rule(std::move(c), tail_seq());
    add_at_tail(moved);
  }

  // `c` is compiled and its (kind, id) is free; nothing here can refuse it.
  void insert_rule(CompiledRule c, int64_t seq) {
    const Rule r = c.rule;
    RuleRef ref{r.kind, r.id};
    std::vector<int> slots;
    if (!take_slots(c, &slots)) {
      c = compile_rule(r, BpfMode::JitWithPrefilter);
      if (!take_slots(c, &slots)) {
        c = compile_rule(r, BpfMode::JitOnly);
        take_slots(c, &slots);
      }
    }
    RuleState st;
    st.info.rule = r;
    st.info.bpf_lowered = c.lowered;
    st.info.bpf_note = c.note;
    st.jit = c.jit;
    st.direct_jit = c.direct_jit;
    st.direct_vector = c.direct_vector;
    // The direct path only pays with machine code or the vector form (not with the
    // interpreter).
    const bool jitted = c.direct_jit && c.direct_jit->jitted();
    st.direct_ok = r.enabled && (jitted || st.direct_vector) && r.protocol == 0 && r.vm == 0 && r.ip_family == 0 &&
                   r.local_port.any() && r.remote_port.any();
    st.direct_jitted = st.direct_ok && jitted;
    st.slots = slots;
    st.rank = make_rank(r, seq);
    by_rank.emplace(st.rank, ref);
    for (const EntrySpec& spec : c.entries) {
      EntryPtr e = make_entry(c, spec, slots, st.rank, c.jit.get());
      const Fixed fx = fixed_bits(e.get());
      if (fx.contradictory) continue;  // can never match
      parsed_field_entries += tests_parsed_field(e.get());
      ++live_entries;
      st.placed.push_back(place(e, fx));
      count_for_cache(st.placed.back(), +1);
    }
    st.info.entries = uint32_t(st.placed.size());
    ++entries_version;
    enabled_rules += r.enabled;
    direct_rules += st.direct_ok;
    direct_jitted_rules += st.direct_jitted;
    rules.emplace(ref, std::move(st));
  }

  bool erase_rule(RuleRef ref) {
    auto it = rules.find(ref);
    if (it == rules.end()) return false;
    for (Placed& p : it->second.placed) {
      parsed_field_entries -= tests_parsed_field(p.entry.get());
      count_for_cache(p, -1);
      --live_entries;
      if (!p.table) {
        mark_dead(p.tree_index);
        continue;
      }
      remove_item(*p.table, p.entry.get(), p.hash);
      if (p.table->count == 0) drop_table(p.table);
    }
    release_slots(it->second.slots);
    ++entries_version;
    by_rank.erase(it->second.rank);
    enabled_rules -= it->second.info.rule.enabled;
    direct_rules -= it->second.direct_ok;
    direct_jitted_rules -= it->second.direct_jitted;
    for (const auto& code : {std::shared_ptr<const void>(it->second.jit), std::shared_ptr<const void>(it->second.direct_jit),
                             std::shared_ptr<const void>(it->second.direct_vector)})
      if (code) dropped_code.push_back(code);
    rules.erase(it);
    return true;
  }

  // ---- the split tree ----

  void mark_dead(uint32_t i) {
    if (dead_gen != gen) {  // the published snapshot holds the old bits
      dead = std::make_shared<std::vector<uint64_t>>(*dead);
      dead_gen = gen;
    }
    (*dead)[i >> 6] |= uint64_t(1) << (i & 63);
    ++dead_count;
  }

  uint32_t table_entries() const {
    uint32_t n = 0;
    for (const auto& t : tables) n += t->count;
    return n;
  }

  // Entries that the tree does not serve well: in the tables, or dead in the tree.
  // (The entries the last build declined stay in the tables without counting.)
  uint32_t pending() const {
    const uint32_t t = table_entries();
    return (t > declined_live ? t - declined_live : 0) + dead_count;
  }

  // Every entry in force, in rank order (the input of a build).
  std::vector<EntryPtr> all_entries() const {
    std::vector<EntryPtr> out;
    out.reserve(live_entries);
    for (const auto& [rank, ref] : by_rank)
      for (const Placed& p : rules.at(ref).placed) out.push_back(p.entry);
    return out;
  }

  // Takes a tree built from an earlier rule set: its entries still in force leave the
  // tables, those removed since are dead, those added since stay in (rebuilt) tables.
  void install_tree(std::shared_ptr<const TreeSet> ts) {
    if (ts->built.roots.empty()) {
      // Every entry declined: the tables serve them all, and nothing of the build is kept
      // (without a tree before, nothing moves).
      drop_tree();
      declined_live = uint32_t(ts->built.declined.size());
      ++tree_builds;
      return;
    }
    std::unordered_map<const Entry*, uint32_t> index;
    index.reserve(ts->entries.size());
    for (uint32_t i = 0; i < ts->entries.size(); ++i) index.emplace(ts->entries[i], i);
    for (uint32_t i : ts->built.declined) index.erase(ts->entries[i]);  // they stay in tables
    const uint32_t declined = uint32_t(ts->built.declined.size());
    auto bits = std::make_shared<std::vector<uint64_t>>((ts->entries.size() + 63) / 64, ~uint64_t(0));
    uint32_t live = 0;
    tables.clear();
    by_tuple.clear();
    for (auto& [ref, st] : rules) {
      for (Placed& p : st.placed) {
        if (auto it = index.find(p.entry.get()); it != index.end()) {
          p.table = nullptr;
          p.tree_index = it->second;
          (*bits)[it->second >> 6] &= ~(uint64_t(1) << (it->second & 63));
          ++live;
        } else {
          const Placed q = place(p.entry, fixed_bits(p.entry.get()));
          p.table = q.table;
          p.hash = q.hash;
        }
      }
    }
    tree = std::move(ts);
    dead = std::move(bits);
    dead_gen = gen;
    dead_count = uint32_t(tree->entries.size()) - declined - live;
    // Declined entries are dead in the tree's numbering (none of its leaves lists them).
    declined_live = declined;
    ++tree_builds;
  }

  void drop_tree() {
    if (!tree) return;
    tables.clear();
    by_tuple.clear();
    for (auto& [ref, st] : rules)
      for (Placed& p : st.placed) {
        const Placed q = place(p.entry, fixed_bits(p.entry.get()));
        p.table = q.table;
        p.hash = q.hash;
      }
    tree.reset();
    dead.reset();
    dead_count = 0;
    declined_live = 0;
  }

  // Called before each publish: asks the builder thread for a new tree (Background) when
  // enough entries are outside the current one, and for a bit form when the rule set is
  // one it may serve and the current form is not of it.
  void plan_tree() {
    if (tree_mode != Classifier::TreeMode::Background) return;
    const uint32_t p = pending();
    const bool tree_due = live_entries >= kTreeMinEntries && p >= std::max(kTreeMinEntries, live_entries / 16);
    if (tree_due) build_wanted = true;
    if (bits_due()) bits_wanted = true;
    if (!build_wanted && !bits_wanted) return;
    if (!builder.joinable()) builder = std::thread([this] { build_loop(); });
    build_cv.notify_one();
  }

  // The bit form is worth building: more rules than run directly, few enough entries, none
  // testing a parsed field, and no build made for this rule set yet.
  bool bits_due() const {
    return vector_bpf && bit_form_tried != entries_version && enabled_rules > kDirectRules &&
           live_entries <= kBitFormEntries && parsed_field_entries == 0;
  }

  struct BitsInput {
    std::vector<EntryPtr> owners;
    std::vector<const Entry*> entries;
    BpfLoad slot_load[kDynamicSlots];
    uint64_t version = 0;
  };
  BitsInput bits_input() const {
    BitsInput in;
    in.owners = all_entries();
    for (const auto& e : in.owners) in.entries.push_back(e.get());
    std::copy(std::begin(slot_load), std::end(slot_load), std::begin(in.slot_load));
    in.version = entries_version;
    return in;
  }
  // Takes a form built from `in` if the rule set is still the one it was built from.
  void install_bits(const BitsInput& in, std::shared_ptr<const BitForm> f) {
    bit_form_tried = in.version;
    if (in.version != entries_version) return;
    bit_form = std::move(f);
    bit_form_version = in.version;
  }

  void build_loop() {
    std::unique_lock lk(mu);
    while (true) {
      build_cv.wait(lk, [&] { return stopping || build_wanted || bits_wanted; });
      if (stopping) return;
      if (bits_wanted) {
        bits_wanted = false;
        const BitsInput in = bits_input();
        lk.unlock();
        auto f = make_bit_form(in.entries, in.slot_load);
        lk.lock();
        if (stopping) return;
        if (tree_mode != Classifier::TreeMode::Background) continue;
        install_bits(in, std::move(f));
        if (bit_form_version == in.version) publish();
        continue;
      }
      std::vector<EntryPtr> input = all_entries();
      lk.unlock();
      auto ts = make_tree_set(std::move(input));
      lk.lock();
      build_wanted = false;
      if (stopping) return;
      // Nothing outside the tree now (build_tree() ran meanwhile): keep it.
      if (tree_mode != Classifier::TreeMode::Background || pending() == 0) continue;
      install_tree(std::move(ts));
      publish();  // may want the next build at once, if much changed meanwhile
    }
  }

  // ---- publishing ----

  void publish() {
    plan_tree();
    auto s = std::make_shared<Snapshot>();
    for (const auto& t : tables) {
      if (t->count == 0) continue;
      s->tables.push_back(t->cur);
    }
    std::sort(s->tables.begin(), s->tables.end(),
              [](const auto& a, const auto& b) { return a->view.min_rank < b->view.min_rank; });
    for (const auto& t : s->tables) s->views.push_back(&t->view);
    s->view.tables = s->views.data();
    s->view.ntables = uint32_t(s->views.size());
    if (tree) {
      s->tree = tree;
      s->dead = dead;
      const tree::Built& b = tree->built;
      s->tree_view = TreeView{b.nodes.data(), b.leaves.data(), b.items.data(), tree->entries.data(), b.boxes.data(),
                              {}, dead_count ? dead->data() : nullptr, uint32_t(b.roots.size()), {}};
      std::copy(std::begin(b.box_field), std::end(b.box_field), s->tree_view.box_field);
      std::copy(b.roots.begin(), b.roots.end(), s->tree_view.root);
      s->view.tree = &s->tree_view;
    }
    for (int i = 0; i < kDynamicSlots; ++i) {
      if (!slot_refs[i]) continue;
      s->slot_mask |= 1u << i;
      s->slot_load[i] = slot_load[i];
    }
    if (vector_bpf) s->slot_loader = make_bpf_slot_loader(s->slot_load, s->slot_mask);
    s->kernel = kernel;
    s->needs_parse = parsed_field_entries > 0;
    s->gen = gen;
    s->cache_plan = cache::make_plan(cache_usage, slot_load);
    const size_t direct_usable = vector_bpf ? direct_rules : direct_jitted_rules;
    if (enabled_rules > 0 && enabled_rules <= kDirectRules && direct_usable == enabled_rules) {
      for (const auto& [ref, st] : rules) {
        if (!st.info.rule.enabled) continue;
        const Rule& r = st.info.rule;
        const BpfVector* vec = vector_bpf ? st.direct_vector.get() : nullptr;
        s->direct.push_back(DirectRule{st.rank, r.id, r.kind, effective_action(r), r.adapter, r.direction,
                                       r.min_size > 0 ? uint32_t(r.min_size) : 0,
                                       r.max_size > 0 ? uint32_t(r.max_size) : ~0u,
                                       vec ? BpfJit::Call{} : *st.direct_jit->call(), vec});
      }
      std::sort(s->direct.begin(), s->direct.end(),
                [](const DirectRule& a, const DirectRule& b) { return a.rank < b.rank; });
    }
    if (bit_form && bit_form_version == entries_version && s->slot_loader && s->direct.empty() &&
        tree_mode != Classifier::TreeMode::Off)
      s->bits = bit_form;
    std::shared_ptr<const Snapshot> old = std::move(current_owner);
    current_owner = s;
    current.store(s.get(), std::memory_order_seq_cst);
    ++gen;  // everything made so far is now visible to readers: copy before changing it
    if (old) epoch.retire(std::move(old));
    for (auto& code : dropped_code) epoch.retire(std::move(code));
    dropped_code.clear();
  }

  // ---- reading ----

  // Rule after rule over up to kMaxBatch packets: each rule sees the packets no earlier
  // rule took.
  static void classify_direct(const Snapshot* s, const PacketRef* pkts, uint32_t n, Decision* out) {
    static_assert(kMaxBatch == 32, "a batch's packets are the bits of one uint32_t");
    for (uint32_t done = 0; done < n; done += kMaxBatch) {
      const uint32_t m = n - done < kMaxBatch ? n - done : kMaxBatch;
      const PacketRef* p = pkts + done;
      Decision* o = out + done;
      uint32_t open = m == 32 ? ~0u : (1u << m) - 1;
      for (uint32_t i = 0; i < m; ++i) o[i] = Decision{};
      for (const DirectRule& r : s->direct) {
        uint32_t cand = r.any_meta() ? open : 0;
        for (uint32_t bits = r.any_meta() ? 0 : open; bits; bits &= bits - 1) {
          const int i = std::countr_zero(bits);
          const bool meta_ok = (r.adapter < 0 || p[i].meta.adapter == uint32_t(r.adapter)) &&
                               (r.direction == Direction::Any || p[i].meta.direction == r.direction) &&
                               p[i].len >= r.min_len && p[i].len <= r.max_len;
          cand |= uint32_t(meta_ok) << i;
        }
        uint32_t hits = 0;
        if (r.vec) {
          hits = cand ? bpf_vector_match_bits(*r.vec, p, cand) : 0;
        } else {
          for (uint32_t bits = cand; bits; bits &= bits - 1) {
            const int i = std::countr_zero(bits);
            hits |= uint32_t(r.call.fn(r.call.ctx, p[i].data, p[i].len, p[i].len) != 0) << i;
          }
        }
        for (uint32_t bits = hits; bits; bits &= bits - 1) o[std::countr_zero(bits)] = Decision{r.rule_id, r.kind, r.action};
        open &= ~hits;
        if (!open) break;
      }
    }
  }

  // Any packets, in batches of kMaxBatch.
  void classify_in(int slot, cache::DecisionCache* dc, const PacketRef* pkts, uint32_t n, Decision* out) {
    if (!dc) {  // no cache: the packets as they are, no per-batch arrays
      epoch.enter(slot);
      decide_uncached(current.load(std::memory_order_seq_cst), pkts, n, out);
      epoch.leave(slot);
      return;
    }
    const uint8_t* data[kMaxBatch];
    uint32_t len[kMaxBatch];
    PacketMeta metas[kMaxBatch];
    for (uint32_t done = 0; done < n; done += kMaxBatch) {
      const uint32_t m = n - done < kMaxBatch ? n - done : kMaxBatch;
      const PacketMeta& first = pkts[done].meta;
      bool one_meta = true;
      for (uint32_t i = 0; i < m; ++i) {
        const PacketRef& p = pkts[done + i];
        data[i] = p.data;
        len[i] = p.len;
        metas[i] = p.meta;
        one_meta = one_meta && p.meta.adapter == first.adapter && p.meta.direction == first.direction &&
                   p.meta.vm == first.vm;
      }
      classify_batch(slot, dc, PacketBatch{data, len, m, first, one_meta ? nullptr : metas}, out + done);
    }
  }

  uint32_t classify_batch(int slot, cache::DecisionCache* dc, const PacketBatch& b, Decision* out) {
    epoch.enter(slot);
    const Snapshot* s = current.load(std::memory_order_seq_cst);
    uint32_t matched = 0;
    if (dc && s->direct.empty() && (s->view.ntables != 0 || s->view.tree)) {
      matched = dc->classify(s->cache_plan, s->gen, b, out,
                             [s](const PacketRef* p, uint32_t k, Decision* o) { classify_entries(s, p, k, o); });
    } else {
      PacketRef refs[kMaxBatch];
      for (uint32_t i = 0; i < b.n; ++i) refs[i] = b.ref(i);
      decide_uncached(s, refs, b.n, out);
      // A few programs run directly: nothing to cache.
      if (dc && !s->direct.empty())
        dc->bypassed.store(dc->bypassed.load(std::memory_order_relaxed) + b.n, std::memory_order_relaxed);
      matched = cache::matched_bits(out, b.n);
    }
    epoch.leave(slot);
    return matched;
  }

  // Decides any number of packets without a decision cache.
  static void decide_uncached(const Snapshot* s, const PacketRef* pkts, uint32_t n, Decision* out) {
    if (s->view.ntables == 0 && !s->view.tree && s->direct.empty())
      std::fill(out, out + n, Decision{});  // no rules: nothing to parse, hash or look up
    else if (!s->direct.empty())
      classify_direct(s, pkts, n, out);
    else
      classify_entries(s, pkts, n, out);
  }

  // The entries (no direct rules): the bit form if it is current, else the tree and tables.
  static void classify_entries(const Snapshot* s, const PacketRef* pkts, uint32_t n, Decision* out) {
    if (!s->bits) return classify_tables(s, pkts, n, out);
    for (uint32_t done = 0; done < n; done += kMaxBatch) {
      const uint32_t m = n - done < kMaxBatch ? n - done : kMaxBatch;
      const uint32_t left = bit_form_classify(*s->bits, *s->slot_loader, pkts + done, m, out + done);
      if (!left) continue;
      // A guarded value above 16 bits (bit_form.h): those packets take the tables.
      PacketRef refs[kMaxBatch];
      Decision dec[kMaxBatch];
      uint32_t k = 0;
      for (uint32_t b = left; b; b &= b - 1) refs[k++] = pkts[done + uint32_t(std::countr_zero(b))];
      classify_tables(s, refs, k, dec);
      k = 0;
      for (uint32_t b = left; b; b &= b - 1) out[done + uint32_t(std::countr_zero(b))] = dec[k++];
    }
  }

  static void classify_tables(const Snapshot* s, const PacketRef* pkts, uint32_t n, Decision* out) {
    alignas(64) PacketKey keys[kMaxBatch];
    while (n > 0) {
      const uint32_t m = n < kMaxBatch ? n : kMaxBatch;
      for (uint32_t i = 0; i < m; ++i) {
        if (s->needs_parse) {
          parse_frame(pkts[i].data, pkts[i].len, pkts[i].meta, &keys[i]);
        } else {
          // Only metadata, length and BPF loads are tested: no need to parse.
          keys[i].f[F_ADAPTER] = pkts[i].meta.adapter;
          keys[i].f[F_DIRECTION] = uint32_t(pkts[i].meta.direction);
          keys[i].f[F_VM] = pkts[i].meta.vm;
          keys[i].f[F_FRAME_LEN] = pkts[i].len;
        }
        if (s->slot_loader) continue;
        uint32_t mask = s->slot_mask, valid = 0;
        while (mask) {
          const int sl = std::countr_zero(mask);
          mask &= mask - 1;
          uint32_t v = 0;
          if (bpf_load(s->slot_load[sl], pkts[i].data, pkts[i].len, &v)) valid |= 1u << sl;
          keys[i].f[F_DYN0 + sl] = v;
        }
        keys[i].f[F_BPF_VALID] = valid;
      }
      if (s->slot_loader)
        bpf_vector_load_slots(*s->slot_loader, pkts, m, &keys[0].f[F_DYN0], &keys[0].f[F_BPF_VALID],
                              sizeof(PacketKey) / sizeof(uint32_t));
      s->kernel(&s->view, pkts, keys, m, out);
      pkts += m;
      out += m;
      n -= m;
    }
  }
};

// ---- Classifier ----

Classifier::Classifier() : impl_(std::make_unique<Impl>()), isa_(default_isa()) {
  impl_->kernel = kernel_for(isa_);
  impl_->vector_bpf = isa_ == Isa::Avx512;
  impl_->publish();
  own_reader_ = std::make_unique<Reader>(reader());
}

Classifier::~Classifier() { own_reader_.reset(); }

void Classifier::add(const Rule& rule, Placement where) {
  std::lock_guard lk(impl_->mu);
  if (impl_->rules.count(RuleRef{rule.kind, rule.id}))
    throw RuleError(rule, "id", "a " + std::string(to_string(rule.kind)) + " rule with this id exists already");
  impl_->place_rule(compile_rule(rule, BpfMode::Lower), where, std::nullopt);
  impl_->publish();
}

bool Classifier::remove(RuleRef ref) {
  std::lock_guard lk(impl_->mu);
  if (!impl_->erase_rule(ref)) return false;
  impl_->publish();
  return true;
}

std::vector<RuleAdd> at_tail(const std::vector<Rule>& rules) {
  std::vector<RuleAdd> out;
  out.reserve(rules.size());
  for (const auto& r : rules) out.push_back({r, std::nullopt});
  return out;
}

void Classifier::apply(const std::vector<RuleRef>& removes, const std::vector<Rule>& adds) { apply(removes, at_tail(adds)); }

void Classifier::apply(const std::vector<RuleRef>& removes, const std::vector<RuleAdd>& adds) {
  if (removes.empty() && adds.empty()) return;
  std::lock_guard lk(impl_->mu);
  // Check and compile everything first so that a refused item changes nothing.
  std::set<RuleRef> removed, added;
  for (const auto& ref : removes) {
    if (!impl_->rules.count(ref) || removed.count(ref))
      throw RuleError(ref.kind, ref.id, "id", "no such rule to delete");
    removed.insert(ref);
  }
  std::vector<CompiledRule> compiled;
  compiled.reserve(adds.size());
  std::map<RuleRef, const Rule*> added_rules;
  auto band = [](const Rule& r) { return std::make_pair(r.kind == RuleKind::Passthrough, r.priority); };
  for (const auto& [r, before] : adds) {
    RuleRef ref{r.kind, r.id};
    if ((impl_->rules.count(ref) && !removed.count(ref)) || added.count(ref))
      throw RuleError(r, "id", "a " + std::string(to_string(r.kind)) + " rule with this id exists already");
    if (before) {
      const Rule* anchor = nullptr;
      if (auto a = added_rules.find(*before); a != added_rules.end()) anchor = a->second;
      else if (auto f = impl_->rules.find(*before); f != impl_->rules.end() && !removed.count(*before))
        anchor = &f->second.info.rule;
      const std::string name = std::string(to_string(before->kind)) + " rule " + std::to_string(before->id);
      if (!anchor) throw RuleError(r, "before", "no " + name + " to go before");
      if (band(*anchor) != band(r))
        throw RuleError(r, "before", name + " is of another group or priority; rules are ordered within their own");
    }
    added.insert(ref);
    added_rules[ref] = &r;
    compiled.push_back(compile_rule(r, BpfMode::Lower));
  }
  for (const auto& ref : removes) impl_->erase_rule(ref);
  for (size_t i = 0; i < adds.size(); ++i) impl_->place_rule(std::move(compiled[i]), Placement::Tail, adds[i].before);
  impl_->publish();
}

void Classifier::clear() {
  std::lock_guard lk(impl_->mu);
  std::vector<RuleRef> all;
  for (const auto& [ref, st] : impl_->rules) all.push_back(ref);
  for (const auto& ref : all) impl_->erase_rule(ref);
  impl_->publish();
}

void Classifier::set_isa(Isa isa) {
  if (!isa_supported(isa))
    throw std::invalid_argument(std::string("ISA ") + isa_name(isa) + " is not supported by this CPU");
  std::lock_guard lk(impl_->mu);
  isa_ = isa;
  impl_->kernel = kernel_for(isa);
  impl_->vector_bpf = isa == Isa::Avx512;
  impl_->publish();
}

void Classifier::set_tree_mode(TreeMode mode) {
  std::lock_guard lk(impl_->mu);
  impl_->tree_mode = mode;
  if (mode == TreeMode::Off) impl_->drop_tree();
  impl_->publish();
}

void Classifier::build_tree() {
  std::lock_guard lk(impl_->mu);
  if (impl_->tree_mode == TreeMode::Off) return;
  bool changed = false;
  if (impl_->pending()) {
    impl_->install_tree(make_tree_set(impl_->all_entries()));
    changed = true;
  }
  if (impl_->bits_due()) {
    const auto in = impl_->bits_input();
    impl_->install_bits(in, make_bit_form(in.entries, in.slot_load));
    changed = true;
  }
  if (changed) impl_->publish();
}

std::vector<RuleInfo> Classifier::rules() const {
  std::lock_guard lk(impl_->mu);
  std::vector<RuleInfo> out;
  out.reserve(impl_->by_rank.size());
  for (const auto& [rank, ref] : impl_->by_rank) out.push_back(impl_->rules.at(ref).info);
  return out;
}

const RuleInfo* Classifier::find(RuleRef ref) const {
  std::lock_guard lk(impl_->mu);
  auto it = impl_->rules.find(ref);
  return it == impl_->rules.end() ? nullptr : &it->second.info;
}

ClassifierStats Classifier::stats() const {
  std::lock_guard lk(impl_->mu);
  ClassifierStats s;
  s.rules = uint32_t(impl_->rules.size());
  s.moved_rules = impl_->moved_rules;
  for (const auto& [ref, st] : impl_->rules) {
    s.entries += st.info.entries;
    s.jit_rules += st.jit ? 1 : 0;
    for (const Placed& p : st.placed) s.memory_bytes += entry_bytes(p.entry->nblocks);
  }
  for (const auto& t : impl_->tables) {
    if (!t->count) continue;
    ++s.tables;
    s.memory_bytes += sizeof(TableVersion) + t->cur->segs.size() * (sizeof(void*) * 3 + sizeof(Segment));
    for (const auto& seg : t->cur->segs) s.memory_bytes += seg->items.size() * (sizeof(Item) + sizeof(EntryPtr));
    s.memory_bytes += t->cur->filter.size() * sizeof(uint64_t);
  }
  if (const auto& t = impl_->tree) {
    s.tree_entries = uint32_t(t->entries.size() - t->built.declined.size()) - impl_->dead_count;
    s.tree_items = uint32_t(t->built.items.size());
    s.tree_depth = t->built.depth;
    s.memory_bytes += t->bytes() + (impl_->dead ? impl_->dead->size() * sizeof(uint64_t) : 0);
  }
  s.tree_builds = impl_->tree_builds;
  if (const BitForm* f = impl_->current_owner->bits.get()) {
    for (uint32_t i = 0; i < kBitFormEntries / 64; ++i) s.bit_form_entries += uint32_t(std::popcount(f->all.w[i]));
    s.bit_form_chunks = uint32_t(f->chunks.size());
    s.memory_bytes += f->bytes();
  }
  for (uint32_t r : impl_->slot_refs) s.dynamic_slots += r ? 1 : 0;
  s.cache_shapes = impl_->current_owner->cache_plan.shapes_enabled();
  return s;
}

Classifier::Reader Classifier::reader() {
  const int slot = impl_->epoch.acquire_slot();
  if (slot < 0) throw std::runtime_error("too many classifier readers are open");
  return Reader(this, slot);
}

Classifier::Reader::Reader(Classifier* c, int slot) : c_(c), slot_(slot) {}

Classifier::Reader::Reader(Reader&& o) noexcept : c_(o.c_), slot_(o.slot_), cache_(std::move(o.cache_)) {
  o.slot_ = -1;
}

void Classifier::Reader::enable_cache(uint32_t flows) { cache_ = std::make_unique<cache::DecisionCache>(flows); }

Classifier::CacheStats Classifier::Reader::cache_stats() const {
  CacheStats st;
  if (!cache_) return st;
  st.capacity = cache_->capacity();
  st.hits = cache_->hits.load(std::memory_order_relaxed);
  st.misses = cache_->misses.load(std::memory_order_relaxed);
  st.bypassed = cache_->bypassed.load(std::memory_order_relaxed);
  return st;
}

Classifier::Reader::~Reader() {
  if (slot_ >= 0) c_->impl_->epoch.release_slot(slot_);
}

void Classifier::Reader::classify(const PacketRef* pkts, uint32_t n, Decision* out) {
  c_->impl_->classify_in(slot_, cache_.get(), pkts, n, out);
}

uint32_t Classifier::Reader::classify(const PacketBatch& batch, Decision* out) {
  if (batch.n > kMaxBatch)
    throw std::length_error("a batch of " + std::to_string(batch.n) + " packets: at most " +
                            std::to_string(kMaxBatch));
  if (batch.plain_ipv4) *batch.plain_ipv4 = 0;
  if (batch.memo) *batch.memo = 0;
  return c_->impl_->classify_batch(slot_, cache_.get(), batch, out);
}

void Classifier::classify(const PacketRef* pkts, uint32_t n, Decision* out) {
  own_reader_->classify(pkts, n, out);
}

Decision Classifier::classify_one(const uint8_t* data, uint32_t len, const PacketMeta& meta) {
  PacketRef p{data, len, meta};
  Decision d;
  classify(&p, 1, &d);
  return d;
}

}  // namespace vpf::matcher
