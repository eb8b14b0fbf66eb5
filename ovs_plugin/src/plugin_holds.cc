// vportfilter's packet-hook plugin, its control thread's side of the channel: held packets
// finished (verdicts, expiry, a pended connect request's completion), verdicts and
// injections read from the agent's command ring and the clients' verdict rings, and the
// client channels opened, set and closed (the datapath's side is Plugin::BatchRun in
// plugin.cc; the layout docs/channel.md).  Code moved from plugin.cc as it was.
#include <algorithm>

#include "plugin.h"

namespace vpf::plugin {

using channel::Inject;
using channel::RecordHeader;
using channel::Verdict;
using channel::VerdictAction;
using matcher::Action;
using matcher::Direction;
using nlohmann::json;

// ---------------------------------------------------------------------------------------
// Channel consumer side (control thread).

void Plugin::count_drop(Port& p, Direction dir, uint32_t len) {
  DirCounters& c = dir == Direction::Outgoing ? p.out : p.in;
  c.v[kDropped].fetch_add(1, std::memory_order_relaxed);
  c.v[kDroppedBytes].fetch_add(len, std::memory_order_relaxed);
}

void Plugin::finish_hold(HoldSlot& s, VerdictAction action, const uint8_t* data, uint32_t len) {
  ovs_packet* pkt = s.packet;
  Port& port = *s.port;
  const Direction dir = s.direction;
  const uint32_t orig_len = s.len;
  if (const uint64_t conn = s.conn_id.load(std::memory_order_relaxed)) {
    // A pended connect request: send means allow, drop block; the SYN is not rewritten.
    if (action == VerdictAction::SendModified) {
      cc_.bad_records.fetch_add(1, std::memory_order_relaxed);
      action = expiry_of(s);
    }
    if (ConnTracking* ct = conns_.load(std::memory_order_acquire))
      ct->settle_request(host_->packet_data(pkt), host_->packet_size(pkt), uint32_t(port.adapter.load()),
                         port.vm.load(), conn,
                         ConnTracking::with_action(s.conn_word, action == VerdictAction::Drop ? Action::Drop : Action::Pass));
  }
  if (action == VerdictAction::SendModified) {
    ovs_packet* repl = host_->packet_replace(pkt, data, len);
    if (!repl) {  // length out of range: the packet is unchanged; refuse the verdict
      cc_.bad_records.fetch_add(1, std::memory_order_relaxed);
      action = expiry_of(s);
    } else {
      pkt = repl;
    }
  }
  if (action == VerdictAction::Drop) {
    host_->packet_free(pkt);
    count_drop(port, dir, orig_len);
    return;
  }
  // Send: back where it was going.  Outgoing packets enter the switch as if received
  // from the port; incoming ones go out of the port to the VM.
  const int err = send_on(port.name, dir, pkt);
  if (err) {
    cc_.inject_errors.fetch_add(1, std::memory_order_relaxed);
    count_drop(port, dir, orig_len);
  }
}

int Plugin::send_on(const std::string& port, Direction dir, ovs_packet* p) {
  // To the VM: sent by this (the control) thread at once where the switch offers it, not
  // queued for its main thread's next turn.
  if (dir == Direction::Incoming && host_->size >= offsetof(ovs_packet_hook_host, send_now) + sizeof host_->send_now &&
      host_->send_now)
    return host_->send_now(port.c_str(), p);
  return host_->inject(port.c_str(), dir == Direction::Outgoing ? OVS_PACKET_HOOK_RX : OVS_PACKET_HOOK_TX, p);
}

void Plugin::do_inject(const Inject& rec, const uint8_t* data) {
  const std::optional<std::string> port = port_of_adapter(rec.adapter);
  if (!port || rec.len < 14 || rec.len > 65535 || rec.num_times == 0 || rec.direction > 1) {
    cc_.inject_errors.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  const uint32_t times = rec.num_times < kMaxInjectTimes ? rec.num_times : kMaxInjectTimes;
  for (uint32_t k = 0; k < times; ++k) {
    ovs_packet* p = host_->packet_new(data, rec.len);
    if (!p) break;
    const int err = send_on(*port, rec.direction == 0 ? Direction::Outgoing : Direction::Incoming, p);
    (err ? cc_.inject_errors : cc_.injected).fetch_add(1, std::memory_order_relaxed);
  }
}

void Plugin::apply_verdict(const RecordHeader* rec, uint32_t len, ClientChannel* from) {
  auto bad = [&] {
    cc_.bad_records.fetch_add(1, std::memory_order_relaxed);
    if (from) from->bad.fetch_add(1, std::memory_order_relaxed);
  };
  // Copy the fixed part out of the shared memory before checking it.
  Verdict v;
  if (len < sizeof v) return bad();
  std::memcpy(&v, rec, sizeof v);
  if (v.len > len - sizeof(Verdict) || v.action < uint8_t(VerdictAction::Drop) ||
      v.action > uint8_t(VerdictAction::SendModified) ||
      (v.action == uint8_t(VerdictAction::SendModified) && (v.len < 14 || v.len > 65535)))
    return bad();
  const uint32_t r = HoldTable::ring_of(v.capture_id);
  bool foreign = false;
  HoldSlot* s = r < kEventRings ? rings_[r].holds->claim(v.capture_id, !from, from ? from->serial : 0, &foreign) : nullptr;
  if (!s) {
    cc_.stale_verdicts.fetch_add(1, std::memory_order_relaxed);
    if (from) (foreign ? from->foreign : from->stale).fetch_add(1, std::memory_order_relaxed);
    return;
  }
  // The replacement is copied by packet_replace before the record is freed.
  finish_hold(*s, VerdictAction(v.action), reinterpret_cast<const uint8_t*>(rec) + sizeof(Verdict), v.len);
  rings_[r].holds->release(s);
  cc_.verdicts.fetch_add(1, std::memory_order_relaxed);
  if (from) from->verdicts.fetch_add(1, std::memory_order_relaxed);
}

bool Plugin::process_commands() {
  channel::Ring cmd = region_.command_ring();
  const RecordHeader* rec;
  uint32_t len;
  for (int budget = 0; budget < 4096; ++budget) {
    const auto st = cmd.peek(&rec, &len);
    if (st == channel::Ring::Status::Empty) break;
    if (st == channel::Ring::Status::Corrupt) return false;
    if (rec->type == channel::kVerdict) {
      apply_verdict(rec, len, nullptr);
    } else if (rec->type == channel::kInject && len >= sizeof(Inject)) {
      Inject in;
      std::memcpy(&in, rec, sizeof in);
      if (in.len > len - sizeof(Inject)) {
        cc_.bad_records.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      do_inject(in, reinterpret_cast<const uint8_t*>(rec) + sizeof(Inject));
    } else {
      cc_.bad_records.fetch_add(1, std::memory_order_relaxed);
    }
  }
  cmd.release();
  return true;
}

bool Plugin::read_verdicts(ClientChannel& ch, int budget) {
  channel::Ring r = ch.region.command_ring();
  const RecordHeader* rec;
  uint32_t len;
  for (; budget > 0; --budget) {
    const auto st = r.peek(&rec, &len);
    if (st == channel::Ring::Status::Empty) break;
    if (st == channel::Ring::Status::Corrupt) return false;
    if (rec->type == channel::kVerdict) {
      apply_verdict(rec, len, &ch);
    } else {  // a client only decides its packets
      cc_.bad_records.fetch_add(1, std::memory_order_relaxed);
      ch.bad.fetch_add(1, std::memory_order_relaxed);
    }
  }
  r.release();
  return true;
}

void Plugin::process_client_verdicts() {
  std::vector<uint16_t> corrupt;
  for (const auto& ch : client_list_)
    if (!read_verdicts(*ch, 4096)) corrupt.push_back(ch->route);
  for (uint16_t route : corrupt) close_client(route, "its verdict ring is corrupt");
}

uint64_t Plugin::expire_holds() {
  const uint64_t now = mono_ns();
  const bool detached = !attached();
  for (auto& r : rings_) {
    r.holds->claim_expired(detached ? UINT64_MAX : now, [&](HoldSlot& s) {
      finish_hold(s, expiry_of(s), nullptr, 0);
      r.holds->release(&s);
      (detached ? cc_.released_on_detach : cc_.expired).fetch_add(1, std::memory_order_relaxed);
    });
  }
  reap_closed_ports();  // ports that went away while they held packets
  if (!held()) return UINT64_MAX;
  // Held packets remain: look again soon (deadlines are not sorted; 1 ms granularity).
  return 1000000;
}

// ---------------------------------------------------------------------------------------
// Client channels (control thread).

namespace {

ClientOptions client_options(const json& p, ClientOptions o) {
  for (const auto& [k, v] : p.items()) {
    if (k == "route") continue;
    if (k == "timeout_ms" && v.is_number_unsigned() && v.get<uint64_t>() <= 86400000)
      o.timeout_ns = v.get<uint64_t>() * 1000000;
    else if (k == "deny_expired" && v.is_boolean())
      o.deny_expired = v.get<bool>();
    else if (k == "mirror" && v.is_boolean())
      o.mirror = v.get<bool>();
    else
      throw std::invalid_argument("bad client setting '" + k + "': " + v.dump() +
                                  " (timeout_ms 0..86400000, deny_expired true|false, mirror true|false)");
  }
  return o;
}

uint16_t route_of(const json& p) {
  if (!p.is_object() || !p.contains("route") || !p["route"].is_number_unsigned() || p["route"].get<uint64_t>() == 0 ||
      p["route"].get<uint64_t>() >= ClientTable::kMaxRoutes)
    throw std::invalid_argument("needs {\"route\": 1.." + std::to_string(ClientTable::kMaxRoutes - 1) + "}");
  return p["route"].get<uint16_t>();
}

}  // namespace

json Plugin::client_open(const json& params, std::vector<int>* fds) {
  const uint16_t route = route_of(params);
  const ClientOptions o = client_options(params, {});  // checked before anything changes
  std::shared_ptr<ClientChannel> old;
  auto ch = clients_.open(route, kEventRings, o, &old);
  if (old) {
    close_client_holds(*old);
  }
  client_list_ = clients_.open_channels();
  fds->assign({ch->region.fd(), ch->events_efd, ch->verdicts_efd});
  return {{"route", route},
          {"serial", ch->serial},
          {"event_rings", kEventRings},
          {"ring_bytes", ClientTable::kRingBytes},
          {"channel_version", channel::kVersion}};
}

json Plugin::client_set(const json& params) {
  const uint16_t route = route_of(params);
  auto ch = clients_.find(route);
  if (!ch) throw std::invalid_argument("no client channel on route " + std::to_string(route));
  ch->set_options(client_options(params, ch->options()));
  return {{"route", route}};
}

json Plugin::client_close(const json& params) {
  const uint16_t route = route_of(params);
  auto ch = clients_.find(route);
  if (!ch) return {{"route", route}, {"closed", false}};
  close_client(route, "");
  return {{"route", route}, {"closed", true}};
}

void Plugin::close_client_holds(ClientChannel& ch) {
  // Verdicts the client wrote before it went still count; the rest get the expiry action.
  read_verdicts(ch, 65536);
  for (auto& er : rings_)
    er.holds->claim_owned(ch.serial, [&](HoldSlot& s) {
      finish_hold(s, expiry_of(s), nullptr, 0);
      er.holds->release(&s);
      cc_.released_on_detach.fetch_add(1, std::memory_order_relaxed);
    });
}

void Plugin::close_client(uint16_t route, const char* why) {
  auto ch = clients_.close(route);  // no datapath thread writes to it any more
  client_list_ = clients_.open_channels();
  if (!ch) return;
  close_client_holds(*ch);
  if (*why) log(OVS_PACKET_HOOK_LOG_WARN, "vportfilter: client channel " + std::to_string(route) + " closed: " + why);
  if (*why) cc_.clients_broken.fetch_add(1, std::memory_order_relaxed);
}

std::vector<int> Plugin::client_wait_fds() const {
  std::vector<int> v;
  for (const auto& ch : client_list_) v.push_back(ch->verdicts_efd);
  return v;
}

bool Plugin::client_prepare_sleep() {
  for (const auto& ch : client_list_) channel::prepare_sleep(ch->region.header()->plugin_waiting);
  for (const auto& ch : client_list_)
    if (!ch->region.command_ring().empty()) return false;
  return true;
}

void Plugin::client_woken() {
  for (const auto& ch : client_list_) ch->region.header()->plugin_waiting.store(0, std::memory_order_relaxed);
}

}  // namespace vpf::plugin
