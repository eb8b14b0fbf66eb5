// A netdev as the plugin sees it, and the counters it keeps per adapter and direction.
//
// Lifetime.  The switch opens a Port for every netdev (port_open) and closes it when the
// netdev goes away (port_close); after that no datapath thread calls the hook for it.
// A closed Port is freed as soon as no held packet refers to it (`holds`: a held packet
// is sent back through its port, or counted as dropped there), so the plugin keeps only
// the ports that exist.  Its index (the slot of its per-thread counters) is then free for
// the next port.  What a closed adapter had counted is kept by name as long as the agent
// maps that name (Plugin::Retired), and a port of that name that comes back goes on from
// there.
#pragma once

#include <openvswitch/packet-hook.h>

#include <atomic>
#include <cstdint>
#include <string>

namespace vpf::plugin {

// The counters of an adapter and direction, and their names in `show` and `stats`.
enum Counter : int {
  kPackets, kBytes,              // every packet of the adapter
  kFilterPackets, kFilterBytes,  // matched a filter rule
  kDropped, kDroppedBytes,
  kEvents,      // notify copies and captures written
  kEventsLost,  // no agent, full ring or no hold slot
  kCounters
};
inline constexpr const char* kCounterNames[kCounters] = {"packets", "bytes",         "filter_packets", "filter_bytes",
                                                         "dropped", "dropped_bytes", "events",         "events_lost"};

// Shared by every thread: atomic adds.
struct DirCounters {
  std::atomic<uint64_t> v[kCounters] = {};
};

// One datapath thread's counters of one port and direction: written by that thread only,
// with plain stores (no locked instruction per batch), read by others with relaxed loads.
struct alignas(64) LocalCounters {
  uint64_t v[kCounters];
};
static_assert(sizeof(LocalCounters) == 64);

struct Port {
  uint32_t index = 0;  // of its per-thread counters; reused once the port is freed
  std::string name;
  std::string type;
  std::atomic<bool> open{true};
  // The switch's view of the port (ABI 3): which batches the hook gets, and the packets
  // and bytes the switch counted for the batches it kept.  Guarded by the plugin's
  // ports_mu_; null before port_attach and after port_close.
  ovs_packet_hook_port_state* state = nullptr;
  std::atomic<int32_t> adapter{-1};  // -1: not a VM port
  std::atomic<uint32_t> vm{0};
  std::atomic<uint32_t> snaplen{0};  // bytes of a notify copy; 0: kDefaultSnaplen
  // Connection rules are in force on the adapter: its connections are tracked (both
  // directions come to the hook, the switch remembers none of its passes).
  std::atomic<bool> tracked{false};
  DirCounters out;  // from the VM (OVS receives)
  DirCounters in;   // to the VM (OVS sends)
  // Packets held for a verdict that refer to this port (HoldTable keeps it).
  std::atomic<uint32_t> holds{0};
};

}  // namespace vpf::plugin
