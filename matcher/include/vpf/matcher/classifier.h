// vportfilter matcher: the classifier.
//
// What it does
// ============
// A Classifier holds a set of rules (rule.h) and answers, for batches of up to 32 packets,
// "which rule decides this packet, and with what action".  The answer follows the order
// documented in rule.h: passthrough rules first, then filter and connection rules, each
// group by priority (higher first) and then insertion order; no match passes.
//
// How rules become entries
// ========================
// A rule compiles into one or more *entries*.  An entry is a conjunction of up to 32
// tests "(key field & mask) in [lo, hi]" over the PacketKey (packet_key.h), plus an
// optional BPF program.  The rule's fixed fields (adapter, direction, size range, VM,
// protocol, family, addresses with masks, port ranges) become tests on the parsed fields.
// A rule whose direction is "any" and whose local/remote fields differ compiles to one
// entry per direction, because local and remote swap with direction.  A BPF expression is
// lowered (bpf.h) into a disjunction of conjunctions of tests on raw packet loads; each
// conjunction becomes an entry, and its loads are given *dynamic slots* (key fields 32..63)
// that are filled per packet from the snapshot's load list.  A program that cannot be
// lowered keeps its fixed-field tests and the tests every accepting path shares (the
// prefilter), and runs the JIT-compiled program only on packets that pass them.
//
// The data structure: tuple tables
// ================================
// Entries are stored in hash tables, each keyed by a *tuple*: up to 8 (field, mask) pairs.
// An entry may sit in a table only if its tests fix every bit of the tuple (for a range
// [lo, hi] under mask m the fixed bits are those of m above the highest bit where lo and
// hi differ).  The table hashes those bits of the entry; a packet hashes the same bits of
// its key and only needs to test the entries of one bucket, in rank order, and stop at
// the first that passes.  Tuples are chosen as entries arrive: an entry goes to the most
// specific table it fits; if none fits, or its hash bucket already holds
// kCollisionLimit entries with the same hash, a new table is made from the entry's own
// fixed bits: for a table made because nothing fit, only its 3 most specific fields, with
// address prefixes relaxed to byte boundaries and partial port/size ranges left out, so
// that similar rules share a table (the idea of TupleMerge, Daly & Torng); for a split, up
// to 8 fields as they are.  Fields that take few values (direction, IP version, parse
// flags, BPF validity, ethertype, fragment bits) are never hashed.  Tables are searched in
// order of the best rank they hold, and a packet stops searching once its best match so
// far ranks above every entry of the remaining tables.  Each table also keeps a membership
// filter (16 bits per bucket, one per entry hash) so that most probes end after one load.
//
// Tiny rule sets: up to 4 enabled rules that test only metadata, size and a BPF program
// (with JIT code) are evaluated directly, one program call each, instead of through the
// tables.
//
// The ISA-specific kernels (isa.h) hash a table's tuple for 16 (AVX-512) or 8 (AVX2)
// packets at once and test a block of 8 of an entry's lanes per instruction (4 with SSE4.2;
// an entry has 1 to 4 blocks); AVX-512, AVX2, SSE4.2 and
// scalar kernels give identical results, and the tests check every kernel the CPU has
// against a linear reference.
//
// Invariants
// ==========
//  * Every entry of a table fixes all bits of the table's tuple.
//  * Within a bucket, items are sorted by rank; a table's min_rank is <= every rank in it.
//  * The tables of a snapshot are sorted by min_rank.
//  * Ranks are unique per rule; the entries of one rule share its rank.
//  * A snapshot never changes after it is published.
//
// Thread-safety
// =============
// Single writer: add(), remove(), apply(), clear(), set_isa() must not run concurrently
// with each other.  Each change builds a new snapshot that shares every unchanged table
// segment with the previous one (one change copies one 64-bucket segment per entry and the
// table directory it sits in; no full rebuild), and publishes it with one atomic store.
//
// Readers, any number, concurrently with the writer: each thread that classifies opens
// its own Reader.  Reader::classify() never blocks, never waits for the writer and never
// allocates: it pins the current snapshot for the duration of the call (epoch-based
// reclamation: the writer frees a retired snapshot only once every reader that could have
// seen it has left its classify call).  Classifier::classify() is a convenience for
// single-threaded callers and uses a reader of the classifier's own.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "vpf/matcher/bpf.h"
#include "vpf/matcher/isa.h"
#include "vpf/matcher/packet_key.h"
#include "vpf/matcher/rule.h"

namespace vpf::matcher {

inline constexpr uint32_t kNoRule = 0xffffffffu;
inline constexpr uint32_t kMaxBatch = 32;

// A packet to classify.  `data` may be null when len is 0.
struct PacketRef {
  const uint8_t* data = nullptr;
  uint32_t len = 0;
  PacketMeta meta;
};

// Packets as a switch hands them over: their bytes and lengths in two arrays, and one
// metadata for all (one port and direction) or, with `metas`, one per packet.
struct PacketBatch {
  const uint8_t* const* data = nullptr;
  const uint32_t* len = nullptr;
  uint32_t n = 0;  // at most kMaxBatch
  PacketMeta meta;
  const PacketMeta* metas = nullptr;
  // When set, receives the packets the classifier found to be plain IPv4 frames, as a bit
  // set: untagged (Ethernet type 0x0800), a 20-byte IPv4 header, not a fragment, a total
  // length of at least 20 and at most the frame's length - 14 that covers the transport
  // header of TCP (20 bytes), UDP (8), SCTP (12) and ICMP (8).  A packet it did not check
  // (one the decision cache keyed one at a time, or did not key) has its bit clear.  A
  // switch's datapath may take its own parse of those packets from this (hook ABI 5).
  uint32_t* plain_ipv4 = nullptr;
  // When set, receives the packets whose decision holds for every packet of the same
  // exact flow key in the switch, as a bit set (before the decisions: the caller keeps
  // only the ones it lets pass): untagged IPv4 frames with a 20-byte header (checked as
  // for plain_ipv4), of a shape whose cache key holds only bytes that the switch's flow
  // key also determines (Ethernet addresses and type, IP TOS, TTL, protocol, addresses
  // and non-fragment bits, the transport ports, TCP flags, ICMP type and code) and no
  // size class.  Hook ABI 6 lets a switch remember those passes per flow.
  uint32_t* memo = nullptr;
  PacketRef ref(uint32_t i) const { return PacketRef{data[i], len[i], metas ? metas[i] : meta}; }
};

struct Decision {
  uint32_t rule_id = kNoRule;        // kNoRule: no rule matched (the packet passes)
  RuleKind kind = RuleKind::Filter;  // the deciding rule's kind
  Action action = Action::Pass;
  bool matched() const { return rule_id != kNoRule; }
  friend bool operator==(const Decision&, const Decision&) = default;
};

// Identifies a rule: ids are unique within a kind.
struct RuleRef {
  RuleKind kind = RuleKind::Filter;
  uint32_t id = 0;
  friend auto operator<=>(const RuleRef&, const RuleRef&) = default;
};

// Where add() places a rule among rules of equal priority.
enum class Placement { Tail, Head };

// One rule for apply(): at the tail of the rules of its group (passthrough or not) and
// priority, or, with `before`, right before that rule (of the same group and priority:
// one in force after the call's removes, or an earlier add of the same call).
struct RuleAdd {
  Rule rule;
  std::optional<RuleRef> before;
};
std::vector<RuleAdd> at_tail(const std::vector<Rule>& rules);  // each at the tail

// How a rule was compiled (for tools and logs).
struct RuleInfo {
  Rule rule;
  uint32_t entries = 0;       // conjunctions stored in tables
  bool bpf_lowered = true;    // false: the expression runs in the JIT
  std::string bpf_note;       // why it was not lowered
};

struct ClassifierStats {
  uint32_t rules = 0;
  uint32_t entries = 0;
  uint32_t tables = 0;
  uint32_t dynamic_slots = 0;  // distinct BPF loads in use
  uint32_t jit_rules = 0;      // rules whose BPF runs in the JIT
  size_t memory_bytes = 0;     // the lookup structures: entries, the tree, table items,
                               // segments and directories (not the rules kept beside them)
  // Packet shapes a decision cache keeps, bit i for shape i: bit 3 one VLAN tag, bit 2
  // IPv6 (else IPv4), bits 0..1 the transport: 0 TCP, 1 UDP/UDP-Lite/SCTP, 2 ICMP, 3 other.
  uint32_t cache_shapes = 0;
  uint64_t moved_rules = 0;  // re-added to make room for inserts before a rule (apply)
  uint32_t tree_entries = 0;  // entries the split tree serves (the rest are in tables)
  uint32_t tree_items = 0;    // their copies in the tree's leaves
  uint32_t tree_depth = 0;    // inner nodes on the longest path
  uint64_t tree_builds = 0;   // builds installed so far (also those that declined every rule)
  uint32_t bit_form_entries = 0;  // entries the bit form serves (0: none in force)
  uint32_t bit_form_chunks = 0;   // its class tables
};

namespace cache {
class DecisionCache;
}

class Classifier {
 public:
  static constexpr uint32_t kCollisionLimit = 32;

  Classifier();
  ~Classifier();
  Classifier(const Classifier&) = delete;
  Classifier& operator=(const Classifier&) = delete;

  // ---- writer (one thread at a time; the calls below lock against each other and
  // against the classifier's own tree builder) ----

  // Adds one rule.  Throws RuleError (naming the rule, the field and the reason, with
  // libpcap's text for a bad BPF expression) and changes nothing if the rule is invalid or
  // its (kind, id) exists already.
  void add(const Rule& rule, Placement where = Placement::Tail);

  // Removes a rule.  Returns false if there is none with that kind and id.
  bool remove(RuleRef ref);

  // Removes `removes` then adds `adds` (at the tail, or before the rule each names), in
  // order, publishing once.  All or nothing: if any add is refused (or a remove names an
  // unknown rule, or a `before` names no rule of the add's group and priority) nothing
  // changes and the RuleError of the first bad item is thrown.  A placement costs what one
  // add costs; only when repeated inserts at one spot have used up the room between two
  // neighbours are the rules from `before` to the end of its priority moved (re-added).
  void apply(const std::vector<RuleRef>& removes, const std::vector<RuleAdd>& adds);
  void apply(const std::vector<RuleRef>& removes, const std::vector<Rule>& adds);

  void clear();

  // Chooses the kernel (default: default_isa()).  Throws std::invalid_argument for an ISA
  // this CPU cannot run.
  void set_isa(Isa isa);
  Isa isa() const { return isa_; }

  // The split tree (src/split_tree.h): a decision tree over the rules in force, searched
  // before the tuple tables, which then hold only the rules changed since the tree was
  // built.  Background (the default): a thread of the classifier builds a new tree when
  // enough rules have changed (at least 64 in force, and 64 or a sixteenth of them
  // changed) and publishes it; changes never wait for a build.  Manual: only build_tree()
  // builds one.  Off: tables only.
  enum class TreeMode { Off, Background, Manual };
  void set_tree_mode(TreeMode mode);
  // Builds the tree over every rule in force now, if any is outside it, and publishes
  // it (blocking; for loaders and benchmarks that want it at once).  Nothing in Off mode.
  void build_tree();

  // ---- introspection (writer thread) ----
  std::vector<RuleInfo> rules() const;  // in evaluation order
  const RuleInfo* find(RuleRef ref) const;
  ClassifierStats stats() const;

  // ---- readers ----
  struct CacheStats {
    uint64_t hits = 0;      // decided by the cache
    uint64_t misses = 0;    // cacheable, classified by the tables and inserted
    uint64_t bypassed = 0;  // not cacheable (shape, length or rule set)
    uint32_t capacity = 0;  // flows the cache can hold (0: no cache)
  };
  class Reader {
   public:
    ~Reader();
    Reader(Reader&&) noexcept;
    Reader& operator=(Reader&&) = delete;
    Reader(const Reader&) = delete;
    // Classifies n packets (any n; internally in batches of 32).  Never blocks or allocates.
    void classify(const PacketRef* pkts, uint32_t n, Decision* out);
    // Classifies one batch; returns the packets a rule matched as a bit set (bit i: out[i]
    // names a rule; the others are Decision{}).  Never blocks or allocates.  Throws
    // std::length_error for a batch of more than kMaxBatch packets (and changes nothing).
    uint32_t classify(const PacketBatch& batch, Decision* out);

    // Puts a decision cache for about `flows` flows in front of the tables (72 bytes of
    // memory per flow, allocated here): a packet of a flow seen under the current rules
    // gets its decision from the cache, with the same result the tables give.  Only
    // packets whose decision is fully determined by a few header words are cached; the
    // rest, and every packet while a rule runs a BPF program in the executor, go to the
    // tables.  A rule change empties the cache at once.  src/decision_cache.h says how.
    void enable_cache(uint32_t flows = kDefaultCacheFlows);
    CacheStats cache_stats() const;  // may be called from any thread

   private:
    friend class Classifier;
    Reader(Classifier* c, int slot);
    Classifier* c_;
    int slot_;
    std::unique_ptr<cache::DecisionCache> cache_;
  };

  static constexpr uint32_t kDefaultCacheFlows = 65536;

  // Throws std::runtime_error if more than kMaxReaders readers are open.
  Reader reader();
  static constexpr int kMaxReaders = 128;

  // Single-threaded convenience (uses the classifier's own reader).
  void classify(const PacketRef* pkts, uint32_t n, Decision* out);
  Decision classify_one(const uint8_t* data, uint32_t len, const PacketMeta& meta = {});

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
  Isa isa_;
  std::unique_ptr<Reader> own_reader_;
};

// The linear reference: evaluates every rule in order, directly from the Rule fields and
// the BPF interpreter (libpcap's semantics, bpf.h).  Slow and obviously right; tests compare every kernel with it.
class LinearClassifier {
 public:
  void add(const Rule& rule, Placement where = Placement::Tail);  // validates like Classifier
  void add(const Rule& rule, RuleRef before);  // right before that rule (it must exist)
  bool remove(RuleRef ref);
  Decision classify(const uint8_t* data, uint32_t len, const PacketMeta& meta) const;
  size_t size() const { return rules_.size(); }
  std::vector<RuleRef> order() const;  // evaluation order

 private:
  struct Compiled {
    Rule rule;
    Action action;
    std::vector<bpf_insn> prog;
  };
  std::vector<Compiled> rules_;  // in evaluation order
};

// True if `rule` matches the packet, evaluated field by field (used by LinearClassifier).
bool rule_matches(const Rule& rule, const std::vector<bpf_insn>& prog, const uint8_t* data, uint32_t len,
                  const PacketKey& key);

}  // namespace vpf::matcher
