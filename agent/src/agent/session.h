// vpf-agent: one client connection (docs/protocol.md).
//
// A Session reads JSON-RPC lines and binary frames from its socket, hands requests to the
// Agent and writes replies, notifications and event frames back.  What the client may
// receive is bounded: event frames beyond `max_queued_event_bytes` not yet written are
// refused (counted in events_dropped; the Agent then gives a refused capture its expiry
// verdict), so a slow or hung client costs memory up to that bound and never stalls the
// datapath.  Replies to requests are always queued (a client that never reads them stops
// sending requests it can get answers to).
//
// Threads: the io_context's single thread only.
#pragma once

#include <utility>  // before Asio: its awaitable.hpp uses std::exchange without it
#include <boost/asio.hpp>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace vpf::agent {

class Agent;

struct Peer {
  int pid = 0;
  int uid = -1;
  std::string exe;
};

class Session : public std::enable_shared_from_this<Session> {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr size_t kDefaultMaxQueuedEventBytes = size_t(8) << 20;

  Session(boost::asio::local::stream_protocol::socket s, Agent& agent, Peer peer, size_t max_queued_event_bytes);
  void start();
  // Writes one error line and closes (a refused peer).
  void refuse(const nlohmann::json& error);

  // `fds` (taken over: closed once sent) go with the message's first byte (SCM_RIGHTS).
  void send_json(const nlohmann::json& msg, std::vector<int> fds = {});
  // Queues an event frame (header + body + data already laid out); false if the client's
  // queue is full (counted).
  bool send_event(std::string frame);
  void close();

  const Peer& peer() const { return peer_; }
  bool closed() const { return closed_; }

  // --- subscription state, kept by the Agent ---
  std::string owned_instance;       // the instance whose filter this client started ("" none)
  bool stat_mode = false;           // started in operation mode stat
  uint32_t timeout_ms = 0;          // start_filter's event timeout (0 = none)
  std::string monitor;              // "" none, "*" every instance, or one instance
  uint16_t direct_route = 0;        // the plugin's client channel this client reads (0: none)
  bool wants_direct = false;        // asked for one (open_channel): offered again after a plugin restart
  std::vector<int> reply_fds;       // descriptors for the reply being made (taken by it)
  bool adapter_events = false;      // receives adapter_added / adapter_removed
  // Captured packets sent to this client and not yet decided, by event id -> deadline.
  std::map<uint64_t, Clock::time_point> pending;
  uint64_t events_sent = 0, events_dropped = 0;
  boost::asio::steady_timer expiry_timer;

 private:
  void read();
  void parse();
  void flush();
  void protocol_error(const std::string& why);  // error line, then close

  boost::asio::local::stream_protocol::socket sock_;
  Agent& agent_;
  Peer peer_;
  std::string in_;
  char rbuf_[65536];
  struct Out {
    std::string data;
    bool event;            // counts against max_queued_event_bytes_
    std::vector<int> fds;  // descriptors sent with it
  };
  std::deque<Out> out_;
  size_t queued_event_bytes_ = 0;
  size_t max_queued_event_bytes_;
  bool writing_ = false, closed_ = false, close_after_write_ = false;
};

}  // namespace vpf::agent
