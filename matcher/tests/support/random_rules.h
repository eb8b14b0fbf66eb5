// Test support: random rules of every kind and random packets, for the differential tests
// of the classifier and its decision cache.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "vpf/matcher/classifier.h"

namespace vpf::test {

// A rule of any kind with random metadata, size range, BPF expression (from a pool that
// mixes lowered and executor-run programs), protocol, ports and addresses from small pools.
matcher::Rule random_rule(std::mt19937_64& rng, uint32_t id);

// An expression from the BPF pool random_rule() draws from.
const char* random_bpf(std::mt19937_64& rng);

// 100 BPF rules of one shape (ids 1..100): `tcp dst port 3000+k and net 10.(k+1).0.0/16`.
std::vector<matcher::Rule> hundred_bpf_rules();

struct Pkt {
  std::vector<uint8_t> data;
  matcher::PacketMeta meta;
};

// n random frames (random_frame) on adapters 0..2, either direction, VMs 0..2.
std::vector<Pkt> random_packets(std::mt19937_64& rng, int n);

}  // namespace vpf::test
