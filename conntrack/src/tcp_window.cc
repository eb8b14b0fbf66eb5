// Sequence and window checks of tracked TCP connections: see tcp_window.h.
#include "vpf/conntrack/tcp_window.h"

#include <algorithm>

#include "vpf/conntrack/tcp_state.h"

namespace vpf::conntrack {

namespace {

uint32_t rd16(const uint8_t* p) { return uint32_t(p[0]) << 8 | p[1]; }
uint32_t rd32(const uint8_t* p) { return rd16(p) << 16 | rd16(p + 2); }

// Sequence-number order (RFC 1982 arithmetic on 32 bits).
bool seq_ge(uint32_t a, uint32_t b) { return int32_t(a - b) >= 0; }
bool seq_gt(uint32_t a, uint32_t b) { return int32_t(a - b) > 0; }

}  // namespace

bool read_segment(const uint8_t* frame, uint32_t frame_len, const matcher::PacketKey& k, TcpSegment* s) {
  const uint32_t l4 = k.l4_offset, l3_end = uint32_t(k.l3_offset) + k.l3_size;
  if (!frame || l4 == 0 || l3_end > frame_len || l4 + 20 > l3_end) return false;
  const uint8_t* t = frame + l4;
  const uint32_t hlen = uint32_t(t[12] >> 4) * 4;
  if (hlen < 20 || l4 + hlen > l3_end) return false;
  *s = TcpSegment{};
  s->seq = rd32(t + 4);
  s->ack = rd32(t + 8);
  s->flags = t[13];
  s->win = rd16(t + 14);
  s->len = l3_end - l4 - hlen;
  if (s->flags & kSyn) {  // the window scale option (kind 3, length 3)
    for (uint32_t o = 20; o < hlen;) {
      const uint8_t kind = t[o];
      if (kind == 0) break;  // end of options
      if (kind == 1) {       // no-op
        ++o;
        continue;
      }
      if (o + 1 >= hlen || t[o + 1] < 2 || o + t[o + 1] > hlen) return false;  // a broken option list
      if (kind == 3 && t[o + 1] == 3) s->wscale = std::min<int32_t>(t[o + 2], 14);
      o += t[o + 1];
    }
  }
  return true;
}

bool tcp_window(TcpPeer& src, TcpPeer& dst, const TcpSegment& s, bool* acks_fin) {
  *acks_fin = false;
  const bool syn = s.flags & kSyn, fin = s.flags & kFin, ack_set = s.flags & kAck;
  const uint32_t end = s.seq + s.len + (syn ? 1 : 0) + (fin ? 1 : 0);
  if (syn && !src.seen) src.wscale_offer = int8_t(s.wscale);
  if (syn && ack_set && dst.seen) {
    // The SYN-ACK: it acknowledges the SYN exactly, and fixes both sides' scales.
    if (s.ack != dst.seqlo) return false;
    const bool scaled = src.wscale_offer >= 0 && dst.wscale_offer >= 0;
    src.wscale = scaled ? uint8_t(src.wscale_offer) : 0;
    dst.wscale = scaled ? uint8_t(dst.wscale_offer) : 0;
  }
  const uint32_t win = syn ? s.win : s.win << src.wscale;
  if (!src.seen) {
    src.seen = true;
    src.seqlo = end;
    src.seqhi = end + 1;
    src.max_win = std::max<uint32_t>(win, 1);
    if (!dst.seen) return true;  // nothing to check against yet
  } else if (!dst.seen) {
    src.seqlo = seq_gt(end, src.seqlo) ? end : src.seqlo;  // a retransmitted SYN
    return true;
  }
  const uint32_t ack = ack_set ? s.ack : dst.seqlo;  // a segment without ACK acknowledges nothing new
  const int64_t ackskew = int64_t(int32_t(dst.seqlo - ack));
  const bool in = seq_ge(src.seqhi, end) && seq_ge(s.seq, src.seqlo - dst.max_win) &&
                  ackskew >= -int64_t(kMaxAckWindow) && ackskew <= int64_t(kMaxAckWindow) << src.wscale;
  if (!in) return false;
  src.max_win = std::max<uint32_t>(src.max_win, std::max<uint32_t>(win, 1));
  if (seq_gt(end, src.seqlo)) src.seqlo = end;
  if (ack_set && seq_ge(ack + std::max<uint32_t>(win, 1), dst.seqhi)) dst.seqhi = ack + std::max<uint32_t>(win, 1);
  if (fin && !src.fin) {
    src.fin = true;
    src.fin_end = end;
  }
  *acks_fin = ack_set && dst.fin && seq_ge(ack, dst.fin_end);
  return true;
}

}  // namespace vpf::conntrack
