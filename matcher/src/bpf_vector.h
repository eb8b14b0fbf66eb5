// A lowered BPF expression (bpf.h: an OR of conjunctions of "(load & mask) in [lo, hi]")
// evaluated on one packet without a single data-dependent branch, sixteen tests at a time.
//
// Why: a program's branches follow the packet's bytes.  On mixed traffic (some TCP, some
// not; some to the network, some not) about every second packet mispredicts one or two of
// them, and a mispredict costs more than the whole test.  Here every test of the expression
// is one 32-bit lane of an AVX-512 register and is computed on every packet:
//
//   1. the packet's first 128 bytes are read in two 64-byte loads; bytes past the end may
//      hold anything, since no valid lane takes one (step 3).  A window that would cross
//      into the next page (where a read could fault) is read with byte masks at the
//      packet's length instead;
//   2. one two-source byte permute (VBMI `vpermt2b`) puts every lane's load into its lane,
//      already in network byte order, with the zero bytes of 1- and 2-byte loads; loads
//      at `x + k` (x = 4 * (pkt[m] & 0xf), the IP header length) add x to their byte
//      indices first;
//   3. a lane is valid when its load ends within the packet (end <= length, compared in
//      one instruction); a load of the packet length is the length;
//   4. the tests: ((value & mask) - lo) <= (hi - lo), unsigned, under the valid lanes:
//      a 16-bit mask of the tests that hold;
//   5. the expression holds when some conjunction has all its tests: with at most 12 test
//      lanes, one byte of a table indexed by the test mask (built with the layout); above,
//      one `vptestmd` of the complemented test mask against the conjunctions' need masks.
//
// Fits when the expression has at most 16 distinct tests (a load a conjunction requires in
// bounds without testing it takes a test that always holds), at most 16 conjunctions,
// loads within the first 128 bytes (an `x + k` load: k + size + 60 <= 128) and one header
// length byte.  make_bpf_vector() returns null otherwise or when the CPU lacks AVX-512
// VBMI: the caller runs the program's machine code instead.  The result equals
// eval_lowering() on every packet (bpf_differential_test).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "vpf/matcher/bpf.h"
#include "vpf/matcher/classifier.h"

namespace vpf::matcher {

struct alignas(64) BpfVector {
  uint8_t idx[64];          // byte permute indices: 0-63 first half, 64-127 second half
  uint32_t end[16];         // per lane: offset + size of its load (0 for the length)
  uint32_t mask[16], lo[16], range[16];
  uint32_t need[16];        // per conjunction: the test lanes it needs
  uint64_t used_bytes = 0;  // bytes taken from the packet (the rest are zero)
  uint64_t ind_bytes = 0;   // bytes whose index adds x
  uint16_t ind_lanes = 0;   // lanes whose load is at x + k (x added to end too)
  uint16_t len_lanes = 0;   // lanes whose load is the packet length
  uint16_t conjunctions = 0;  // bit j: conjunction j is in use
  uint16_t lanes = 0;       // bit i: lane i holds a test
  uint8_t msh_off = 0;      // x = 4 * (pkt[msh_off] & 0xf)
  const uint8_t* table = nullptr;  // with <= kTableLanes lanes: 1 where a test mask matches
  std::vector<uint8_t> table_bytes;

  static constexpr unsigned kTableLanes = 12;
};

// Null if the lowering does not fit (above) or the CPU cannot run the evaluator.
std::shared_ptr<const BpfVector> make_bpf_vector(const BpfLowering& low);

// The same machinery as a loader of a snapshot's dynamic slots (the BPF loads its entries
// test): lane i loads slot i.  Null unless some slot is in `slot_mask`, every one is below
// 16 and its load fits the window (above); null too if the CPU lacks VBMI.
std::shared_ptr<const BpfVector> make_bpf_slot_loader(const BpfLoad* slot_load, uint32_t slot_mask);

// For each of n packets: writes slots 0..15 to slots[k * stride + 0..15] (0 where a load is
// out of bounds or unused) and the in-bounds bits to valid[k * stride].
void bpf_vector_load_slots(const BpfVector& v, const PacketRef* pkts, uint32_t n, uint32_t* slots,
                           uint32_t* valid, size_t stride);

// True if the expression accepts the packet (len = bytes available).  Only call with a
// BpfVector that make_bpf_vector() made (the CPU was checked there).
bool bpf_vector_match(const BpfVector& v, const uint8_t* pkt, uint32_t len);

// The same for pkts[i] with bit i set in `candidates` (i < 32); returns the bits of those
// that match.
uint32_t bpf_vector_match_bits(const BpfVector& v, const PacketRef* pkts, uint32_t candidates);

}  // namespace vpf::matcher
