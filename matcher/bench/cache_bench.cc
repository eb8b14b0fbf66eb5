// The decision cache alone, as the switch's datapath drives it: ClassBench-like ACL rules,
// a trace of FLOWS flows (one frame each, as `vpf-gen mix` makes), batches of 32 through
// Classifier::Reader::classify(PacketBatch) with the plugin's cache, pass after pass.
// Prints ns per packet: the minimum over repetitions (this machine's speed drifts; the
// minimum is the figure least disturbed).  For iterating on the cache's lookup between
// runs of scripts/bench.sh datapath, which is the benchmark.
//   vpf-cache-bench [RULES [FLOWS [CACHE_FLOWS]]]     defaults 1000 1024 65536
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "classbench.h"
#include "vpf/matcher/classifier.h"

using namespace vpf;
using namespace vpf::matcher;

int main(int argc, char** argv) {
  const size_t nrules = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 1000;
  const size_t flows = argc > 2 ? std::strtoul(argv[2], nullptr, 10) : 1024;
  const uint32_t cache_flows = argc > 3 ? uint32_t(std::strtoul(argv[3], nullptr, 10)) : 65536;
  if (nrules == 0 || flows < kMaxBatch || flows % kMaxBatch) {
    std::fprintf(stderr, "usage: %s [RULES [FLOWS (a multiple of 32) [CACHE_FLOWS]]]\n", argv[0]);
    return 2;
  }
  bench::GenOptions g;
  g.count = nrules;
  g.seed = 5;
  const auto rules = bench::generate_rules(g);
  std::vector<std::vector<uint8_t>> frames;
  for (const auto& h : bench::generate_trace(rules, flows, 7)) frames.push_back(bench::header_frame(h));
  std::vector<const uint8_t*> data;
  std::vector<uint32_t> len;
  for (const auto& f : frames) {
    data.push_back(f.data());
    len.push_back(uint32_t(f.size()));
  }
  Classifier c;
  c.apply({}, rules);
  auto r = c.reader();
  r.enable_cache(cache_flows);
  const size_t passes = std::max<size_t>(1, 600 * 1024 / flows);
  Decision out[kMaxBatch];
  uint32_t plain = 0;
  uint64_t sink = 0;
  double best = 1e30;
  for (int rep = 0; rep < 15; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    for (size_t p = 0; p < passes; ++p)
      for (size_t base = 0; base < flows; base += kMaxBatch) {
        PacketBatch b{data.data() + base, len.data() + base, kMaxBatch, PacketMeta{0, Direction::Outgoing, 0}};
        b.plain_ipv4 = &plain;  // as the plugin asks under hook ABI 5
        sink += r.classify(b, out) + plain;
      }
    const double ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count();
    best = std::min(best, ns / double(passes * flows));
  }
  const auto st = r.cache_stats();
  std::printf("%zu rules, %zu flows, cache of %u flows: %.2f ns per packet (min of 15), hits %llu misses %llu%s\n",
              nrules, flows, cache_flows, best, static_cast<unsigned long long>(st.hits),
              static_cast<unsigned long long>(st.misses), sink == 1 ? " " : "");
  return 0;
}
