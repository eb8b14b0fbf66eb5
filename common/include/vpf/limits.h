// Limits that every layer of vportfilter shares (matcher, switch plugin, agent, library,
// CLI, console).  Header only; the target `vpf_common` carries its include path.
#pragma once

#include <cstdint>

namespace vpf {

// The most bytes of one packet that vportfilter ever looks at, copies into an event or
// writes to a capture file, and the snapshot length BPF expressions are compiled for:
// libpcap's own maximum (MAXIMUM_SNAPLEN), so an expression means here what it means to
// tcpdump.  An adapter's max_packet_bytes (an event's snaplen) is 1..kMaxSnaplen, and
// kMaxSnaplen when not set.
inline constexpr uint32_t kMaxSnaplen = 262144;

}  // namespace vpf
