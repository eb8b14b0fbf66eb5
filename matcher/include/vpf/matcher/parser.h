// vportfilter matcher: frame parser.
//
// parse_frame() turns an Ethernet frame into a PacketKey (packet_key.h).  It understands
// Ethernet II, up to two 802.1Q / 802.1ad tags (more are counted and flagged), IPv4 with
// options and fragments, IPv6 with hop-by-hop, routing, fragment, destination-options and
// AH extension headers (it stops cleanly at ESP and at unknown headers), and TCP, UDP,
// SCTP, ICMP and ICMPv6.
//
// Guarantees: it reads only bytes [0, len) of the frame, never allocates, and never
// fails: a truncated or malformed frame yields whatever could be parsed plus PARSE_* flags
// saying what was wrong.  Non-first fragments carry no transport fields.
//
// Thread-safety: a pure function.
#pragma once

#include <cstdint>

#include "vpf/matcher/packet_key.h"

namespace vpf::matcher {

// Fills the fixed fields (0..31) and offsets of *key; the dynamic slots are left as they
// are (a classifier snapshot fills the ones it uses).  `frame` may be null when len is 0.
void parse_frame(const uint8_t* frame, uint32_t len, const PacketMeta& meta, PacketKey* key);

// The two halves of parse_frame(), for tests: the most common frame (untagged IPv4
// without options or fragmentation, carrying a whole TCP or UDP header) in straight-line
// code, which answers false and leaves *key alone for any other frame; and the walk that
// handles every frame.  Both give the same key wherever the first answers true.
bool parse_common_frame(const uint8_t* frame, uint32_t len, const PacketMeta& meta, PacketKey* key);
void parse_any_frame(const uint8_t* frame, uint32_t len, const PacketMeta& meta, PacketKey* key);

// Where the IP header starts in the frame as parse_frame() finds it (after the same VLAN
// tags), 0 when the frame carries no IPv4/IPv6 byte: what an event reports as its
// ip_offset.  Reads only the Ethernet header and tags.
uint32_t l3_offset(const uint8_t* frame, uint32_t len);

}  // namespace vpf::matcher
