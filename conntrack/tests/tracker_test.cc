// The connection tracker on parsed frames: TCP and UDP lifecycles in both directions,
// events and counters, pick-up of open connections, what is not tracked or is invalid,
// the limits, expiry, and threads at once.
#include <gtest/gtest.h>

#include <random>
#include <thread>
#include <vector>

#include "frames.h"
#include "segments.h"
#include "vpf/conntrack/tracker.h"

namespace {

using namespace vpf::conntrack;
using vpf::matcher::PacketKey;
using vpf::matcher::PacketMeta;
using vpf::test::FrameBuilder;
using vpf::test::ip4;
using vpf::test::kMacA;
using vpf::test::kMacB;

constexpr uint64_t kSec = 1000000000ull;
const uint32_t kVm = vpf::test::kVmIp, kPeer = vpf::test::kPeerIp;

PacketKey parse(const std::vector<uint8_t>& f, Direction dir, uint32_t adapter = 1, uint32_t vm = 7) {
  return vpf::test::parse_as(f, dir, adapter, vm);
}

// A TCP segment between the VM (port vport) and the peer (port pport): outgoing from the
// VM, or incoming to it (sequence number 1000, no acknowledgement number, window 65535).
PacketKey tcp(Direction dir, uint8_t flags, uint16_t vport = 40000, uint16_t pport = 80, uint32_t adapter = 1,
              size_t payload = 0) {
  return parse(vpf::test::tcp_segment(dir, vport, pport, 1000, 0, flags, 65535, payload), dir, adapter);
}

PacketKey udp(Direction dir, uint16_t vport = 5000, uint16_t pport = 53, uint32_t adapter = 1) {
  const bool out = dir == Direction::Outgoing;
  return parse(FrameBuilder()
                   .eth(kMacB, kMacA)
                   .ethertype(0x0800)
                   .ipv4(out ? kVm : kPeer, out ? kPeer : kVm, 17)
                   .udp(out ? vport : pport, out ? pport : vport)
                   .payload(20)
                   .build(),
               dir, adapter);
}

constexpr Direction Out = Direction::Outgoing, In = Direction::Incoming;

TEST(Tracker, TcpConnectionOpenedByTheVm) {
  Tracker t;
  ConnInfo ev;
  Observed o = t.track(tcp(Out, kSyn), 1 * kSec, &ev);
  EXPECT_EQ(o.verdict, Verdict::New);
  EXPECT_EQ(o.tcp, TcpState::SynSent);
  EXPECT_EQ(o.event, EventKind::None);
  const uint64_t id = o.id;
  EXPECT_NE(id, 0u);
  o = t.track(tcp(In, kSyn | kAck), 2 * kSec);
  EXPECT_EQ(o.verdict, Verdict::Known);
  EXPECT_TRUE(o.reply);
  EXPECT_EQ(o.id, id);
  EXPECT_EQ(o.tcp, TcpState::SynReceived);
  o = t.track(tcp(Out, kAck), 3 * kSec, &ev);
  EXPECT_EQ(o.tcp, TcpState::Established);
  ASSERT_EQ(o.event, EventKind::TcpConnected);
  EXPECT_EQ(ev.id, id);
  EXPECT_EQ(ev.opened, Out);
  EXPECT_EQ(ev.vm, 7u);
  EXPECT_EQ(ev.key.local_ip[0], kVm);
  EXPECT_EQ(ev.key.remote_ip[0], kPeer);
  EXPECT_EQ(ev.key.local_port, 40000);
  EXPECT_EQ(ev.key.remote_port, 80);
  EXPECT_EQ(ev.packets[0], 2u);
  EXPECT_EQ(ev.packets[1], 1u);
  // Data both ways, then the VM closes.
  uint64_t out_bytes = 0, in_bytes = 0;
  for (int i = 0; i < 3; ++i) {
    const PacketKey a = tcp(Out, kAck | kPsh, 40000, 80, 1, 100), b = tcp(In, kAck, 40000, 80, 1, 0);
    out_bytes += a.f[vpf::matcher::F_FRAME_LEN];
    in_bytes += b.f[vpf::matcher::F_FRAME_LEN];
    EXPECT_EQ(t.track(a, 4 * kSec).event, EventKind::None);
    EXPECT_EQ(t.track(b, 4 * kSec).event, EventKind::None);
  }
  EXPECT_EQ(t.track(tcp(Out, kFin | kAck), 5 * kSec).tcp, TcpState::FinWait);
  EXPECT_EQ(t.track(tcp(In, kAck), 5 * kSec).tcp, TcpState::CloseWait);
  EXPECT_EQ(t.track(tcp(In, kFin | kAck), 5 * kSec).tcp, TcpState::LastAck);
  o = t.track(tcp(Out, kAck), 6 * kSec, &ev);
  EXPECT_EQ(o.tcp, TcpState::TimeWait);
  ASSERT_EQ(o.event, EventKind::TcpClosed);
  EXPECT_EQ(ev.packets[0], 2u + 3 + 1 + 1);
  EXPECT_EQ(ev.packets[1], 1u + 3 + 2);
  EXPECT_GT(ev.bytes[0], out_bytes);
  EXPECT_GT(ev.bytes[1], in_bytes);
  EXPECT_EQ(ev.created_ns, 1 * kSec);
  EXPECT_EQ(ev.last_ns, 6 * kSec);
  EXPECT_EQ(t.track(tcp(Out, kAck), 6 * kSec).event, EventKind::None);  // told once
  const auto all = t.list();
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].tcp, TcpState::TimeWait);
  EXPECT_EQ(t.stats().active, 1u);
}

TEST(Tracker, ConnectionOpenedByThePeer) {
  Tracker t;
  Observed o = t.track(tcp(In, kSyn, 22, 50000), 0);
  ASSERT_EQ(o.verdict, Verdict::New);
  o = t.track(tcp(Out, kSyn | kAck, 22, 50000), 0);
  EXPECT_TRUE(o.reply);  // the VM answers
  EXPECT_EQ(o.tcp, TcpState::SynReceived);
  EXPECT_EQ(t.track(tcp(In, kAck, 22, 50000), 0).event, EventKind::TcpConnected);
  const auto all = t.list(1);
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].opened, In);
  EXPECT_EQ(all[0].key.local_port, 22);
  EXPECT_TRUE(t.list(2).empty());
}

TEST(Tracker, BothDirectionsGiveOneKey) {
  ConnKey a, b;
  bool invalid = true;
  ASSERT_TRUE(Tracker::key_of(tcp(Out, kAck), &a, &invalid));
  EXPECT_FALSE(invalid);
  ASSERT_TRUE(Tracker::key_of(tcp(In, kAck), &b, &invalid));
  EXPECT_EQ(a, b);
  EXPECT_EQ(Tracker::hash(a), Tracker::hash(b));
  ASSERT_TRUE(Tracker::key_of(tcp(Out, kAck, 40001), &b, &invalid));
  EXPECT_FALSE(a == b);
  ASSERT_TRUE(Tracker::key_of(tcp(Out, kAck, 40000, 80, 2), &b, &invalid));  // another adapter
  EXPECT_FALSE(a == b);
}

TEST(Tracker, ResetCloses) {
  Tracker t;
  // Refused: closed, but never told connected, so no closed event either.
  t.track(tcp(Out, kSyn, 1000), 0);
  Observed o = t.track(tcp(In, kRst | kAck, 1000), 0);
  EXPECT_EQ(o.tcp, TcpState::Closed);
  EXPECT_EQ(o.event, EventKind::None);
  // Reset after it was open: told.
  t.track(tcp(Out, kSyn, 1001), 0);
  t.track(tcp(In, kSyn | kAck, 1001), 0);
  t.track(tcp(Out, kAck, 1001), 0);
  o = t.track(tcp(In, kRst, 1001), 0);
  EXPECT_EQ(o.tcp, TcpState::Closed);
  EXPECT_EQ(o.event, EventKind::TcpClosed);
}

TEST(Tracker, ASynAfterTheCloseStartsANewConnection) {
  Tracker t;
  const uint64_t first = t.track(tcp(Out, kSyn), 0).id;
  t.track(tcp(In, kRst | kAck), 0);
  const Observed o = t.track(tcp(Out, kSyn), kSec);
  EXPECT_EQ(o.verdict, Verdict::New);
  EXPECT_NE(o.id, first);
  EXPECT_EQ(o.tcp, TcpState::SynSent);
  EXPECT_EQ(t.stats().active, 1u);
  EXPECT_EQ(t.stats().created, 2u);
  EXPECT_EQ(t.stats().removed, 1u);
  // A SYN inside an open connection does not.
  t.track(tcp(In, kSyn | kAck), kSec);
  t.track(tcp(Out, kAck), kSec);
  EXPECT_EQ(t.track(tcp(Out, kSyn), kSec).verdict, Verdict::Known);
  EXPECT_EQ(t.stats().unexpected, 1u);
}

TEST(Tracker, PicksUpConnectionsOpenBeforeIt) {
  Tracker t;
  ConnInfo ev;
  Observed o = t.track(tcp(In, kAck | kPsh, 443, 51000, 1, 50), 0, &ev);
  EXPECT_EQ(o.verdict, Verdict::New);
  EXPECT_EQ(o.tcp, TcpState::Established);
  EXPECT_EQ(o.event, EventKind::TcpConnected);
  EXPECT_EQ(ev.opened, In);  // a guess: the side it saw first
  EXPECT_EQ(t.track(tcp(Out, kAck, 443, 51000), 0).verdict, Verdict::Known);
  // A RST or a SYN-ACK of no known connection creates nothing.
  EXPECT_EQ(t.track(tcp(In, kRst, 444, 51000), 0).verdict, Verdict::Untracked);
  EXPECT_EQ(t.track(tcp(In, kSyn | kAck, 445, 51000), 0).verdict, Verdict::Untracked);
  EXPECT_EQ(t.stats().active, 1u);
  EXPECT_EQ(t.stats().untracked, 2u);
}

TEST(Tracker, UdpFlowsAndTheirTimeouts) {
  Timeouts to;
  to.udp_unreplied = 30;
  to.udp_replied = 120;
  Tracker t(Limits{}, to);
  ConnInfo ev;
  Observed o = t.track(udp(Out, 5000), 0, &ev);
  EXPECT_EQ(o.verdict, Verdict::New);
  ASSERT_EQ(o.event, EventKind::UdpCreated);
  EXPECT_EQ(ev.opened, Out);
  EXPECT_FALSE(ev.replied);
  o = t.track(udp(In, 5000), 1 * kSec);
  EXPECT_TRUE(o.reply);
  EXPECT_EQ(o.event, EventKind::None);
  t.track(udp(Out, 5001), 1 * kSec);  // never answered
  std::vector<Event> events;
  EXPECT_EQ(t.expire(30 * kSec, &events), 0u);
  EXPECT_EQ(t.expire(31 * kSec, &events), 1u);  // the unanswered one, 30 s after its datagram
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].kind, EventKind::UdpClosed);
  EXPECT_EQ(events[0].conn.key.local_port, 5001);
  EXPECT_EQ(t.expire(120 * kSec, &events), 0u);
  EXPECT_EQ(t.expire(121 * kSec, &events), 1u);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[1].conn.key.local_port, 5000);
  EXPECT_EQ(events[1].conn.packets[0], 1u);
  EXPECT_EQ(events[1].conn.packets[1], 1u);
  EXPECT_EQ(t.stats().active, 0u);
  EXPECT_TRUE(t.list().empty());
}

TEST(Tracker, ExpiryInStepsCoversEveryStripe) {
  Tracker t(Limits{4096, 4096});
  for (uint16_t p = 0; p < 500; ++p) t.track(udp(Out, p), 0);
  ASSERT_GT(t.stripes(), 1u);
  size_t n = 0;
  for (uint32_t i = 0; i < t.stripes() - 1; ++i) n += t.expire_step(31 * kSec, nullptr);
  EXPECT_LT(n, 500u);  // one stripe still to go
  EXPECT_GT(n, 0u);
  n += t.expire_step(31 * kSec, nullptr);
  EXPECT_EQ(n, 500u);
  EXPECT_EQ(t.stats().active, 0u);
}

TEST(Tracker, TcpExpiryTellsTheCloseOfConnectedOnesOnly) {
  Tracker t;
  t.track(tcp(Out, kSyn, 1), 0);  // never answered: SynSent, 120 s
  t.track(tcp(Out, kSyn, 2), 0);
  t.track(tcp(In, kSyn | kAck, 2), 0);
  t.track(tcp(Out, kAck, 2), 0);  // established: 5 days
  std::vector<Event> events;
  EXPECT_EQ(t.expire(121 * kSec, &events), 1u);
  EXPECT_TRUE(events.empty());
  EXPECT_EQ(t.expire(432001 * kSec, &events), 1u);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].kind, EventKind::TcpClosed);
  EXPECT_EQ(events[0].conn.key.local_port, 2);
}

TEST(Tracker, WhatItDoesNotFollowAndWhatIsBroken) {
  Tracker t;
  const auto untracked = [&](const std::vector<uint8_t>& f) { return t.track(parse(f, Out), 0).verdict; };
  EXPECT_EQ(untracked(FrameBuilder().eth(kMacB, kMacA).ethertype(0x0800).ipv4(kVm, kPeer, 1).icmp(8, 0).build()), Verdict::Untracked);
  EXPECT_EQ(untracked(FrameBuilder().eth(kMacB, kMacA).arp(1, kMacA, kVm, kMacB, kPeer).build()), Verdict::Untracked);
  // A first fragment (MF) and a later one: not followed.
  EXPECT_EQ(untracked(FrameBuilder().eth(kMacB, kMacA).ethertype(0x0800).ipv4(kVm, kPeer, 6, 0x2000).tcp(1, 2, kSyn).build()),
            Verdict::Untracked);
  EXPECT_EQ(untracked(FrameBuilder().eth(kMacB, kMacA).ethertype(0x0800).ipv4(kVm, kPeer, 17, 0x0010).payload(30).build()),
            Verdict::Untracked);
  EXPECT_EQ(t.stats().untracked, 4u);
  // A TCP header cut short, impossible flags, a wrong IP header: counted as invalid.
  auto cut = FrameBuilder().eth(kMacB, kMacA).ethertype(0x0800).ipv4(kVm, kPeer, 6).tcp(1, 2, kSyn).build();
  cut.resize(14 + 20 + 10);
  EXPECT_EQ(t.track(parse(cut, Out), 0).verdict, Verdict::Invalid);
  EXPECT_EQ(t.track(tcp(Out, kSyn | kFin), 0).verdict, Verdict::Invalid);
  EXPECT_EQ(t.track(tcp(Out, 0), 0).verdict, Verdict::Invalid);
  EXPECT_EQ(t.track(tcp(Out, kFin), 0).verdict, Verdict::Invalid);
  auto bad_ihl = FrameBuilder().eth(kMacB, kMacA).ethertype(0x0800).ipv4(kVm, kPeer, 6).tcp(1, 2, kSyn).build();
  bad_ihl[14] = 0x43;
  EXPECT_EQ(t.track(parse(bad_ihl, Out), 0).verdict, Verdict::Invalid);
  PacketKey any = tcp(Out, kSyn);
  any.f[vpf::matcher::F_DIRECTION] = uint32_t(Direction::Any);  // not a packet's direction
  EXPECT_EQ(t.track(any, 0).verdict, Verdict::Invalid);
  EXPECT_EQ(t.stats().invalid, 6u);
  EXPECT_EQ(t.stats().active, 0u);
}

TEST(Tracker, LimitsRefuseNewConnectionsAndKeepTheOthers) {
  Tracker t(Limits{100, 10});
  for (uint16_t p = 0; p < 20; ++p) EXPECT_EQ(t.track(udp(Out, p, 53, 1), 0).verdict, p < 10 ? Verdict::New : Verdict::Full);
  EXPECT_EQ(t.stats().full, 10u);
  EXPECT_EQ(t.track(udp(In, 3, 53, 1), 0).verdict, Verdict::Known);  // the tracked ones go on
  for (uint32_t a = 2; a <= 10; ++a)
    for (uint16_t p = 0; p < 10; ++p) ASSERT_EQ(t.track(udp(Out, p, 53, a), 0).verdict, Verdict::New);
  EXPECT_EQ(t.stats().active, 100u);
  EXPECT_EQ(t.track(udp(Out, 0, 53, 11), 0).verdict, Verdict::Full);  // the total
  EXPECT_EQ(t.list().size(), 100u);
  // Room again once connections leave.
  EXPECT_EQ(t.expire(200 * kSec, nullptr), 100u);
  EXPECT_EQ(t.track(udp(Out, 0, 53, 11), 200 * kSec).verdict, Verdict::New);
  EXPECT_EQ(t.track(udp(Out, 15, 53, 1), 200 * kSec).verdict, Verdict::New);
}

TEST(Tracker, Ipv6) {
  Tracker t;
  const vpf::test::Ip6 vm{0x20010db8, 0, 0, 1}, peer{0x20010db8, 0, 0, 2};
  auto seg = [&](Direction dir, uint8_t flags) {
    const bool out = dir == Out;
    return parse(FrameBuilder().eth(kMacB, kMacA).ethertype(0x86dd).ipv6(out ? vm : peer, out ? peer : vm, 6).tcp(out ? 40000 : 443, out ? 443 : 40000, flags).build(), dir);
  };
  EXPECT_EQ(t.track(seg(Out, kSyn), 0).verdict, Verdict::New);
  EXPECT_EQ(t.track(seg(In, kSyn | kAck), 0).tcp, TcpState::SynReceived);
  EXPECT_EQ(t.track(seg(Out, kAck), 0).event, EventKind::TcpConnected);
  const auto all = t.list();
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].key.ip_ver, 6);
  EXPECT_EQ(all[0].key.local_ip[3], 1u);
  EXPECT_EQ(all[0].key.remote_ip[0], 0x20010db8u);
}

TEST(Tracker, RandomFramesAreCountedAndNeverCrashIt) {
  Tracker t(Limits{1000, 1000});
  std::mt19937_64 rng(3);
  uint64_t verdicts[5] = {};
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    const auto f = vpf::test::random_frame(rng);
    const Observed o = t.track(parse(f, rng() % 2 ? Out : In, uint32_t(rng() % 4)), uint64_t(i) * 1000000);
    ++verdicts[int(o.verdict)];
    if (i % 5000 == 4999) t.expire(uint64_t(i) * 1000000, nullptr);
  }
  const Stats st = t.stats();
  EXPECT_EQ(verdicts[int(Verdict::New)], st.created);
  EXPECT_EQ(verdicts[int(Verdict::Untracked)], st.untracked);
  EXPECT_EQ(verdicts[int(Verdict::Invalid)], st.invalid);
  EXPECT_EQ(verdicts[int(Verdict::Full)], st.full);
  EXPECT_EQ(st.created - st.removed, st.active);
  EXPECT_EQ(t.list().size(), st.active);
  EXPECT_GT(verdicts[int(Verdict::New)], 0u);
  EXPECT_GT(verdicts[int(Verdict::Known)], 0u);
  EXPECT_GT(verdicts[int(Verdict::Untracked)], 0u);
}

// The batch form gives what the one-packet form gives, packet by packet, on a mix of
// handshakes, data, closes, UDP and random frames, with and without the frames' numbers.
TEST(Tracker, ABatchIsThePacketsInOrder) {
  for (int with_frames = 0; with_frames < 2; ++with_frames) {
    Tracker one(Limits{300, 200}), batch(Limits{300, 200});
    std::mt19937_64 rng(5 + with_frames);
    std::vector<std::vector<uint8_t>> frames;
    std::vector<Direction> dirs;
    for (int i = 0; i < 6000; ++i) {
      const bool out = rng() % 2;
      const uint16_t vport = uint16_t(1000 + rng() % 150);
      const uint8_t flag_set[] = {kSyn, kSyn | kAck, kAck, kAck | kPsh, kFin | kAck, kRst, kRst | kAck, kSyn | kFin};
      if (rng() % 5 == 0) {
        frames.push_back(vpf::test::random_frame(rng));
      } else if (rng() % 3 == 0) {
        frames.push_back(FrameBuilder().eth(kMacB, kMacA).ethertype(0x0800).ipv4(out ? kVm : kPeer, out ? kPeer : kVm, 17)
                             .udp(out ? vport : 53, out ? 53 : vport).payload(10).build());
      } else {
        frames.push_back(FrameBuilder().eth(kMacB, kMacA).ethertype(0x0800).ipv4(out ? kVm : kPeer, out ? kPeer : kVm, 6)
                             .tcp(out ? vport : 80, out ? 80 : vport, flag_set[rng() % 8]).build());
      }
      dirs.push_back(out ? Out : In);
    }
    size_t at = 0;
    uint64_t now = 0;
    while (at < frames.size()) {
      const uint32_t n = uint32_t(std::min<size_t>(1 + rng() % Tracker::kBatch, frames.size() - at));
      PacketKey keys[Tracker::kBatch];
      const PacketKey* kp[Tracker::kBatch];
      const uint8_t* fp[Tracker::kBatch];
      uint32_t lens[Tracker::kBatch];
      Observed got[Tracker::kBatch];
      ConnInfo ev[Tracker::kBatch];
      for (uint32_t i = 0; i < n; ++i) {
        keys[i] = parse(frames[at + i], dirs[at + i], 1 + uint32_t(rng() % 2));
        kp[i] = &keys[i];
        fp[i] = frames[at + i].data();
        lens[i] = uint32_t(frames[at + i].size());
      }
      batch.track_batch(kp, with_frames ? fp : nullptr, with_frames ? lens : nullptr, n, now, got, ev);
      for (uint32_t i = 0; i < n; ++i) {
        ConnInfo want_ev;
        const Observed want = with_frames ? one.track(keys[i], fp[i], lens[i], now, &want_ev) : one.track(keys[i], now, &want_ev);
        ASSERT_EQ(got[i].verdict, want.verdict) << "packet " << at + i;
        ASSERT_EQ(got[i].id, want.id);
        ASSERT_EQ(got[i].reply, want.reply);
        ASSERT_EQ(got[i].event, want.event);
        if (want.event != EventKind::None) {
          ASSERT_EQ(ev[i].packets[0] + ev[i].packets[1], want_ev.packets[0] + want_ev.packets[1]);
        }
        if (want.verdict == Verdict::Known || want.verdict == Verdict::New) {
          ASSERT_EQ(got[i].tcp, want.tcp);
        }
      }
      at += n;
      now += kSec;
      if (rng() % 8 == 0) {
        ASSERT_EQ(batch.expire(now, nullptr), one.expire(now, nullptr));
      }
    }
    const Stats a = one.stats(), b = batch.stats();
    EXPECT_EQ(a.active, b.active);
    EXPECT_EQ(a.created, b.created);
    EXPECT_EQ(a.invalid, b.invalid);
    EXPECT_EQ(a.full, b.full);
    EXPECT_EQ(a.out_of_window, b.out_of_window);
    EXPECT_GT(a.created, 100u);
    EXPECT_GT(a.full, 0u);
    if (with_frames) {
      EXPECT_GT(a.out_of_window, 0u);
    }
  }
}

// The caller's decision kept with a connection: taken from the packet that opens it, kept
// for the replies, taken again from the opener's next packet after the rules changed; a
// packet that may not open one opens nothing but still finds its connection.
TEST(Tracker, AConnectionKeepsTheDecisionOfItsOpener) {
  Tracker t;
  auto one = [&](const PacketKey& k, uint64_t word, bool may_open, uint64_t gen) {
    const PacketKey* kp[1] = {&k};
    Observed o;
    t.track_batch(kp, nullptr, nullptr, 1, 0, Tracker::Decisions{&word, may_open ? 0u : 1u, gen}, &o);
    return o;
  };
  EXPECT_EQ(one(tcp(Out, kSyn, 25), 7, false, 1).verdict, Verdict::Untracked);  // dropped: opens nothing
  EXPECT_TRUE(t.list().empty());
  Observed o = one(tcp(Out, kSyn), 7, true, 1);
  ASSERT_EQ(o.verdict, Verdict::New);
  EXPECT_TRUE(o.gov.set);
  EXPECT_EQ(o.gov.word, 7u);
  o = one(tcp(In, kSyn | kAck), kNoWord, true, 1);  // the reply brings nothing: the opener's holds
  EXPECT_TRUE(o.reply);
  EXPECT_TRUE(o.gov.set);
  EXPECT_EQ(o.gov.word, 7u);
  o = one(tcp(In, kAck), 9, false, 2);  // a reply after a change, its own decision a drop: found, not re-decided
  EXPECT_EQ(o.verdict, Verdict::Known);
  EXPECT_EQ(o.gov.word, 7u);
  EXPECT_EQ(o.gov.gen, 1u);
  o = one(tcp(Out, kAck), 11, true, 2);  // the opener's next packet: re-decided
  EXPECT_EQ(o.gov.word, 11u);
  EXPECT_EQ(o.gov.gen, 2u);
  o = one(tcp(Out, kAck), kNoWord, true, 3);  // no connection rule decides it any more
  EXPECT_FALSE(o.gov.set);
  o = one(tcp(In, kAck), kNoWord, true, 3);
  EXPECT_FALSE(o.gov.set);
  // The one-packet form keeps no decision.
  EXPECT_FALSE(t.track(tcp(Out, kSyn, 2222), 0).gov.set);
}

// A reply that comes before its opener after a rule change: the caller decides the
// connection again (Tracker::redecide) with the newer rules; an older decision never
// replaces a newer one, and a packet of no connection finds nothing.
TEST(Tracker, AReplyDecidesItsConnectionAgainWithNewerRules) {
  Tracker t;
  auto one = [&](const PacketKey& k, uint64_t word, uint64_t gen) {
    const PacketKey* kp[1] = {&k};
    Observed o;
    t.track_batch(kp, nullptr, nullptr, 1, 0, Tracker::Decisions{&word, 0, gen}, &o);
    return o;
  };
  ASSERT_EQ(one(tcp(Out, kSyn), 7, 1).verdict, Verdict::New);
  Governing g = t.redecide(tcp(In, kSyn | kAck), 9, 2);
  EXPECT_TRUE(g.set);
  EXPECT_EQ(g.word, 9u);
  EXPECT_EQ(g.gen, 2u);
  g = t.redecide(tcp(In, kAck), 5, 1);  // older rules: kept as it is
  EXPECT_EQ(g.word, 9u);
  EXPECT_EQ(g.gen, 2u);
  Observed o = one(tcp(Out, kAck), 11, 1);  // the opener's packet classified before the change: no step back
  EXPECT_EQ(o.gov.word, 9u);
  g = t.redecide(tcp(In, kAck), kNoWord, 3);  // no connection rule any more
  EXPECT_FALSE(g.set);
  EXPECT_EQ(g.gen, 3u);
  EXPECT_FALSE(t.redecide(tcp(In, kAck, 2222), 9, 4).set) << "no connection";
  // A connection that expires tells its decision with its closing event.
  const PacketKey u = udp(Out, 5353, 53);
  const PacketKey* up[1] = {&u};
  const uint64_t w = 21;
  Observed uo;
  t.track_batch(up, nullptr, nullptr, 1, 0, Tracker::Decisions{&w, 0, 5}, &uo);
  std::vector<Event> events;
  t.expire(uint64_t(31) * 1000000000, &events);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].kind, EventKind::UdpClosed);
  EXPECT_TRUE(events[0].gov.set);
  EXPECT_EQ(events[0].gov.word, 21u);
  EXPECT_EQ(t.redecide(tcp(In, kAck, 2222), 9, 4).gen, 0u);
}

// A decision the application settles (a pended connect request, completed): a connection
// opened with it settled keeps it through rule changes, from either side, until
// settle() gives it another, by key and id; a settle bit on a packet of a known
// connection changes nothing; an id that is not the key's connection settles nothing.
TEST(Tracker, ASettledDecisionOutlivesRuleChanges) {
  Tracker t;
  auto one = [&](const PacketKey& k, uint64_t word, uint64_t gen, uint32_t settle) {
    const PacketKey* kp[1] = {&k};
    Observed o;
    Tracker::Decisions d{&word, 0, gen};
    d.settle = settle;
    t.track_batch(kp, nullptr, nullptr, 1, 0, d, &o);
    return o;
  };
  const Observed a = one(tcp(Out, kSyn), 7, 1, 1);
  ASSERT_EQ(a.verdict, Verdict::New);
  EXPECT_EQ(a.gov.word, 7u);
  EXPECT_EQ(a.gov.gen, kSettledGen);
  EXPECT_EQ(one(tcp(Out, kSyn), 11, 2, 0).gov.word, 7u) << "its opener after a rule change: kept";
  EXPECT_EQ(t.redecide(tcp(In, kSyn | kAck), 9, 3).word, 7u) << "a reply re-decided: kept";
  EXPECT_FALSE(t.settle(tcp(Out, kAck), a.id + 1, 5)) << "another id";
  EXPECT_FALSE(t.settle(tcp(Out, kAck, 2222), a.id, 5)) << "no connection";
  EXPECT_TRUE(t.settle(tcp(Out, kAck), a.id, 5));
  Observed o = one(tcp(In, kSyn | kAck), kNoWord, 4, 0);
  EXPECT_EQ(o.gov.word, 5u);
  EXPECT_EQ(o.gov.gen, kSettledGen);
  // Not opening: the bit is ignored, the connection is re-decided as any other.
  const Observed b = one(udp(Out, 7000), 3, 1, 0);
  ASSERT_EQ(b.verdict, Verdict::New);
  o = one(udp(Out, 7000), 8, 2, 1);
  EXPECT_EQ(o.gov.word, 8u);
  EXPECT_EQ(o.gov.gen, 2u);
}

// Suspension is the caller's: a connection starts suspended when its opening packet says
// so, and set_suspended() changes it by id; every packet of it reports it.
TEST(Tracker, ConnectionsSuspendedAndResumedById) {
  Tracker t;
  auto one = [&](const PacketKey& k, uint32_t suspend) {
    const PacketKey* kp[1] = {&k};
    const uint64_t w = 3;
    Observed o;
    t.track_batch(kp, nullptr, nullptr, 1, 0, Tracker::Decisions{&w, 0, 1, suspend}, &o);
    return o;
  };
  const Observed a = one(udp(Out, 6000), 1);
  ASSERT_EQ(a.verdict, Verdict::New);
  EXPECT_TRUE(a.suspended);
  EXPECT_TRUE(one(udp(In, 6000), 0).suspended) << "the reply finds it suspended";
  const Observed b = one(udp(Out, 6001), 0);
  EXPECT_FALSE(b.suspended);
  EXPECT_TRUE(t.set_suspended(a.id, false));
  EXPECT_FALSE(one(udp(Out, 6000), 1).suspended) << "a known connection keeps its own state";
  EXPECT_TRUE(t.set_suspended(b.id, true));
  EXPECT_TRUE(one(udp(In, 6001), 0).suspended);
  EXPECT_FALSE(t.set_suspended(999999, true)) << "no such connection";
  bool listed = false;
  for (const ConnInfo& c : t.list()) listed |= c.id == b.id && c.suspended;
  EXPECT_TRUE(listed);
}

TEST(Tracker, ThreadsAtOnce) {
  Tracker t(Limits{100000, 100000});
  constexpr int kOwn = 2000, kShared = 500, kRounds = 4;
  auto work = [&](uint32_t adapter) {
    for (int r = 0; r < kRounds; ++r) {
      for (int p = 0; p < kOwn; ++p) t.track(udp(r % 2 ? In : Out, uint16_t(p), 53, adapter), 0);
      for (int p = 0; p < kShared; ++p) t.track(udp(Out, uint16_t(p), 53, 99), 0);
      if (r == 1) t.expire(1, nullptr);  // removes nothing; sweeps beside the others
      t.list();
    }
  };
  std::thread a(work, 1), b(work, 2);
  a.join();
  b.join();
  EXPECT_EQ(t.stats().active, uint64_t(2 * kOwn + kShared));
  uint64_t shared_packets = 0;
  for (const ConnInfo& c : t.list()) {
    if (c.key.adapter == 99) shared_packets += c.packets[0] + c.packets[1];
    else EXPECT_EQ(c.packets[0] + c.packets[1], uint64_t(kRounds));
  }
  EXPECT_EQ(shared_packets, uint64_t(2 * kRounds * kShared));
}

}  // namespace
