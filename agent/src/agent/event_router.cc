// vpf-agent: events and verdicts (see event_router.h).
#include "event_router.h"

#include <unistd.h>

#include <cstring>

#include "agent_common.h"
#include "client_api.h"
#include "plugin_link.h"
#include "policy_store.h"

namespace vpf::agent {

using nlohmann::json;
namespace asio = boost::asio;

namespace {

// An event keeps its type from the plugin's ring to the client (protocol.h).
static_assert(int(protocol::kNotify) == channel::kNotify && int(protocol::kCapture) == channel::kCapture &&
              int(protocol::kConnection) == channel::kConnection);

std::string event_frame(const protocol::EventFrame& e, const uint8_t* data) {
  protocol::FrameHeader h{protocol::kFrameMagic, uint16_t(protocol::kVersion), protocol::kEventFrame,
                          uint32_t(sizeof e + e.data_size), 0};
  std::string f(sizeof h + sizeof e + e.data_size, '\0');
  std::memcpy(f.data(), &h, sizeof h);
  std::memcpy(f.data() + sizeof h, &e, sizeof e);
  std::memcpy(f.data() + sizeof h + sizeof e, data, e.data_size);
  return f;
}

}  // namespace

void EventRouter::plugin_attached(const std::shared_ptr<channel::ChannelClient>& plugin) {
  // Clients that read a channel of the plugin that went may open one again.
  for (const auto& s : a_.api().sessions())
    if (s->wants_direct && !s->owned_instance.empty() && !s->direct_route)
      s->send_json({{"jsonrpc", "2.0"}, {"method", "channel_available"}, {"params", json::object()}});
  // Events: this thread reads the event rings when the plugin's eventfd fires (no thread
  // in between: one wake-up per batch of events).
  events_wait_ = std::make_unique<asio::posix::stream_descriptor>(a_.io(), ::dup(plugin->events_fd()));
  pump_events();
}

void EventRouter::plugin_detached() {
  events_wait_.reset();  // cancels the wait on the events eventfd
  // The plugin closes its client channels when the agent goes; a new one has none.
  channel_pushed_.clear();
  for (const auto& s : a_.api().sessions())
    if (s->direct_route) {
      s->direct_route = 0;
      s->send_json({{"jsonrpc", "2.0"}, {"method", "channel_closed"}, {"params", {{"reason", "the plugin went away"}}}});
    }
  // The plugin decides its held packets itself when the agent goes; forget ours.
  for (const auto& s : a_.api().sessions()) {
    s->pending.clear();
    s->expiry_timer.cancel();
  }
}

uint32_t EventRouter::internal_id(const std::string& instance, matcher::RuleKind kind, uint32_t rule_id) {
  const auto key = std::make_tuple(instance, int(kind), rule_id);
  auto it = internal_ids_.find(key);
  if (it == internal_ids_.end()) {
    it = internal_ids_.emplace(key, next_internal_id_++).first;
    origins_[it->second] = RuleOrigin{instance, kind, rule_id, false};
  }
  return it->second;
}

void EventRouter::retire_id(const std::tuple<std::string, int, uint32_t>& id) {
  auto it = internal_ids_.find(id);
  if (it == internal_ids_.end()) return;
  origins_[it->second].retired = true;
  retired_order_.emplace_back(std::chrono::steady_clock::now(), it->second);
  internal_ids_.erase(it);
}

void EventRouter::purge_retired() {
  // A deleted rule's events that were in the plugin's rings when it went still find their
  // instance: they are routed as the rings are read, within milliseconds (a held packet's
  // verdict does not need the rule), so its id is kept kRetiredKeep, and only the newest
  // kRetiredMax ids at all, however fast rules are changed.
  const auto now = std::chrono::steady_clock::now();
  while (!retired_order_.empty() &&
         (now - retired_order_.front().first > kRetiredKeep || retired_order_.size() > kRetiredMax)) {
    origins_.erase(retired_order_.front().second);
    retired_order_.pop_front();
  }
}

void EventRouter::pump_events() {
  const auto client = a_.link().plugin();
  if (!client || !events_wait_) return;
  try {
    // A bounded share of events per turn, then the other work of this thread gets its own.
    for (int turn = 0; turn < 8; ++turn) {
      std::vector<std::string> batch;
      const size_t n = client->poll_events(
          [&](const channel::PacketEvent& ev, const uint8_t* data) {
            std::string raw(sizeof ev + ev.cap_len, '\0');
            std::memcpy(raw.data(), &ev, sizeof ev);
            std::memcpy(raw.data() + sizeof ev, data, ev.cap_len);
            batch.push_back(std::move(raw));
          },
          512);
      if (!batch.empty()) route(std::move(batch));
      if (a_.link().plugin() != client) return;  // routing detached it
      if (n < 512 && client->arm_wait()) {
        events_wait_->async_wait(asio::posix::stream_descriptor::wait_read, [this, client](const boost::system::error_code& ec) {
          if (ec || a_.link().plugin() != client) return;
          client->woken();
          pump_events();
        });
        return;
      }
    }
    asio::post(a_.io(), [this, client] {
      if (a_.link().plugin() == client) pump_events();
    });
  } catch (const std::exception& e) {
    // A broken ring: detach; the plugin is reattached by try_plugin.
    a_.link().detach_plugin(std::string("the plugin went away: ") + e.what());
  }
}

void EventRouter::route(std::vector<std::string> batch) {
  for (const std::string& raw : batch) {
    ++events_received_;
    channel::PacketEvent ev;
    std::memcpy(&ev, raw.data(), sizeof ev);
    const uint8_t* data = reinterpret_cast<const uint8_t*>(raw.data()) + sizeof ev;
    const bool capture = protocol::awaits_verdict(uint8_t(ev.h.type), ev.capture_id);  // also a pended request
    const auto origin = origins_.find(ev.rule_id);
    if (origin == origins_.end()) {  // cannot happen while ids are never reused; be safe
      ++events_unrouted_;
      if (capture) expire(ev.capture_id, false);
      continue;
    }
    const RuleOrigin& o = origin->second;
    // A copy of an event that went straight to its client: for monitors and logging only.
    const bool mirrored = ev.h.flags & channel::kFlagMirrored;
    protocol::EventFrame e = protocol::event_frame_of(ev, o.rule_id, uint8_t(o.kind));
    Session* owner = a_.api().owner_of(o.instance);
    if (owner && owner->stat_mode) owner = nullptr;
    const bool taken = mirrored ? owner != nullptr : owner && owner->send_event(event_frame(e, data));
    const Instance& inst = a_.store().instances().count(o.instance) ? a_.store().instances().at(o.instance) : a_.store().instances().at(kDefaultInstance);
    if (inst.logging)  // LoggingEnabled: one line per event of the instance
      log("instance " + o.instance + ": " + (ev.h.type == channel::kConnection ? std::string("connection event")
           : capture                                  ? "capture " + std::to_string(ev.capture_id)
                                               : std::string("notify")) +
          " adapter " + std::to_string(ev.adapter) + (ev.direction ? " in" : " out") + " rule " +
          std::to_string(o.rule_id) + " " + std::to_string(ev.orig_len) + " bytes -> " +
          (taken ? "client pid " + std::to_string(owner->peer().pid) + (mirrored ? " (its channel)" : "")
                 : capture ? std::string(inst.deny_expired ? "dropped" : "sent") + " (no client to decide)"
                           : std::string("no client")));
    if (mirrored) {
      // decided by the client (or the plugin's expiry): nothing to route
    } else if (capture) {
      if (taken) {
        const auto deadline = owner->timeout_ms ? Session::Clock::now() + std::chrono::milliseconds(owner->timeout_ms)
                                                : Session::Clock::time_point::max();
        owner->pending[ev.capture_id] = deadline;
        if (owner->timeout_ms && owner->pending.size() == 1) arm_expiry(*owner);
      } else {
        expire(ev.capture_id, inst.deny_expired);
      }
    } else if (!taken) {
      ++events_unrouted_;
    }
    bool monitored = false;
    for (const auto& s : a_.api().sessions()) {
      if (s->closed() || s->monitor.empty() || (s->monitor != "*" && s->monitor != o.instance)) continue;
      if (!monitored) e.flags = protocol::kMonitorCopy, monitored = true;
      s->send_event(event_frame(e, data));
    }
  }
}

void EventRouter::expire(uint64_t capture_id, bool deny) {
  ++expired_by_agent_;
  if (!a_.link().plugin() || !a_.link().plugin()->verdict(capture_id, deny ? channel::VerdictAction::Drop : channel::VerdictAction::Send))
    ++verdicts_lost_;
}

void EventRouter::arm_expiry(Session& s) {
  if (s.pending.empty() || s.closed()) return;
  auto earliest = Session::Clock::time_point::max();
  for (const auto& [id, t] : s.pending) earliest = std::min(earliest, t);
  if (earliest == Session::Clock::time_point::max()) return;
  s.expiry_timer.expires_at(earliest);
  s.expiry_timer.async_wait([this, w = std::weak_ptr<Session>(s.shared_from_this())](const boost::system::error_code& ec) {
    if (auto p = w.lock(); p && !ec) expire_pending(*p, Session::Clock::now());
  });
}

size_t EventRouter::expire_pending(Session& s, Session::Clock::time_point until) {
  const bool deny = a_.store().instance(s.owned_instance).deny_expired;
  size_t n = 0;
  for (auto it = s.pending.begin(); it != s.pending.end();) {
    if (it->second <= until) {
      expire(it->first, deny);
      it = s.pending.erase(it);
      ++n;
    } else {
      ++it;
    }
  }
  if (s.pending.empty()) s.expiry_timer.cancel();
  else arm_expiry(s);
  return n;
}

void EventRouter::on_verdict(Session& s, const protocol::VerdictFrame& v, std::span<const uint8_t> data) {
  auto fail = [&](const std::string& why) {
    ++bad_verdicts_;
    s.send_json({{"jsonrpc", "2.0"}, {"method", "verdict_refused"},
                 {"params", {{"event_id", v.event_id}, {"message", why}, {"seed_error", kErrorInvalidParameter}}}});
  };
  const auto it = s.pending.find(v.event_id);
  if (it == s.pending.end())
    return fail("verdict for event " + std::to_string(v.event_id) + ": not a captured packet waiting for this client "
                "(already decided, expired, or never sent here)");
  if (v.action < protocol::kDrop || v.action > protocol::kSendModified)
    return fail("verdict action " + std::to_string(v.action) + " is not DROP (1), SEND (2) or SEND_MODIFIED (3)");
  if (v.action == protocol::kSendModified && (data.size() < 14 || data.size() > protocol::kMaxPacket))
    return fail("a modified packet must have 14.." + std::to_string(protocol::kMaxPacket) + " bytes, not " +
                std::to_string(data.size()));
  if (v.action != protocol::kSendModified && !data.empty()) return fail("only SEND_MODIFIED carries data");
  s.pending.erase(it);
  if (!a_.link().plugin() || !a_.link().plugin()->verdict(v.event_id, channel::VerdictAction(v.action), data)) ++verdicts_lost_;
}

const RuleOrigin* EventRouter::origin(uint32_t plugin_rule_id) const {
  const auto it = origins_.find(plugin_rule_id);
  return it == origins_.end() ? nullptr : &it->second;
}

json EventRouter::counters() const {
  return {{"received", events_received_}, {"unrouted", events_unrouted_}, {"expired_by_agent", expired_by_agent_},
          {"verdicts_lost", verdicts_lost_}, {"bad_verdicts", bad_verdicts_}};
}

}  // namespace vpf::agent
