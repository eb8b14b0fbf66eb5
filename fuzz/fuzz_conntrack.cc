// libFuzzer harness: the connection tracker on any sequence of frames.  The input is a
// list of packets, each a header byte (bit 0: incoming; bits 1..2: the adapter; bits
// 3..6: seconds to wait before it; bit 7: the end of a batch), a 16-bit big-endian length
// and that many frame bytes (each frame is copied to a buffer of exactly its length: ASan
// sees a read past it).  Four trackers with small limits follow the packets: one packet
// at a time with the frames' numbers, in batches with them (track_batch), with the flags
// alone, and in batches with decisions of a caller (Tracker::Decisions, drawn from the
// frames' lengths; some start suspended, some replies decide their connection again with
// Tracker::redecide, and connections are suspended and resumed by id).  A finding is: the first two disagreeing on any packet (verdict, id,
// direction, state, event); a packet that may not open a connection opening one, a new
// connection without its opener's decision, a decision for a packet of no connection, a
// redecision that goes back to older rules, a suspension that does not show or that
// finds a connection the listing does not have;
// counters that do not add up (created − removed ≠ active, a
// listing of another size, a verdict count that differs from its counter), a connection
// with no packet, one left after expiring everything, or a crash or sanitizer report.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "vpf/conntrack/tracker.h"
#include "vpf/matcher/parser.h"

using namespace vpf;
using namespace vpf::conntrack;

namespace {

void finding(const char* what) {
  std::fprintf(stderr, "finding: %s\n", what);
  std::abort();
}

struct Pkt {
  std::vector<uint8_t> frame;
  matcher::PacketKey key;
  uint64_t now;
  bool end_batch;
};

void check_counts(const Tracker& t, const uint64_t* verdicts) {
  const Stats st = t.stats();
  if (st.created - st.removed != st.active) finding("created - removed != active");
  if (t.list().size() != st.active) finding("the listing's size is not the active count");
  if (verdicts[int(Verdict::New)] != st.created) finding("New verdicts != created");
  if (verdicts[int(Verdict::Full)] != st.full) finding("Full verdicts != full");
  if (verdicts[int(Verdict::Untracked)] != st.untracked) finding("Untracked verdicts != untracked");
  if (verdicts[int(Verdict::Invalid)] != st.invalid) finding("Invalid verdicts != invalid");
  for (const ConnInfo& c : t.list())
    if (c.packets[0] + c.packets[1] == 0 || c.id == 0) finding("a connection with no packet or no id");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<Pkt> pkts;
  uint64_t now = 0;
  for (size_t at = 0; at + 3 <= size && pkts.size() < 256;) {
    const uint8_t h = data[at];
    const size_t len = size_t(data[at + 1]) << 8 | data[at + 2];
    at += 3;
    if (len > size - at) break;
    now += uint64_t((h >> 3) & 15) * 1000000000ull;
    Pkt p{std::vector<uint8_t>(data + at, data + at + len), {}, now, (h & 0x80) != 0};
    at += len;
    const matcher::PacketMeta meta{uint32_t((h >> 1) & 3), (h & 1) ? matcher::Direction::Incoming : matcher::Direction::Outgoing,
                                   7};
    matcher::parse_frame(p.frame.data(), uint32_t(p.frame.size()), meta, &p.key);
    pkts.push_back(std::move(p));
  }
  const Limits limits{24, 12};
  Timeouts to;
  to.tcp[int(TcpState::SynSent)] = 20;  // some expire within an input's time
  to.udp_unreplied = 10;
  Tracker one(limits, to), batch(limits, to), flags(limits, to), decided(limits, to);
  uint64_t v_one[5] = {}, v_batch[5] = {}, v_flags[5] = {}, v_decided[5] = {};
  uint64_t gen = 1;
  std::vector<Observed> want;
  for (size_t start = 0; start < pkts.size();) {
    size_t end = start;
    while (end < pkts.size() && end - start < Tracker::kBatch && !(end > start && pkts[end - 1].end_batch)) ++end;
    // One batch: all its packets at the time of its first (the datapath's clock is read once a batch).
    const uint64_t t = pkts[start].now;
    const matcher::PacketKey* keys[Tracker::kBatch];
    const uint8_t* frames[Tracker::kBatch];
    uint32_t lens[Tracker::kBatch];
    Observed got[Tracker::kBatch];
    for (size_t i = start; i < end; ++i) {
      keys[i - start] = &pkts[i].key;
      frames[i - start] = pkts[i].frame.data();
      lens[i - start] = uint32_t(pkts[i].frame.size());
    }
    batch.track_batch(keys, frames, lens, uint32_t(end - start), t, got);
    // The caller's decisions (Tracker::Decisions), drawn from the frames' lengths: a packet
    // that may not open opens nothing, a new connection keeps the word of its opener, and
    // only followed packets carry a connection's decision.
    uint64_t words[Tracker::kBatch];
    uint32_t no_open = 0, suspend = 0;
    for (size_t i = start; i < end; ++i) {
      const size_t len = pkts[i].frame.size();
      words[i - start] = len % 3 == 0 ? kNoWord : len;
      no_open |= uint32_t(len % 5 == 0) << (i - start);
      suspend |= uint32_t(len % 2 == 0) << (i - start);
    }
    if (pkts[start].frame.size() % 7 == 0) ++gen;  // the rules changed
    Observed dec[Tracker::kBatch];
    decided.track_batch(keys, frames, lens, uint32_t(end - start), t, Tracker::Decisions{words, no_open, gen, suspend},
                        dec);
    for (size_t i = 0; i < end - start; ++i) {
      ++v_decided[int(dec[i].verdict)];
      if (dec[i].verdict == Verdict::New && dec[i].suspended != bool(suspend >> i & 1))
        finding("a new connection does not start as its opener said");
      // A reply decides its connection again under newer rules (a caller's re-decision).
      if (dec[i].verdict == Verdict::Known && dec[i].reply && dec[i].gov.gen < gen) {
        const Governing g = decided.redecide(pkts[start + i].key, words[i], gen);
        if (g.gen != gen) finding("a redecision did not take the newer rules");
        if (decided.redecide(pkts[start + i].key, 1, gen - 1).gen != gen) finding("a redecision went back to older rules");
      }
      if (dec[i].verdict == Verdict::New && (no_open >> i & 1)) finding("a packet that may not open a connection opened one");
      if (dec[i].verdict == Verdict::New && (dec[i].gov.set != (words[i] != kNoWord) || (dec[i].gov.set && dec[i].gov.word != words[i])))
        finding("a new connection does not keep its opener's decision");
      if (dec[i].gov.set && dec[i].verdict != Verdict::New && dec[i].verdict != Verdict::Known)
        finding("a decision for a packet of no connection");
    }
    for (size_t i = start; i < end; ++i) {
      const Observed w = one.track(pkts[i].key, pkts[i].frame.data(), uint32_t(pkts[i].frame.size()), t);
      const Observed& g = got[i - start];
      if (w.verdict != g.verdict || w.id != g.id || w.reply != g.reply || w.event != g.event ||
          ((w.verdict == Verdict::New || w.verdict == Verdict::Known) && w.tcp != g.tcp))
        finding("a batch and one packet at a time disagree");
      ++v_one[int(w.verdict)];
      ++v_batch[int(g.verdict)];
      ++v_flags[int(flags.track(pkts[i].key, t).verdict)];
    }
    // Suspend or resume one listed connection by id (and one id that is not there).
    if (const auto listed = decided.list(); !listed.empty()) {
      const ConnInfo& c = listed[t / 1000000000ull % listed.size()];
      const bool on = !c.suspended;
      if (!decided.set_suspended(c.id, on)) finding("a listed connection could not be suspended");
      bool shows = false;
      for (const ConnInfo& x : decided.list()) shows |= x.id == c.id && x.suspended == on;
      if (!shows) finding("a suspension does not show in the listing");
    }
    if (decided.set_suspended(~uint64_t(0), true)) finding("a connection of no id was suspended");
    const uint64_t removed = one.expire(t, nullptr);
    if (batch.expire(t, nullptr) != removed) finding("the two expire differently");
    flags.expire(t, nullptr);
    decided.expire(t, nullptr);
    start = end;
  }
  check_counts(one, v_one);
  check_counts(batch, v_batch);
  check_counts(flags, v_flags);
  check_counts(decided, v_decided);
  std::vector<Event> events;
  for (Tracker* t : {&one, &batch, &flags, &decided}) {
    t->expire(now + 1000000ull * 1000000000ull, &events);
    if (t->stats().active != 0 || !t->list().empty()) finding("a connection outlived every timeout");
  }
  for (const Event& e : events)
    if (e.kind != EventKind::TcpClosed && e.kind != EventKind::UdpClosed) finding("expiry told something else than a close");
  return 0;
}
