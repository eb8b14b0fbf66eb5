// libFuzzer harness: the plugin's checks of the records an agent writes into its command
// ring (verdicts for held packets, packets to inject), on the plugin itself with a host of
// the harness's own (as the unit tests drive it).  For each input the plugin is attached,
// four packets of a capture rule are held (their capture ids read from the event rings as
// the agent reads them), and the input becomes records: per record a type byte (verdict,
// inject or anything), a length, a flag that puts one of the real capture ids first, and
// the bytes.  They are pushed into the command ring and processed (a ring found corrupt
// is the agent's end, as in the switch); then the agent
// detaches (every packet still held gets its expiry action).  A finding: a crash or
// sanitizer report; a packet still held after the detach; a packet leaked or freed twice
// (the host counts the packets alive); a counter of applied verdicts past the packets held.
#include <openvswitch/packet-hook.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "plugin.h"

using vpf::plugin::Plugin;
using vpf::plugin::Port;
namespace channel = vpf::channel;

namespace {

struct Packet {
  std::vector<uint8_t> bytes;
};
Packet* pk(const ovs_packet* p) { return reinterpret_cast<Packet*>(const_cast<ovs_packet*>(p)); }
long g_alive = 0;  // packets the harness or the plugin made and nobody freed yet

ovs_packet* make(const uint8_t* d, uint32_t len) {
  ++g_alive;
  return reinterpret_cast<ovs_packet*>(new Packet{std::vector<uint8_t>(d, d + len)});
}
void drop(ovs_packet* p) {
  --g_alive;
  delete pk(p);
}

ovs_packet_hook_host host() {
  ovs_packet_hook_host h{};
  h.size = sizeof h;
  h.version = OVS_PACKET_HOOK_ABI_VERSION;
  h.log = [](ovs_packet_hook_log_level, const char*) {};
  h.packet_data = [](const ovs_packet* p) -> const uint8_t* { return pk(p)->bytes.data(); };
  h.packet_size = [](const ovs_packet* p) { return uint32_t(pk(p)->bytes.size()); };
  h.packet_data_writable = [](ovs_packet* p) { return pk(p)->bytes.data(); };
  h.packet_replace = [](ovs_packet* p, const void* d, uint32_t len) -> ovs_packet* {
    if (len < 14 || len > 65535) return nullptr;
    auto* b = static_cast<const uint8_t*>(d);
    pk(p)->bytes.assign(b, b + len);
    return p;
  };
  h.packet_new = [](const void* d, uint32_t len) { return make(static_cast<const uint8_t*>(d), len); };
  h.packet_free = drop;
  h.inject = [](const char*, ovs_packet_hook_dir, ovs_packet* p) {
    drop(p);
    return 0;
  };
  h.register_command = [](const char*, const char*, int, int, ovs_packet_hook_command_func*, void*) { return 0; };
  h.command_reply = [](ovs_packet_hook_reply*, int, const char*) {};
  h.send_now = [](const char*, ovs_packet* p) {
    drop(p);
    return 0;
  };
  return h;
}

const ovs_packet_hook_host kHost = host();

// A DNS query from the VM: the capture rule's packet.
std::vector<uint8_t> dns_frame() {
  std::vector<uint8_t> f(60, 0);
  const uint8_t head[] = {0x52, 0x54, 0, 0, 0, 2, 0x52, 0x54, 0, 0, 0, 1, 0x08, 0x00,         // Ethernet
                          0x45, 0, 0, 46, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,  // IPv4, UDP
                          0x13, 0x88, 0, 53, 0, 26, 0, 0};                                     // 5000 -> 53
  std::memcpy(f.data(), head, sizeof head);
  return f;
}

struct World {
  Plugin plugin{&kHost, 0};
  Port* port = nullptr;
  World() {
    port = plugin.port_open("vm1", "system");
    plugin.set_adapters({{"adapters", {{{"port", "vm1"}, {"adapter", 0}}}}});
    plugin.set_rules({{"rules", {{{"kind", "filter"}, {"id", 1}, {"bpf", "udp dst port 53"}, {"action", "capture"}}}}});
  }
};

// Holds four packets; returns their capture ids (read from the event rings).
std::vector<uint64_t> hold_four(World& w) {
  const std::vector<uint8_t> f = dns_frame();
  ovs_packet* pkts[4];
  const uint8_t* data[4];
  uint32_t len[4];
  uint8_t verdicts[4] = {};
  for (int i = 0; i < 4; ++i) {
    pkts[i] = make(f.data(), uint32_t(f.size()));
    data[i] = pk(pkts[i])->bytes.data();
    len[i] = uint32_t(f.size());
  }
  ovs_packet_hook_batch b{sizeof b, OVS_PACKET_HOOK_ABI_VERSION, 4, pkts, verdicts, data, len};
  w.plugin.hook(w.port, vpf::matcher::Direction::Outgoing, &b);
  for (int i = 0; i < 4; ++i)
    if (verdicts[i] != OVS_PACKET_TAKEN) drop(pkts[i]);  // the switch's: passed or dropped
  std::vector<uint64_t> ids;
  for (uint32_t r = 0; r < Plugin::kEventRings; ++r) {
    channel::Ring ring = w.plugin.region().ring(r);
    const channel::RecordHeader* rec;
    uint32_t n;
    while (ring.peek(&rec, &n) == channel::Ring::Status::Ok) {
      channel::PacketEvent e;
      if (n >= sizeof e) {
        std::memcpy(&e, rec, sizeof e);
        if (e.h.type == channel::kCapture) ids.push_back(e.capture_id);
      }
    }
    ring.release();
  }
  return ids;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static World* w = new World;  // one plugin for the whole run, as in the switch
  if (size > 4096) return 0;
  w->plugin.attach(getpid());
  const std::vector<uint64_t> ids = hold_four(*w);
  if (ids.size() != 4 || w->plugin.held() != 4) std::abort();
  const uint64_t verdicts_before = w->plugin.channel_counters().verdicts.load();
  channel::Ring cmd = w->plugin.region().command_ring();
  size_t off = 0;
  while (off + 4 <= size) {
    const uint8_t kind = data[off];
    const uint32_t want = data[off + 1] | uint32_t(data[off + 2] & 0x7) << 8;
    const bool real_id = data[off + 3] & 1;
    off += 4;
    const uint32_t n = uint32_t(std::min<size_t>(want, size - off));
    std::vector<uint8_t> body(std::max<size_t>(n, 24), 0);
    std::memcpy(body.data(), data + off, n);
    off += n;
    const uint16_t type = kind % 3 == 0 ? channel::kVerdict : kind % 3 == 1 ? channel::kInject : uint16_t(kind);
    if (type == channel::kVerdict && real_id) std::memcpy(body.data() + 8, &ids[kind / 3 % 4], 8);
    // The record's own header (8 bytes) is the ring's; the body follows it, as a writer's.
    if (!cmd.push(type, body.data(), uint32_t(std::max<uint32_t>(n, 8)), nullptr, 0)) break;
  }
  // A record whose type is the ring's padding makes the ring corrupt (false): the control
  // thread then drops the agent, as the detach below does.
  (void)w->plugin.process_commands();
  if (w->plugin.channel_counters().verdicts.load() - verdicts_before > 4) std::abort();
  w->plugin.detach();
  if (w->plugin.held() != 0) std::abort();
  if (g_alive != 0) std::abort();
  return 0;
}
