// The plugin's control thread: the agent's unix socket and the consumer side of the
// shared-memory channel.
//
// Lifecycle: (1) the constructor binds and listens on `path` (replacing a stale socket
// file) and starts the thread; (2) the thread accepts one agent at a time, checks its
// credentials (uid 0) and serves its JSON-RPC requests (see docs/channel.md); after
// "hello" it also consumes the command ring (verdicts, injections) and expires held
// packets; when the agent's socket closes, held packets get the expiry action and events
// stop; (3) the destructor stops the thread, closes the sockets and removes the file.
//
// Nothing here runs on a datapath thread.  Plugin methods it calls are the "control
// thread" ones of plugin.h.
#pragma once

#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

namespace vpf::plugin {

class Plugin;

class ControlServer {
 public:
  // Throws std::runtime_error naming the path and the reason.
  ControlServer(Plugin& plugin, std::string path);
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  const std::string& path() const { return path_; }

  // One request (a parsed JSON-RPC object) to its reply object; descriptors to send with
  // the reply go to *fds (client_open).  Public for tests.
  nlohmann::json dispatch(const nlohmann::json& req, bool* hello, std::vector<int>* fds = nullptr);

 private:
  // How long the thread keeps polling the rings after a capture or a verdict instead of
  // sleeping until the next one wakes it (adaptive, see run()), and how often it looks at
  // its sockets meanwhile.
  static constexpr uint64_t kMinSpinNs = 20000, kMaxSpinNs = 1000000;
  static constexpr uint32_t kSpinPolls = 64;
  void run();
  void accept_one();
  bool serve_agent();  // false: the agent is gone
  void drop_agent(const char* why);
  bool send_line(const nlohmann::json& msg, const int* fds, int nfds);

  Plugin& plugin_;
  std::string path_;
  int listen_fd_ = -1;
  int stop_fd_ = -1;
  int agent_fd_ = -1;
  int agent_pid_ = 0;  // from the credentials read at accept
  bool agent_hello_ = false;
  std::string inbuf_;
  std::thread thread_;
};

}  // namespace vpf::plugin
