// vportfilter client library: the NetFilter API for VM ports.
//
// A vpf::NetFilter talks to vpf-agent over its unix socket (docs/protocol.md).  One object
// is one instance (the product GUID given to initialize()): its filter and passthrough
// rules, its events, its settings.  The shape follows the NetFilter reference API:
//
//   vpf::NetFilter nf;                       // install(...) once, as root, beforehand
//   nf.initialize("{1FAD0EF2-9A03-4B87-B4BC-645B7035ED90}");
//   nf.list_adapters();                      // adapters: VM ports of Open vSwitch
//   nf.add_filter_rule(1, -1, vpf::kDirectionAny, -1, -1, "tcp port 23", vpf::kRuleActionCapture);
//   nf.on_packet = [](vpf::PacketEventParams& e) { e.action = vpf::kPacketActionDrop; };
//   nf.start_filter(0);
//   ...
//   nf.stop_filter();
//
// Errors: every method that fails throws vpf::NetFilterError, whose code() is the
// reference API's error code (kErrorNotReady before initialize, kErrorConnectionActive when
// started twice, kErrorImplementationLimit for a bad timeout, ...) and whose what() names
// what was wrong.  Methods the reference documents as returning a bool return true on
// success and throw otherwise; delete_*_rule returns false when no such rule exists.
//
// Threads: events run on worker threads (MinWorkerThreadCount..MaxWorkerThreadCount, or
// one thread with serialize_events = 1), never on the caller's thread.  Rule methods are
// not meant to be called from several threads at once (as in the reference API); other
// methods may be called from any thread, also from event handlers, except start_filter,
// stop_filter, install and uninstall.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "vpf/limits.h"
#include "vpf/protocol.h"

namespace vpf {

// Directions (the VM's).
inline constexpr int kDirectionOutgoing = 0;
inline constexpr int kDirectionIncoming = 1;
inline constexpr int kDirectionAny = 2;
// Filter rule actions.
inline constexpr int kRuleActionDrop = 1;
inline constexpr int kRuleActionCapture = 2;
inline constexpr int kRuleActionNotify = 3;
inline constexpr int kRuleActionCount = 4;  // extension: counted (rule hits, filter-specific statistics), passes
// on_packet verdicts.
inline constexpr int kPacketActionDrop = 1;
inline constexpr int kPacketActionSend = 2;
inline constexpr int kPacketActionSendModified = 3;
// get_driver_status results.
inline constexpr int kModuleStatusNotPresent = 0;
inline constexpr int kModuleStatusStopped = 1;
inline constexpr int kModuleStatusRunning = 4;
// Packet types of events.
inline constexpr int kDltEn10mb = 1;
inline constexpr int kDltRaw = 12;
inline constexpr int kDltIpv4 = 228;
inline constexpr int kDltIpv6 = 229;
// Error codes: vpf::ErrorCode (kErrorNotReady, ...) in vpf/protocol.h.
// install flags.
inline constexpr int kInstallForceAppPermissionCheck = 0x00020000;

enum class OperationMode { Capture = 0, Stat = 1 };

class NetFilterError : public std::runtime_error {
 public:
  NetFilterError(int code, const std::string& what) : std::runtime_error(what), code_(code) {}
  int code() const { return code_; }

 private:
  int code_;
};

struct Adapter {
  int id = 0;
  std::string name, description, friendly_name, mac_address;  // MAC hyphen-separated
  std::string key, ovs_type, bridge;
  uint32_t vm = 0;
  int interface_type = 6;  // IANA ifType: ethernetCsmacd
  int buffer_size = 1024, max_packet_bytes = int(kMaxSnaplen), packet_timeout = 1000;
  bool collect_statistics = true;
  bool promiscuous_mode = false, wifi_monitor_mode = false, wifi_monitor_mode_supported = false;
};

struct FilterRule {
  uint32_t rule_id = 0;
  int adapter_id = -1, direction = kDirectionAny, min_packet_size = -1, max_packet_size = -1;
  std::string bpf_rule;
  int action = kRuleActionDrop;  // filter rules only
};

// The NF_RULE shape: ports and addresses in network byte order, as in the reference.
struct NfRule {
  int protocol = 0;            // IPPROTO_TCP, IPPROTO_UDP, ...; 0 = any
  unsigned long process_id = 0;  // the VM's id (external_ids:vm-id of its port); 0 = any
  unsigned char direction = 0;   // kNfDirectionIn / Out / Both; 0 = any
  unsigned short local_port = 0, remote_port = 0;
  unsigned short ip_family = 0;  // AF_INET, AF_INET6; 0 = addresses unused
  unsigned char local_ip[16] = {}, local_mask[16] = {}, remote_ip[16] = {}, remote_mask[16] = {};
  unsigned long filtering_flag = 0;  // NF_ALLOW 0, NF_BLOCK 1, NF_FILTER 2, ...
};
// NF_RULE filtering flags a connect request is completed with (NfRule::filtering_flag has
// them all).
inline constexpr unsigned long kNfAllow = 0;
inline constexpr unsigned long kNfBlock = 1;
inline constexpr unsigned long kNfPendConnectRequest = 64;
inline constexpr unsigned char kNfDirectionIn = 1;   // to the VM
inline constexpr unsigned char kNfDirectionOut = 2;  // from the VM
inline constexpr unsigned char kNfDirectionBoth = 3;

// A TCP connection or UDP flow the plugin follows (docs/connections.md); local is the
// VM's side, ports in host byte order, counters from the VM's point of view.
struct ConnectionInfo {
  uint64_t id = 0;
  int adapter_id = 0;
  uint32_t vm = 0;
  int protocol = 0;   // IPPROTO_TCP or IPPROTO_UDP
  int ip_family = 0;  // AF_INET or AF_INET6
  std::string local_address, remote_address;
  unsigned short local_port = 0, remote_port = 0;
  unsigned char direction = 0;  // kNfDirectionOut: the VM opened it; kNfDirectionIn: the peer did
  std::string state;            // TCP: syn_sent ... time_wait, closed; UDP: unreplied, replied
  uint64_t packets_sent = 0, bytes_sent = 0, packets_received = 0, bytes_received = 0;
  uint64_t age_ms = 0, idle_ms = 0;
  bool suspended = false;  // its packets raise no events of its connection rule (set_connection_state)
  bool pending = false;    // its connect request waits to be completed (complete_tcp_connect_request)
};

// A connection as the agent's list_connections gives it (docs/protocol.md); throws
// NetFilterError(kErrorInvalidParameter) for an object that is not one.
ConnectionInfo connection_of(const nlohmann::json& j);

// ---- event parameters ----
struct AdapterEventParams {
  int adapter_id;
};
struct ErrorEventParams {
  int error_code;
  std::string description;
};
struct NotifyPacketEventParams {
  int adapter_id;
  std::chrono::system_clock::time_point timestamp;  // to the millisecond
  int64_t timestamp_ns;                             // nanoseconds since that millisecond
  int packet_type, direction, packet_size;
  std::span<const uint8_t> data;
  int ip_offset, ip_size;
  uint32_t rule_id;
  int result_code = 0;
};
struct PacketEventParams {
  int adapter_id;
  std::chrono::system_clock::time_point timestamp;
  int64_t timestamp_ns;
  int packet_type, direction, packet_size;
  std::span<uint8_t> buffer;  // buffer.size() is the reference API's BufferSize
  int data_size;              // bytes of the packet in buffer; set it for SEND_MODIFIED
  int ip_offset, ip_size;
  uint32_t rule_id;
  int action = kPacketActionSend;
  int result_code = 0;  // kErrorInsufficientBuffer with data_size > buffer.size(): fired again
};
struct StatisticsEventParams {
  int adapter_id;
  bool filter_specific;
  std::chrono::system_clock::time_point time_stamp;
  uint64_t packets_received, bytes_received, packets_sent, bytes_sent;
  uint64_t packets_dropped_inbound, bytes_dropped_inbound, packets_dropped_outbound, bytes_dropped_outbound;
};
// A connection event (docs/connections.md): the connection rule of this instance that
// governs the connection has the filter flag (its packets captured) or filter_as_ip_packets
// with readonly (notified).  connection: as when the event was raised (state established
// or closed for TCP, unreplied or closed for UDP, syn_sent for a connect request; idle_ms
// 0).  A connect request (the reference's tcpConnectRequest) comes for the VM's SYN that
// opens a TCP connection under a rule with indicate_connect_requests, whatever its action
// (it informs: the SYN goes on as the rule decides), or pend_connect_request: then the
// SYN is held until the request is completed (request_id is not 0).  The handler
// completes it by leaving filtering_flag kNfAllow (the SYN goes on, the connection is
// allowed) or setting kNfBlock (the SYN is dropped, the connection blocked), or leaves it
// pending with kNfPendConnectRequest, to complete it later with
// complete_tcp_connect_request.  Without a handler, or past the instance's timeout, it
// gets what an expired capture gets (DenyExpiredRequests: blocked; else allowed).
inline constexpr int kTcpConnected = 1, kTcpClosed = 2, kUdpCreated = 3, kUdpClosed = 4, kTcpConnectRequest = 5;
struct ConnectionEventParams {
  int event = 0;  // kTcpConnected, kTcpClosed, kUdpCreated, kUdpClosed, kTcpConnectRequest
  ConnectionInfo connection;
  uint32_t rule_id = 0;  // the governing connection rule
  std::chrono::system_clock::time_point timestamp;
  uint64_t request_id = 0;               // a pended connect request's (0: nothing to complete)
  unsigned long filtering_flag = kNfAllow;  // a pended request's completion (above)
};
// The connection event an event frame of type kConnection carries with its data; false
// (and nothing written) for anything else or data of the wrong size.
bool connection_event_of(const protocol::EventFrame& f, std::span<const uint8_t> data, ConnectionEventParams* out);

struct WorkerThreadCreationEventParams {
  int result_code = 0;
};
struct WorkerThreadTerminationEventParams {};

class NetFilter {
 public:
  // socket: the agent's socket; "" = $VPF_AGENT_SOCKET, else $OVS_RUNDIR/vpf-agent.sock,
  // else /var/run/openvswitch/vpf-agent.sock.
  explicit NetFilter(std::string socket = "");
  ~NetFilter();  // stops the filter and closes the connection
  NetFilter(const NetFilter&) = delete;
  NetFilter& operator=(const NetFilter&) = delete;

  // ---- properties ----
  bool active() const;
  int adapter_count() const;
  int adapter_buffer_size(int i) const;
  void set_adapter_buffer_size(int i, int kb);
  bool adapter_collect_statistics(int i) const;
  void set_adapter_collect_statistics(int i, bool on);
  std::string adapter_description(int i) const;
  std::string adapter_friendly_name(int i) const;
  int adapter_id(int i) const;
  int adapter_interface_type(int i) const;
  std::string adapter_mac_address(int i) const;
  int adapter_max_packet_bytes(int i) const;
  void set_adapter_max_packet_bytes(int i, int bytes);
  std::string adapter_name(int i) const;
  int adapter_packet_timeout(int i) const;
  void set_adapter_packet_timeout(int i, int ms);
  bool adapter_promiscuous_mode(int i) const;
  void set_adapter_promiscuous_mode(int i, bool on);  // true: kErrorNotSupported
  bool adapter_wi_fi_monitor_mode(int i) const;
  void set_adapter_wi_fi_monitor_mode(int i, bool on);  // true: kErrorNotSupported
  bool adapter_wi_fi_monitor_mode_supported(int i) const;
  const std::vector<Adapter>& adapters() const;

  int altitude() const;
  void set_altitude(int altitude);

  int filter_rule_count() const;
  int filter_rule_action(int i) const;
  int filter_rule_adapter_id(int i) const;
  std::string filter_rule_bpf_rule(int i) const;
  int filter_rule_direction(int i) const;
  int filter_rule_max_packet_size(int i) const;
  int filter_rule_min_packet_size(int i) const;
  uint32_t filter_rule_rule_id(int i) const;
  int passthrough_rule_count() const;
  int passthrough_rule_adapter_id(int i) const;
  std::string passthrough_rule_bpf_rule(int i) const;
  int passthrough_rule_direction(int i) const;
  int passthrough_rule_max_packet_size(int i) const;
  int passthrough_rule_min_packet_size(int i) const;
  uint32_t passthrough_rule_rule_id(int i) const;
  const std::vector<FilterRule>& filter_rules() const;
  const std::vector<FilterRule>& passthrough_rules() const;

  OperationMode operation_mode() const;
  void set_operation_mode(OperationMode m);
  int serialize_events() const;  // 0 on multiple threads, 1 on one worker thread
  void set_serialize_events(int v);
  int64_t tag() const;
  void set_tag(int64_t v);

  // ---- methods ----
  bool add_filter_rule(uint32_t rule_id, int adapter_id, int direction, int min_packet_size, int max_packet_size,
                       const std::string& bpf_rule, int action);
  bool add_passthrough_rule(uint32_t rule_id, int adapter_id, int direction, int min_packet_size,
                            int max_packet_size, const std::string& bpf_rule);
  std::string config(const std::string& configuration_string);
  bool delete_all_filter_rules();
  bool delete_all_passthrough_rules();
  bool delete_filter_rule(uint32_t rule_id);
  bool delete_passthrough_rule(uint32_t rule_id);
  void flush_send_buffer(int adapter_id);
  int get_driver_status(const std::string& product_guid);
  int64_t get_driver_version(const std::string& product_guid);
  void get_statistics(int adapter_id);  // fires on_statistics (-1: every adapter)
  void initialize(const std::string& product_guid);
  void insert_incoming_packet(int adapter_id, std::span<const uint8_t> data);
  // cab_file_name: the plugin's .so path to register with Open vSwitch ("" = leave the
  // switch's plugin setting alone).  Returns false (no reboot is ever needed).
  bool install(const std::string& cab_file_name, const std::string& product_guid, int altitude, int flags,
               const std::string& allowed_controllers);
  void list_adapters();
  int nt_status_to_win32_error(int status);  // kErrorNotSupported
  void send_packet(int adapter_id, std::span<const uint8_t> data, int num_times, bool buffer_only);
  void shutdown_system(bool reboot, bool force);  // kErrorNotSupported
  void start_filter(int timeout_ms);
  void stop_filter();
  bool toggle_process_protection(bool enabled);  // kErrorNotSupported
  bool uninstall(const std::string& cab_file_name, const std::string& product_guid, int flags);

  // ---- NF_RULE-shaped rules (connection rules of this instance) ----
  uint32_t nf_add_rule(const NfRule& rule, bool to_head);  // returns the id it was given
  bool nf_delete_rule(uint32_t id);
  void nf_delete_rules();
  std::vector<std::pair<uint32_t, NfRule>> nf_rules();

  // ---- connections (of the adapters connection rules are in force on; no initialize
  // needed) ----
  std::vector<ConnectionInfo> list_connections(int adapter_id = -1);  // -1: every adapter
  ConnectionInfo get_connection(uint64_t id);  // kErrorNotFound when it is not in the table
  // The reference's nf_tcpSetConnectionState / nf_udpSetConnectionState: suspends or
  // resumes the events of the connection's packets.  kErrorNotFound when it is not there.
  bool set_connection_state(uint64_t id, bool suspended);
  // The reference's nf_completeTCPConnectRequest: completes a pended connect request that
  // this client's handler left pending (ConnectionEventParams::request_id), allowing
  // (kNfAllow) or blocking (kNfBlock) its connection.  kErrorNotFound when it is not
  // pending here (completed, expired, or never sent to this client), kErrorInvalidParameter
  // for another flag.  Any thread.
  bool complete_tcp_connect_request(uint64_t request_id, unsigned long filtering_flag);
  // Completes connection `id`'s pended request whoever it was sent to (vpfctl conn
  // complete, the console): kErrorNotFound when it has none pending.
  bool complete_connection_request(uint64_t id, unsigned long filtering_flag);

  // ---- events ----
  std::function<void(AdapterEventParams&)> on_adapter_added, on_adapter_removed;
  std::function<void(ErrorEventParams&)> on_error;
  std::function<void(NotifyPacketEventParams&)> on_notify_packet;
  std::function<void(PacketEventParams&)> on_packet;
  std::function<void(StatisticsEventParams&)> on_statistics;
  // The reference's tcpConnected, tcpClosed, udpCreated, udpClosed and tcpConnectRequest.
  std::function<void(ConnectionEventParams&)> on_tcp_connected, on_tcp_closed, on_udp_created, on_udp_closed,
      on_tcp_connect_request;
  std::function<void(WorkerThreadCreationEventParams&)> on_worker_thread_creation;
  std::function<void(WorkerThreadTerminationEventParams&)> on_worker_thread_termination;

  struct Impl;

 private:
  std::unique_ptr<Impl> d_;
};

}  // namespace vpf
