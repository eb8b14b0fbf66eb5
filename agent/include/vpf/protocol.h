// vportfilter: binary frames of the agent's client protocol (docs/protocol.md).
//
// The client socket carries two kinds of messages in both directions:
//   - JSON-RPC 2.0 objects, one per line: they start with '{' (leading blanks allowed);
//   - binary frames: a FrameHeader (first byte 'V') then `length` bytes of body.
// A reader tells them apart by the first byte of each message.
//
// Frames (host byte order: the socket is local):
//   agent -> client  kEventFrame:   EventFrame + data_size bytes of the packet
//   client -> agent  kVerdictFrame: VerdictFrame + data_size bytes (SEND_MODIFIED)
// A frame whose magic, version, type or length is wrong ends the connection after an
// error line; the frame is not acted on.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

namespace vpf::protocol {

inline constexpr uint32_t kVersion = 1;                 // of the whole protocol
inline constexpr uint32_t kFrameMagic = 0x46465056;     // "VPFF"
inline constexpr uint32_t kMaxFrameBody = 256 * 1024 + 64;  // a frame of 256 KiB of packet
inline constexpr uint32_t kMaxPacket = 65535 + 14 + 8;  // largest frame a verdict or injection may carry

enum FrameType : uint16_t { kEventFrame = 1, kVerdictFrame = 2 };

struct FrameHeader {
  uint32_t magic;    // kFrameMagic
  uint16_t version;  // kVersion
  uint16_t type;     // FrameType
  uint32_t length;   // bytes after this header
  uint32_t reserved;
};
static_assert(sizeof(FrameHeader) == 16);

enum EventType : uint8_t { kNotify = 1, kCapture = 2 };
enum EventFlags : uint8_t {
  kMonitorCopy = 1,  // a copy for a monitor (vpfctl capture/notify): no verdict expected
};

// DLT values of the seed's packet_type (every event carries an Ethernet frame today).
inline constexpr uint8_t kDltEthernet = 1;

struct EventFrame {
  uint64_t event_id;      // kCapture: names the packet in the verdict; kNotify: 0
  uint64_t timestamp_ns;  // CLOCK_REALTIME, when the datapath saw the packet
  uint32_t adapter;
  uint8_t direction;      // 0 outgoing (from the VM), 1 incoming (to the VM)
  uint8_t type;           // EventType
  uint8_t flags;          // EventFlags
  uint8_t packet_type;    // kDltEthernet
  uint32_t rule_id;       // the deciding rule, as its instance knows it
  uint32_t packet_size;   // the whole frame's bytes
  uint32_t data_size;     // bytes that follow (packet_size cut to the adapter's snaplen)
  uint32_t ip_offset;     // where the IP header starts in the data (0 when there is none)
  uint32_t ip_size;       // IP bytes present in the data
  uint8_t rule_kind;      // 1 filter, 2 passthrough, 3 connection
  uint8_t reserved[3];
};
static_assert(sizeof(EventFrame) == 48);

enum VerdictAction : uint8_t { kDrop = 1, kSend = 2, kSendModified = 3 };  // the seed's PACKET_ACTION_*

struct VerdictFrame {
  uint64_t event_id;
  uint8_t action;  // VerdictAction
  uint8_t reserved[3];
  uint32_t data_size;  // kSendModified: the replacement frame's bytes, which follow
};
static_assert(sizeof(VerdictFrame) == 16);

// What is wrong with a received frame header, for a frame of type `expected` ("" when
// nothing): magic, version, type, and a body length within [fixed part, kMaxFrameBody].
inline std::string frame_problem(const FrameHeader& h, FrameType expected) {
  const bool event = expected == kEventFrame;
  const uint32_t fixed = event ? uint32_t(sizeof(EventFrame)) : uint32_t(sizeof(VerdictFrame));
  if (h.magic != kFrameMagic) return "bad frame: wrong magic";
  if (h.version != kVersion)
    return "bad frame: version " + std::to_string(h.version) + ", this side speaks " + std::to_string(kVersion);
  if (h.type != expected)
    return "bad frame: type " + std::to_string(h.type) + (event ? " is not an event (1)" : " is not a verdict (2)");
  if (h.length > kMaxFrameBody)
    return "bad frame: " + std::to_string(h.length) + " bytes is more than the limit of " + std::to_string(kMaxFrameBody);
  if (h.length < fixed) return std::string("bad ") + (event ? "event" : "verdict") + " frame: shorter than its fixed part";
  return "";
}

// A whole verdict frame (header, VerdictFrame, `len` bytes of `data`), ready to write.
inline std::string verdict_frame(uint64_t event_id, uint8_t action, const void* data, uint32_t len) {
  const FrameHeader h{kFrameMagic, uint16_t(kVersion), kVerdictFrame, uint32_t(sizeof(VerdictFrame) + len), 0};
  const VerdictFrame v{event_id, action, {}, len};
  std::string f(sizeof h + sizeof v + len, '\0');
  std::memcpy(f.data(), &h, sizeof h);
  std::memcpy(f.data() + sizeof h, &v, sizeof v);
  if (len) std::memcpy(f.data() + sizeof h + sizeof v, data, len);
  return f;
}

}  // namespace vpf::protocol
