// vportfilter: binary frames of the agent's client protocol (docs/protocol.md).
//
// The client socket carries two kinds of messages in both directions:
//   - JSON-RPC 2.0 objects, one per line: they start with '{' (leading blanks allowed);
//   - binary frames: a FrameHeader (first byte 'V') then `length` bytes of body.
// A reader tells them apart by the first byte of each message.
//
// Frames (host byte order: the socket is local):
//   agent -> client  kEventFrame:   EventFrame + data_size bytes of the packet (kConnection:
//                                   a vpf::channel::ConnectionRecord, vpf/channel.h)
//   client -> agent  kVerdictFrame: VerdictFrame + data_size bytes (SEND_MODIFIED)
// A frame whose magic, version, type or length is wrong ends the connection after an
// error line; the frame is not acted on.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <type_traits>

#include "vpf/rpc_codes.h"

namespace vpf {

// The error codes of the whole product, in one place: NetFilterError::code() in the client
// library, `data.seed_error` in the agent's JSON-RPC errors, vpfctl's messages.  They are
// the reference API's numbers (its Win32 codes), kept for their meaning; each is returned
// when its comment says, and nowhere else.
enum ErrorCode : int {
  kErrorFileNotFound = 2,                // the instance is not installed; the agent is not running
  kErrorNotReady = 21,                   // initialize() not called yet; the plugin is not attached;
                                         // the database refused a change
  kErrorNotSupported = 50,               // a Windows-only item (promiscuous or WiFi monitor mode,
                                         // shutdown_system, ...)
  kErrorInvalidParameter = 87,           // bad parameters or a bad rule (the message names what)
  kErrorInsufficientBuffer = 122,        // on_packet: the modified packet does not fit; the handler
                                         // is called again with a buffer of data_size bytes
  kErrorAlreadyExists = 183,             // a rule with this id exists already
  kErrorMrMidNotFound = 317,             // no message text for this code
  kErrorInvalidKernelInfoVersion = 340,  // the agent speaks another protocol version
  kErrorNotFound = 1168,                 // no such rule or adapter
  kErrorConnectionActive = 1230,         // the instance is started by another client, or this
                                         // client has started one already
  kErrorImplementationLimit = 1292,      // a start_filter timeout that is not 0 and below 3000 ms
  kErrorPrivilegeNotHeld = 1314,         // the peer is not root and not an allowed controller
};

}  // namespace vpf

namespace vpf::protocol {

inline constexpr uint32_t kVersion = 2;                 // of the whole protocol
inline constexpr uint32_t kFrameMagic = 0x46465056;     // "VPFF"
inline constexpr uint32_t kMaxFrameBody = 256 * 1024 + 64;  // a frame of 256 KiB of packet
inline constexpr uint32_t kMaxPacket = 65535 + 14 + 8;  // largest frame a verdict or injection may carry
inline constexpr size_t kMaxLine = size_t(16) << 20;    // longest JSON text

enum FrameType : uint16_t { kEventFrame = 1, kVerdictFrame = 2 };

struct FrameHeader {
  uint32_t magic;    // kFrameMagic
  uint16_t version;  // kVersion
  uint16_t type;     // FrameType
  uint32_t length;   // bytes after this header
  uint32_t reserved;
};
static_assert(sizeof(FrameHeader) == 16);

// The numbers are the plugin's event record types (vpf/channel.h), so that an event keeps
// its type from the ring to the client.
enum EventType : uint8_t { kNotify = 1, kCapture = 2, kConnection = 5 };
enum EventFlags : uint8_t {
  kMonitorCopy = 1,  // a copy for a monitor (vpfctl capture/notify): no verdict expected
  kFromChannel = 0x80,  // never on the wire: the client library marks events read from its channel
};

// True for an event whose packet waits for the client's verdict: a captured packet, or a
// pended connect request (a connection event with an id; docs/connections.md), whose
// verdict completes it: kSend allows the connection, kDrop blocks it.
inline bool awaits_verdict(uint8_t type, uint64_t event_id) {
  return type == kCapture || (type == kConnection && event_id != 0);
}

// DLT values of the seed's packet_type (every event carries an Ethernet frame today).
inline constexpr uint8_t kDltEthernet = 1;

struct EventFrame {
  uint64_t event_id;      // names the packet in the verdict (awaits_verdict); else 0
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

// The event frame of one of the plugin's event records (`Ev`: vpf::channel::PacketEvent,
// as read_event() checked it: a notify, capture or connection record), with the deciding
// rule as its instance knows it and its data (ev.cap_len bytes) following.  Flags are the
// caller's.  The IP offset is the one the plugin's parser found (an offset outside the
// data reads as "no IP").
template <class Ev>
EventFrame event_frame_of(const Ev& ev, uint32_t rule_id, uint8_t rule_kind) {
  EventFrame e{};
  e.type = uint8_t(ev.h.type);
  e.event_id = e.type == kCapture || e.type == kConnection ? ev.capture_id : 0;
  e.timestamp_ns = ev.timestamp_ns;
  e.adapter = ev.adapter;
  e.direction = ev.direction;
  e.packet_type = kDltEthernet;
  e.rule_id = rule_id;
  e.rule_kind = rule_kind;
  e.packet_size = ev.orig_len;
  e.data_size = ev.cap_len;
  e.ip_offset = ev.l3_offset < ev.cap_len ? ev.l3_offset : 0;
  e.ip_size = e.ip_offset ? ev.cap_len - e.ip_offset : 0;
  return e;
}

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

// One message read from a stream: a JSON text (a line), a binary frame whose fixed part is
// `Body` (EventFrame or VerdictFrame) followed by body.data_size bytes, more input needed,
// or a violation of the protocol that ends the connection.
template <typename Body>
struct StreamItem {
  enum Kind { kNeedMore, kLine, kFrame, kBad } kind = kNeedMore;
  std::string_view line;          // kLine: the text, without its newline
  Body body{};                    // kFrame
  const uint8_t* data = nullptr;  // kFrame: body.data_size bytes
  std::string problem;            // kBad: what was wrong
};

// Reads the message at buf[pos..size), skipping blanks before it, and moves pos past it
// (kNeedMore: pos stays at the message's start, so the caller keeps buf[pos..) for the
// next read).  The one splitter of the agent's sessions, the library and the console.
template <typename Body>
StreamItem<Body> next_item(const char* buf, size_t size, size_t& pos) {
  static_assert(std::is_same_v<Body, EventFrame> || std::is_same_v<Body, VerdictFrame>);
  constexpr FrameType type = std::is_same_v<Body, EventFrame> ? kEventFrame : kVerdictFrame;
  StreamItem<Body> it;
  while (pos < size && (buf[pos] == ' ' || buf[pos] == '\t' || buf[pos] == '\r' || buf[pos] == '\n')) ++pos;
  if (pos >= size) return it;
  if (buf[pos] == 'V') {
    if (size - pos < sizeof(FrameHeader)) return it;
    FrameHeader h;
    std::memcpy(&h, buf + pos, sizeof h);
    if (std::string why = frame_problem(h, type); !why.empty()) {
      it.kind = it.kBad;
      it.problem = std::move(why);
      return it;
    }
    if (size - pos < sizeof h + h.length) return it;
    std::memcpy(&it.body, buf + pos + sizeof h, sizeof(Body));
    if (sizeof(Body) + it.body.data_size != h.length) {
      it.kind = it.kBad;
      it.problem = std::string("bad ") + (type == kEventFrame ? "event" : "verdict") + " frame: data_size " +
                   std::to_string(it.body.data_size) + " disagrees with the frame length " + std::to_string(h.length);
      return it;
    }
    it.kind = it.kFrame;
    it.data = reinterpret_cast<const uint8_t*>(buf + pos + sizeof h + sizeof(Body));
    pos += sizeof h + h.length;
    return it;
  }
  const void* nl = std::memchr(buf + pos, '\n', size - pos);
  if (!nl) {
    if (size - pos > kMaxLine) {
      it.kind = it.kBad;
      it.problem = "a JSON text longer than 16 MiB";
    }
    return it;
  }
  const size_t end = size_t(static_cast<const char*>(nl) - buf);
  it.kind = it.kLine;
  it.line = std::string_view(buf + pos, end - pos);
  pos = end + 1;
  return it;
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
