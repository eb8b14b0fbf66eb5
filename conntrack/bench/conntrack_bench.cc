// The tracker alone, for designing its place in the datapath: CONNS established TCP
// connections on one adapter (opened by handshakes), then ACK segments of them in turn,
// each direction alternately, through Tracker::track() one packet at a time — flags only
// and with the frames' numbers.  Prints ns per packet, the minimum over 9 repetitions
// (this machine's speed drifts).
//   vpf-conntrack-bench [CONNS]     default 65536
#include <algorithm>
#include <random>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "segments.h"
#include "vpf/conntrack/tracker.h"

using namespace vpf;
using namespace vpf::conntrack;

namespace {

struct Pkt {
  std::vector<uint8_t> frame;
  matcher::PacketKey key;
};

Pkt make(bool out, uint32_t conn, uint32_t seq, uint32_t ack, uint8_t flags) {
  // Connections differ by the VM's port and the peer's address (64k ports are not enough
  // for 64k connections plus the handshake's).
  const matcher::Direction dir = out ? matcher::Direction::Outgoing : matcher::Direction::Incoming;
  Pkt p{test::tcp_segment(dir, uint16_t(1024 + conn % 60000), 443, seq, ack, flags, 0xffff, 0, {}, 60), {}};
  if (conn >= 60000) {  // another peer address: bytes 26..29 (out: destination 30..33)
    p.frame[out ? 33 : 29] = uint8_t(3 + conn / 60000);
    p.frame[24] = p.frame[25] = 0;  // the IPv4 checksum is not checked by the parser
  }
  p.key = test::parse_as(p.frame, dir);
  return p;
}

}  // namespace

int main(int argc, char** argv) {
  const uint32_t conns = argc > 1 ? uint32_t(std::strtoul(argv[1], nullptr, 10)) : 65536;
  if (conns == 0 || conns > 1000000) {
    std::fprintf(stderr, "usage: %s [CONNS (1 to 1000000)]\n", argv[0]);
    return 2;
  }
  Tracker t(Limits{conns, conns});
  for (uint32_t c = 0; c < conns; ++c) {
    for (const Pkt& p : {make(true, c, 1000, 0, kSyn), make(false, c, 5000, 1001, kSyn | kAck),
                         make(true, c, 1001, 5001, kAck)})
      t.track(p.key, p.frame.data(), uint32_t(p.frame.size()), 0);
  }
  if (t.stats().active != conns) {
    std::fprintf(stderr, "setup: %llu connections, %u expected\n", static_cast<unsigned long long>(t.stats().active), conns);
    return 1;
  }
  std::vector<Pkt> trace;
  for (uint32_t c = 0; c < conns; ++c) trace.push_back(make(c % 2 == 0, c, c % 2 ? 5001 : 1001, c % 2 ? 1001 : 5001, kAck));
  std::shuffle(trace.begin(), trace.end(), std::mt19937(7));
  const size_t passes = std::max<size_t>(1, 4000000 / conns);
  // The batches of 32 for track_batch(); a trace shorter than 32 is repeated.
  std::vector<const matcher::PacketKey*> keys;
  std::vector<const uint8_t*> frames;
  std::vector<uint32_t> lens;
  while (keys.size() < trace.size() || keys.size() % Tracker::kBatch)
    for (const Pkt& x : trace) {
      keys.push_back(&x.key);
      frames.push_back(x.frame.data());
      lens.push_back(uint32_t(x.frame.size()));
    }
  const char* modes[] = {"one at a time, flags only", "one at a time, with the frames' numbers",
                         "batches of 32, flags only", "batches of 32, with the frames' numbers"};
  for (int mode = 0; mode < 4; ++mode) {
    const bool with_frames = mode % 2, batched = mode >= 2;
    double best = 1e30;
    uint64_t sink = 0;
    for (int rep = 0; rep < 9; ++rep) {
      const auto t0 = std::chrono::steady_clock::now();
      size_t done = 0;
      for (size_t p = 0; p < passes; ++p) {
        if (batched) {
          Observed out[Tracker::kBatch];
          for (size_t b = 0; b + Tracker::kBatch <= keys.size() && b < trace.size(); b += Tracker::kBatch, done += Tracker::kBatch) {
            t.track_batch(&keys[b], with_frames ? &frames[b] : nullptr, with_frames ? &lens[b] : nullptr, Tracker::kBatch, 1,
                          out);
            sink += uint64_t(out[0].verdict);
          }
          continue;
        }
        for (const Pkt& x : trace) {
          sink += with_frames ? uint64_t(t.track(x.key, x.frame.data(), uint32_t(x.frame.size()), 1).verdict)
                              : uint64_t(t.track(x.key, 1).verdict);
          ++done;
        }
      }
      const double ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count();
      best = std::min(best, ns / double(done));
    }
    const Stats st = t.stats();
    std::printf("%u connections, %s: %.2f ns per packet (min of 9); invalid %llu, out of window %llu (%llu)\n", conns,
                modes[mode], best,
                static_cast<unsigned long long>(st.invalid), static_cast<unsigned long long>(st.out_of_window),
                static_cast<unsigned long long>(sink));
  }
  return 0;
}
