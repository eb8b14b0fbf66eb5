// vportfilter: the agent's side of the plugin channel (see channel.h for the layout).
//
// A ChannelClient connects to the plugin's control socket, says hello, receives the
// shared-memory region and its two eventfds, and then:
//   - call():        JSON-RPC requests (set_rules, set_adapters, set_config, stats, ports)
//   - poll_events(): reads notify and capture events from every event ring
//   - wait_events(): sleeps until the plugin writes events (or the timeout); or
//     arm_wait()/woken() around a wait on events_fd() in the caller's own event loop
//   - verdict() / inject(): writes to the command ring and wakes the plugin
//
// Thread-safety: call() from one thread at a time; poll_events()/wait_events() from one
// consumer thread; verdict()/inject() from one producer thread (they may be three
// different threads).  Events are validated before the callback sees them: a record that
// lies about its sizes is counted in bad_events() and skipped, and a corrupt ring is
// reported by poll_events() throwing.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "vpf/channel.h"

namespace vpf::channel {

// A JSON-RPC error returned by the plugin.
class RpcError : public std::runtime_error {
 public:
  RpcError(int code, const std::string& msg) : std::runtime_error(msg), code_(code) {}
  int code() const { return code_; }

 private:
  int code_;
};

class ChannelClient {
 public:
  // Connects and says hello.  Throws RpcError with the plugin's refusal (credentials,
  // another agent, version) or std::runtime_error if the socket cannot be reached.
  explicit ChannelClient(const std::string& socket_path);
  ~ChannelClient();
  ChannelClient(const ChannelClient&) = delete;
  ChannelClient& operator=(const ChannelClient&) = delete;

  const nlohmann::json& hello() const { return hello_; }
  nlohmann::json call(const std::string& method, const nlohmann::json& params = nlohmann::json::object());
  // The same for a reply that carries descriptors (client_open): they go to *fds (the
  // caller closes them).
  nlohmann::json call_with_fds(const std::string& method, const nlohmann::json& params, std::vector<int>* fds);

  // Calls fn for each event (at most `max`); returns how many.  `data` has ev.cap_len
  // bytes and is valid during the call only.
  using EventFn = std::function<void(const PacketEvent& ev, const uint8_t* data)>;
  size_t poll_events(const EventFn& fn, size_t max = SIZE_MAX);
  // Blocks up to timeout_ms until events may be there; true if woken (or already there).
  bool wait_events(int timeout_ms);
  // The same for a consumer that waits in its own event loop: arm_wait() before waiting
  // on events_fd() (false: events came meanwhile, poll again instead), woken() once it
  // is readable (or the wait is given up).
  bool arm_wait();
  void woken();
  int events_fd() const { return events_efd_; }

  // False if the command ring is full (the caller may retry).
  bool verdict(uint64_t capture_id, VerdictAction action, std::span<const uint8_t> data = {});
  bool inject(uint32_t adapter, uint8_t direction, uint32_t num_times, std::span<const uint8_t> data);

  uint64_t bad_events() const { return bad_events_; }
  int socket_fd() const { return sock_; }
  const Region& region() const { return region_; }

 private:
  bool push_command(uint16_t type, const void* fixed, uint32_t fixed_len, std::span<const uint8_t> data);
  // Reads one reply line; descriptors that come with it go to *fds (at most 3; closed when
  // fds is null or the reply is an error).  Throws RpcError for an error reply.
  nlohmann::json read_reply(std::vector<int>* fds, const std::string& send_error);

  int sock_ = -1;
  int events_efd_ = -1;
  int commands_efd_ = -1;
  Region region_;
  nlohmann::json hello_;
  std::string inbuf_;
  uint64_t next_id_ = 1;
  uint64_t bad_events_ = 0;
  uint32_t next_ring_ = 0;  // round-robin start of poll_events
  std::mutex cmd_mu_;       // verdict()/inject() may come from several threads
};

}  // namespace vpf::channel
