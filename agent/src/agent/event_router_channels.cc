// vpf-agent: client channels — the plugin's rings that take an instance's events straight
// to the client that started it and its verdicts straight back (see event_router.h and
// docs/channel.md, "Client channels").  The agent opens them, keeps their settings in
// step and closes them; it never sits on their path.
#include <unistd.h>

#include "agent_common.h"
#include "client_api.h"
#include "event_router.h"
#include "plugin_link.h"
#include "policy_store.h"

namespace vpf::agent {

using nlohmann::json;

uint16_t EventRouter::route_slot(const std::string& instance) {
  if (const auto it = route_slots_.find(instance); it != route_slots_.end()) return it->second;
  if (route_slots_.size() >= 255) return 0;  // the plugin has 255 client channels; the rest use the agent's path
  const uint16_t slot = uint16_t(route_slots_.size() + 1);
  route_slots_[instance] = slot;
  return slot;
}

json EventRouter::channel_options(const Session& s) const {
  const Instance i = a_.store().instance(s.owned_instance);
  bool monitored = i.logging;  // LoggingEnabled logs every event: the agent needs copies
  for (const auto& m : a_.api().sessions())
    monitored = monitored || (!m->closed() && (m->monitor == "*" || (!m->monitor.empty() && m->monitor == s.owned_instance)));
  return {{"timeout_ms", s.timeout_ms}, {"deny_expired", i.deny_expired}, {"mirror", monitored}};
}

void EventRouter::open_channel(Session& s, const Reply& reply) {
  if (s.owned_instance.empty() || s.stat_mode)
    throw ApiError(rpc::kRefused, kErrorNotReady, "open_channel: this client has not started a filter in capture mode");
  s.wants_direct = true;
  if (s.direct_route) throw ApiError(rpc::kRefused, kErrorConnectionActive, "open_channel: this client has a channel already");
  if (!a_.link().plugin()) throw ApiError(rpc::kRefused, kErrorNotReady, "open_channel: the plugin is not attached");
  const uint16_t route = route_slot(s.owned_instance);
  if (!route) throw ApiError(rpc::kRefused, kErrorImplementationLimit, "open_channel: every client channel is taken");
  json params = channel_options(s);
  const json opts = params;
  params["route"] = route;
  std::vector<int> fds;
  json result;
  try {
    result = a_.link().plugin()->call_with_fds("client_open", params, &fds);
  } catch (const channel::RpcError& e) {
    throw ApiError(rpc::kRefused, kErrorNotReady, std::string("open_channel: the plugin refused: ") + e.what());
  } catch (const std::exception& e) {
    a_.link().detach_plugin(std::string("client_open: ") + e.what());
    throw ApiError(rpc::kRefused, kErrorNotReady, "open_channel: the plugin went away");
  }
  if (fds.size() != 3) {
    for (int fd : fds) ::close(fd);
    throw ApiError(rpc::kRefused, kErrorNotReady, "open_channel: the plugin sent " + std::to_string(fds.size()) + " descriptors, not 3");
  }
  s.direct_route = route;
  channel_pushed_[route] = opts;
  s.reply_fds = std::move(fds);  // the memfd, the events eventfd, the verdicts eventfd
  reply(result, nullptr);
}

void EventRouter::close_channel(Session& s) {
  if (!s.direct_route) return;
  const uint16_t route = s.direct_route;
  s.direct_route = 0;
  channel_pushed_.erase(route);
  if (!a_.link().plugin()) return;
  try {
    a_.link().plugin()->call("client_close", {{"route", route}});
  } catch (const channel::RpcError& e) {
    log(std::string("the plugin refused to close client channel ") + std::to_string(route) + ": " + e.what());
  } catch (const std::exception& e) {
    a_.link().detach_plugin(std::string("client_close: ") + e.what());
  }
}

void EventRouter::sync_channels() {
  for (const auto& s : a_.api().sessions()) {
    if (!s->direct_route || !a_.link().plugin()) continue;
    const json opts = channel_options(*s);
    auto& pushed = channel_pushed_[s->direct_route];
    if (pushed == opts) continue;
    json params = opts;
    params["route"] = s->direct_route;
    try {
      a_.link().plugin()->call("client_set", params);
      pushed = opts;
    } catch (const channel::RpcError& e) {
      log(std::string("the plugin refused client channel settings: ") + e.what());
    } catch (const std::exception& e) {
      return a_.link().detach_plugin(std::string("client_set: ") + e.what());
    }
  }
}

}  // namespace vpf::agent
