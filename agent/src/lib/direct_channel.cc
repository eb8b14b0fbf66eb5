// vportfilter client library: see direct_channel.h.
#include "direct_channel.h"

#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

namespace vpf {

namespace proto = vpf::protocol;

namespace {
// Whether this thread holds its channel's reading role (a thread serves one channel).
thread_local bool t_leading = false;
}  // namespace

DirectChannel::DirectChannel(std::vector<int> fds, Callbacks cb) : cb_(std::move(cb)) {
  try {
    if (fds.size() != 3) throw std::runtime_error("a client channel needs 3 descriptors, got " + std::to_string(fds.size()));
    region_ = channel::Region::attach(fds[0]);
    if (region_.ring_count() < 2) throw std::runtime_error("a client channel region needs event rings and a verdict ring");
  } catch (...) {
    for (int fd : fds) ::close(fd);
    throw;
  }
  ::close(fds[0]);  // the mapping stays
  events_efd_ = fds[1];
  verdicts_efd_ = fds[2];
  stop_efd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
}

std::shared_ptr<DirectChannel> DirectChannel::open(std::vector<int> fds, Callbacks cb) {
  std::shared_ptr<DirectChannel> ch(new DirectChannel(std::move(fds), std::move(cb)));
  std::lock_guard l(ch->stop_mu_);
  for (size_t i = 0; i < kThreads; ++i) ch->threads_.emplace_back([self = ch] { self->thread_main(); });
  return ch;
}

void DirectChannel::stop() {
  stop_.store(true, std::memory_order_relaxed);
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(stop_efd_, &one, sizeof one);
  std::lock_guard l(stop_mu_);
  for (auto& t : threads_)
    if (t.joinable()) t.get_id() == std::this_thread::get_id() ? t.detach() : t.join();
}

DirectChannel::~DirectChannel() {
  // The threads have ended (each held the channel), or this is the last of them.
  for (auto& t : threads_)
    if (t.joinable()) t.detach();
  ::close(events_efd_);
  ::close(verdicts_efd_);
  ::close(stop_efd_);
}

bool DirectChannel::handover() {
  if (!t_leading || standby_.load(std::memory_order_acquire) == 0) return false;
  inflight_.fetch_add(1, std::memory_order_relaxed);
  t_leading = false;
  role_mu_.unlock();
  return true;
}

void DirectChannel::drain() const {
  while (inflight_.load(std::memory_order_acquire)) std::this_thread::sleep_for(std::chrono::microseconds(100));
}

bool DirectChannel::verdict(uint64_t event_id, uint8_t action, std::span<const uint8_t> data) {
  channel::Verdict v{};
  v.capture_id = event_id;
  v.action = action;
  v.len = uint32_t(data.size());
  std::lock_guard l(verdict_mu_);
  channel::Ring r = region_.command_ring();
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::milliseconds(1);
  while (!r.push(channel::kVerdict, &v, sizeof v, data.data(), uint32_t(data.size()))) {
    if (std::chrono::steady_clock::now() > give_up) return false;
    channel::wake_consumer(region_.header()->plugin_waiting, verdicts_efd_);
    sched_yield();
  }
  channel::wake_consumer(region_.header()->plugin_waiting, verdicts_efd_);
  return true;
}

size_t DirectChannel::poll_once() {
  size_t count = 0;
  for (uint32_t i = 0; i < region_.event_rings() && t_leading; ++i) {
    channel::Ring r = region_.ring(i);
    const channel::RecordHeader* rec;
    uint32_t len;
    while (t_leading) {
      const auto st = r.peek(&rec, &len);
      if (st == channel::Ring::Status::Empty) break;
      if (st == channel::Ring::Status::Corrupt) throw std::runtime_error("event ring " + std::to_string(i) + " is corrupt");
      channel::PacketEvent ev;
      if (!channel::read_event(rec, len, &ev)) {
        bad_events_.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      const auto* data = reinterpret_cast<const uint8_t*>(rec) + sizeof ev;
      proto::EventFrame e = proto::event_frame_of(ev, ev.rule_id, ev.rule_kind);
      e.flags = proto::kFromChannel;
      std::vector<uint8_t> bytes(data, data + ev.cap_len);
      r.release();  // freed before the callback: the other thread may read on meanwhile
      ++count;
      cb_.on_event(*this, e, std::move(bytes));
    }
    if (t_leading) r.release();
  }
  return count;
}

void DirectChannel::lead() {
  using Clock = std::chrono::steady_clock;
  auto& waiting = region_.header()->agent_waiting;  // in a client channel: the client sleeps
  // Adaptive busy-poll (as a halt-polling governor does): after the last event, poll for
  // spin_ before sleeping.  An event that came while asleep, sooner than kMaxSpin after
  // the poll gave up, doubles it (a longer poll would have caught it); a sleep longer
  // than kMaxSpin halves it.
  auto last = Clock::now();
  while (t_leading && !stop_.load(std::memory_order_relaxed)) {
    if (poll_once()) {
      if (t_leading && cb_.on_burst_end) cb_.on_burst_end();
      last = Clock::now();
      continue;
    }
    if (Clock::now() - last < spin_) {
      sched_yield();
      continue;
    }
    channel::prepare_sleep(waiting);
    bool pending = false;
    for (uint32_t i = 0; i < region_.event_rings() && !pending; ++i) pending = !region_.ring(i).empty();
    const auto slept_from = Clock::now();
    if (!pending) {
      pollfd p[2] = {{events_efd_, POLLIN, 0}, {stop_efd_, POLLIN, 0}};
      ::poll(p, 2, 1000);
    }
    waiting.store(0, std::memory_order_relaxed);
    uint64_t v;
    [[maybe_unused]] ssize_t n = ::read(events_efd_, &v, sizeof v);
    last = Clock::now();
    spin_ = last - slept_from < kMaxSpin ? std::min<std::chrono::nanoseconds>(spin_ * 2, kMaxSpin)
                                         : std::max<std::chrono::nanoseconds>(spin_ / 2, kMinSpin);
  }
}

void DirectChannel::thread_main() {
  pthread_setname_np(pthread_self(), "vpf_channel");  // as top -H and perf show it
  if (cb_.on_thread_start) cb_.on_thread_start();
  while (!stop_.load(std::memory_order_relaxed)) {
    standby_.fetch_add(1, std::memory_order_acq_rel);
    role_mu_.lock();
    standby_.fetch_sub(1, std::memory_order_acq_rel);
    t_leading = true;
    try {
      lead();
    } catch (const std::exception&) {
      stop_.store(true, std::memory_order_relaxed);  // the plugin's rings are never corrupt; give up quietly
    }
    if (t_leading) {  // stopping (else the role went to the other thread in a callback)
      t_leading = false;
      role_mu_.unlock();
    } else {
      inflight_.fetch_sub(1, std::memory_order_release);
    }
  }
  if (cb_.on_thread_stop) cb_.on_thread_stop();
}

}  // namespace vpf
