// vportfilter matcher: the flat packet key.
//
// Every packet the matcher looks at is first turned into a PacketKey: 64 unsigned 32-bit
// fields, each in host byte order, so that "field between lo and hi after masking" is the
// only test the classifier ever has to make.  Addresses are stored as the integers their
// network-order bytes spell (10.0.0.1 is 0x0a000001), which makes prefixes and ranges
// plain integer intervals.
//
// Fields 0..31 are fixed: the packet's metadata (adapter, direction, VM), what the parser
// found in the frame, and the parse flags.  Fields 32..63 are the dynamic slots that a
// classifier snapshot fills with raw loads its lowered BPF rules need (see bpf.h); the
// parser leaves them zero.
//
// Byte order: fields are host order.  A MAC address is split into a 16-bit high part and a
// 32-bit low part (aa:bb:cc:dd:ee:ff -> hi 0xaabb, lo 0xccddeeff).
//
// IPv4 addresses sit in word 0 of the 4-word address fields and words 1..3 are zero; IPv6
// addresses use all four words, most significant first.  F_IP_VER tells which.
#pragma once

#include <cstddef>
#include <cstdint>

namespace vpf::matcher {

enum Field : uint8_t {
  F_ADAPTER = 0,   // adapter id of the VM port the packet passes
  F_DIRECTION,     // Direction::Outgoing (0) or Direction::Incoming (1), the VM's view
  F_VM,            // the VM's id (NF_RULE's processId, translated), 0 = unknown
  F_FRAME_LEN,     // length of the Ethernet frame as on the wire (no FCS)
  F_ETH_TYPE,      // ethertype after all VLAN tags; 0 for an 802.3 length field
  F_VLAN,          // bits 28..31: tag count (0..2, 3 = more); 16..27 outer VID; 0..11 inner VID
  F_ETH_DST_HI,    // destination MAC, high 16 bits
  F_ETH_DST_LO,    // destination MAC, low 32 bits
  F_ETH_SRC_HI,
  F_ETH_SRC_LO,
  F_IP_VER,        // 4, 6, or 0 when the frame carries no (parsable) IP header
  F_IP_PROTO,      // transport protocol (IPv6: after the extension headers), 0 if none
  F_IP_FRAG,       // FRAG_* bits
  F_SRC_IP0, F_SRC_IP1, F_SRC_IP2, F_SRC_IP3,
  F_DST_IP0, F_DST_IP1, F_DST_IP2, F_DST_IP3,
  F_SRC_PORT,      // TCP/UDP/SCTP source port; 0 when absent
  F_DST_PORT,
  F_TCP_FLAGS,     // the 8 flag bits of the TCP header (FIN=0x01 ... CWR=0x80)
  F_ICMP_TYPE,     // ICMP or ICMPv6 type; 0 when absent (check F_IP_PROTO)
  F_ICMP_CODE,
  F_PARSE_FLAGS,   // PARSE_* bits: what was present and what was wrong
  F_BPF_VALID,     // one bit per dynamic load of the snapshot that was in bounds
  F_RESERVED_28, F_RESERVED_29, F_RESERVED_30, F_RESERVED_31,
  F_DYN0 = 32,     // first dynamic slot
  F_COUNT = 64,
};

inline constexpr int kFixedFields = 32;
inline constexpr int kDynamicSlots = F_COUNT - F_DYN0;

// F_IP_FRAG bits.
inline constexpr uint32_t FRAG_IS_FRAGMENT = 0x1;  // MF set or offset != 0
inline constexpr uint32_t FRAG_LATER = 0x2;        // offset != 0: no transport header here

// F_PARSE_FLAGS bits.
inline constexpr uint32_t PARSE_L2 = 1u << 0;            // full Ethernet header present
inline constexpr uint32_t PARSE_L3 = 1u << 1;            // full IP header present and valid
inline constexpr uint32_t PARSE_L4 = 1u << 2;            // transport ports or ICMP type present
inline constexpr uint32_t PARSE_PORTS = 1u << 3;         // TCP/UDP/SCTP ports present
inline constexpr uint32_t PARSE_TRUNCATED = 1u << 8;     // frame ended inside a header
inline constexpr uint32_t PARSE_BAD_IP_HEADER = 1u << 9; // IHL < 5, wrong version, bad total length
inline constexpr uint32_t PARSE_BAD_EXT_HEADER = 1u << 10;  // IPv6 extension chain broken
inline constexpr uint32_t PARSE_STOPPED_AT_ESP = 1u << 11;  // IPv6 chain ends at ESP
inline constexpr uint32_t PARSE_UNKNOWN_EXT = 1u << 12;     // IPv6 chain hit an unknown header
inline constexpr uint32_t PARSE_TOO_MANY_TAGS = 1u << 13;   // more than 2 VLAN tags
inline constexpr uint32_t PARSE_IP_OPTIONS = 1u << 14;      // IPv4 header carries options
inline constexpr uint32_t PARSE_ERROR_MASK = 0xff00;

// Packet direction, as the VM sees it.
enum class Direction : uint8_t {
  Outgoing = 0,  // from the VM into the switch (OVS receives on the port)
  Incoming = 1,  // from the switch to the VM (OVS sends on the port)
  Any = 2,       // rules only
};

struct alignas(64) PacketKey {
  uint32_t f[F_COUNT];
  // Where the network layer starts and how many of its bytes the frame holds (the seed's
  // ip_offset / ip_size); 0/0 when there is no IP header.
  uint16_t l3_offset;
  uint16_t l3_size;
  uint16_t l4_offset;  // 0 when there is no transport header
  uint16_t reserved;
};

// Metadata the caller knows about a packet but the frame does not say.
struct PacketMeta {
  uint32_t adapter = 0;
  Direction direction = Direction::Outgoing;
  uint32_t vm = 0;
};

}  // namespace vpf::matcher
