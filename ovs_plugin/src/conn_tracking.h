// The plugin's connection tracking (docs/connections.md): a conntrack::Tracker fed with
// the packets of every VM port that a batch lets through, in both directions; swept in
// small steps by the datapath threads themselves (no thread of its own); listed by
// `ovs-appctl vportfilter/conn-list` and counted in `vportfilter/stats`.
//
// On with the plugin argument conns=N (the table's size); off by default.  While it is
// on, every VM port hands the plugin both directions (the tracker must see the replies)
// and the switch remembers no pass of the plugin's (hook ABI 6): every packet is followed.
// The rules do not yet use what it tracks.
//
// Thread-safety: follow() on any datapath threads at once; list() and stats() on any.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "vpf/conntrack/tracker.h"

namespace vpf::plugin {

class ConnTracking {
 public:
  static constexpr uint32_t kMaxConns = 1000000;
  explicit ConnTracking(uint32_t max_conns);

  // The n packets of one batch of adapter `adapter` (VM `vm`) in direction `dir`; those
  // whose verdict is `dropped` are not followed (a blocked packet opens nothing).
  void follow(const uint8_t* const* data, const uint32_t* len, const uint8_t* verdicts, uint8_t dropped, uint32_t n,
              uint32_t adapter, uint32_t vm, matcher::Direction dir, uint64_t now_ns);

  // One line per connection, by id: "id=… adapter=… vm=… tcp|udp LOCAL:PORT -> REMOTE:PORT
  // opened=outgoing|incoming state=… packets=OUT/IN bytes=OUT/IN" (OUT: opener → peer).
  std::string list() const;
  nlohmann::json stats() const;

 private:
  conntrack::Tracker tracker_;
  std::atomic<uint64_t> last_sweep_{0};
};

}  // namespace vpf::plugin
