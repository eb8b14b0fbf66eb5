// A small rule set whose entries test nothing but metadata, the frame length and BPF loads,
// as class tables and entry bit sets (the bit-vector scheme of Lakshman and Stiliadis):
// each field a packet is tested on is cut into chunks of at most 16 bits; a chunk's table
// maps the chunk's value to a class, and the class to the set of entries whose tests on
// that chunk hold for it.  A packet's entries are the AND of its chunks' sets; the first
// (lowest rank) decides.  No branch follows the packet's bytes, and 100 rules cost about
// what 10 do.
//
// Why: lowered BPF rules all test the same few loads (ethertype, protocol, ports, address
// prefixes) with different constants, so one tuple table holds them, but a packet that
// passes the table's filter still walks its bucket and tests entries one after the other
// (~68 TSC cycles for such a packet, docs/benchmarks.md).
//
// A test that every entry makes alike (as `tcp` makes every entry of its rules test the
// ethertype, the protocol and the fragment offset) is a gate: tested once a packet on the
// whole value, in a register, and left out of the chunks.
//
// A test (v & mask) in [lo, hi] on a 32-bit field splits into a test of the high and one
// of the low 16 bits when the mask lies in one half or both ends share their high half;
// otherwise the field is taken as 16 bits wide, and a packet whose value there is above
// 0xffff is left to the tables (`guard`).
//
// Built in the background for at most kBitFormEntries entries (classifier.cc); used only
// with the AVX-512 BPF slot loader (bpf_vector.h).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "bpf_vector.h"
#include "classifier_layout.h"
#include "vpf/matcher/classifier.h"

namespace vpf::matcher {

inline constexpr uint32_t kBitFormEntries = 512;  // one bit each: one 64-byte set
inline constexpr uint32_t kBitFormMaxClasses = 4096;  // per chunk (64 bytes each)

// The packet's field values the chunks read: dynamic slots 0..15, then these.
enum BitSource : uint8_t { kSrcValid = 16, kSrcLen, kSrcAdapter, kSrcDirection, kSrcVm, kSources };

struct alignas(64) EntrySet {
  uint64_t w[kBitFormEntries / 64];
};

inline constexpr uint32_t kBitFormMaxChunks = 16;  // a packet's chunk values: one register

struct BitChunk {
  uint8_t src;          // BitSource, or a slot (0..15)
  uint8_t shift;        // 0 or 16
  uint16_t idx_mask;    // 0xff or 0xffff
  uint32_t class_base;  // its table in BitForm::class_of
  uint32_t invalid;     // the class_of index of a packet whose load is out of bounds
};

struct BitForm {
  std::vector<BitChunk> chunks;   // at most kBitFormMaxChunks
  std::vector<uint16_t> class_of;  // a chunk's value -> the index of its class's set in `sets`
  std::vector<EntrySet> sets;      // at most 65536
  std::vector<Decision> decision;  // per entry (bit), in rank order; then one "no rule"
  EntrySet all{};                  // the entries that can match at all
  // The chunks as lanes (bit_form_avx512.cc): source, shift, mask and table of chunk i
  // in lane i; unused lanes read a table entry that holds the set of every entry.
  alignas(64) uint32_t lane_src[16] = {}, lane_shift[16] = {}, lane_mask[16] = {}, lane_base[16] = {},
                       lane_invalid[16] = {};
  alignas(64) uint32_t guard_src[16] = {};  // the guarded sources, in lanes guard_lanes
  // Gates: tests that every entry makes, (value & mask) - lo <= range on the whole value of
  // the source, made once a packet; a packet that fails one matches nothing.
  alignas(64) uint32_t gate_src[16] = {}, gate_mask[16] = {}, gate_lo[16] = {}, gate_range[16] = {};
  uint16_t guard_lanes = 0, gate_lanes = 0;
  uint16_t chunk_slots = 0;  // the slots the chunks read
  bool uses_meta = false;    // some chunk, gate or guard reads the length or metadata
  uint32_t guard = 0;              // bit s: source s must be <= 0xffff, else the tables decide
  size_t bytes() const;
};

// Null when some entry tests a field other than metadata, frame length and dynamic slots
// below 16, calls a program, or when there are more than kBitFormEntries entries or a
// chunk would need more than kBitFormMaxClasses classes.  `entries` in rank order.
std::shared_ptr<const BitForm> make_bit_form(const std::vector<const layout::Entry*>& entries, const BpfLoad* slot_load);

// Decides pkts[0..n) (n <= 32) with the form; `loader` loads the snapshot's slots.  Returns
// the bits of the packets it left undecided (a guarded value above 0xffff): the caller
// decides those with the tables.  AVX-512 with VBMI only.
uint32_t bit_form_classify(const BitForm& f, const BpfVector& loader, const PacketRef* pkts, uint32_t n,
                           Decision* out);

}  // namespace vpf::matcher
