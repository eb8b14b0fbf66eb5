// A minimal client of the plugin channel for the integration tests (the agent is the
// real client).
//
//   vpf-chan-tool SOCK call METHOD [JSON]      one request; prints the result
//   vpf-chan-tool SOCK serve N MODE [SECONDS] [LINGER_MS]
//        takes N events (exit 1 if they do not come within SECONDS, default 10), prints
//        one line per event and answers captures.  MODE: none (no verdict), or "marker":
//        by the frame's byte 42 (the first UDP payload byte of the tests' frames):
//        c1 send, c2 drop, c3 send modified (byte 42 -> ee), c4 send modified, 200 bytes
//        longer; other markers: send.  Then stays attached LINGER_MS more.
//   vpf-chan-tool SOCK inject ADAPTER DIRECTION TIMES HEX
//
// Event lines: "<notify|capture> adapter=A dir=D rule=KIND:ID len=ORIG cap=CAP marker=M ts=NS"
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "vpf/channel_client.h"

using namespace vpf::channel;

namespace {

std::vector<uint8_t> from_hex(const std::string& h) {
  if (h.size() % 2) throw std::invalid_argument("odd number of hex digits");
  std::vector<uint8_t> out;
  for (size_t i = 0; i < h.size(); i += 2) out.push_back(uint8_t(std::stoul(h.substr(i, 2), nullptr, 16)));
  return out;
}

int serve(ChannelClient& c, long want, const std::string& mode, double seconds, long linger_ms) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  long got = 0;
  while (got < want && std::chrono::steady_clock::now() < end) {
    c.wait_events(50);
    c.poll_events([&](const PacketEvent& e, const uint8_t* d) {
      ++got;
      const int marker = e.cap_len > 42 ? d[42] : -1;
      const char* kinds[] = {"passthrough", "filter", "connection"};
      std::printf("%s adapter=%u dir=%u rule=%s:%u len=%u cap=%u marker=%02x ts=%llu\n",
                  e.h.type == kCapture ? "capture" : "notify", e.adapter, e.direction,
                  e.rule_kind < 3 ? kinds[e.rule_kind] : "?", e.rule_id, e.orig_len, e.cap_len, marker & 0xff,
                  static_cast<unsigned long long>(e.timestamp_ns));
      std::fflush(stdout);
      if (e.h.type != kCapture || mode == "none") return;
      std::vector<uint8_t> f(d, d + e.cap_len);
      bool ok = true;
      switch (marker) {
        case 0xc2: ok = c.verdict(e.capture_id, VerdictAction::Drop); break;
        case 0xc3:
          f[42] = 0xee;
          ok = c.verdict(e.capture_id, VerdictAction::SendModified, f);
          break;
        case 0xc4:
          f.resize(f.size() + 200, 0x5a);
          ok = c.verdict(e.capture_id, VerdictAction::SendModified, f);
          break;
        default: ok = c.verdict(e.capture_id, VerdictAction::Send); break;
      }
      if (!ok) std::fprintf(stderr, "command ring full\n");
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(linger_ms));
  if (got < want) {
    std::fprintf(stderr, "vpf-chan-tool: %ld of %ld events\n", got, want);
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: vpf-chan-tool SOCK call|serve|inject ...\n");
    return 2;
  }
  try {
    ChannelClient c(argv[1]);
    const std::string cmd = argv[2];
    if (cmd == "call" && argc >= 4) {
      const auto params = argc >= 5 ? nlohmann::json::parse(argv[4]) : nlohmann::json::object();
      std::cout << c.call(argv[3], params).dump() << "\n";
      return 0;
    }
    if (cmd == "serve" && argc >= 5)
      return serve(c, std::atol(argv[3]), argv[4], argc >= 6 ? std::atof(argv[5]) : 10.0,
                   argc >= 7 ? std::atol(argv[6]) : 0);
    if (cmd == "inject" && argc == 7) {
      const auto f = from_hex(argv[6]);
      if (!c.inject(uint32_t(std::atoi(argv[3])), uint8_t(std::atoi(argv[4])), uint32_t(std::atoi(argv[5])), f))
        throw std::runtime_error("command ring full");
      // Stay until the plugin has consumed the record (its ring is drained).
      for (int i = 0; i < 200 && !c.region().command_ring().empty(); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      return 0;
    }
    std::fprintf(stderr, "vpf-chan-tool: bad command\n");
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vpf-chan-tool: %s\n", e.what());
    return 1;
  }
}
