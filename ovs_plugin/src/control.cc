// The plugin's control thread: see control.h.
#include "control.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "plugin.h"
#include "vpf/channel.h"
#include "vpf/rpc_codes.h"

namespace vpf::plugin {

using nlohmann::json;

namespace {

using namespace rpc;  // the JSON-RPC error codes (vpf/rpc_codes.h)

json error_reply(const json& id, int code, const std::string& msg) {
  return {{"jsonrpc", "2.0"}, {"id", id}, {"error", {{"code", code}, {"message", msg}}}};
}

std::string sys_error(const std::string& what) { return what + ": " + std::strerror(errno); }

}  // namespace

ControlServer::ControlServer(Plugin& plugin, std::string path) : plugin_(plugin), path_(std::move(path)) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path_.empty() || path_.size() >= sizeof addr.sun_path)
    throw std::runtime_error("control socket path '" + path_ + "' is empty or too long");
  std::memcpy(addr.sun_path, path_.c_str(), path_.size() + 1);
  listen_fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (listen_fd_ < 0) throw std::runtime_error(sys_error("socket"));
  // A socket file left by an earlier run is replaced; anything else at the path is not.
  struct stat st;
  if (lstat(path_.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      close(listen_fd_);
      throw std::runtime_error("control socket path " + path_ + " exists and is not a socket");
    }
    unlink(path_.c_str());
  }
  if (bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || listen(listen_fd_, 8) != 0) {
    const std::string e = sys_error("control socket " + path_);
    close(listen_fd_);
    throw std::runtime_error(e);
  }
  // Everyone may connect; the credentials check decides (and answers with a reason).
  chmod(path_.c_str(), 0666);
  stop_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "vpf_control");  // as top -H and perf show it
    run();
  });
}

ControlServer::~ControlServer() {
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = write(stop_fd_, &one, sizeof one);
  if (thread_.joinable()) thread_.join();
  if (agent_fd_ >= 0) drop_agent("the plugin stops");
  close(listen_fd_);
  close(stop_fd_);
  unlink(path_.c_str());
}

bool ControlServer::send_line(const json& msg, const int* fds, int nfds) {
  const std::string line = msg.dump() + "\n";
  return channel::send_with_fds(agent_fd_, line.data(), line.size(), fds, nfds);
}

void ControlServer::drop_agent(const char* why) {
  if (agent_fd_ < 0) return;
  close(agent_fd_);
  agent_fd_ = -1;
  inbuf_.clear();
  if (agent_hello_) {
    plugin_.process_commands();  // verdicts written before the agent left still count
    plugin_.detach();
    plugin_.log(OVS_PACKET_HOOK_LOG_INFO, std::string("vportfilter: agent detached: ") + why);
  }
  agent_hello_ = false;
}

void ControlServer::accept_one() {
  const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
  if (fd < 0) return;
  ucred cred{};
  socklen_t len = sizeof cred;
  std::string refusal;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) refusal = "cannot read peer credentials";
  else if (cred.uid != 0)
    refusal = "permission denied: uid " + std::to_string(cred.uid) + " is not root (only root may attach an agent)";
  else if (agent_fd_ >= 0)
    refusal = "another agent is attached";
  if (!refusal.empty()) {
    const std::string line = error_reply(nullptr, kNotAllowed, refusal).dump() + "\n";
    [[maybe_unused]] ssize_t n = send(fd, line.data(), line.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    close(fd);
    plugin_.log(OVS_PACKET_HOOK_LOG_WARN, "vportfilter: control connection refused: " + refusal);
    return;
  }
  // A stuck agent must not stall this thread for long.
  timeval tv{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  agent_fd_ = fd;
  agent_pid_ = cred.pid;
  agent_hello_ = false;
  inbuf_.clear();
}

json ControlServer::dispatch(const json& req, bool* hello, std::vector<int>* fds) {
  *hello = false;
  if (!req.is_object() || !req.contains("method") || !req["method"].is_string())
    return error_reply(req.is_object() && req.contains("id") ? req["id"] : json(nullptr), kInvalidRequest,
                       "not a JSON-RPC request (an object with a string 'method')");
  const json id = req.contains("id") ? req["id"] : json(nullptr);
  const std::string m = req["method"].get<std::string>();
  const json params = req.contains("params") ? req["params"] : json::object();
  if (m != "hello" && !agent_hello_) return error_reply(id, kNotAllowed, "say hello first");
  try {
    json result;
    if (m == "hello") {
      if (!params.is_object() || !params.contains("version") || !params["version"].is_number_unsigned())
        throw std::invalid_argument("hello needs {\"version\": N}");
      if (params["version"].get<uint64_t>() != channel::kVersion)
        return error_reply(id, kNotAllowed,
                           "channel version " + params["version"].dump() + " is not this plugin's " +
                               std::to_string(channel::kVersion));
      result = plugin_.attach(agent_pid_);
      *hello = true;
    } else if (m == "set_rules") {
      result = plugin_.set_rules(params);
    } else if (m == "change_rules") {
      result = plugin_.change_rules(params);
    } else if (m == "set_adapters") {
      result = plugin_.set_adapters(params);
    } else if (m == "set_config") {
      result = plugin_.set_config(params);
    } else if (m == "client_open") {
      std::vector<int> none;
      result = plugin_.client_open(params, fds ? fds : &none);
    } else if (m == "client_set") {
      result = plugin_.client_set(params);
    } else if (m == "client_close") {
      result = plugin_.client_close(params);
    } else if (m == "stats") {
      result = plugin_.stats();
    } else if (m == "ports") {
      result = plugin_.ports();
    } else if (m == "connections") {
      result = plugin_.connections(params);
    } else if (m == "set_connection_state") {
      result = plugin_.set_connection_state(params);
    } else if (m == "complete_connect_request") {
      result = plugin_.complete_connect_request(params);
    } else {
      return error_reply(id, kMethodNotFound, "unknown method '" + m + "'");
    }
    return {{"jsonrpc", "2.0"}, {"id", id}, {"result", result}};
  } catch (const std::exception& e) {
    return error_reply(id, kInvalidParams, e.what());
  }
}

bool ControlServer::serve_agent() {
  char buf[65536];
  int fds[4], nfds = 0;
  const long n = channel::recv_with_fds(agent_fd_, buf, sizeof buf, fds, 4, &nfds);
  for (int i = 0; i < nfds; ++i) close(fds[i]);  // the agent sends none
  if (n == 0) return false;
  if (n < 0) return errno == EAGAIN || errno == EINTR;
  inbuf_.append(buf, size_t(n));
  size_t start = 0;
  for (size_t nl; (nl = inbuf_.find('\n', start)) != std::string::npos; start = nl + 1) {
    const std::string line = inbuf_.substr(start, nl - start);
    json req, reply;
    bool hello = false;
    std::vector<int> reply_fds;  // the plugin's own: sent, not closed
    try {
      req = json::parse(line);
      reply = dispatch(req, &hello, &reply_fds);
    } catch (const json::parse_error& e) {
      reply = error_reply(nullptr, kParseError, std::string("malformed JSON: ") + e.what());
    }
    const bool notification = req.is_object() && !req.contains("id") && !reply.contains("error");
    if (hello && !reply.contains("error")) {
      const int out[3] = {plugin_.region().fd(), plugin_.events_fd(), plugin_.commands_fd()};
      agent_hello_ = true;
      plugin_.log(OVS_PACKET_HOOK_LOG_INFO, "vportfilter: agent attached");
      if (!send_line(reply, out, 3)) return false;
    } else if (!notification && !send_line(reply, reply.contains("error") ? nullptr : reply_fds.data(),
                                           reply.contains("error") ? 0 : int(reply_fds.size()))) {
      return false;
    }
  }
  inbuf_.erase(0, start);
  if (inbuf_.size() > channel::kMaxControlMessage) {
    send_line(error_reply(nullptr, kInvalidRequest,
                          "message longer than " + std::to_string(channel::kMaxControlMessage) + " bytes"),
              nullptr, 0);
    return false;
  }
  return true;
}

void ControlServer::run() {
  auto& waiting = plugin_.region().header()->plugin_waiting;
  uint64_t last_work = 0;   // a capture was held or a verdict applied
  uint64_t next_scan = 0;   // for held packets past their deadline (1 ms granularity)
  uint64_t spin_ns = kMinSpinNs;
  uint32_t spins = 0;
  for (;;) {
    uint64_t now = mono_ns();
    if (agent_hello_) {
      const size_t before = plugin_.channel_counters().verdicts.load(std::memory_order_relaxed);
      if (!plugin_.process_commands()) drop_agent("its command ring is corrupt");
      plugin_.process_client_verdicts();
      if (plugin_.channel_counters().verdicts.load(std::memory_order_relaxed) != before) last_work = now;
    }
    if (now >= next_scan) next_scan = now + std::min<uint64_t>(plugin_.expire_holds(), 1000000000);
    // Busy-poll after a capture or a verdict instead of sleeping: while packets are held
    // (their verdicts are probably on their way; up to kMaxSpinNs), and for spin_ns more
    // (adaptive, as a halt-polling governor does: captures that keep coming soon after
    // this thread went to sleep lengthen it, long sleeps shorten it).  The sockets are
    // looked at every kSpinPolls turns meanwhile.
    int timeout_ms = int((next_scan - now) / 1000000) + 1;
    const uint64_t idle = now - last_work;
    const bool spin = agent_hello_ && (idle < spin_ns || (idle < kMaxSpinNs && plugin_.held()));
    if (spin) {
      sched_yield();
      if (++spins % kSpinPolls) continue;
      timeout_ms = 0;
    } else if (agent_hello_) {
      channel::prepare_sleep(waiting);
      if (!plugin_.region().command_ring().empty() || !plugin_.client_prepare_sleep()) timeout_ms = 0;
    }
    std::vector<pollfd> p = {{stop_fd_, POLLIN, 0}, {listen_fd_, POLLIN, 0}, {plugin_.commands_fd(), POLLIN, 0},
                             {agent_fd_, POLLIN, 0}};
    if (agent_hello_ && !spin)
      for (int fd : plugin_.client_wait_fds()) p.push_back({fd, POLLIN, 0});
    const int n = poll(p.data(), agent_fd_ >= 0 ? nfds_t(p.size()) : 3, timeout_ms);
    waiting.store(0, std::memory_order_relaxed);
    if (agent_hello_ && !spin) plugin_.client_woken();
    if (n < 0) continue;
    if (p[0].revents) return;
    bool woken_by_work = false;
    if (p[2].revents) {  // a command, or a datapath thread that held a packet
      uint64_t v;
      [[maybe_unused]] ssize_t r = read(plugin_.commands_fd(), &v, sizeof v);
      woken_by_work = true;
      next_scan = std::min(next_scan, mono_ns() + 1000000);  // the new hold's deadline
    }
    for (size_t i = 4; i < p.size(); ++i)
      if (p[i].revents) {
        uint64_t v;
        [[maybe_unused]] ssize_t r = read(p[i].fd, &v, sizeof v);
        woken_by_work = true;
      }
    if (!spin && timeout_ms) {  // slept: was the spin too short?
      const uint64_t woke = mono_ns();
      if (woken_by_work) {
        spin_ns = woke - now < kMaxSpinNs ? std::min(spin_ns * 2, kMaxSpinNs) : std::max(spin_ns / 2, kMinSpinNs);
        last_work = woke;
      } else {
        spin_ns = std::max(spin_ns / 2, kMinSpinNs);
      }
    } else if (woken_by_work) {
      last_work = mono_ns();
    }
    if (p[1].revents) accept_one();
    if (agent_fd_ >= 0 && (p[3].revents & (POLLIN | POLLHUP | POLLERR)) && !serve_agent())
      drop_agent("its socket closed");
  }
}

}  // namespace vpf::plugin
