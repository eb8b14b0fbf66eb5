// vportfilter client library: see vpf/netfilter.h.
#include "vpf/netfilter.h"

#include <arpa/inet.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <regex>
#include <thread>

#include <nlohmann/json.hpp>

#include "direct_channel.h"
#include "vpf/agent_connection.h"
#include "vpf/protocol.h"
#include "vpf/run_program.h"

namespace vpf {

using nlohmann::json;
namespace proto = vpf::protocol;

namespace {

std::string to_hex(std::span<const uint8_t> d) {
  static const char* x = "0123456789abcdef";
  std::string s(d.size() * 2, '0');
  for (size_t i = 0; i < d.size(); ++i) s[2 * i] = x[d[i] >> 4], s[2 * i + 1] = x[d[i] & 15];
  return s;
}

std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool parse_bool(const std::string& name, const std::string& v) {
  const std::string l = lower(v);
  if (l == "true" || l == "1" || l == "yes") return true;
  if (l == "false" || l == "0" || l == "no") return false;
  throw NetFilterError(kErrorInvalidParameter, name + ": '" + v + "' is not True, False, 1, 0, Yes or No");
}

// ---- the worker pool that fires events ----

// Every thread that fires events (pool workers, a client channel's threads) starts and
// ends with these.
void worker_started(NetFilter& nf) {
  if (!nf.on_worker_thread_creation) return;
  WorkerThreadCreationEventParams e;
  try {
    nf.on_worker_thread_creation(e);
  } catch (...) {
  }
}
void worker_stopped(NetFilter& nf) {
  if (!nf.on_worker_thread_termination) return;
  WorkerThreadTerminationEventParams e;
  try {
    nf.on_worker_thread_termination(e);
  } catch (...) {  // errors here are ignored, as documented
  }
}

class Pool {
 public:
  // Returns once the first `min` workers have fired on_worker_thread_creation and wait.
  Pool(NetFilter& nf, size_t min, size_t max, size_t stack) : nf_(nf), max_(std::max(min, max)), stack_(stack) {
    for (size_t i = 0; i < std::max<size_t>(min, 1); ++i) spawn();
    std::unique_lock l(mu_);
    ready_cv_.wait(l, [&] { return starting_ == 0; });
  }
  ~Pool() {
    {
      std::lock_guard l(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (pthread_t t : threads_) pthread_join(t, nullptr);
  }
  void post(std::function<void()> fn) {
    std::unique_lock l(mu_);
    q_.push_back(std::move(fn));
    if (idle_ == 0 && starting_ == 0 && threads_.size() < max_) {  // a starting worker will take it
      l.unlock();
      spawn();
      return;
    }
    l.unlock();
    cv_.notify_one();
  }
  // Waits until every posted task has run.
  void drain() {
    std::unique_lock l(mu_);
    done_cv_.wait(l, [&] { return q_.empty() && busy_ == 0; });
  }

 private:
  void spawn() {
    pthread_attr_t a;
    pthread_attr_init(&a);
    if (stack_) pthread_attr_setstacksize(&a, std::max<size_t>(stack_, PTHREAD_STACK_MIN));
    pthread_t t;
    std::unique_lock l(mu_);
    ++starting_;
    if (pthread_create(&t, &a, &Pool::main, this) == 0) threads_.push_back(t);
    else --starting_;
    l.unlock();
    pthread_attr_destroy(&a);
  }
  static void* main(void* arg) {
    auto* p = static_cast<Pool*>(arg);
    worker_started(p->nf_);
    p->run();
    worker_stopped(p->nf_);
    return nullptr;
  }
  void run() {
    std::unique_lock l(mu_);
    if (--starting_ == 0) ready_cv_.notify_all();
    for (;;) {
      ++idle_;
      cv_.wait(l, [&] { return stop_ || !q_.empty(); });
      --idle_;
      if (q_.empty()) return;  // stopping
      auto fn = std::move(q_.front());
      q_.pop_front();
      ++busy_;
      l.unlock();
      fn();
      l.lock();
      --busy_;
      if (q_.empty() && busy_ == 0) done_cv_.notify_all();
    }
  }

  NetFilter& nf_;
  size_t max_, stack_;
  std::mutex mu_;
  std::condition_variable cv_, done_cv_, ready_cv_;
  std::deque<std::function<void()>> q_;
  std::vector<pthread_t> threads_;
  size_t idle_ = 0, busy_ = 0, starting_ = 0;  // starting: created, not yet waiting for work
  bool stop_ = false;
};

}  // namespace

struct NetFilter::Impl {
  NetFilter& nf;
  std::string socket;
  std::unique_ptr<AgentConnection> conn;
  // The plugin's channel to this client (direct_channel.h): events and verdicts without
  // the agent in between; null while the agent's path is used.
  std::shared_ptr<DirectChannel> direct;
  std::mutex direct_mu;
  std::unique_ptr<Pool> pool;
  std::mutex pool_mu;  // guards `pool` against the reader posting while start/stop swap it
  std::string guid;
  bool initialized = false;
  std::atomic<bool> active{false};
  OperationMode mode = OperationMode::Capture;
  int serialize = 0;
  int64_t tag = 0;
  std::vector<Adapter> adapters;
  std::vector<FilterRule> filter_rules, passthrough_rules;
  // Local settings.
  size_t initial_send_buffer = 262144;
  size_t min_workers = 0, max_workers = 0, stack_size = 0;
  bool deny_expired = false;
  std::map<int, std::vector<std::pair<std::vector<uint8_t>, int>>> send_buffers;  // adapter -> frames, times
  std::mutex send_mu;
  std::thread stats_thread;
  std::mutex stats_mu;
  std::condition_variable stats_cv;
  bool stats_stop = false;

  explicit Impl(NetFilter& n, std::string s) : nf(n), socket(s.empty() ? AgentConnection::default_socket() : std::move(s)) {}

  void need_init() const {
    if (!initialized) throw NetFilterError(kErrorNotReady, "call initialize(product_guid) first");
  }
  void need_inactive(const char* what) const {
    if (active) throw NetFilterError(kErrorConnectionActive, std::string(what) + " cannot change while the filter is active");
  }
  // A short-lived connection for the installation methods (no initialize needed).
  json call_once(const std::string& method, const json& params) {
    if (conn && !conn->closed()) return conn->call(method, params);
    AgentConnection c(socket);
    return c.call(method, params);
  }

  void fire_error(int code, const std::string& what) {
    if (!nf.on_error) return;
    ErrorEventParams e{code, what};
    try {
      nf.on_error(e);
    } catch (...) {
    }
  }

  void dispatch(std::function<void()> fn) {
    std::lock_guard l(pool_mu);
    if (pool) pool->post(std::move(fn));
  }

  void on_note(const json& m) {
    const std::string method = m["method"].is_string() ? m["method"].get<std::string>() : "";
    const json p = m.value("params", json::object());
    if (method == "adapter_added" || method == "adapter_removed") {
      const int id = p.value("adapter_id", -1);
      auto& handler = method == "adapter_added" ? nf.on_adapter_added : nf.on_adapter_removed;
      if (!handler) return;
      dispatch([this, id, &handler] {
        AdapterEventParams e{id};
        try {
          handler(e);
        } catch (const std::exception& ex) {
          fire_error(kErrorInvalidParameter, std::string("adapter event handler: ") + ex.what());
        }
      });
    } else if (method == "channel_closed") {
      close_direct();  // the plugin went away: events come through the agent until it offers another
    } else if (method == "channel_available") {
      dispatch([this] { open_direct(); });
    } else if (method == "verdict_refused") {
      dispatch([this, p] { fire_error(p.value("seed_error", kErrorInvalidParameter), p.value("message", std::string())); });
    }
  }

  // Notify copies that came in one read from the agent go to one worker together, up to
  // kNotifyBatch (one hand-over and wake-up per batch, not per event: at a few hundred
  // thousand events a second the hand-overs were most of the client's work); a captured
  // packet goes alone (its handler decides a verdict the datapath waits for).
  static constexpr size_t kNotifyBatch = 64;
  std::vector<std::pair<proto::EventFrame, std::vector<uint8_t>>> notify_batch;  // reader thread only
  void on_event(const proto::EventFrame& f, std::vector<uint8_t> data) {
    if (!proto::awaits_verdict(f.type, f.event_id) || (f.flags & proto::kMonitorCopy)) {
      notify_batch.emplace_back(f, std::move(data));
      if (notify_batch.size() >= kNotifyBatch) flush_notify();
      return;
    }
    dispatch([this, f, d = std::move(data)]() mutable { fire_packet(f, std::move(d)); });
  }
  void flush_notify() { flush(notify_batch); }
  void flush(std::vector<std::pair<proto::EventFrame, std::vector<uint8_t>>>& batch) {
    if (batch.empty()) return;
    dispatch([this, b = std::move(batch)]() mutable {
      for (auto& [f, d] : b) fire_packet(f, std::move(d));
    });
    batch.clear();
  }

  // Events read from the channel (its reading thread): notify copies as from the agent; a
  // captured packet's handler runs on the channel's thread that read it, the other one
  // reading on meanwhile (DirectChannel::handover), else on a worker; verdicts go to the
  // channel.
  std::vector<std::pair<proto::EventFrame, std::vector<uint8_t>>> direct_batch;  // the reading thread only
  void on_direct_event(DirectChannel& ch, const proto::EventFrame& f, std::vector<uint8_t> data) {
    if (!proto::awaits_verdict(f.type, f.event_id)) {
      direct_batch.emplace_back(f, std::move(data));
      if (direct_batch.size() >= kNotifyBatch) flush(direct_batch);
      return;
    }
    if (channel_workers && ch.handover()) {
      flush(direct_batch);  // earlier notify copies go first
      return fire_packet(f, std::move(data), &ch);
    }
    dispatch([this, f, d = std::move(data), via = ch.shared_from_this()]() mutable { fire_packet(f, std::move(d), via.get()); });
  }

  // Asks the agent for a channel (after start_filter in capture mode, or when the agent
  // offers one again); without one, events keep coming through the agent.
  // VPF_DIRECT_CHANNEL=0 keeps the agent's path (for comparisons).
  static bool direct_wanted() {
    const char* e = std::getenv("VPF_DIRECT_CHANNEL");
    return !e || std::string(e) != "0";
  }
  bool channel_workers = false;  // the channel's threads run handlers (start_filter decides)
  void open_direct() {
    if (!direct_wanted() || !conn || !active || mode != OperationMode::Capture) return;
    try {
      conn->call("open_channel", json::object());
      DirectChannel::Callbacks cb;
      cb.on_event = [this](DirectChannel& c, const proto::EventFrame& f, std::vector<uint8_t> d) {
        on_direct_event(c, f, std::move(d));
      };
      cb.on_burst_end = [this] { flush(direct_batch); };
      if (channel_workers) {
        cb.on_thread_start = [this] { worker_started(nf); };
        cb.on_thread_stop = [this] { worker_stopped(nf); };
      }
      auto ch = DirectChannel::open(conn->take_fds(), std::move(cb));
      std::lock_guard l(direct_mu);
      direct = std::move(ch);
    } catch (const NetFilterError& e) {
      for (int fd : conn->take_fds()) ::close(fd);
      if (e.code() != kErrorNotReady) fire_error(e.code(), e.what());
    } catch (const std::exception& e) {
      fire_error(kErrorNotReady, std::string("the plugin's channel could not be used (events come through vpf-agent): ") +
                                     e.what());
    }
  }
  void close_direct() {
    std::shared_ptr<DirectChannel> old;
    {
      std::lock_guard l(direct_mu);
      old = std::move(direct);
    }
    if (old) old->stop();
  }
  // Handlers running on the channel's threads finish (stop_filter: every event already
  // delivered runs to its verdict).
  void drain_direct() {
    std::shared_ptr<DirectChannel> ch;
    {
      std::lock_guard l(direct_mu);
      ch = direct;
    }
    if (ch) ch->drain();
  }

  // A connection event: to its handler (none set: nothing to do).  A pended connect
  // request (not a monitor's copy) ends in its completion: the handler's filtering flag,
  // or later by complete_tcp_connect_request.
  void fire_connection(const proto::EventFrame& f, const std::vector<uint8_t>& data, DirectChannel* via) {
    ConnectionEventParams e;
    if (!connection_event_of(f, data, &e)) {
      if (proto::awaits_verdict(f.type, f.event_id) && !(f.flags & proto::kMonitorCopy)) complete(f.event_id, via, !deny_expired);
      return fire_error(kErrorInvalidParameter, "a connection event that cannot be read");
    }
    const bool pended = e.request_id && !(f.flags & proto::kMonitorCopy);
    if (!pended) e.request_id = 0;
    auto& handler = e.event == kTcpConnected   ? nf.on_tcp_connected
                    : e.event == kTcpClosed    ? nf.on_tcp_closed
                    : e.event == kUdpCreated   ? nf.on_udp_created
                    : e.event == kUdpClosed    ? nf.on_udp_closed
                                               : nf.on_tcp_connect_request;
    if (!handler) {
      if (pended) complete(e.request_id, via, !deny_expired);  // as if it had expired
      return;
    }
    if (pended) {  // completable by complete_tcp_connect_request from the handler on
      std::lock_guard l(requests_mu);
      requests[e.request_id] = via ? via->shared_from_this() : nullptr;
    }
    try {
      handler(e);
    } catch (const std::exception& ex) {
      fire_error(kErrorInvalidParameter, std::string("connection event handler: ") + ex.what());
      e.filtering_flag = deny_expired ? kNfBlock : kNfAllow;
    }
    if (!pended || e.filtering_flag == kNfPendConnectRequest) return;
    if (e.filtering_flag != kNfAllow && e.filtering_flag != kNfBlock) {
      fire_error(kErrorInvalidParameter, "on_tcp_connect_request: filtering_flag " + std::to_string(e.filtering_flag) +
                                             " is not NF_ALLOW (0), NF_BLOCK (1) or NF_PEND_CONNECT_REQUEST (64)");
      e.filtering_flag = deny_expired ? kNfBlock : kNfAllow;
    }
    if (take_request(e.request_id)) complete(e.request_id, via, e.filtering_flag == kNfAllow);
  }

  // The pended requests this client may still complete: request id -> the channel it came
  // through (null: the agent).
  std::mutex requests_mu;
  std::map<uint64_t, std::shared_ptr<DirectChannel>> requests;
  // Removes a pended request; false if it is not there (completed already).
  bool take_request(uint64_t id, std::shared_ptr<DirectChannel>* via = nullptr) {
    std::lock_guard l(requests_mu);
    const auto it = requests.find(id);
    if (it == requests.end()) return false;
    if (via) *via = it->second;
    requests.erase(it);
    return true;
  }
  // The verdict that completes a pended request: send allows the connection, drop blocks it.
  void complete(uint64_t id, DirectChannel* via, bool allow) { send_verdict(id, allow ? kPacketActionSend : kPacketActionDrop, {}, via); }

  void send_verdict(uint64_t id, uint8_t action, std::span<const uint8_t> out, DirectChannel* via) {
    try {
      if (via) {
        if (!via->verdict(id, action, out))
          fire_error(kErrorNotReady, "verdict for event " + std::to_string(id) +
                                         ": the plugin's verdict ring stayed full; the packet gets its expiry verdict");
      } else if (conn) {
        conn->verdict(id, action, out);
      }
    } catch (const NetFilterError& ex) {
      fire_error(ex.code(), ex.what());
    }
  }

  void fire_packet(const proto::EventFrame& f, std::vector<uint8_t> data, DirectChannel* via = nullptr) {
    if (f.type == proto::kConnection) return fire_connection(f, data, via);
    const auto ts = std::chrono::system_clock::time_point(std::chrono::milliseconds(f.timestamp_ns / 1000000));
    const int64_t sub_ns = int64_t(f.timestamp_ns % 1000000);
    if (f.type == proto::kNotify || (f.flags & proto::kMonitorCopy)) {
      if (!nf.on_notify_packet) return;
      NotifyPacketEventParams e{int(f.adapter), ts, sub_ns, f.packet_type, f.direction, int(f.packet_size),
                                std::span<const uint8_t>(data), int(f.ip_offset), int(f.ip_size), f.rule_id};
      try {
        nf.on_notify_packet(e);
      } catch (const std::exception& ex) {
        fire_error(kErrorInvalidParameter, std::string("on_notify_packet: ") + ex.what());
      }
      return;
    }
    // A captured packet: the handler decides; every path ends in one verdict.
    uint8_t action = deny_expired ? kPacketActionDrop : kPacketActionSend;
    std::vector<uint8_t> buf = data;
    int data_size = int(data.size());
    if (nf.on_packet) {
      for (int round = 0; round < 8; ++round) {
        PacketEventParams e{int(f.adapter), ts, sub_ns, f.packet_type, f.direction, int(f.packet_size),
                            std::span<uint8_t>(buf), data_size, int(f.ip_offset), int(f.ip_size), f.rule_id};
        try {
          nf.on_packet(e);
        } catch (const std::exception& ex) {
          fire_error(kErrorInvalidParameter, std::string("on_packet: ") + ex.what() +
                                                 (deny_expired ? " (packet dropped)" : " (packet sent on)"));
          break;
        }
        if (e.result_code == kErrorInsufficientBuffer && e.data_size > int(buf.size()) &&
            e.data_size <= int(proto::kMaxPacket)) {
          // Fire again with a buffer of the size asked for, holding the original packet.
          std::vector<uint8_t> bigger(size_t(e.data_size), 0);
          std::copy(data.begin(), data.end(), bigger.begin());
          buf = std::move(bigger);
          data_size = int(data.size());
          continue;
        }
        if (e.result_code != 0) {
          fire_error(e.result_code, "on_packet reported error " + std::to_string(e.result_code));
        }
        if (e.action == kPacketActionDrop || e.action == kPacketActionSend) {
          action = uint8_t(e.action);
        } else if (e.action == kPacketActionSendModified) {
          if (e.data_size < 14 || e.data_size > int(buf.size())) {
            fire_error(kErrorInvalidParameter, "on_packet: SEND_MODIFIED with data_size " + std::to_string(e.data_size) +
                                                   " outside 14.." + std::to_string(buf.size()));
            break;
          }
          action = kPacketActionSendModified;
          data_size = e.data_size;
        } else {
          fire_error(kErrorInvalidParameter, "on_packet: action " + std::to_string(e.action) + " is not DROP, SEND or SEND_MODIFIED");
        }
        break;
      }
    }
    const auto out = action == kPacketActionSendModified ? std::span<const uint8_t>(buf.data(), size_t(data_size))
                                                         : std::span<const uint8_t>();
    send_verdict(f.event_id, action, out, via);
  }

  // From a rule object, as list_rules returns it or as rule_json() builds it (numbers for
  // direction and action).
  static FilterRule filter_rule(const json& r) {
    FilterRule x;
    x.rule_id = r.value("id", 0u);
    x.adapter_id = r.value("adapter", -1);
    const json dir = r.value("direction", json("any"));
    x.direction = dir.is_number_integer() ? dir.get<int>()
                  : dir == "outgoing"     ? kDirectionOutgoing
                  : dir == "incoming"     ? kDirectionIncoming
                                          : kDirectionAny;
    x.min_packet_size = r.value("min_size", -1);
    x.max_packet_size = r.value("max_size", -1);
    x.bpf_rule = r.value("bpf", std::string());
    const json act = r.value("action", json("drop"));
    x.action = act.is_number_integer() ? act.get<int>()
               : act == "capture"      ? kRuleActionCapture
               : act == "notify"       ? kRuleActionNotify
               : act == "count"        ? kRuleActionCount
                                       : kRuleActionDrop;
    return x;
  }

  // The list kept here of a rule kind's rules (null: connection rules are not kept).
  std::vector<FilterRule>* rules_of(const std::string& kind) {
    return kind == "filter" ? &filter_rules : kind == "passthrough" ? &passthrough_rules : nullptr;
  }

  void refresh_rules() {
    const json all = conn->call("list_rules", {{"instance", guid}});
    filter_rules.clear();
    passthrough_rules.clear();
    for (const auto& r : all)
      if (auto* list = rules_of(r.value("kind", std::string()))) list->push_back(filter_rule(r));
  }

  // An added rule goes last among its kind (it has the lowest priority, 0, and the highest
  // position): appended here without listing every rule again (a listing costs as much as
  // the instance has rules).
  bool add_rule(const json& rule) {
    need_init();
    conn->call("add_rule", {{"instance", guid}, {"rule", rule}});
    rules_of(rule.value("kind", std::string()))->push_back(filter_rule(rule));  // filter or passthrough
    return true;
  }

  bool delete_rules(const json& params) {
    need_init();
    json p = params;
    p["instance"] = guid;
    bool ok = true;
    try {
      conn->call(p.contains("id") ? "delete_rule" : "delete_all_rules", p);
    } catch (const NetFilterError& e) {
      if (e.code() != kErrorNotFound) throw;
      ok = false;
    }
    // The rules of this instance are known here: the deleted ones (or the one not found)
    // leave the list without listing every rule again.
    for (const char* kind : {"filter", "passthrough"}) {
      if (p.value("kind", std::string(kind)) != kind) continue;
      auto* list = rules_of(kind);
      if (!p.contains("id")) list->clear();
      else std::erase_if(*list, [&](const FilterRule& r) { return r.rule_id == p["id"].get<uint32_t>(); });
    }
    return ok;
  }

  void statistics(int adapter_id, bool filter_too) {
    const json st = conn->call("get_statistics", json::object());
    const auto now = std::chrono::system_clock::now();
    for (const auto& a : st["adapters"]) {
      const int id = a["adapter_id"];
      if (adapter_id != -1 && id != adapter_id) continue;
      if (mode == OperationMode::Stat && active && adapter_id == -1 && !a.value("collect_statistics", true)) continue;
      for (const char* which : {"total", "filter"}) {
        const bool fs = std::string(which) == "filter";
        if (fs && !filter_too) continue;
        const json& c = a[which];
        StatisticsEventParams e{id, fs, now,
                                c["packets_received"], c["bytes_received"], c["packets_sent"], c["bytes_sent"],
                                c["packets_dropped_inbound"], c["bytes_dropped_inbound"],
                                c["packets_dropped_outbound"], c["bytes_dropped_outbound"]};
        if (!nf.on_statistics) continue;
        dispatch([this, e]() mutable {
          try {
            nf.on_statistics(e);
          } catch (const std::exception& ex) {
            fire_error(kErrorInvalidParameter, std::string("on_statistics: ") + ex.what());
          }
        });
      }
    }
  }

  void set_adapter(int i, const char* prop, const json& value) {
    need_init();
    if (i < 0 || i >= int(adapters.size()))
      throw NetFilterError(kErrorInvalidParameter, "adapter index " + std::to_string(i) + " out of range (call list_adapters)");
    need_inactive(prop);
    conn->call("set_adapter", {{"adapter", adapters[size_t(i)].id}, {prop, value}});
  }
  const Adapter& adapter(int i) const {
    if (i < 0 || i >= int(adapters.size()))
      throw NetFilterError(kErrorInvalidParameter, "adapter index " + std::to_string(i) + " out of range");
    return adapters[size_t(i)];
  }
  static const FilterRule& rule(const std::vector<FilterRule>& v, int i) {
    if (i < 0 || i >= int(v.size())) throw NetFilterError(kErrorInvalidParameter, "rule index " + std::to_string(i) + " out of range");
    return v[size_t(i)];
  }
};

namespace {

void check_guid(const std::string& g) {
  static const std::regex re("\\{[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\\}");
  if (!std::regex_match(g, re))
    throw NetFilterError(kErrorInvalidParameter,
                         "product GUID '" + g + "' is not in registry format ({XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX})");
}

json rule_json(const char* kind, uint32_t id, int adapter, int direction, int min, int max, const std::string& bpf) {
  if (direction < 0 || direction > 2)
    throw NetFilterError(kErrorInvalidParameter, "direction " + std::to_string(direction) + " is not 0 (outgoing), 1 (incoming) or 2 (any)");
  json r = {{"kind", kind}, {"id", id}, {"adapter", adapter}, {"direction", direction}, {"min_size", min}, {"max_size", max}};
  if (!bpf.empty()) r["bpf"] = bpf;
  return r;
}

}  // namespace

NetFilter::NetFilter(std::string socket) : d_(std::make_unique<Impl>(*this, std::move(socket))) {}

NetFilter::~NetFilter() {
  try {
    if (d_->active) stop_filter();
  } catch (...) {
  }
  d_->close_direct();
  d_->conn.reset();
  std::lock_guard l(d_->pool_mu);
  d_->pool.reset();
}

// ---- properties ----
bool NetFilter::active() const { return d_->active; }
int NetFilter::adapter_count() const { return int(d_->adapters.size()); }
int NetFilter::adapter_buffer_size(int i) const { return d_->adapter(i).buffer_size; }
void NetFilter::set_adapter_buffer_size(int i, int kb) {
  d_->set_adapter(i, "buffer_size", kb);
  d_->adapters[size_t(i)].buffer_size = kb;
}
bool NetFilter::adapter_collect_statistics(int i) const { return d_->adapter(i).collect_statistics; }
void NetFilter::set_adapter_collect_statistics(int i, bool on) {
  d_->set_adapter(i, "collect_statistics", on);
  d_->adapters[size_t(i)].collect_statistics = on;
}
std::string NetFilter::adapter_description(int i) const { return d_->adapter(i).description; }
std::string NetFilter::adapter_friendly_name(int i) const { return d_->adapter(i).friendly_name; }
int NetFilter::adapter_id(int i) const { return d_->adapter(i).id; }
int NetFilter::adapter_interface_type(int i) const { return d_->adapter(i).interface_type; }
std::string NetFilter::adapter_mac_address(int i) const { return d_->adapter(i).mac_address; }
int NetFilter::adapter_max_packet_bytes(int i) const { return d_->adapter(i).max_packet_bytes; }
void NetFilter::set_adapter_max_packet_bytes(int i, int bytes) {
  if (bytes < 0) throw NetFilterError(kErrorInvalidParameter, "max_packet_bytes must be 0.." + std::to_string(kMaxSnaplen));
  d_->set_adapter(i, "max_packet_bytes", bytes);
  d_->adapters[size_t(i)].max_packet_bytes = bytes ? bytes : int(kMaxSnaplen);
}
std::string NetFilter::adapter_name(int i) const { return d_->adapter(i).name; }
int NetFilter::adapter_packet_timeout(int i) const { return d_->adapter(i).packet_timeout; }
void NetFilter::set_adapter_packet_timeout(int i, int ms) {
  d_->set_adapter(i, "packet_timeout", ms);
  d_->adapters[size_t(i)].packet_timeout = ms;
}
bool NetFilter::adapter_promiscuous_mode(int i) const { return d_->adapter(i).promiscuous_mode; }
void NetFilter::set_adapter_promiscuous_mode(int i, bool on) { d_->set_adapter(i, "promiscuous_mode", on); }
bool NetFilter::adapter_wi_fi_monitor_mode(int i) const { return d_->adapter(i).wifi_monitor_mode; }
void NetFilter::set_adapter_wi_fi_monitor_mode(int i, bool on) { d_->set_adapter(i, "wifi_monitor_mode", on); }
bool NetFilter::adapter_wi_fi_monitor_mode_supported(int i) const { return d_->adapter(i).wifi_monitor_mode_supported; }
const std::vector<Adapter>& NetFilter::adapters() const { return d_->adapters; }

int NetFilter::altitude() const {
  d_->need_init();
  const json st = d_->conn->call("status", json::object());
  for (const auto& i : st["instances"])
    if (i["guid"] == d_->guid) return int(i.value("altitude", 0));
  return 0;
}
void NetFilter::set_altitude(int altitude) {
  d_->need_init();
  d_->need_inactive("altitude");
  d_->conn->call("install", {{"guid", d_->guid}, {"altitude", altitude}});
}

int NetFilter::filter_rule_count() const { return int(d_->filter_rules.size()); }
int NetFilter::filter_rule_action(int i) const { return Impl::rule(d_->filter_rules, i).action; }
int NetFilter::filter_rule_adapter_id(int i) const { return Impl::rule(d_->filter_rules, i).adapter_id; }
std::string NetFilter::filter_rule_bpf_rule(int i) const { return Impl::rule(d_->filter_rules, i).bpf_rule; }
int NetFilter::filter_rule_direction(int i) const { return Impl::rule(d_->filter_rules, i).direction; }
int NetFilter::filter_rule_max_packet_size(int i) const { return Impl::rule(d_->filter_rules, i).max_packet_size; }
int NetFilter::filter_rule_min_packet_size(int i) const { return Impl::rule(d_->filter_rules, i).min_packet_size; }
uint32_t NetFilter::filter_rule_rule_id(int i) const { return Impl::rule(d_->filter_rules, i).rule_id; }
int NetFilter::passthrough_rule_count() const { return int(d_->passthrough_rules.size()); }
int NetFilter::passthrough_rule_adapter_id(int i) const { return Impl::rule(d_->passthrough_rules, i).adapter_id; }
std::string NetFilter::passthrough_rule_bpf_rule(int i) const { return Impl::rule(d_->passthrough_rules, i).bpf_rule; }
int NetFilter::passthrough_rule_direction(int i) const { return Impl::rule(d_->passthrough_rules, i).direction; }
int NetFilter::passthrough_rule_max_packet_size(int i) const { return Impl::rule(d_->passthrough_rules, i).max_packet_size; }
int NetFilter::passthrough_rule_min_packet_size(int i) const { return Impl::rule(d_->passthrough_rules, i).min_packet_size; }
uint32_t NetFilter::passthrough_rule_rule_id(int i) const { return Impl::rule(d_->passthrough_rules, i).rule_id; }
const std::vector<FilterRule>& NetFilter::filter_rules() const { return d_->filter_rules; }
const std::vector<FilterRule>& NetFilter::passthrough_rules() const { return d_->passthrough_rules; }

OperationMode NetFilter::operation_mode() const { return d_->mode; }
void NetFilter::set_operation_mode(OperationMode m) {
  if (m != OperationMode::Capture && m != OperationMode::Stat)
    throw NetFilterError(kErrorInvalidParameter, "operation mode must be Capture (0) or Stat (1)");
  d_->need_inactive("operation_mode");
  d_->mode = m;
}
int NetFilter::serialize_events() const { return d_->serialize; }
void NetFilter::set_serialize_events(int v) {
  if (v != 0 && v != 1) throw NetFilterError(kErrorInvalidParameter, "serialize_events must be 0 or 1");
  d_->need_inactive("serialize_events");
  d_->serialize = v;
}
int64_t NetFilter::tag() const { return d_->tag; }
void NetFilter::set_tag(int64_t v) { d_->tag = v; }

// ---- methods ----

bool NetFilter::add_filter_rule(uint32_t rule_id, int adapter_id, int direction, int min_packet_size,
                                int max_packet_size, const std::string& bpf_rule, int action) {
  if (action < kRuleActionDrop || action > kRuleActionCount)
    throw NetFilterError(kErrorInvalidParameter,
                         "action " + std::to_string(action) + " is not DROP (1), CAPTURE (2), NOTIFY (3) or COUNT (4)");
  json r = rule_json("filter", rule_id, adapter_id, direction, min_packet_size, max_packet_size, bpf_rule);
  r["action"] = action;
  return d_->add_rule(r);
}

bool NetFilter::add_passthrough_rule(uint32_t rule_id, int adapter_id, int direction, int min_packet_size,
                                     int max_packet_size, const std::string& bpf_rule) {
  return d_->add_rule(rule_json("passthrough", rule_id, adapter_id, direction, min_packet_size, max_packet_size, bpf_rule));
}

std::string NetFilter::config(const std::string& s) {
  const size_t eq = s.find('=');
  const std::string name = s.substr(0, eq);
  const std::string l = lower(name);
  const bool set = eq != std::string::npos;
  const std::string value = set ? s.substr(eq + 1) : "";
  auto number = [&](size_t& field, size_t max) -> std::string {
    if (!set) return std::to_string(field);
    char* end = nullptr;
    const long long v = std::strtoll(value.c_str(), &end, 10);
    if (value.empty() || *end || v < 0 || size_t(v) > max)
      throw NetFilterError(kErrorInvalidParameter, name + ": '" + value + "' is not a number in 0.." + std::to_string(max));
    field = size_t(v);
    return "";
  };
  if (l == "initialsendbuffersize") return number(d_->initial_send_buffer, size_t(1) << 30);
  if (l == "minworkerthreadcount" || l == "maxworkerthreadcount" || l == "workerinitialstacksize") {
    if (set) d_->need_inactive(name.c_str());
    size_t& f = l == "minworkerthreadcount" ? d_->min_workers : l == "maxworkerthreadcount" ? d_->max_workers : d_->stack_size;
    return number(f, l == "workerinitialstacksize" ? size_t(1) << 30 : 4096);
  }
  if (l == "buildinfo") {
    if (set) throw NetFilterError(kErrorInvalidParameter, "BuildInfo is read-only");
    return std::string("vportfilter 0.1.0, protocol ") + std::to_string(proto::kVersion) + ", built " __DATE__;
  }
  if (l == "licenseinfo") {
    if (set) throw NetFilterError(kErrorInvalidParameter, "LicenseInfo is read-only");
    return "vportfilter: no license key needed";
  }
  if (l == "denyexpiredrequests" || l == "forceapppermissioncheck" || l == "loggingenabled") {
    d_->need_init();
    if (!set) return d_->conn->call("config", {{"instance", d_->guid}, {"name", name}})["value"];
    const bool on = parse_bool(name, value);
    d_->conn->call("config", {{"instance", d_->guid}, {"name", name}, {"value", value}});
    if (l == "denyexpiredrequests") d_->deny_expired = on;
    return "";
  }
  throw NetFilterError(kErrorInvalidParameter,
                       "unknown configuration setting '" + name +
                           "' (DenyExpiredRequests, ForceAppPermissionCheck, InitialSendBufferSize, LoggingEnabled, "
                           "MaxWorkerThreadCount, MinWorkerThreadCount, WorkerInitialStackSize, BuildInfo, LicenseInfo)");
}

bool NetFilter::delete_all_filter_rules() { return d_->delete_rules({{"kind", "filter"}}); }
bool NetFilter::delete_all_passthrough_rules() { return d_->delete_rules({{"kind", "passthrough"}}); }
bool NetFilter::delete_filter_rule(uint32_t id) { return d_->delete_rules({{"kind", "filter"}, {"id", id}}); }
bool NetFilter::delete_passthrough_rule(uint32_t id) { return d_->delete_rules({{"kind", "passthrough"}, {"id", id}}); }

void NetFilter::flush_send_buffer(int adapter_id) {
  d_->need_init();
  std::map<int, std::vector<std::pair<std::vector<uint8_t>, int>>> out;
  {
    std::lock_guard l(d_->send_mu);
    if (adapter_id == -1) {
      out.swap(d_->send_buffers);
    } else if (auto it = d_->send_buffers.find(adapter_id); it != d_->send_buffers.end()) {
      out[adapter_id] = std::move(it->second);
      d_->send_buffers.erase(it);
    }
  }
  for (const auto& [a, frames] : out)
    for (const auto& [f, times] : frames)
      d_->conn->call("send_packet", {{"adapter", a}, {"data", to_hex(f)}, {"num_times", times}});
}

int NetFilter::get_driver_status(const std::string& guid) {
  check_guid(guid);
  try {
    return d_->call_once("get_driver_status", {{"guid", guid}})["status"];
  } catch (const NetFilterError& e) {
    if (e.code() == kErrorFileNotFound) return kModuleStatusNotPresent;  // no agent: nothing is there
    throw;
  }
}

int64_t NetFilter::get_driver_version(const std::string& guid) {
  check_guid(guid);
  if (get_driver_status(guid) == kModuleStatusNotPresent) return 0;
  return d_->call_once("get_driver_version", json::object())["version"].get<int64_t>();
}

std::vector<ConnectionInfo> NetFilter::list_connections(int adapter_id) {
  json params = json::object();
  if (adapter_id >= 0) params["adapter"] = adapter_id;
  std::vector<ConnectionInfo> out;
  const json got = d_->call_once("list_connections", params);  // kept: the loop walks a part of it
  for (const json& j : got.at("connections")) out.push_back(connection_of(j));
  return out;
}

ConnectionInfo NetFilter::get_connection(uint64_t id) {
  if (id == 0) throw NetFilterError(kErrorInvalidParameter, "get_connection: connection ids start at 1");
  return connection_of(d_->call_once("get_connection", {{"id", id}}));
}

bool NetFilter::set_connection_state(uint64_t id, bool suspended) {
  if (id == 0) throw NetFilterError(kErrorInvalidParameter, "set_connection_state: connection ids start at 1");
  d_->call_once("set_connection_state", {{"id", id}, {"suspended", suspended}});
  return true;
}

// Throws unless `flag` completes a connect request: NF_ALLOW or NF_BLOCK.
static void check_completion(const char* call, unsigned long flag) {
  if (flag != kNfAllow && flag != kNfBlock)
    throw NetFilterError(kErrorInvalidParameter, std::string(call) + ": filtering_flag " + std::to_string(flag) +
                                                     " is not NF_ALLOW (0) or NF_BLOCK (1)");
}

bool NetFilter::complete_tcp_connect_request(uint64_t request_id, unsigned long filtering_flag) {
  check_completion("complete_tcp_connect_request", filtering_flag);
  std::shared_ptr<DirectChannel> via;
  if (!d_->take_request(request_id, &via))
    throw NetFilterError(kErrorNotFound, "complete_tcp_connect_request: request " + std::to_string(request_id) +
                                             " is not pending here (completed, expired, or never sent to this client)");
  d_->complete(request_id, via.get(), filtering_flag == kNfAllow);
  return true;
}

bool NetFilter::complete_connection_request(uint64_t id, unsigned long filtering_flag) {
  if (id == 0) throw NetFilterError(kErrorInvalidParameter, "complete_connection_request: connection ids start at 1");
  check_completion("complete_connection_request", filtering_flag);
  d_->call_once("complete_connect_request", {{"id", id}, {"verdict", filtering_flag == kNfAllow ? "allow" : "block"}});
  return true;
}

void NetFilter::get_statistics(int adapter_id) {
  d_->need_init();
  // Filter-specific figures only while filtering in statistics mode, as in the reference.
  d_->statistics(adapter_id, d_->active && d_->mode == OperationMode::Stat);
}

void NetFilter::initialize(const std::string& guid) {
  check_guid(guid);
  if (d_->active) throw NetFilterError(kErrorConnectionActive, "initialize: the filter is active");
  Impl* d = d_.get();
  auto conn = std::make_unique<AgentConnection>(
      d->socket, [d](const proto::EventFrame& f, std::vector<uint8_t> data) { d->on_event(f, std::move(data)); },
      [d](const json& m) { d->on_note(m); }, [d] { d->flush_notify(); });
  const json st = conn->call("status", json::object());
  if (st.value("protocol_version", 0u) != proto::kVersion)
    throw NetFilterError(kErrorInvalidKernelInfoVersion, "vpf-agent speaks protocol " + st["protocol_version"].dump() +
                                                             ", this library " + std::to_string(proto::kVersion));
  if (conn->call("get_driver_status", {{"guid", guid}})["status"] == kModuleStatusNotPresent)
    throw NetFilterError(kErrorFileNotFound, "instance " + guid + " is not installed (call install first)");
  d_->conn = std::move(conn);
  d_->guid = guid;
  d_->initialized = true;
  d_->deny_expired = d_->conn->call("config", {{"instance", guid}, {"name", "DenyExpiredRequests"}})["value"] == "True";
  d_->refresh_rules();
  {
    std::lock_guard l(d_->pool_mu);
    if (!d_->pool) d_->pool = std::make_unique<Pool>(*this, 1, 1, d_->stack_size);  // adapter events until start
  }
  d_->conn->call("subscribe", {{"packets", false}, {"adapters", true}});
}

void NetFilter::insert_incoming_packet(int adapter_id, std::span<const uint8_t> data) {
  d_->need_init();
  d_->conn->call("insert_incoming_packet", {{"adapter", adapter_id}, {"data", to_hex(data)}});
}

bool NetFilter::install(const std::string& cab_file_name, const std::string& guid, int altitude, int flags,
                        const std::string& allowed_controllers) {
  check_guid(guid);
  json allowed = json::array();
  size_t pos = 0;
  while (pos <= allowed_controllers.size()) {
    const size_t nl = std::min(allowed_controllers.find('\n', pos), allowed_controllers.size());
    if (nl > pos) allowed.push_back(allowed_controllers.substr(pos, nl - pos));
    pos = nl + 1;
  }
  d_->call_once("install", {{"guid", guid}, {"altitude", altitude}, {"allowed_controllers", allowed},
                            {"force_app_permission_check", (flags & kInstallForceAppPermissionCheck) != 0}});
  if (!cab_file_name.empty()) {
    // Registering the plugin with Open vSwitch (other_config:packet-hook-plugin).
    if (::access(cab_file_name.c_str(), R_OK) != 0)
      throw NetFilterError(kErrorFileNotFound, "plugin " + cab_file_name + ": " + std::strerror(errno));
    if (const std::string err =
            run_program({"ovs-vsctl", "set", "Open_vSwitch", ".", "other_config:packet-hook-plugin=" + cab_file_name});
        !err.empty())
      throw NetFilterError(kErrorNotReady, "could not register the plugin: " + err);
  }
  return false;
}

void NetFilter::list_adapters() {
  d_->need_init();
  std::vector<Adapter> out;
  for (const auto& a : d_->conn->call("list_adapters", json::object())) {
    Adapter x;
    x.id = a["id"];
    x.name = a.value("name", "");
    x.description = a.value("description", "");
    x.friendly_name = a.value("friendly_name", "");
    x.mac_address = a.value("mac", "");
    x.key = a.value("key", "");
    x.ovs_type = a.value("type", "");
    x.bridge = a.value("bridge", "");
    x.vm = a.value("vm", 0u);
    x.interface_type = a.value("interface_type", 6);
    x.buffer_size = a.value("buffer_size", 1024);
    x.max_packet_bytes = a.value("max_packet_bytes", int(kMaxSnaplen));
    x.packet_timeout = a.value("packet_timeout", 1000);
    x.collect_statistics = a.value("collect_statistics", true);
    out.push_back(std::move(x));
  }
  d_->adapters = std::move(out);
}

int NetFilter::nt_status_to_win32_error(int) {
  throw NetFilterError(kErrorNotSupported, "nt_status_to_win32_error: there are no NT status codes on Linux");
}

void NetFilter::send_packet(int adapter_id, std::span<const uint8_t> data, int num_times, bool buffer_only) {
  d_->need_init();
  if (num_times < 1) throw NetFilterError(kErrorInvalidParameter, "num_times must be at least 1");
  if (data.size() < 14 || data.size() > proto::kMaxPacket)
    throw NetFilterError(kErrorInvalidParameter, "a frame has 14.." + std::to_string(proto::kMaxPacket) + " bytes, not " +
                                                     std::to_string(data.size()));
  if (buffer_only) {
    std::lock_guard l(d_->send_mu);
    auto& b = d_->send_buffers[adapter_id];
    if (b.empty()) b.reserve(std::max<size_t>(1, d_->initial_send_buffer / 1514));
    b.emplace_back(std::vector<uint8_t>(data.begin(), data.end()), num_times);
    return;
  }
  d_->conn->call("send_packet", {{"adapter", adapter_id}, {"data", to_hex(data)}, {"num_times", num_times}});
}

void NetFilter::shutdown_system(bool, bool) {
  throw NetFilterError(kErrorNotSupported, "shutdown_system is not supported: vportfilter does not power hosts off");
}

void NetFilter::start_filter(int timeout_ms) {
  d_->need_init();
  if (d_->active) throw NetFilterError(kErrorConnectionActive, "the filter is active already");
  if (timeout_ms != 0 && timeout_ms < 3000)
    throw NetFilterError(kErrorImplementationLimit, "timeout must be 0 or at least 3000 ms, not " + std::to_string(timeout_ms));
  {
    const unsigned ncpu = std::max(1u, std::thread::hardware_concurrency());
    size_t max = d_->max_workers ? d_->max_workers : 4 * ncpu;
    size_t min = d_->min_workers ? std::min(d_->min_workers, max) : std::min<size_t>(std::max(ncpu, 4u), max);
    if (d_->serialize) min = max = 1;
    // A client channel's two threads fire events too (captured packets' handlers): they
    // count toward MaxWorkerThreadCount, the pool gets the rest.  With fewer than three
    // workers allowed, or events serialized, every event goes to the pool.
    d_->channel_workers = d_->mode == OperationMode::Capture && d_->direct_wanted() && max >= 3;
    if (d_->channel_workers) {
      max -= DirectChannel::kThreads;
      min = std::max<size_t>(1, std::min(min, max));
    }
    auto pool = std::make_unique<Pool>(*this, min, max, d_->stack_size);
    std::unique_ptr<Pool> old;
    {
      std::lock_guard l(d_->pool_mu);
      old = std::move(d_->pool);
      d_->pool = std::move(pool);
    }
  }
  d_->conn->call("start_filter", {{"instance", d_->guid}, {"timeout_ms", timeout_ms},
                                  {"mode", d_->mode == OperationMode::Stat ? "stat" : "capture"}});
  d_->active = true;
  d_->open_direct();
  if (d_->mode == OperationMode::Stat) {
    d_->stats_stop = false;
    d_->stats_thread = std::thread([this] {
      std::unique_lock l(d_->stats_mu);
      while (!d_->stats_cv.wait_for(l, std::chrono::seconds(1), [&] { return d_->stats_stop; })) {
        l.unlock();
        try {
          d_->statistics(-1, true);
        } catch (const NetFilterError& e) {
          d_->fire_error(e.code(), e.what());
        }
        l.lock();
      }
    });
  }
}

void NetFilter::stop_filter() {
  if (!d_->active) return;
  if (d_->stats_thread.joinable()) {
    {
      std::lock_guard l(d_->stats_mu);
      d_->stats_stop = true;
    }
    d_->stats_cv.notify_all();
    d_->stats_thread.join();
  }
  // Every event already delivered runs to its verdict, then the agent detaches us.
  d_->drain_direct();
  {
    std::lock_guard l(d_->pool_mu);
    if (d_->pool) d_->pool->drain();
  }
  d_->active = false;
  try {
    d_->conn->call("stop_filter", json::object());  // the agent closes the channel first
  } catch (...) {
    d_->close_direct();
    throw;
  }
  d_->close_direct();
  {  // requests still pending here got their expiry verdict when the agent detached us
    std::lock_guard l(d_->requests_mu);
    d_->requests.clear();
  }
  std::unique_ptr<Pool> old;
  {
    std::lock_guard l(d_->pool_mu);
    old = std::move(d_->pool);
    d_->pool = std::make_unique<Pool>(*this, 1, 1, d_->stack_size);
  }
}

bool NetFilter::toggle_process_protection(bool) {
  throw NetFilterError(kErrorNotSupported,
                       "toggle_process_protection is not supported: on Linux, protect the process with its service manager");
}

bool NetFilter::uninstall(const std::string&, const std::string& guid, int) {
  check_guid(guid);
  d_->call_once("uninstall", {{"guid", guid}});
  return false;
}

// ---- NF_RULE ----

namespace {

std::string addr_text(unsigned short family, const unsigned char* a) {
  char buf[INET6_ADDRSTRLEN];
  return inet_ntop(family == AF_INET6 ? AF_INET6 : AF_INET, a, buf, sizeof buf) ? buf : "";
}

bool all_zero(const unsigned char* a, size_t n) {
  return std::all_of(a, a + n, [](unsigned char c) { return c == 0; });
}

}  // namespace

uint32_t NetFilter::nf_add_rule(const NfRule& r, bool to_head) {
  d_->need_init();
  if (r.direction > kNfDirectionBoth)
    throw NetFilterError(kErrorInvalidParameter, "NF_RULE direction " + std::to_string(r.direction) + " is not NF_D_IN, NF_D_OUT or NF_D_BOTH");
  if (r.ip_family != 0 && r.ip_family != AF_INET && r.ip_family != AF_INET6)
    throw NetFilterError(kErrorInvalidParameter, "NF_RULE ip_family " + std::to_string(r.ip_family) + " is not AF_INET or AF_INET6");
  uint32_t id = 1;
  for (const auto& [i, x] : nf_rules()) id = std::max(id, i + 1);
  json j = {{"kind", "connection"}, {"id", id}, {"flags", r.filtering_flag}};
  if (r.protocol) j["protocol"] = r.protocol;
  if (r.process_id) j["vm"] = r.process_id;
  j["direction"] = r.direction == kNfDirectionIn ? "incoming" : r.direction == kNfDirectionOut ? "outgoing" : "any";
  if (r.local_port) j["local_port"] = ntohs(r.local_port);
  if (r.remote_port) j["remote_port"] = ntohs(r.remote_port);
  if (r.ip_family) {
    const size_t n = r.ip_family == AF_INET6 ? 16 : 4;
    j["ip_family"] = r.ip_family == AF_INET6 ? 6 : 4;
    if (!all_zero(r.local_ip, n)) {
      j["local_ip"] = addr_text(r.ip_family, r.local_ip);
      if (!all_zero(r.local_mask, n)) j["local_mask"] = addr_text(r.ip_family, r.local_mask);
    }
    if (!all_zero(r.remote_ip, n)) {
      j["remote_ip"] = addr_text(r.ip_family, r.remote_ip);
      if (!all_zero(r.remote_mask, n)) j["remote_mask"] = addr_text(r.ip_family, r.remote_mask);
    }
  }
  d_->conn->call("add_rule", {{"instance", d_->guid}, {"rule", j}, {"at", to_head ? "head" : "tail"}});
  return id;
}

bool NetFilter::nf_delete_rule(uint32_t id) { return d_->delete_rules({{"kind", "connection"}, {"id", id}}); }
void NetFilter::nf_delete_rules() { d_->delete_rules({{"kind", "connection"}}); }

std::vector<std::pair<uint32_t, NfRule>> NetFilter::nf_rules() {
  d_->need_init();
  std::vector<std::pair<uint32_t, NfRule>> out;
  for (const auto& j : d_->conn->call("list_rules", {{"instance", d_->guid}, {"kind", "connection"}})) {
    NfRule r;
    if (j.contains("protocol") && j["protocol"].is_string()) {
      static const std::map<std::string, int> names = {{"tcp", 6}, {"udp", 17}, {"icmp", 1}, {"icmp6", 58},
                                                       {"sctp", 132}, {"udplite", 136}};
      const auto it = names.find(j["protocol"].get<std::string>());
      r.protocol = it != names.end() ? it->second : 0;
    } else {
      r.protocol = j.value("protocol", 0);
    }
    r.process_id = j.value("vm", 0ul);
    const std::string dir = j.value("direction", std::string("any"));
    r.direction = dir == "incoming" ? kNfDirectionIn : dir == "outgoing" ? kNfDirectionOut : kNfDirectionBoth;
    auto port = [&](const char* k) -> unsigned short {
      if (!j.contains(k)) return 0;
      const json& p = j[k];
      return htons(uint16_t(p.is_array() ? p[0].get<int>() : p.get<int>()));
    };
    r.local_port = port("local_port");
    r.remote_port = port("remote_port");
    const int fam = j.value("ip_family", 0);
    r.ip_family = fam == 6 ? AF_INET6 : fam == 4 ? AF_INET : 0;
    auto addr = [&](const char* k, unsigned char* dst) {
      if (j.contains(k) && j[k].is_string()) inet_pton(r.ip_family == AF_INET6 ? AF_INET6 : AF_INET, j[k].get<std::string>().c_str(), dst);
    };
    // "local"/"remote" as address/prefix: the NF_RULE address and mask.
    auto cidr = [&](const char* k, unsigned char* ip, unsigned char* mask) {
      if (!j.contains(k) || !j[k].is_string()) return;
      const std::string t = j[k];
      const size_t slash = t.find('/');
      const bool v6 = t.find(':') != std::string::npos;
      if (!r.ip_family) r.ip_family = v6 ? AF_INET6 : AF_INET;
      inet_pton(v6 ? AF_INET6 : AF_INET, t.substr(0, slash).c_str(), ip);
      if (slash == std::string::npos) return;  // no mask: the exact address
      const int bits = std::atoi(t.c_str() + slash + 1);
      for (int b = 0; b < bits && b < 128; ++b) mask[b / 8] |= uint8_t(0x80 >> (b % 8));
    };
    cidr("local", r.local_ip, r.local_mask);
    cidr("remote", r.remote_ip, r.remote_mask);
    addr("local_ip", r.local_ip);
    addr("local_mask", r.local_mask);
    addr("remote_ip", r.remote_ip);
    addr("remote_mask", r.remote_mask);
    r.filtering_flag = j.value("flags", 0ul);
    out.emplace_back(j.value("id", 0u), r);
  }
  return out;
}

}  // namespace vpf
