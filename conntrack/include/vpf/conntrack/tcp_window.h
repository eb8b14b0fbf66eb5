// Sequence and window checks of a tracked TCP connection (as stateful firewalls do them,
// after Guido van Rooij's "Real Stateful TCP Packet Filtering in IP Filter").
//
// Each side keeps the end of what it has sent (`seqlo`: the highest sequence number plus
// the segment's length, SYN and FIN counting one each), the highest sequence number the
// other side's acknowledgements and windows allow it to send (`seqhi`), the largest window
// it advertised, and its window scale.  A segment from one side is in window when
//
//   1. it does not end beyond what the other side allows it (seqhi),
//   2. it does not start before its side's end by more than the other side's largest
//      window (an old retransmission is fine, a segment from far back is not),
//   3. its acknowledgement number is neither more than kMaxAckWindow beyond what the
//      other side has sent nor more than kMaxAckWindow (scaled) behind it.
//
// A segment in window moves the edges; one out of window changes nothing (the tracker
// counts it and reports it invalid: a segment an attacker guessed, a reset from nowhere).
// The window scale counts when both the SYN and the SYN-ACK carried the option; windows
// in SYN segments are never scaled.  Until both sides have sent a segment nothing is
// checked (a retransmitted SYN is fine).  A SYN-ACK must acknowledge the SYN exactly.
//
// Thread-safety: none; the tracker holds its stripe's lock.
#pragma once

#include <cstdint>

#include "vpf/matcher/packet_key.h"

namespace vpf::conntrack {

// The numbers of one TCP segment.
struct TcpSegment {
  uint32_t seq = 0, ack = 0;
  uint32_t win = 0;  // as sent (unscaled)
  uint32_t len = 0;  // payload bytes
  uint32_t flags = 0;
  int32_t wscale = -1;  // the window scale option's shift (at most 14), -1 if absent
};

// Reads the segment of a parsed TCP packet from its frame (the key's l3/l4 offsets): false
// if the header, its options or the IP lengths are not whole.
bool read_segment(const uint8_t* frame, uint32_t frame_len, const matcher::PacketKey& k, TcpSegment* s);

inline constexpr uint32_t kMaxAckWindow = 66000;

struct TcpPeer {
  bool seen = false;
  uint8_t wscale = 0;        // in force once both SYNs offered one
  int8_t wscale_offer = -1;  // what this side's SYN offered
  bool fin = false;
  uint32_t seqlo = 0, seqhi = 0, max_win = 0;
  uint32_t fin_end = 0;  // the sequence number just past this side's FIN
};

// Checks segment `s` sent by `src` to `dst` and, when it is in window, moves both sides'
// edges; `*acks_fin` tells whether it acknowledges dst's FIN.  False: out of window.
bool tcp_window(TcpPeer& src, TcpPeer& dst, const TcpSegment& s, bool* acks_fin);

}  // namespace vpf::conntrack
