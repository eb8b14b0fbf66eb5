// The TCP state of a tracked connection, and how one segment moves it.
//
// A connection has two sides: the opener (the side that sent the first SYN, or whose
// segment the tracker saw first when it picked the connection up in the middle) and the
// responder.  The state is the connection's as a stateful firewall sees it from the flags
// of the segments in both directions (the model of the Linux and Open vSwitch trackers):
//
//   SynSent      the opener's SYN seen, no answer yet
//   SynReceived  the responder's SYN-ACK seen (or a SYN of its own: simultaneous open)
//   Established  the opener acknowledged the SYN-ACK; data flows both ways
//   FinWait      one side sent a FIN, the other has not acknowledged it
//   CloseWait    the first FIN is acknowledged; the other side may still send
//   LastAck      both sides sent a FIN; the second is not acknowledged yet
//   TimeWait     both FINs sent and the second acknowledged: closed in order
//   Closed       a RST was seen: closed at once
//
// Whether an ACK acknowledges a FIN is the caller's to say (tcp_window.h compares the
// acknowledgement number with the FIN's sequence number; without the segment's numbers,
// the next ACK of the other side counts as acknowledging it).
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>

namespace vpf::conntrack {

enum class TcpState : uint8_t { SynSent, SynReceived, Established, FinWait, CloseWait, LastAck, TimeWait, Closed };
inline constexpr int kTcpStates = 8;

// The state's name as docs/connections.md and the tools print it ("syn_sent", ...).
const char* tcp_state_name(TcpState s);

// TCP header flag bits (the 8 bits after the data offset).
inline constexpr uint32_t kFin = 0x01, kSyn = 0x02, kRst = 0x04, kPsh = 0x08, kAck = 0x10, kUrg = 0x20;

// What one segment's flags are to the tracker: Invalid for combinations no TCP sends in a
// connection (SYN with FIN or RST, FIN without ACK, no flag at all); invalid segments
// change nothing.
enum class Segment : uint8_t { Syn, SynAck, Fin, Rst, Ack, Invalid };
Segment classify_segment(uint32_t flags);

// The side of a connection that is still to acknowledge a FIN, kept with the state: which
// side sent the first FIN (FinWait, CloseWait) or the last one (LastAck).
enum class Side : uint8_t { Opener = 0, Responder = 1 };

struct TcpTrack {
  TcpState state = TcpState::SynSent;
  Side fin_from = Side::Opener;  // FinWait, CloseWait: the first FIN's; LastAck: the second's
};

// The state after segment `seg` from side `from`; `acks_fin`: the segment acknowledges the
// other side's FIN (FinWait, LastAck).  A segment the state does not expect (a SYN-ACK
// from the opener, data before the handshake completes, ...) leaves it as it is;
// `*unexpected` tells so (the tracker counts these).
TcpTrack tcp_next(TcpTrack t, Segment seg, Side from, bool acks_fin, bool* unexpected);

// The state a connection is given when the tracker first sees it on a segment that is
// not a SYN (it was open before tracking started): Established for an ACK, FinWait
// (from that side) for a FIN-ACK; a RST or an invalid segment creates nothing (false).
bool tcp_pick_up(Segment seg, TcpTrack* t);

}  // namespace vpf::conntrack
