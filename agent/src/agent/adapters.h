// Adapters: the VM-facing interfaces of Open vSwitch, as the seed's "adapters".
//
// An Interface row counts as a VM port when its type is one of `vm_types` (default: ""
// and "system" (AF_PACKET), "tap", "afxdp", "dpdk", "dpdkvhostuser",
// "dpdkvhostuserclient", "dummy", "dummy-pmd"; never "internal", "patch" or a tunnel)
// and its bridge uses the userspace datapath (datapath_type "netdev" or "dummy"), the only
// one the plugin sees.  Its identity ("key") is external_ids:iface-id when set (a VM's
// port keeps it when it is re-created), else the interface name.  Adapter ids are kept in
// the vportfilter database's Adapter table by key, so they survive agent and switch
// restarts; a new key takes the smallest id not in use.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "vpf/limits.h"

namespace vpf::agent {

struct Adapter {
  int32_t id = -1;
  std::string key;            // iface-id or name
  std::string name;           // the Interface name (= the netdev the plugin sees)
  std::string type;           // the Interface type ("" shows as "system")
  std::string description;    // "<type> port <name> on bridge <bridge>"
  std::string friendly_name;  // external_ids:vm-name, else iface-id, else name
  std::string mac;            // attached-mac or mac_in_use, hyphen-separated
  uint32_t vm = 0;            // external_ids:vm-id (a number), 0 = unknown
  std::string bridge;
  // Per-adapter settings kept in the Adapter table (max_packet_bytes, collect_statistics,
  // buffer_size, packet_timeout), as text.
  std::map<std::string, std::string> settings;
  static constexpr int64_t kDefaultMaxPacketBytes = kMaxSnaplen;
  uint32_t max_packet_bytes() const;  // the snaplen of events
  bool collect_statistics() const;
  nlohmann::json to_json() const;
};

// The Open_vSwitch database's Bridge/Port/Interface rows, as a monitor keeps them.
struct OvsView {
  std::map<std::string, nlohmann::json> bridges, ports, interfaces;  // uuid -> row
  // Applies a monitor update ({table: {uuid: {"old":..., "new":...}}}).
  void apply(const nlohmann::json& updates);
};

std::set<std::string> default_vm_types();
std::string hyphen_mac(const std::string& colon_mac);

// The VM ports of `view` by key (ids not yet assigned: -1).
std::map<std::string, Adapter> vm_ports(const OvsView& view, const std::set<std::string>& vm_types);

// The smallest id >= 0 not in `used`.
int32_t smallest_free_id(const std::set<int32_t>& used);

}  // namespace vpf::agent
