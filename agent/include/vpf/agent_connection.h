// vportfilter client library: one connection to vpf-agent (docs/protocol.md).
//
// call() sends a JSON-RPC request and waits for its answer; a reader thread takes the
// answers, the agent's notifications (adapter_added, verdict_refused, ...) and packet
// event frames, and hands the last two to the callbacks given at construction (on the
// reader thread: keep them short).  verdict() writes a binary verdict frame.  Errors
// throw vpf::NetFilterError with the reference API's error code.
//
// Thread-safety: call() and verdict() from any threads.
#pragma once

#include <cstdint>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "vpf/mutex.h"

#include <nlohmann/json.hpp>

#include "vpf/netfilter.h"
#include "vpf/protocol.h"

namespace vpf {

class AgentConnection {
 public:
  using EventFn = std::function<void(const protocol::EventFrame&, std::vector<uint8_t> data)>;
  using NoteFn = std::function<void(const nlohmann::json& notification)>;
  using BurstEndFn = std::function<void()>;  // after the messages of one read from the socket

  // $VPF_AGENT_SOCKET, else $OVS_RUNDIR/vpf-agent.sock, else /var/run/openvswitch/vpf-agent.sock.
  static std::string default_socket();

  // Throws NetFilterError(kErrorFileNotFound) when the agent cannot be reached.
  explicit AgentConnection(const std::string& socket, EventFn on_event = {}, NoteFn on_note = {},
                           BurstEndFn on_burst_end = {});
  ~AgentConnection();
  AgentConnection(const AgentConnection&) = delete;
  AgentConnection& operator=(const AgentConnection&) = delete;

  nlohmann::json call(const std::string& method, const nlohmann::json& params = nlohmann::json::object(),
                      int timeout_ms = 15000);
  void verdict(uint64_t event_id, uint8_t action, std::span<const uint8_t> data = {});
  bool closed() const;
  std::string close_reason() const;
  // Descriptors the agent sent (SCM_RIGHTS) with its messages, oldest first; the caller
  // owns them.  Only open_channel's reply carries any.
  std::vector<int> take_fds();

 private:
  void write(const std::string& s) VPF_EXCLUDES(wmu_);
  void read_loop();

  int fd_ = -1;
  EventFn on_event_;
  NoteFn on_note_;
  BurstEndFn on_burst_end_;
  std::thread reader_;
  mutable Mutex mu_;  // the calls in flight and the connection's state
  Mutex wmu_;         // one writer at a time
  std::map<uint64_t, std::promise<nlohmann::json>> calls_ VPF_GUARDED_BY(mu_);
  uint64_t next_id_ VPF_GUARDED_BY(mu_) = 1;
  bool closed_ VPF_GUARDED_BY(mu_) = false;
  std::string close_reason_ VPF_GUARDED_BY(mu_);
  std::vector<int> fds_ VPF_GUARDED_BY(mu_);  // received, not taken yet
};

}  // namespace vpf
