// vportfilter client library: the client's end of a plugin client channel (docs/channel.md,
// "Client channels").
//
// The agent hands the client three descriptors (the region's memfd, the events eventfd,
// the verdicts eventfd) in its reply to open_channel.  A DirectChannel maps the region,
// takes the plugin's event records, checks them, turns each into the EventFrame the agent
// would have sent and hands it to `on_event` (with kFromChannel set in its flags);
// verdict() writes the client's verdicts straight into the plugin's verdict ring.
//
// Threads: two, of which one at a time reads the rings (the leader; the other waits to
// take over).  The callback may call handover(): if the other thread is waiting, it
// becomes the reader at once and the caller is free to run a handler inline (a captured
// packet then reaches its handler without a hand-over to another thread: the wake-up of
// the new reader runs beside the handler, not before it); it returns false when the
// other thread is busy too (then dispatch the event elsewhere).  A thread that handed
// over waits to read again once its callback returns.
//
// Waiting: the reader keeps polling for a while after the last event (adaptive, between
// kMinSpin and kMaxSpin: longer while events keep coming soon after it gave up, shorter
// while they do not), then announces sleep in the region and blocks on the events
// eventfd; the plugin writes the eventfd only while the reader sleeps.  The plugin's
// control thread likewise polls for verdicts while packets are held.
//
// Thread-safety: verdict() from any thread; handover() from the callback only.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

#include "vpf/channel.h"
#include "vpf/protocol.h"

namespace vpf {

class DirectChannel : public std::enable_shared_from_this<DirectChannel> {
 public:
  using EventFn = std::function<void(DirectChannel&, const protocol::EventFrame&, std::vector<uint8_t> data)>;
  using Fn = std::function<void()>;
  struct Callbacks {
    EventFn on_event;
    Fn on_burst_end;     // after the events of one pass over the rings (reader)
    Fn on_thread_start;  // on each of the channel's threads, first and last
    Fn on_thread_stop;
  };
  static constexpr std::chrono::microseconds kMinSpin{20}, kMaxSpin{1000};
  static constexpr size_t kThreads = 2;

  // Maps the region and starts the threads (each keeps the channel alive until it ends).
  // Takes over `fds` (closed on failure too).  Throws std::runtime_error naming what is
  // wrong with them.
  static std::shared_ptr<DirectChannel> open(std::vector<int> fds, Callbacks cb);
  ~DirectChannel();
  DirectChannel(const DirectChannel&) = delete;
  DirectChannel& operator=(const DirectChannel&) = delete;
  // Stops the threads: waits for them, except for the calling thread if it is one of
  // them (it ends once its callback returns).
  void stop();

  // From on_event: lets the other thread read from now on (see above).
  bool handover();
  // False if the plugin's verdict ring stayed full for a millisecond.
  bool verdict(uint64_t event_id, uint8_t action, std::span<const uint8_t> data);
  // Waits until no callback that handed over is running.
  void drain() const;
  uint64_t bad_events() const { return bad_events_.load(std::memory_order_relaxed); }

 private:
  DirectChannel(std::vector<int> fds, Callbacks cb);
  void thread_main();
  void lead();          // reads while this thread holds the role
  size_t poll_once();   // events handed over; stops early when the role was handed over

  channel::Region region_;
  int events_efd_ = -1, verdicts_efd_ = -1, stop_efd_ = -1;
  Callbacks cb_;
  std::mutex role_mu_;             // held by the reading thread
  std::atomic<int> standby_{0};    // threads waiting for the role
  std::atomic<int> inflight_{0};   // callbacks running after a hand-over
  std::mutex verdict_mu_;
  std::atomic<uint64_t> bad_events_{0};
  std::atomic<bool> stop_{false};
  std::chrono::nanoseconds spin_ = kMinSpin;  // the reader's (whoever holds the role)
  std::vector<std::thread> threads_;
  std::mutex stop_mu_;
};

}  // namespace vpf
