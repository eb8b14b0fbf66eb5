// Sequence and window checks: reading a segment's numbers and options from a frame, the
// handshake and scales, segments in and out of window, acknowledgements of FINs, the
// sequence wrap; and the tracker using them on whole frames.
#include <gtest/gtest.h>

#include <vector>

#include "segments.h"
#include "vpf/conntrack/tracker.h"

namespace {

using namespace vpf::conntrack;
using vpf::matcher::PacketKey;

constexpr Direction Out = Direction::Outgoing, In = Direction::Incoming;

// A TCP segment between the VM (port 40000) and the peer (port 80), whole.
std::vector<uint8_t> segment(Direction dir, uint32_t seq, uint32_t ack, uint8_t flags, uint16_t win, size_t payload = 0,
                             std::vector<uint8_t> opts = {}) {
  return vpf::test::tcp_segment(dir, 40000, 80, seq, ack, flags, win, payload, std::move(opts));
}

PacketKey parse(const std::vector<uint8_t>& f, Direction dir) { return vpf::test::parse_as(f, dir); }

TcpSegment read(const std::vector<uint8_t>& f, Direction dir = Out) {
  TcpSegment s;
  EXPECT_TRUE(read_segment(f.data(), uint32_t(f.size()), parse(f, dir), &s));
  return s;
}

const std::vector<uint8_t> kScale7 = {1, 3, 3, 7};  // a no-op, then window scale 7

TEST(TcpWindow, ReadsTheSegment) {
  const TcpSegment s = read(segment(Out, 0xfffffff0u, 77, kAck | kPsh, 512, 100));
  EXPECT_EQ(s.seq, 0xfffffff0u);
  EXPECT_EQ(s.ack, 77u);
  EXPECT_EQ(s.win, 512u);
  EXPECT_EQ(s.len, 100u);
  EXPECT_EQ(s.flags, uint32_t(kAck | kPsh));
  EXPECT_EQ(s.wscale, -1);
  EXPECT_EQ(read(segment(Out, 1, 0, kSyn, 100, 0, kScale7)).wscale, 7);
  EXPECT_EQ(read(segment(Out, 1, 0, kSyn, 100, 0, {2, 4, 5, 0xb4, 3, 3, 20})).wscale, 14);  // MSS, then a scale past 14
  EXPECT_EQ(read(segment(Out, 1, 0, kAck, 100, 0, kScale7)).wscale, -1);  // only a SYN's counts
}

TEST(TcpWindow, RefusesBrokenHeaders) {
  TcpSegment s;
  auto bad = [&](std::vector<uint8_t> f) { return !read_segment(f.data(), uint32_t(f.size()), parse(f, Out), &s); };
  EXPECT_TRUE(bad(segment(Out, 1, 0, kSyn, 100, 0, {3, 0, 7, 0})));   // an option of length 0
  EXPECT_TRUE(bad(segment(Out, 1, 0, kSyn, 100, 0, {2, 9, 0, 0})));   // longer than the options
  auto f = segment(Out, 1, 0, kAck, 100, 0, kScale7);
  f[14 + 20 + 12] = 0x40;  // data offset 4 words: shorter than the header
  EXPECT_TRUE(bad(f));
  f[14 + 20 + 12] = 0xf0;  // 60 bytes: past the packet
  EXPECT_TRUE(bad(f));
  EXPECT_FALSE(read_segment(nullptr, 0, parse(segment(Out, 1, 0, kAck, 1), Out), &s));
}

// The handshake of a connection without scaling: opener ISN 1000, window 2000; responder
// ISN 5000, window 3000.
struct Conn {
  TcpPeer o, r;  // opener, responder
  bool in(const std::vector<uint8_t>& f, Direction dir, bool* acks_fin = nullptr) {
    bool a = false;
    const bool ok = dir == Out ? tcp_window(o, r, read(f, dir), &a) : tcp_window(r, o, read(f, dir), &a);
    if (acks_fin) *acks_fin = a;
    return ok;
  }
  Conn() {
    EXPECT_TRUE(in(segment(Out, 1000, 0, kSyn, 2000), Out));
    EXPECT_TRUE(in(segment(Out, 1000, 0, kSyn, 2000), Out));  // retransmitted
    EXPECT_TRUE(in(segment(In, 5000, 1001, kSyn | kAck, 3000), In));
    EXPECT_TRUE(in(segment(Out, 1001, 5001, kAck, 2000), Out));
  }
};

TEST(TcpWindow, HandshakeAndDataInWindow) {
  Conn c;
  EXPECT_EQ(c.o.seqlo, 1001u);
  EXPECT_EQ(c.r.seqlo, 5001u);
  EXPECT_EQ(c.o.seqhi, 1001u + 3000);  // the responder's window
  EXPECT_TRUE(c.in(segment(Out, 1001, 5001, kAck | kPsh, 2000, 1000), Out));
  EXPECT_TRUE(c.in(segment(Out, 2001, 5001, kAck | kPsh, 2000, 2000), Out));  // up to the window's edge
  EXPECT_EQ(c.o.seqlo, 4001u);
  EXPECT_TRUE(c.in(segment(Out, 1001, 5001, kAck | kPsh, 2000, 1000), Out));  // a retransmission
  EXPECT_TRUE(c.in(segment(In, 5001, 4001, kAck, 3000), In));  // acknowledged: the window moves
  EXPECT_EQ(c.o.seqhi, 4001u + 3000);
}

TEST(TcpWindow, SegmentsOutOfWindow) {
  Conn c;
  EXPECT_FALSE(c.in(segment(Out, 1001, 5001, kAck | kPsh, 2000, 3001), Out));  // ends past the edge
  EXPECT_FALSE(c.in(segment(Out, 1001 - 3001, 5001, kAck, 2000), Out));      // from too far back
  EXPECT_FALSE(c.in(segment(Out, 1001, 5001 + kMaxAckWindow + 1, kAck, 2000), Out));  // acknowledges unsent data
  EXPECT_FALSE(c.in(segment(Out, 1001, 5001 - kMaxAckWindow - 1, kAck, 2000), Out));  // acknowledgement far behind
  EXPECT_FALSE(c.in(segment(In, 900000, 1001, kRst, 0), In));  // a guessed reset
  EXPECT_EQ(c.o.seqlo, 1001u);                                  // nothing moved
  EXPECT_EQ(c.r.seqlo, 5001u);
  EXPECT_TRUE(c.in(segment(In, 5001, 1001, kRst, 0), In));
}

TEST(TcpWindow, TheSynAckMustAcknowledgeTheSyn) {
  TcpPeer o, r;
  bool a;
  ASSERT_TRUE(tcp_window(o, r, read(segment(Out, 1000, 0, kSyn, 2000)), &a));
  EXPECT_FALSE(tcp_window(r, o, read(segment(In, 5000, 1234, kSyn | kAck, 3000), In), &a));
}

TEST(TcpWindow, AFinIsAcknowledgedByItsOwnNumber) {
  Conn c;
  bool acks = true;
  ASSERT_TRUE(c.in(segment(Out, 1001, 5001, kFin | kAck, 2000, 10), Out));  // FIN at 1011: next 1012
  ASSERT_TRUE(c.in(segment(In, 5001, 1011, kAck, 3000), In, &acks));
  EXPECT_FALSE(acks);  // the data, not the FIN
  ASSERT_TRUE(c.in(segment(In, 5001, 1012, kAck, 3000), In, &acks));
  EXPECT_TRUE(acks);
}

TEST(TcpWindow, ScalesCountWhenBothSidesOfferThem) {
  TcpPeer o, r;
  bool a;
  ASSERT_TRUE(tcp_window(o, r, read(segment(Out, 1000, 0, kSyn, 2000, 0, kScale7)), &a));
  ASSERT_TRUE(tcp_window(r, o, read(segment(In, 5000, 1001, kSyn | kAck, 3000, 0, kScale7), In), &a));
  EXPECT_EQ(o.wscale, 7);
  EXPECT_EQ(r.wscale, 7);
  ASSERT_TRUE(tcp_window(o, r, read(segment(Out, 1001, 5001, kAck, 100)), &a));
  // The responder's window is 100 << 7 = 12,800 bytes once it says so.
  ASSERT_TRUE(tcp_window(r, o, read(segment(In, 5001, 1001, kAck, 100), In), &a));
  EXPECT_TRUE(tcp_window(o, r, read(segment(Out, 1001, 5001, kAck, 100, 12000)), &a));
  // One side without the option: no scaling for either.
  TcpPeer o2, r2;
  ASSERT_TRUE(tcp_window(o2, r2, read(segment(Out, 1000, 0, kSyn, 2000, 0, kScale7)), &a));
  ASSERT_TRUE(tcp_window(r2, o2, read(segment(In, 5000, 1001, kSyn | kAck, 3000), In), &a));
  EXPECT_EQ(o2.wscale, 0);
  EXPECT_EQ(r2.wscale, 0);
}

TEST(TcpWindow, SequenceNumbersWrap) {
  TcpPeer o, r;
  bool a;
  const uint32_t isn = 0xffffff00u;
  ASSERT_TRUE(tcp_window(o, r, read(segment(Out, isn, 0, kSyn, 60000)), &a));
  ASSERT_TRUE(tcp_window(r, o, read(segment(In, 7, isn + 1, kSyn | kAck, 60000), In), &a));
  ASSERT_TRUE(tcp_window(o, r, read(segment(Out, isn + 1, 8, kAck | kPsh, 60000, 1400)), &a));  // crosses 0
  EXPECT_EQ(o.seqlo, isn + 1 + 1400);
  ASSERT_TRUE(tcp_window(r, o, read(segment(In, 8, isn + 1 + 1400, kAck, 60000), In), &a));
  EXPECT_TRUE(tcp_window(o, r, read(segment(Out, isn + 1401, 8, kAck | kPsh, 60000, 1400)), &a));
}

// The tracker with frames.
Observed track(Tracker& t, const std::vector<uint8_t>& f, Direction dir) {
  return t.track(parse(f, dir), f.data(), uint32_t(f.size()), 0);
}

TEST(TrackerWindows, AResetOutOfWindowDoesNotClose) {
  Tracker t;
  track(t, segment(Out, 1000, 0, kSyn, 2000), Out);
  track(t, segment(In, 5000, 1001, kSyn | kAck, 3000), In);
  EXPECT_EQ(track(t, segment(Out, 1001, 5001, kAck, 2000), Out).tcp, TcpState::Established);
  const Observed o = track(t, segment(In, 123456, 0, kRst, 0), In);
  EXPECT_EQ(o.verdict, Verdict::Invalid);
  EXPECT_NE(o.id, 0u);
  EXPECT_EQ(o.tcp, TcpState::Established);
  EXPECT_EQ(t.stats().out_of_window, 1u);
  EXPECT_EQ(t.list()[0].packets[1], 1u);  // not counted as the connection's
  EXPECT_EQ(track(t, segment(In, 5001, 1001, kRst | kAck, 0), In).tcp, TcpState::Closed);
}

TEST(TrackerWindows, TheCloseWaitsForTheAcknowledgementOfTheFin) {
  Tracker t;
  track(t, segment(Out, 1000, 0, kSyn, 2000), Out);
  track(t, segment(In, 5000, 1001, kSyn | kAck, 3000), In);
  track(t, segment(Out, 1001, 5001, kAck, 2000), Out);
  EXPECT_EQ(track(t, segment(Out, 1001, 5001, kFin | kAck, 2000, 10), Out).tcp, TcpState::FinWait);
  EXPECT_EQ(track(t, segment(In, 5001, 1011, kAck, 3000), In).tcp, TcpState::FinWait);  // the data only
  EXPECT_EQ(track(t, segment(In, 5001, 1012, kAck, 3000), In).tcp, TcpState::CloseWait);
  EXPECT_EQ(track(t, segment(In, 5001, 1012, kFin | kAck, 3000), In).tcp, TcpState::LastAck);
  EXPECT_EQ(track(t, segment(Out, 1012, 5001, kAck, 2000), Out).tcp, TcpState::LastAck);  // not its FIN yet
  EXPECT_EQ(track(t, segment(Out, 1012, 5002, kAck, 2000), Out).tcp, TcpState::TimeWait);
}

TEST(TrackerWindows, PickedUpConnectionsAreNotChecked) {
  Tracker t;
  EXPECT_EQ(track(t, segment(In, 777, 888, kAck, 10), In).verdict, Verdict::New);
  EXPECT_EQ(track(t, segment(Out, 99999999, 1, kAck | kPsh, 10, 500), Out).verdict, Verdict::Known);
  EXPECT_EQ(t.stats().out_of_window, 0u);
}

TEST(TrackerWindows, BrokenOptionsAreInvalid) {
  Tracker t;
  EXPECT_EQ(track(t, segment(Out, 1, 0, kSyn, 100, 0, {3, 0, 7, 0}), Out).verdict, Verdict::Invalid);
  EXPECT_EQ(t.stats().invalid, 1u);
  EXPECT_EQ(t.stats().active, 0u);
}

}  // namespace
