// vportfilter's packet-hook plugin for Open vSwitch: the matcher at every VM port.
//
// Ports.  Every netdev is opened; a port is a VM port ("adapter") once it is given an
// adapter id, by the agent (the channel's set_adapters, by port name, also for ports that
// appear later) or by `ovs-appctl vportfilter/adapter-set`.  Packets of other ports pass
// untouched.  A port that goes away is freed once no held packet refers to it (port.h);
// an adapter's counters outlive its port while the agent maps its name.
//
// Directions are the VM's: a batch OVS receives from the port is the VM's outgoing
// traffic; a batch OVS sends to the port is incoming.
//
// Rules.  One matcher Classifier holds every rule; rules name their adapter (or -1).  The
// writer is the control thread or the main thread (under rules_mu_); datapath threads
// classify concurrently, each with its own Classifier::Reader, without locks.
//
// Actions.  Drop drops; pass, count and passthrough pass (a count match is counted as
// filter-specific, like any filter rule's).  With an agent attached and the mode "filter":
// notify writes a copy (cut to the adapter's snaplen) to the thread's event ring
// and passes the packet; capture holds the packet (HoldTable), writes it whole to the
// ring and lets the agent's verdict decide (send, drop, send modified), or the expiry
// action once the hold timeout passes.  A full ring loses the notify copy (counted) and
// sends a capture to the policy.  Without an agent, capture and notify packets follow the
// policy: fail-open passes them, fail-closed drops them.  Mode "stat": no events at all,
// capture and notify pass; counters only.
//
// Batches the rules cannot act on are not handed over (ABI 3): a port gets rx()/tx()
// calls only for the directions that some rule names it in (or names every adapter in);
// the switch counts the packets and bytes of the others, and an unmapped port costs
// nothing.  A direction is switched on before the rules that need it are published and
// off after the rules that needed it are gone, so no batch misses a rule.
//
// Counters per adapter and direction: all packets and bytes; those matched by a filter
// rule ("filter-specific"); drops (by rules, verdicts, expiry and policy); events written
// and lost.  Per rule: hits (RuleHits).
//
// Threads.  hook() runs on datapath threads (PMD, main), concurrently; it never blocks
// and never allocates after a thread's first call.  Commands run on the main thread;
// the channel's consumer side (verdicts, injections, expiry, attach/detach) on the
// control thread (control.h).  Lock order: rules_mu_ before ports_mu_.
#pragma once

#include <openvswitch/packet-hook.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "clients.h"
#include "conn_tracking.h"
#include "holds.h"
#include "port.h"
#include "rule_hits.h"
#include "vpf/channel.h"
#include "vpf/mutex.h"
#include "vpf/limits.h"
#include "vpf/matcher/classifier.h"

namespace vpf::plugin {

enum class Policy { FailOpen, FailClosed };
enum class Mode { Filter, Stat };

// What the agent asked for a port (by name).
struct Mapping {
  int32_t adapter = -1;
  uint32_t vm = 0;
  uint32_t snaplen = 0;
};

// Plugin-wide counters of the channel.
struct ChannelCounters {
  std::atomic<uint64_t> verdicts{0}, stale_verdicts{0}, bad_records{0};
  std::atomic<uint64_t> expired{0}, released_on_detach{0};
  std::atomic<uint64_t> injected{0}, inject_errors{0};
  std::atomic<uint64_t> hold_full{0};
  std::atomic<uint64_t> plugin_errors{0};
  std::atomic<uint64_t> clients_broken{0};  // client channels closed for a corrupt ring
};

class Plugin {
 public:
  static constexpr uint32_t kEventRings = 8;
  static constexpr uint64_t kRingBytes = uint64_t(1) << 21;
  static constexpr uint32_t kDefaultSnaplen = kMaxSnaplen;
  // Packets hook() decides in one pass: the switch's largest batch (NETDEV_MAX_BURST), and
  // the classifier's batch, whose arrays hook() keeps on its stack.
  static constexpr uint32_t kHookBatch = 32;
  static_assert(kHookBatch == matcher::kMaxBatch, "hook() hands the classifier whole batches");
  static_assert(kHookBatch == OVS_PACKET_HOOK_MAX_BATCH, "the switch's largest batch is decided in one pass");
  static constexpr uint32_t kMaxInjectTimes = 1000;

  // cache_flows: the size of each datapath thread's decision cache (0: no cache);
  // conns: the connection table's limits in all and per adapter (total 0: no connection
  // tracking; conn_tracking.h), made when connection rules first come into force.
  explicit Plugin(const ovs_packet_hook_host* host, uint32_t cache_flows = matcher::Classifier::kDefaultCacheFlows,
                  conntrack::Limits conns = {ConnTracking::kDefaultConns, ConnTracking::kDefaultConns});
  ~Plugin();

  // ---- Hook ABI (datapath and main threads) ----
  Port* port_open(const char* name, const char* type);
  void port_attach(Port* port, ovs_packet_hook_port_state* state);
  void port_close(Port* port);
  void hook(Port* port, matcher::Direction dir, ovs_packet_hook_batch* batch);

  // ---- Commands (main thread).  Each returns a reply text and sets *ok. ----
  std::string show() const;
  std::string rules_load(const std::string& path, bool* ok);
  // One rule changed without reloading the others: a rule as a JSON object (the rules
  // file's form), or KIND:ID (e.g. filter:5).
  std::string rule_add(const std::string& json_text, bool* ok);
  std::string rule_remove(const std::string& ref, bool* ok);
  std::string adapter_set(const std::string& port, const std::string& id, const std::string& vm, bool* ok);
  std::string policy_set(const std::string& name, bool* ok);
  std::string conn_list(bool* ok) const;
  nlohmann::json conn_stats() const;  // null when tracking is off
  // The agent's "connections": {"adapter"?: N, "id"?: N} -> {"tracking": bool,
  // "connections": [...]} (ConnTracking::list_json).
  nlohmann::json connections(const nlohmann::json& params) const;
  // The agent's "set_connection_state": {"id": N, "suspended": bool} -> {"found": bool}.
  nlohmann::json set_connection_state(const nlohmann::json& params);
  // The agent's "complete_connect_request": {"id": N, "allow": bool} -> {"found": bool}:
  // finishes the held SYN of connection N's pended request (sent on and the connection
  // allowed, or dropped and the connection blocked), whoever it was sent to.  Control thread.
  nlohmann::json complete_connect_request(const nlohmann::json& params);

  // ---- Agent (control thread).  Throw std::invalid_argument naming what is wrong. ----
  nlohmann::json attach(int pid);  // the agent said hello: start events
  void detach();                             // the agent is gone: release held packets
  bool attached() const { return attached_.load(std::memory_order_relaxed); }
  nlohmann::json set_rules(const nlohmann::json& params);
  // Some rules removed and some added, each at the tail or right before a rule of its group
  // ({"remove": [{"kind", "id"}], "add": [{"rule": {...}, "before": {"kind", "id"}}]}):
  // one snapshot, all or nothing.
  nlohmann::json change_rules(const nlohmann::json& params);
  nlohmann::json set_adapters(const nlohmann::json& params);
  nlohmann::json set_config(const nlohmann::json& params);
  nlohmann::json stats() const;
  nlohmann::json ports() const;

  // Client channels (clients.h): opened, changed and closed by the agent.  client_open
  // returns the region's memfd and the two eventfds in *fds (owned by the plugin: send,
  // do not close).
  nlohmann::json client_open(const nlohmann::json& params, std::vector<int>* fds);
  nlohmann::json client_set(const nlohmann::json& params);
  nlohmann::json client_close(const nlohmann::json& params);
  // The open channels' verdict eventfds, for the control thread's sleep; prepare_sleep
  // marks the plugin asleep in each channel and returns false if verdicts came meanwhile.
  std::vector<int> client_wait_fds() const;
  // Packets held for a verdict now.
  uint32_t held() const {
    uint32_t n = 0;
    for (const auto& r : rings_) n += r.holds->held();
    return n;
  }
  bool client_prepare_sleep();
  void client_woken();

  // Consumer side of the command ring: verdicts and injections.  Returns false if the
  // ring is corrupt (the agent must be detached).
  bool process_commands();
  // Consumer side of the client channels' verdict rings; a channel whose ring is corrupt
  // is closed.
  void process_client_verdicts();

  // Finishes held packets whose deadline passed.  Returns the nanoseconds until the
  // next deadline (UINT64_MAX: none).
  uint64_t expire_holds();

  void log(int level, const std::string& msg) const {
    host_->log(ovs_packet_hook_log_level(level), msg.c_str());
  }
  const channel::Region& region() const { return region_; }
  int events_fd() const { return events_efd_; }
  int commands_fd() const { return commands_efd_; }
  matcher::Classifier& classifier() { return classifier_; }
  const ChannelCounters& channel_counters() const { return cc_; }

 private:
  class BatchRun;  // one call of hook(): classify, apply each decision, finish (plugin.cc)
  void hook_slices(Port* port, matcher::Direction dir, ovs_packet_hook_batch* batch);
  struct EventRing {
    channel::Ring ring;
    std::unique_ptr<HoldTable> holds;
    std::atomic_flag busy = ATOMIC_FLAG_INIT;  // only the shared (last) ring uses it
  };

  // Which adapters, per direction (index: matcher::Direction), some rule can act on: how
  // many rules name every adapter, and each adapter; index 2: the connection rules (either
  // direction), whose adapters' connections are tracked.
  struct RuleScope {
    static constexpr int kConnections = 2;
    int64_t every[3] = {0, 0, 0};
    std::map<int32_t, int64_t> adapters[3];
    void add(const matcher::Rule& r, int sign = 1);
    bool covers(int32_t adapter, int dir) const { return adapter >= 0 && (every[dir] > 0 || adapters[dir].count(adapter)); }
    bool any_connections() const { return every[kConnections] > 0 || !adapters[kConnections].empty(); }
  };
  void set_scope(RuleScope scope) VPF_EXCLUDES(ports_mu_);  // and the ports' wants
  // Applies a change to the classifier (all or nothing; throws RuleError), with the ports'
  // wants widened before and narrowed after it.
  void change_rules(const std::vector<matcher::RuleRef>& removes, const std::vector<matcher::RuleAdd>& adds)
      VPF_REQUIRES(rules_mu_) VPF_EXCLUDES(ports_mu_);
  void update_want(Port& p) const VPF_REQUIRES(ports_mu_);
  static nlohmann::json counters_json(const LocalCounters& t);
  void replace_rules(const std::vector<matcher::Rule>& rules) VPF_EXCLUDES(rules_mu_);  // all or nothing
  int thread_slot();
  // Returns the packets a rule matched (bit i: out[i]).
  uint32_t classify(int slot, const matcher::PacketBatch& batch, matcher::Decision* out);
  RuleHits& hits(int slot);
  void apply_mapping(Port& p, const Mapping& m) VPF_REQUIRES(ports_mu_);
  void finish_hold(HoldSlot& s, channel::VerdictAction action, const uint8_t* data, uint32_t len);
  // A verdict record (`rec`, `len` bytes in the ring) from the agent (from == nullptr) or
  // from a client channel: checked, then applied to the packet held for it.
  void apply_verdict(const channel::RecordHeader* rec, uint32_t len, ClientChannel* from);
  // Takes a channel away: its held packets get its expiry action.
  void close_client(uint16_t route, const char* why);
  void close_client_holds(ClientChannel& ch);
  // Applies up to `budget` records of the channel's verdict ring; false if it is corrupt.
  bool read_verdicts(ClientChannel& ch, int budget);
  channel::VerdictAction expiry_of(const HoldSlot& s) const {
    return s.expiry ? channel::VerdictAction(s.expiry) : expiry_action();
  }
  void count_drop(Port& p, matcher::Direction dir, uint32_t len);
  void do_inject(const channel::Inject& rec, const uint8_t* data);
  // A packet back into the switch (outgoing: as received from the port) or out of the
  // port to the VM (incoming).  Control thread.
  int send_on(const std::string& port, matcher::Direction dir, ovs_packet* p);
  std::optional<std::string> port_of_adapter(uint32_t adapter) const VPF_EXCLUDES(ports_mu_);
  // Frees the closed ports that no held packet refers to any more (main and control
  // threads; cheap when there are none).
  void reap_closed_ports() VPF_EXCLUDES(ports_mu_);
  // A closed port leaves: its counters kept by name if the name is mapped, its per-thread
  // counters zeroed and its index freed for the next port.
  void retire(Port& p) VPF_REQUIRES(ports_mu_);
  channel::VerdictAction expiry_action() const {
    return deny_expired_.load() ? channel::VerdictAction::Drop : channel::VerdictAction::Send;
  }

  const ovs_packet_hook_host* host_;
  Mutex rules_mu_;  // one rule writer at a time; taken before ports_mu_
  matcher::Classifier classifier_;
  std::atomic<Policy> policy_{Policy::FailOpen};
  std::atomic<Mode> mode_{Mode::Filter};
  std::atomic<uint64_t> hold_timeout_ns_{0};  // 0: none
  std::atomic<bool> deny_expired_{true};
  std::atomic<bool> attached_{false};
  std::atomic<int> agent_pid_{0};

  mutable Mutex ports_mu_;  // the ports and what they want (not their counters: atomics)
  std::vector<std::unique_ptr<Port>> ports_ VPF_GUARDED_BY(ports_mu_);  // open
  std::vector<std::unique_ptr<Port>> closing_ VPF_GUARDED_BY(ports_mu_);  // closed, still holding packets
  std::atomic<uint32_t> closing_count_{0};  // closing_.size(), read without the lock
  std::vector<uint32_t> free_indices_ VPF_GUARDED_BY(ports_mu_);
  uint32_t next_index_ VPF_GUARDED_BY(ports_mu_) = 0;
  // What the adapters whose port went away had counted, by port name, while it is mapped.
  struct Retired {
    std::string type;
    LocalCounters out, in;
  };
  std::map<std::string, Retired> retired_ VPF_GUARDED_BY(ports_mu_);
  std::map<std::string, Mapping> mappings_ VPF_GUARDED_BY(ports_mu_);
  RuleScope scope_ VPF_GUARDED_BY(ports_mu_);  // of the rules in force (and, while rules change, of both sets)

  // One reader (and hit table) per thread that calls the hook (main, PMD and handler
  // threads); threads beyond kMaxThreads share one more under a mutex.
  static constexpr int kMaxThreads = 100;
  std::array<std::optional<matcher::Classifier::Reader>, kMaxThreads + 1> readers_;
  // The readers made so far, for other threads (their cache counters).
  std::array<std::atomic<const matcher::Classifier::Reader*>, kMaxThreads + 1> reader_ptrs_{};
  const uint32_t cache_flows_;
  // Connection tracking: the table's limits and size (0: off), and the table, made by the rules'
  // writer when connection rules first come into force (then kept: its connections
  // expire by themselves); the datapath reads the pointer.
  const conntrack::Limits conn_limits_;
  const uint32_t conns_size_;  // conn_limits_.total
  std::unique_ptr<ConnTracking> conns_owned_ VPF_GUARDED_BY(rules_mu_);
  std::atomic<ConnTracking*> conns_{nullptr};
  // The connection rules with flags that act on their connections (suspended: they start
  // suspended; indicate_connect_requests: a tcp_connect_request event for the VM's SYN),
  // as (id, flags), sorted by id; null when there are none.  Replaced by the rules' writer.
  using ConnFlags = std::vector<std::pair<uint32_t, uint32_t>>;
  static constexpr uint32_t kConnActing = matcher::nf_flag::kConnectionBuilt;
  std::atomic<std::shared_ptr<const ConnFlags>> conn_flags_;
  std::atomic<bool> conn_flags_any_{false};  // conn_flags_ is not null
  static uint32_t conn_flags_of(const ConnFlags& f, uint32_t rule_id);
  // conn_flags_ after a rule change: only the changed connection rules' entries are
  // touched (no walk of the whole rule set on every change).
  void update_conn_flags(const std::vector<matcher::RuleRef>& removes, const std::vector<matcher::RuleAdd>& adds)
      VPF_REQUIRES(rules_mu_);
  std::atomic<uint64_t> rules_gen_{1};          // moves on with every rule change (after it is in force)
  void open_reader(int slot);
  matcher::Classifier::CacheStats cache_stats() const;  // summed over the threads
  std::array<std::atomic<RuleHits*>, kMaxThreads + 1> hits_{};
  // Per thread (not the shared last slot): [port index * 2 + direction] for the first
  // kLocalPorts ports; other ports and the shared slot count into Port's atomics.
  static constexpr uint32_t kLocalPorts = 1024;
  std::array<std::atomic<LocalCounters*>, kMaxThreads> local_{};
  std::vector<std::unique_ptr<LocalCounters[]>> local_owned_ VPF_GUARDED_BY(hits_mu_);
  LocalCounters* local_counters(int slot, const Port& p, matcher::Direction dir);  // null: use Port's
  LocalCounters totals(const Port& p, matcher::Direction dir) const VPF_REQUIRES(ports_mu_);
  std::vector<std::unique_ptr<RuleHits>> hits_owned_ VPF_GUARDED_BY(hits_mu_);
  Mutex hits_mu_;      // a thread's first hit table or counters
  Mutex overflow_mu_;  // the shared reader of threads beyond kMaxThreads
  std::atomic<int> next_slot_{0};
  const uint64_t generation_;

  channel::Region region_;
  std::array<EventRing, kEventRings> rings_;
  int events_efd_ = -1;
  int commands_efd_ = -1;
  ChannelCounters cc_;
  ClientTable clients_;
  std::vector<std::shared_ptr<ClientChannel>> client_list_;  // control thread's copy
};

// Monotonic and real-time clocks in nanoseconds.
uint64_t mono_ns();
uint64_t real_ns();

}  // namespace vpf::plugin
