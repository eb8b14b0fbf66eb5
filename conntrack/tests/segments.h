// Test support of the tracker's tests and benchmark: frames between a VM (10.0.0.1) and a
// peer (10.0.0.2), parsed as the datapath parses them.
#pragma once

#include <cstdint>
#include <vector>

#include "frames.h"
#include "vpf/matcher/parser.h"

namespace vpf::test {

inline const uint32_t kVmIp = ip4(10, 0, 0, 1), kPeerIp = ip4(10, 0, 0, 2);

// A TCP segment between the VM's port vm_port and the peer's port peer_port, as a whole
// Ethernet frame (padded to min_len): sent by the VM (Outgoing) or to it (Incoming).
// opts: the TCP options' bytes (padded to whole words).
inline std::vector<uint8_t> tcp_segment(matcher::Direction dir, uint16_t vm_port, uint16_t peer_port, uint32_t seq,
                                        uint32_t ack, uint8_t flags, uint16_t win, size_t payload = 0,
                                        std::vector<uint8_t> opts = {}, size_t min_len = 0) {
  while (opts.size() % 4) opts.push_back(0);
  const bool out = dir == matcher::Direction::Outgoing;
  const uint16_t sp = out ? vm_port : peer_port, dp = out ? peer_port : vm_port;
  std::vector<uint8_t> h = {uint8_t(sp >> 8),  uint8_t(sp),       uint8_t(dp >> 8),  uint8_t(dp),
                            uint8_t(seq >> 24), uint8_t(seq >> 16), uint8_t(seq >> 8), uint8_t(seq),
                            uint8_t(ack >> 24), uint8_t(ack >> 16), uint8_t(ack >> 8), uint8_t(ack),
                            uint8_t((5 + opts.size() / 4) << 4), flags, uint8_t(win >> 8), uint8_t(win), 0, 0, 0, 0};
  for (uint8_t o : opts) h.push_back(o);
  FrameBuilder b;
  b.eth(kMacB, kMacA).ethertype(0x0800).ipv4(out ? kVmIp : kPeerIp, out ? kPeerIp : kVmIp, 6).bytes(h);
  if (payload) b.payload(payload);
  return b.build(min_len);
}

// The frame parsed as a packet of adapter `adapter` (VM `vm`) going in direction `dir`.
inline matcher::PacketKey parse_as(const std::vector<uint8_t>& f, matcher::Direction dir, uint32_t adapter = 1,
                                   uint32_t vm = 0) {
  matcher::PacketKey k;
  matcher::parse_frame(f.data(), uint32_t(f.size()), matcher::PacketMeta{adapter, dir, vm}, &k);
  return k;
}

}  // namespace vpf::test
