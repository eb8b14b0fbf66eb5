// The TCP state machine of tracked connections: see tcp_state.h.
#include "vpf/conntrack/tcp_state.h"

namespace vpf::conntrack {

const char* tcp_state_name(TcpState s) {
  switch (s) {
    case TcpState::SynSent: return "syn_sent";
    case TcpState::SynReceived: return "syn_received";
    case TcpState::Established: return "established";
    case TcpState::FinWait: return "fin_wait";
    case TcpState::CloseWait: return "close_wait";
    case TcpState::LastAck: return "last_ack";
    case TcpState::TimeWait: return "time_wait";
    case TcpState::Closed: return "closed";
  }
  return "?";
}

Segment classify_segment(uint32_t flags) {
  const bool syn = flags & kSyn, fin = flags & kFin, rst = flags & kRst, ack = flags & kAck;
  if (syn) return fin || rst ? Segment::Invalid : ack ? Segment::SynAck : Segment::Syn;
  if (rst) return fin ? Segment::Invalid : Segment::Rst;
  if (fin) return ack ? Segment::Fin : Segment::Invalid;
  return ack ? Segment::Ack : Segment::Invalid;
}

TcpTrack tcp_next(TcpTrack t, Segment seg, Side from, bool acks_fin, bool* unexpected) {
  *unexpected = false;
  if (seg == Segment::Invalid) {
    *unexpected = true;
    return t;
  }
  if (seg == Segment::Rst) return {TcpState::Closed, t.fin_from};
  const bool opener = from == Side::Opener;
  auto to = [&](TcpState s, Side f) { return TcpTrack{s, f}; };
  auto stay = [&](bool expected) {
    *unexpected = !expected;
    return t;
  };
  switch (t.state) {
    case TcpState::SynSent:
      if (seg == Segment::Syn) return opener ? stay(true) : to(TcpState::SynReceived, t.fin_from);  // retransmit; simultaneous open
      if (seg == Segment::SynAck && !opener) return to(TcpState::SynReceived, t.fin_from);
      return stay(false);
    case TcpState::SynReceived:
      if (seg == Segment::Ack && opener) return to(TcpState::Established, t.fin_from);
      if (seg == Segment::Fin && opener) return to(TcpState::FinWait, Side::Opener);  // acknowledges and closes at once
      if (seg == Segment::SynAck || seg == Segment::Syn) return stay(true);  // retransmissions, simultaneous open
      return stay(false);
    case TcpState::Established:
      if (seg == Segment::Fin) return to(TcpState::FinWait, from);
      return stay(seg == Segment::Ack);
    case TcpState::FinWait:
      if (from == t.fin_from) return stay(seg != Segment::Syn && seg != Segment::SynAck);
      if (seg == Segment::Fin) return to(TcpState::LastAck, from);
      if (seg == Segment::Ack) return acks_fin ? to(TcpState::CloseWait, t.fin_from) : stay(true);
      return stay(false);
    case TcpState::CloseWait:
      if (from != t.fin_from && seg == Segment::Fin) return to(TcpState::LastAck, from);
      return stay(seg == Segment::Ack || seg == Segment::Fin);
    case TcpState::LastAck:
      if (from != t.fin_from && seg == Segment::Ack && acks_fin) return to(TcpState::TimeWait, t.fin_from);
      return stay(seg == Segment::Ack || seg == Segment::Fin);
    case TcpState::TimeWait:
      return stay(seg == Segment::Ack || seg == Segment::Fin);  // the last ACK or FIN again
    case TcpState::Closed:
      return stay(false);
  }
  return stay(false);
}

bool tcp_pick_up(Segment seg, TcpTrack* t) {
  switch (seg) {
    case Segment::Ack: *t = {TcpState::Established, Side::Opener}; return true;
    case Segment::Fin: *t = {TcpState::FinWait, Side::Opener}; return true;
    default: return false;
  }
}

}  // namespace vpf::conntrack
