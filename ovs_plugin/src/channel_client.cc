// The agent's side of the plugin channel: see include/vpf/channel_client.h.
#include "vpf/channel_client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace vpf::channel {

using nlohmann::json;

ChannelClient::ChannelClient(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) throw std::runtime_error("socket path too long: " + path);
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  sock_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (sock_ < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
  if (connect(sock_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    const std::string e = "cannot connect to the plugin at " + path + ": " + std::strerror(errno);
    close(sock_);
    throw std::runtime_error(e);
  }
  try {
    const json req = {{"jsonrpc", "2.0"}, {"id", 0}, {"method", "hello"}, {"params", {{"version", kVersion}}}};
    const std::string line = req.dump() + "\n";
    // A refused connection may be closed before the hello is sent: read its reason anyway.
    const bool sent = send_with_fds(sock_, line.data(), line.size(), nullptr, 0);
    const std::string send_error = sent ? "" : std::strerror(errno);
    // The reply carries the descriptors with its first bytes.
    std::vector<int> fds;
    const json reply = read_reply(&fds, send_error);
    try {
      if (fds.size() != 3)
        throw std::runtime_error("the plugin's hello reply carried " + std::to_string(fds.size()) +
                                 " descriptors, not 3");
      region_ = Region::attach(fds[0]);
    } catch (...) {
      for (int fd : fds) close(fd);
      throw;
    }
    close(fds[0]);  // the mapping stays
    events_efd_ = fds[1];
    commands_efd_ = fds[2];
    hello_ = reply["result"];
  } catch (...) {
    close(sock_);
    sock_ = -1;
    throw;
  }
}

ChannelClient::~ChannelClient() {
  if (sock_ >= 0) close(sock_);
  if (events_efd_ >= 0) close(events_efd_);
  if (commands_efd_ >= 0) close(commands_efd_);
}

json ChannelClient::read_reply(std::vector<int>* fds, const std::string& send_error) {
  char buf[65536];
  while (inbuf_.find('\n') == std::string::npos) {
    int got[4], n = 0;
    const long r = recv_with_fds(sock_, buf, sizeof buf, got, 4, &n);
    for (int i = 0; i < n; ++i) {
      if (fds && fds->size() < 3) fds->push_back(got[i]);
      else close(got[i]);
    }
    if (r <= 0)
      throw std::runtime_error("the plugin closed the control socket" +
                               (send_error.empty() ? std::string() : " (send: " + send_error + ")"));
    inbuf_.append(buf, size_t(r));
    if (inbuf_.size() > kMaxControlMessage) throw std::runtime_error("reply too long");
  }
  const auto nl = inbuf_.find('\n');
  const json reply = json::parse(inbuf_.substr(0, nl));
  inbuf_.erase(0, nl + 1);
  if (reply.contains("error")) {
    if (fds)
      for (int fd : *fds) close(fd);
    throw RpcError(reply["error"].value("code", 0), reply["error"].value("message", std::string("error")));
  }
  return reply;
}

json ChannelClient::call(const std::string& method, const json& params) { return call_with_fds(method, params, nullptr); }

json ChannelClient::call_with_fds(const std::string& method, const json& params, std::vector<int>* fds) {
  const uint64_t id = next_id_++;
  const json req = {{"jsonrpc", "2.0"}, {"id", id}, {"method", method}, {"params", params}};
  const std::string line = req.dump() + "\n";
  if (!send_with_fds(sock_, line.data(), line.size(), nullptr, 0))
    throw std::runtime_error(std::string("control socket: ") + std::strerror(errno));
  const json reply = read_reply(fds, "");
  if (!reply.contains("id") || reply["id"] != id) throw std::runtime_error("reply to another request");
  return reply["result"];
}

size_t ChannelClient::poll_events(const EventFn& fn, size_t max) {
  size_t count = 0;
  const uint32_t rings = region_.event_rings();
  for (uint32_t k = 0; k < rings && count < max; ++k) {
    const uint32_t i = (next_ring_ + k) % rings;
    Ring r = region_.ring(i);
    const RecordHeader* rec;
    uint32_t len;
    while (count < max) {
      const auto st = r.peek(&rec, &len);
      if (st == Ring::Status::Empty) break;
      if (st == Ring::Status::Corrupt) throw std::runtime_error("event ring " + std::to_string(i) + " is corrupt");
      PacketEvent ev;
      if (!read_event(rec, len, &ev)) {
        ++bad_events_;
        continue;
      }
      fn(ev, reinterpret_cast<const uint8_t*>(rec) + sizeof ev);
      ++count;
    }
    r.release();
  }
  next_ring_ = (next_ring_ + 1) % rings;
  return count;
}

bool ChannelClient::arm_wait() {
  auto& waiting = region_.header()->agent_waiting;
  prepare_sleep(waiting);
  for (uint32_t i = 0; i < region_.event_rings(); ++i)
    if (!region_.ring(i).empty()) {
      waiting.store(0, std::memory_order_relaxed);
      return false;
    }
  return true;
}

void ChannelClient::woken() {
  region_.header()->agent_waiting.store(0, std::memory_order_relaxed);
  uint64_t v;
  [[maybe_unused]] ssize_t r = read(events_efd_, &v, sizeof v);  // non-blocking
}

bool ChannelClient::wait_events(int timeout_ms) {
  if (!arm_wait()) return true;
  // The control socket only for its end (POLLHUP and POLLERR are always reported): a reply
  // to another thread's call() must not wake this one (it would spin until that reply is read).
  pollfd p[2] = {{events_efd_, POLLIN, 0}, {sock_, 0, 0}};
  const int n = poll(p, 2, timeout_ms);
  woken();
  if (n > 0 && (p[1].revents & (POLLHUP | POLLERR))) throw std::runtime_error("the plugin closed the control socket");
  return n > 0;
}

bool ChannelClient::push_command(uint16_t type, const void* fixed, uint32_t fixed_len, std::span<const uint8_t> data) {
  std::lock_guard lock(cmd_mu_);
  Ring r = region_.command_ring();
  if (!r.push(type, fixed, fixed_len, data.data(), uint32_t(data.size()))) return false;
  wake_consumer(region_.header()->plugin_waiting, commands_efd_);
  return true;
}

bool ChannelClient::verdict(uint64_t capture_id, VerdictAction action, std::span<const uint8_t> data) {
  Verdict v{};
  v.capture_id = capture_id;
  v.action = uint8_t(action);
  v.len = uint32_t(data.size());
  return push_command(kVerdict, &v, sizeof v, data);
}

bool ChannelClient::inject(uint32_t adapter, uint8_t direction, uint32_t num_times, std::span<const uint8_t> data) {
  Inject in{};
  in.adapter = adapter;
  in.direction = direction;
  in.num_times = num_times;
  in.len = uint32_t(data.size());
  return push_command(kInject, &in, sizeof in, data);
}

}  // namespace vpf::channel
