// vportfilter client library: see vpf/agent_connection.h.
#include "vpf/agent_connection.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <cstring>
#include <utility>

#include "vpf/channel.h"

namespace vpf {

using nlohmann::json;
namespace proto = vpf::protocol;

std::string AgentConnection::default_socket() {
  if (const char* s = std::getenv("VPF_AGENT_SOCKET"); s && *s) return s;
  if (const char* r = std::getenv("OVS_RUNDIR"); r && *r) return std::string(r) + "/vpf-agent.sock";
  return "/var/run/openvswitch/vpf-agent.sock";
}

AgentConnection::AgentConnection(const std::string& path, EventFn ev, NoteFn note, BurstEndFn burst_end)
    : on_event_(std::move(ev)), on_note_(std::move(note)), on_burst_end_(std::move(burst_end)) {
  fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.size() >= sizeof a.sun_path) throw NetFilterError(kErrorInvalidParameter, "socket path too long: " + path);
  std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
  if (fd_ < 0 || ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    const std::string why = std::strerror(errno);
    if (fd_ >= 0) ::close(fd_);
    throw NetFilterError(kErrorFileNotFound, "cannot reach vpf-agent at " + path + ": " + why);
  }
  reader_ = std::thread([this] { read_loop(); });
}

AgentConnection::~AgentConnection() {
  ::shutdown(fd_, SHUT_RDWR);
  if (reader_.joinable()) reader_.join();
  ::close(fd_);
  for (int fd : fds_) ::close(fd);
}

std::vector<int> AgentConnection::take_fds() {
  MutexLock l(mu_);
  return std::exchange(fds_, {});
}

json AgentConnection::call(const std::string& method, const json& params, int timeout_ms) {
  std::future<json> f;
  uint64_t id;
  {
    MutexLock l(mu_);
    if (closed_) throw NetFilterError(kErrorNotReady, "the connection to vpf-agent is closed: " + close_reason_);
    id = next_id_++;
    f = calls_[id].get_future();
  }
  try {
    write(json{{"jsonrpc", "2.0"}, {"id", id}, {"method", method}, {"params", params}}.dump() + "\n");
  } catch (const NetFilterError&) {
    // The agent closed the connection (a refused client is told why first): the reader
    // answers this call with the reason when it sees the end.
    timeout_ms = std::min(timeout_ms, 2000);
  }
  if (f.wait_for(std::chrono::milliseconds(timeout_ms)) != std::future_status::ready) {
    MutexLock l(mu_);
    calls_.erase(id);
    throw NetFilterError(kErrorNotReady, method + ": no answer from vpf-agent within " + std::to_string(timeout_ms) + " ms");
  }
  const json r = f.get();
  if (r.contains("error")) {
    const json& e = r["error"];
    int code = kErrorInvalidParameter;
    if (e.contains("data") && e["data"].is_object() && e["data"].contains("seed_error")) code = e["data"]["seed_error"];
    throw NetFilterError(code, method + ": " + e.value("message", std::string("error")));
  }
  return r.value("result", json());
}

void AgentConnection::verdict(uint64_t id, uint8_t action, std::span<const uint8_t> data) {
  write(proto::verdict_frame(id, action, data.data(), uint32_t(data.size())));
}

bool AgentConnection::closed() const {
  MutexLock l(mu_);
  return closed_;
}

void AgentConnection::write(const std::string& s) {
  MutexLock l(wmu_);
  size_t off = 0;
  while (off < s.size()) {
    const ssize_t n = ::send(fd_, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (n <= 0) {
      if (n < 0 && errno == EINTR) continue;
      throw NetFilterError(kErrorNotReady, std::string("cannot write to vpf-agent: ") + std::strerror(errno));
    }
    off += size_t(n);
  }
}

void AgentConnection::read_loop() {
  std::string in;
  char buf[65536];
  std::string why = "vpf-agent closed the connection";
  for (;;) {
    int fds[8], nfds = 0;
    const long n = channel::recv_with_fds(fd_, buf, sizeof buf, fds, 8, &nfds);
    if (nfds) {
      MutexLock l(mu_);
      fds_.insert(fds_.end(), fds, fds + nfds);
      if (fds_.size() > 16) {  // nobody takes them: not ours to keep open
        for (size_t i = 0; i + 16 < fds_.size(); ++i) ::close(fds_[i]);
        fds_.erase(fds_.begin(), fds_.end() - 16);
      }
    }
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    in.append(buf, size_t(n));
    size_t pos = 0;
    bool bad = false;
    for (;;) {
      const auto item = proto::next_item<proto::EventFrame>(in.data(), in.size(), pos);
      if (item.kind == item.kNeedMore) break;
      if (item.kind == item.kBad) {
        why = "vpf-agent sent a malformed message (" + item.problem + ")";
        bad = true;
        break;
      }
      if (item.kind == item.kFrame) {
        if (on_event_) on_event_(item.body, std::vector<uint8_t>(item.data, item.data + item.body.data_size));
        continue;
      }
      const json m = json::parse(item.line, nullptr, false);
      if (!m.is_object()) continue;
      if (m.contains("method")) {
        if (on_note_) on_note_(m);
      } else if (m.contains("id") && m["id"].is_number_unsigned()) {
        MutexLock l(mu_);
        const auto it = calls_.find(m["id"].get<uint64_t>());
        if (it != calls_.end()) {
          it->second.set_value(m);
          calls_.erase(it);
        }
      } else if (m.contains("error")) {  // an error for no request: the agent refuses us
        why = m["error"].value("message", std::string("refused"));
        MutexLock l(mu_);
        for (auto& [id, p] : calls_) p.set_value(m);
        calls_.clear();
      }
    }
    in.erase(0, pos);
    if (on_burst_end_) on_burst_end_();
    if (bad) break;
  }
  MutexLock l(mu_);
  closed_ = true;
  close_reason_ = why;
  for (auto& [id, p] : calls_)
    p.set_value(json{{"error", {{"code", rpc::kRefused}, {"message", why}, {"data", {{"seed_error", kErrorNotReady}}}}}});
  calls_.clear();
}

std::string AgentConnection::close_reason() const {
  MutexLock l(mu_);
  return close_reason_;
}

}  // namespace vpf
