// A vpf::NetFilter application for the VM tests: holds the UDP datagrams to port 4100
// that reach ADAPTER and decides by the first payload byte:
//   's' SEND, 'd' DROP, 'm' SEND_MODIFIED with the payload's 'm' bytes made 'M',
//   'p' SEND_MODIFIED to port 4101, 'b' SEND_MODIFIED 100 bytes larger (asks for the
//   larger buffer first: the ERROR_INSUFFICIENT_BUFFER re-fire).
// Checksums (IPv4 header, UDP) are recomputed, so the receiving kernel accepts the result.
// With "stat" it runs the same rule (and a drop rule for port 4102) in statistics mode instead and prints each of
// ADAPTER's on_statistics events: "stat total|filter RECEIVED_PACKETS SENT_PACKETS
// DROPPED_IN DROPPED_OUT" (and any packet event, which must not come, as "event").
// With "capture EXPR send|drop|hold" it holds what the libpcap expression EXPR matches on
// its way into ADAPTER and gives every packet that verdict ("event send|drop|hold size N");
// hold: the handler never returns (a hung application).
// With "inject HEX INSERT_ADAPTER" it sends the frame HEX as if ADAPTER's VM sent it:
// twice into the send buffer ("buffered"), SECONDS later flush_send_buffer ("flushed"),
// then 3 times at once with num_times, and once with insert_incoming_packet into
// INSERT_ADAPTER's VM ("sent").
// With "pend PORT allow|block|hold" it adds an NF_RULE pending the VM's TCP connections to
// PORT (NF_PEND_CONNECT_REQUEST) and completes each request so ("request ID allow|block|
// hold" per request; hold: left pending, for vpfctl conn complete).
// usage: vm_capture_client GUID ADAPTER SECONDS [stat | capture EXPR send|drop|hold |
//                                                inject HEX INSERT_ADAPTER | pend PORT allow|block|hold]
//        (prints "ready", then a line per event)
#include <arpa/inet.h>
#include <netinet/in.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "vpf/netfilter.h"

namespace {

uint16_t fold(uint32_t s) {
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return uint16_t(~s);
}
uint32_t sum16(const uint8_t* p, size_t n, uint32_t s = 0) {
  for (size_t i = 0; i + 1 < n; i += 2) s += uint32_t(p[i] << 8 | p[i + 1]);
  if (n & 1) s += uint32_t(p[n - 1] << 8);
  return s;
}
// Fixes the IPv4 header and UDP checksums of an Ethernet/IPv4/UDP frame of `len` bytes.
void fix(uint8_t* f, size_t len) {
  uint8_t* ip = f + 14;
  const size_t ihl = size_t(ip[0] & 15) * 4;
  const uint16_t total = uint16_t(len - 14);
  ip[2] = uint8_t(total >> 8), ip[3] = uint8_t(total);
  ip[10] = ip[11] = 0;
  const uint16_t ipc = fold(sum16(ip, ihl));
  ip[10] = uint8_t(ipc >> 8), ip[11] = uint8_t(ipc);
  uint8_t* udp = ip + ihl;
  const uint16_t ulen = uint16_t(total - ihl);
  udp[4] = uint8_t(ulen >> 8), udp[5] = uint8_t(ulen);
  udp[6] = udp[7] = 0;
  uint32_t s = sum16(ip + 12, 8) + 17 + ulen;
  uint16_t c = fold(sum16(udp, ulen, s));
  if (c == 0) c = 0xffff;
  udp[6] = uint8_t(c >> 8), udp[7] = uint8_t(c);
}

}  // namespace

// Filters for `seconds` (prints "ready" once started).
static void filter_for(vpf::NetFilter& nf, int seconds) {
  nf.start_filter(0);
  std::printf("ready\n");
  std::fflush(stdout);
  std::this_thread::sleep_for(std::chrono::seconds(seconds));
  nf.stop_filter();
}

int main(int argc, char** argv) {
  const bool stat = argc == 5 && std::strcmp(argv[4], "stat") == 0;
  const bool fixed = argc == 7 && std::strcmp(argv[4], "capture") == 0 &&
                     (std::strcmp(argv[6], "send") == 0 || std::strcmp(argv[6], "drop") == 0 ||
                      std::strcmp(argv[6], "hold") == 0);
  const bool inject = argc == 7 && std::strcmp(argv[4], "inject") == 0;
  const bool pend = argc == 7 && std::strcmp(argv[4], "pend") == 0;
  if (argc < 4 || (argc > 4 && !stat && !fixed && !inject && !pend)) {
    std::fprintf(stderr,
                 "usage: vm_capture_client GUID ADAPTER SECONDS [stat | capture EXPR send|drop|hold | inject HEX "
                 "INSERT_ADAPTER | pend PORT allow|block|hold]\n");
    return 2;
  }
  try {
    vpf::NetFilter nf;
    nf.initialize(argv[1]);
    const int adapter = std::atoi(argv[2]);
    if (inject) {
      std::vector<uint8_t> frame;
      for (const char* h = argv[5]; h[0] && h[1]; h += 2) frame.push_back(uint8_t(std::stoi(std::string(h, 2), nullptr, 16)));
      nf.send_packet(adapter, frame, 2, true);
      std::printf("buffered\n");
      std::fflush(stdout);
      std::this_thread::sleep_for(std::chrono::seconds(std::atoi(argv[3])));
      nf.flush_send_buffer(adapter);
      std::printf("flushed\n");
      std::fflush(stdout);
      nf.send_packet(adapter, frame, 3, false);
      nf.insert_incoming_packet(std::atoi(argv[6]), frame);
      std::printf("sent\n");
      return 0;
    }
    if (pend) {
      const std::string how = argv[6];
      nf.on_tcp_connect_request = [how](vpf::ConnectionEventParams& e) {
        e.filtering_flag = how == "allow" ? vpf::kNfAllow : how == "block" ? vpf::kNfBlock : vpf::kNfPendConnectRequest;
        std::printf("request %llu %s\n", static_cast<unsigned long long>(e.connection.id), how.c_str());
        std::fflush(stdout);
      };
      nf.nf_delete_rules();
      vpf::NfRule r;
      r.protocol = IPPROTO_TCP;
      r.direction = vpf::kNfDirectionOut;
      r.remote_port = htons(uint16_t(std::atoi(argv[5])));
      r.filtering_flag = vpf::kNfAllow | vpf::kNfPendConnectRequest;
      nf.nf_add_rule(r, true);
      filter_for(nf, std::atoi(argv[3]));
      nf.nf_delete_rules();
      return 0;
    }
    const bool drop_all = fixed && std::strcmp(argv[6], "drop") == 0;
    const bool hang = fixed && std::strcmp(argv[6], "hold") == 0;
    nf.on_packet = [fixed, drop_all, hang](vpf::PacketEventParams& e) {
      if (hang) {
        std::printf("event hold size %d\n", e.data_size);
        std::fflush(stdout);
        for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
      }
      if (fixed) {
        e.action = drop_all ? vpf::kPacketActionDrop : vpf::kPacketActionSend;
        std::printf("event %s size %d\n", drop_all ? "drop" : "send", e.data_size);
        std::fflush(stdout);
        return;
      }
      const size_t ihl = size_t(e.buffer[14] & 15) * 4;
      const size_t payload = 14 + ihl + 8;
      const char what = e.data_size > int(payload) ? char(e.buffer[payload]) : '?';
      switch (what) {
        case 'd': e.action = vpf::kPacketActionDrop; break;
        case 'm':
          for (int i = int(payload); i < e.data_size; ++i)
            if (e.buffer[size_t(i)] == 'm') e.buffer[size_t(i)] = 'M';
          fix(e.buffer.data(), size_t(e.data_size));
          e.action = vpf::kPacketActionSendModified;
          break;
        case 'p':
          e.buffer[14 + ihl + 2] = 4101 >> 8, e.buffer[14 + ihl + 3] = 4101 & 0xff;
          fix(e.buffer.data(), size_t(e.data_size));
          e.action = vpf::kPacketActionSendModified;
          break;
        case 'b': {
          const int want = e.packet_size + 100;
          if (int(e.buffer.size()) < want) {
            e.data_size = want;
            e.result_code = vpf::kErrorInsufficientBuffer;
            std::printf("refire %d\n", want);
            return;
          }
          std::memset(e.buffer.data() + e.data_size, 'B', size_t(want - e.data_size));
          e.data_size = want;
          fix(e.buffer.data(), size_t(want));
          e.action = vpf::kPacketActionSendModified;
          break;
        }
        default: e.action = vpf::kPacketActionSend;
      }
      std::printf("event %c action %d size %d\n", what, e.action, e.data_size);
      std::fflush(stdout);
    };
    nf.on_statistics = [adapter](vpf::StatisticsEventParams& e) {
      if (e.adapter_id != adapter) return;
      std::printf("stat %s %llu %llu %llu %llu\n", e.filter_specific ? "filter" : "total",
                  static_cast<unsigned long long>(e.packets_received), static_cast<unsigned long long>(e.packets_sent),
                  static_cast<unsigned long long>(e.packets_dropped_inbound),
                  static_cast<unsigned long long>(e.packets_dropped_outbound));
      std::fflush(stdout);
    };
    nf.delete_all_filter_rules();  // what a killed run of this instance may have left
    nf.add_filter_rule(1, adapter, vpf::kDirectionIncoming, -1, -1, fixed ? argv[5] : "udp dst port 4100",
                       vpf::kRuleActionCapture);
    if (stat) {  // and a drop rule, which drops in either mode
      nf.add_filter_rule(2, adapter, vpf::kDirectionIncoming, -1, -1, "udp dst port 4102", vpf::kRuleActionDrop);
      nf.set_operation_mode(vpf::OperationMode::Stat);
    }
    filter_for(nf, std::atoi(argv[3]));
    nf.delete_all_filter_rules();
    return 0;
  } catch (const vpf::NetFilterError& e) {
    std::fprintf(stderr, "vm_capture_client: %s (error %d)\n", e.what(), e.code());
    return 1;
  }
}
