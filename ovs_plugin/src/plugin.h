// vportfilter's packet-hook plugin for Open vSwitch: the matcher at every VM port.
//
// Ports.  Every netdev is opened; a port is a VM port ("adapter") once it is given an
// adapter id (today with `ovs-appctl vportfilter/adapter-set PORT ID [VM]`; the agent
// will do it through its channel).  Packets of other ports pass untouched.
//
// Directions are the VM's: a batch OVS receives from the port is the VM's outgoing
// traffic; a batch OVS sends to the port is incoming.
//
// Rules.  One matcher Classifier holds every rule; rules name their adapter (or -1).  The
// writer is the main thread (commands); PMD and main threads classify concurrently, each
// with its own Classifier::Reader, without locks.
//
// Actions.  Drop drops; pass and passthrough pass.  Capture and notify need the agent;
// while none is attached, capture follows the policy (fail-open: pass, the default;
// fail-closed: drop) and notify passes the packet; both are counted as events lost.
//
// Thread-safety: rx()/tx() may run concurrently on any threads; counters are relaxed
// atomics; adapter ids are atomics written by the main thread.
#pragma once

#include <openvswitch/packet-hook.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "vpf/matcher/classifier.h"

namespace vpf::plugin {

struct DirCounters {
  std::atomic<uint64_t> packets{0}, bytes{0}, dropped{0}, dropped_bytes{0};
  std::atomic<uint64_t> events_lost{0};  // capture/notify with no agent attached
};

struct Port {
  std::string name;
  std::string type;
  std::atomic<int32_t> adapter{-1};  // -1: not a VM port
  std::atomic<uint32_t> vm{0};
  DirCounters out;  // from the VM (OVS receives)
  DirCounters in;   // to the VM (OVS sends)
};

enum class Policy { FailOpen, FailClosed };

class Plugin {
 public:
  explicit Plugin(const ovs_packet_hook_host* host);
  ~Plugin();

  // Hook ABI.
  Port* port_open(const char* name, const char* type);
  void port_close(Port* port);
  void hook(Port* port, matcher::Direction dir, ovs_packet_hook_batch* batch);

  // Commands (main thread).  Each returns a reply text and sets *ok.
  std::string show() const;
  std::string rules_load(const std::string& path, bool* ok);
  std::string adapter_set(const std::string& port, const std::string& id, const std::string& vm, bool* ok);
  std::string policy_set(const std::string& name, bool* ok);

  matcher::Classifier& classifier() { return classifier_; }

 private:
  void classify(const matcher::PacketRef* refs, uint32_t n, matcher::Decision* out);

  const ovs_packet_hook_host* host_;
  matcher::Classifier classifier_;
  std::atomic<Policy> policy_{Policy::FailOpen};
  mutable std::mutex ports_mu_;  // guards ports_ (the list, not the counters)
  std::vector<std::unique_ptr<Port>> ports_;

  // One reader per thread that calls the hook (main, PMD and handler threads); threads
  // beyond kMaxThreads share one more reader under a mutex.
  static constexpr int kMaxThreads = 100;
  std::array<std::optional<matcher::Classifier::Reader>, kMaxThreads + 1> readers_;
  std::mutex overflow_mu_;
  std::atomic<int> next_reader_{0};
  const uint64_t generation_;
};

}  // namespace vpf::plugin
