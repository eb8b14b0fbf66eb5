// The TCP state machine alone: segment classes, the handshake and both orderly closes,
// resets, and what it refuses to move on.
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "vpf/conntrack/tcp_state.h"

namespace {

using namespace vpf::conntrack;

TEST(TcpState, SegmentClasses) {
  EXPECT_EQ(classify_segment(kSyn), Segment::Syn);
  EXPECT_EQ(classify_segment(kSyn | kAck), Segment::SynAck);
  EXPECT_EQ(classify_segment(kFin | kAck), Segment::Fin);
  EXPECT_EQ(classify_segment(kFin | kAck | kPsh), Segment::Fin);
  EXPECT_EQ(classify_segment(kRst), Segment::Rst);
  EXPECT_EQ(classify_segment(kRst | kAck), Segment::Rst);
  EXPECT_EQ(classify_segment(kAck), Segment::Ack);
  EXPECT_EQ(classify_segment(kAck | kPsh | kUrg), Segment::Ack);
  // What no stack sends inside a connection.
  EXPECT_EQ(classify_segment(kSyn | kFin), Segment::Invalid);
  EXPECT_EQ(classify_segment(kSyn | kRst), Segment::Invalid);
  EXPECT_EQ(classify_segment(kFin | kRst | kAck), Segment::Invalid);
  EXPECT_EQ(classify_segment(kFin), Segment::Invalid);
  EXPECT_EQ(classify_segment(0), Segment::Invalid);
  EXPECT_EQ(classify_segment(kPsh), Segment::Invalid);
  EXPECT_EQ(classify_segment(kFin | kPsh | kUrg), Segment::Invalid);  // a "Christmas tree" without ACK
}

// Applies seg from `from` and checks the state it leads to and that it was expected.
TcpTrack step(TcpTrack t, Segment seg, Side from, TcpState want, bool want_unexpected = false, bool acks_fin = true) {
  bool unexpected = !want_unexpected;
  const TcpTrack n = tcp_next(t, seg, from, acks_fin, &unexpected);
  EXPECT_EQ(n.state, want) << tcp_state_name(t.state) << " -> " << tcp_state_name(n.state);
  EXPECT_EQ(unexpected, want_unexpected) << tcp_state_name(t.state);
  return n;
}

constexpr Side O = Side::Opener, R = Side::Responder;

TEST(TcpState, HandshakeAndCloseByTheOpener) {
  TcpTrack t;
  t = step(t, Segment::Syn, O, TcpState::SynSent);  // a retransmitted SYN
  t = step(t, Segment::SynAck, R, TcpState::SynReceived);
  t = step(t, Segment::SynAck, R, TcpState::SynReceived);  // retransmitted
  t = step(t, Segment::Ack, O, TcpState::Established);
  t = step(t, Segment::Ack, R, TcpState::Established);
  t = step(t, Segment::Fin, O, TcpState::FinWait);
  EXPECT_EQ(t.fin_from, O);
  t = step(t, Segment::Ack, O, TcpState::FinWait);  // the closing side may go on acknowledging
  t = step(t, Segment::Ack, R, TcpState::CloseWait);
  t = step(t, Segment::Ack, R, TcpState::CloseWait);  // the other side still sends
  t = step(t, Segment::Fin, R, TcpState::LastAck);
  EXPECT_EQ(t.fin_from, R);
  t = step(t, Segment::Fin, R, TcpState::LastAck);  // its FIN again
  t = step(t, Segment::Ack, O, TcpState::TimeWait);
  step(t, Segment::Ack, O, TcpState::TimeWait);
}

TEST(TcpState, CloseByTheResponderAndCrossingFins) {
  TcpTrack t{TcpState::Established, O};
  t = step(t, Segment::Fin, R, TcpState::FinWait);
  EXPECT_EQ(t.fin_from, R);
  t = step(t, Segment::Fin, O, TcpState::LastAck);  // both FINs out, the opener's last
  EXPECT_EQ(t.fin_from, O);
  t = step(t, Segment::Ack, O, TcpState::LastAck);  // not the acknowledgement of its own FIN
  step(t, Segment::Ack, R, TcpState::TimeWait);
}

TEST(TcpState, ResetClosesFromEveryState) {
  for (int s = 0; s < kTcpStates; ++s)
    for (Side from : {O, R}) {
      bool unexpected = true;
      EXPECT_EQ(tcp_next({TcpState(s), O}, Segment::Rst, from, true, &unexpected).state, TcpState::Closed);
      EXPECT_FALSE(unexpected);
    }
}

TEST(TcpState, SegmentsOutOfPlaceChangeNothing) {
  step({TcpState::SynSent, O}, Segment::Ack, O, TcpState::SynSent, true);   // no handshake yet
  step({TcpState::SynSent, O}, Segment::SynAck, O, TcpState::SynSent, true);  // the opener's own SYN-ACK
  step({TcpState::SynSent, O}, Segment::Fin, R, TcpState::SynSent, true);
  step({TcpState::SynReceived, O}, Segment::Ack, R, TcpState::SynReceived, true);
  step({TcpState::Established, O}, Segment::Syn, O, TcpState::Established, true);
  step({TcpState::Closed, O}, Segment::Ack, O, TcpState::Closed, true);
  step({TcpState::TimeWait, O}, Segment::SynAck, R, TcpState::TimeWait, true);
  step({TcpState::Established, O}, Segment::Invalid, O, TcpState::Established, true);
}

TEST(TcpState, AnAckThatDoesNotCoverTheFinLeavesItPending) {
  TcpTrack t = step({TcpState::FinWait, O}, Segment::Ack, R, TcpState::FinWait, false, false);
  t = step(t, Segment::Ack, R, TcpState::CloseWait, false, true);
  t = step(t, Segment::Fin, R, TcpState::LastAck);
  t = step(t, Segment::Ack, O, TcpState::LastAck, false, false);
  step(t, Segment::Ack, O, TcpState::TimeWait, false, true);
}

TEST(TcpState, SimultaneousOpenAndAnEarlyClose) {
  TcpTrack t = step({TcpState::SynSent, O}, Segment::Syn, R, TcpState::SynReceived);
  t = step(t, Segment::SynAck, O, TcpState::SynReceived);
  step(t, Segment::Ack, O, TcpState::Established);
  // The opener's ACK of the SYN-ACK may already carry its FIN.
  t = step({TcpState::SynReceived, O}, Segment::Fin, O, TcpState::FinWait);
  EXPECT_EQ(t.fin_from, O);
}

TEST(TcpState, PickUp) {
  TcpTrack t;
  ASSERT_TRUE(tcp_pick_up(Segment::Ack, &t));
  EXPECT_EQ(t.state, TcpState::Established);
  ASSERT_TRUE(tcp_pick_up(Segment::Fin, &t));
  EXPECT_EQ(t.state, TcpState::FinWait);
  for (Segment s : {Segment::Syn, Segment::SynAck, Segment::Rst, Segment::Invalid}) EXPECT_FALSE(tcp_pick_up(s, &t));
}

TEST(TcpState, Names) {
  std::set<std::string> names;
  for (int s = 0; s < kTcpStates; ++s) names.insert(tcp_state_name(TcpState(s)));
  EXPECT_EQ(names.size(), size_t(kTcpStates));
  EXPECT_EQ(names.count("?"), 0u);
  EXPECT_STREQ(tcp_state_name(TcpState::Established), "established");
}

}  // namespace
