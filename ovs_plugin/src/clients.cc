// Client channels: see clients.h.
#include "clients.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <chrono>
#include <stdexcept>
#include <thread>

namespace vpf::plugin {

ClientChannel::ClientChannel(uint16_t r, uint32_t s, uint32_t event_rings, uint64_t ring_bytes, const ClientOptions& o)
    : route(r), serial(s), region(channel::Region::create(event_rings + 1, ring_bytes)) {
  events_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  verdicts_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (events_efd < 0 || verdicts_efd < 0) {
    if (events_efd >= 0) close(events_efd);
    if (verdicts_efd >= 0) close(verdicts_efd);
    throw std::runtime_error("eventfd failed");
  }
  set_options(o);
}

ClientChannel::~ClientChannel() {
  close(events_efd);
  close(verdicts_efd);
}

void ClientChannel::set_options(const ClientOptions& o) {
  timeout_ns.store(o.timeout_ns, std::memory_order_relaxed);
  deny_expired_.store(o.deny_expired, std::memory_order_relaxed);
  mirror.store(o.mirror, std::memory_order_relaxed);
}

ClientOptions ClientChannel::options() const {
  return {timeout_ns.load(std::memory_order_relaxed), deny_expired_.load(std::memory_order_relaxed),
          mirror.load(std::memory_order_relaxed)};
}

std::shared_ptr<ClientChannel> ClientTable::open(uint16_t route, uint32_t event_rings, const ClientOptions& o,
                                                 std::shared_ptr<ClientChannel>* replaced) {
  if (route == 0 || route >= kMaxRoutes)
    throw std::invalid_argument("client route " + std::to_string(route) + " is not 1.." + std::to_string(kMaxRoutes - 1));
  std::shared_ptr<ClientChannel> ch;
  {
    MutexLock l(mu_);
    ch = std::make_shared<ClientChannel>(route, next_serial_++, event_rings, kRingBytes, o);
  }
  *replaced = close(route);
  MutexLock l(mu_);
  owned_[route] = ch;
  channels_[route].store(ch.get(), std::memory_order_release);
  return ch;
}

std::shared_ptr<ClientChannel> ClientTable::close(uint16_t route) {
  MutexLock l(mu_);
  const auto it = owned_.find(route);
  if (it == owned_.end()) return nullptr;
  auto ch = it->second;
  owned_.erase(it);
  channels_[route].store(nullptr, std::memory_order_release);
  epoch_.retire(ch);
  synchronize();
  return ch;
}

std::shared_ptr<ClientChannel> ClientTable::find(uint16_t route) const {
  MutexLock l(mu_);
  const auto it = owned_.find(route);
  return it == owned_.end() ? nullptr : it->second;
}

std::vector<std::shared_ptr<ClientChannel>> ClientTable::open_channels() const {
  MutexLock l(mu_);
  std::vector<std::shared_ptr<ClientChannel>> v;
  for (const auto& [r, ch] : owned_) v.push_back(ch);
  return v;
}

void ClientTable::change_routes(const std::vector<uint64_t>& removed, const std::vector<std::pair<uint64_t, Route>>& added,
                                bool replace_all) {
  MutexLock l(mu_);
  if (!replace_all && added.empty()) {
    bool any = false;
    for (uint64_t k : removed) any = any || route_map_->count(k);
    if (!any) return;  // most rule changes touch no routed rule: no copy
  }
  auto next = replace_all ? std::make_shared<RouteMap>() : std::make_shared<RouteMap>(*route_map_);
  for (uint64_t k : removed) next->erase(k);
  for (const auto& [k, r] : added) (*next)[k] = r;
  routes_.store(next.get(), std::memory_order_release);
  epoch_.retire(std::move(route_map_));
  route_map_ = std::move(next);
}

size_t ClientTable::route_count() const {
  MutexLock l(mu_);
  return route_map_->size();
}

void ClientTable::synchronize() {
  // A datapath thread stays between enter() and leave() for one batch: microseconds.
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (epoch_.pending() && std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(std::chrono::microseconds(20));
    epoch_.reclaim();
  }
}

}  // namespace vpf::plugin
