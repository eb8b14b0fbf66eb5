// libFuzzer harness: the packet parser and the decision cache's two key paths on any
// bytes.  The input is the frame (exactly its length: ASan sees a read past the end); the
// parser must not crash or read outside it, and where the CPU has AVX-512 the vector key
// path must key the same packets to the same words, buckets and signatures as the
// one-packet path (a 5-tuple plan and a plan with a size class and the VM), and report
// exactly the plain IPv4 frames (PacketBatch::plain_ipv4).
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "decision_cache.h"
#include "vpf/matcher/isa.h"
#include "vpf/matcher/parser.h"

using namespace vpf::matcher;
using namespace vpf::matcher::cache;

namespace {

cache::Plan five_tuple_plan(bool sizes) {
  Plan p;
  p.enabled = true;
  for (int i = 0; i < kShapes; ++i) {
    Shape& sh = p.shape[i];
    sh.enabled = true;
    const uint16_t l3 = (i & 8) ? 18 : 14;
    if (i & 4) {  // IPv6: addresses and ports need more than two words
      sh.nwords = 5;
      for (int w = 0; w < 5; ++w) {
        sh.off[w] = uint16_t(l3 + 8 + 8 * w);
        sh.mask[w] = ~uint64_t(0);
      }
      sh.end = uint16_t(l3 + 48);
    } else {
      sh.nwords = 2;
      sh.off[0] = uint16_t(l3 + 9);
      sh.mask[0] = 0xffffffffff0000ffull;  // protocol, source address
      sh.off[1] = uint16_t(l3 + 16);
      sh.mask[1] = ~uint64_t(0);  // destination address, ports
      sh.end = uint16_t(l3 + 24);
    }
    if (sizes && i == 1) sh.bounds = {60, 100};
    sh.uses_vm = sizes;
  }
  make_fast_plan(&p);
  return p;
}

void check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 4096) return 0;
  const uint32_t len = uint32_t(size);
  PacketKey key;
  parse_frame(size ? data : nullptr, len, PacketMeta{7, Direction::Incoming, 3}, &key);

  static const bool avx512 = isa_supported(Isa::Avx512);
  static DecisionCache dc(1024);
  static const Plan plans[2] = {five_tuple_plan(false), five_tuple_plan(true)};
  if (!avx512 || size == 0) return 0;
  // A batch of up to eight frames cut from the input (each in its own exact buffer).
  std::vector<std::vector<uint8_t>> frames;
  const uint8_t* ptrs[kMaxBatch];
  uint32_t lens[kMaxBatch];
  size_t at = 0;
  while (at < size && frames.size() < 8) {
    const size_t n = std::min<size_t>(size - at, 20 + data[at] % 80);
    frames.emplace_back(data + at, data + at + n);
    at += n;
  }
  for (size_t i = 0; i < frames.size(); ++i) {
    ptrs[i] = frames[i].data();
    lens[i] = uint32_t(frames[i].size());
  }
  for (const Plan& plan : plans) {
    const PacketBatch b{ptrs, lens, uint32_t(frames.size()), PacketMeta{uint32_t(data[0] % 5), Direction(data[0] & 1), 9}};
    BatchKeys v{}, s{};
    const uint32_t kv = dc.make_keys(plan, b, v, true), ks = dc.make_keys(plan, b, s, false);
    check(kv == ks);
    // What the vector path hands a switch (hook ABI 5): exactly the definition.
    uint32_t plain = 0;
    for (uint32_t i = 0; i < b.n; ++i) plain |= uint32_t(is_plain_ipv4(ptrs[i], lens[i])) << i;
    check(v.plain_ipv4 == (plan.fast.enabled ? plain : 0u) && s.plain_ipv4 == 0);
    check(v.short_keys == s.short_keys);
    for (uint32_t m = kv; m; m &= m - 1) {
      const int i = __builtin_ctz(m);
      if (v.short_keys >> i & 1) {
        check(std::equal(v.row[i], v.row[i] + 4, s.row[i]) && v.line[0][i] == s.line[0][i] && v.line[1][i] == s.line[1][i]);
        continue;
      }
      check(v.nwords[i] == s.nwords[i] && v.bucket[i] == s.bucket[i] && v.sig[i] == s.sig[i]);
      for (int w = 0; w <= v.nwords[i]; ++w) check(v.w[w][i] == s.w[w][i]);
    }
  }
  return 0;
}
