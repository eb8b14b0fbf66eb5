// vportfilter: the channel between the Open vSwitch plugin and the agent.
//
// The data path of the channel is shared memory: one region (a memfd the plugin creates
// and passes to the agent over the control socket) holding a RegionHeader and a number of
// rings.  Each ring has exactly one producer and one consumer, in different processes:
//
//   plugin -> agent   one event ring per datapath thread (notify copies, captured packets)
//   agent  -> plugin  one command ring (verdicts for captured packets, injections)
//
// A ring is a byte buffer of variable-length records.  The producer writes a record and
// then publishes it by advancing `head` (release); the consumer reads records up to
// `head` (acquire) and frees them by advancing `tail` (release).  A record that does not
// fit before the end of the buffer is preceded by a padding record that fills it.  A full
// ring never blocks: the record is refused and counted in `dropped`.
//
// Trust.  The two sides do not trust each other's memory: everything in the region may be
// changed at any time by the other process.  The reader therefore checks every record's
// size and type against the ring's geometry before touching it and treats a bad record as
// a broken channel (Ring::Status::Corrupt); attach() checks the region's header against
// the mapped size.  No value read from the region is used as an index or a length without
// such a check.
//
// Roles of the rings: rings 0 .. ring_count-2 carry events (plugin -> agent), one per
// datapath thread (threads beyond that share the last event ring under a try-lock: a
// busy lock counts as a drop, never a wait); ring ring_count-1 carries commands (agent ->
// plugin).
//
// Wake-ups.  Consumers poll while there is work and then sleep on an eventfd: the
// consumer sets its `*_waiting` flag in the RegionHeader, issues a full fence, looks at
// its rings once more and only then blocks; a producer publishes a record, issues a full
// fence and, if the flag is set, clears it and writes the eventfd.  So a producer makes a
// system call only when the consumer is asleep.  Both eventfds travel with the region.
//
// Control socket.  The agent connects to the plugin's unix stream socket (the path is the
// plugin's `control=` argument; see docs/channel.md).  The plugin checks the peer's
// credentials (SO_PEERCRED: uid 0 only).  Messages are JSON-RPC 2.0 objects, one per line
// (at most kMaxControlMessage bytes).  The reply to "hello" carries three descriptors
// (SCM_RIGHTS): the region's memfd (sealed against resizing), the events eventfd and the
// commands eventfd, in that order.
//
// Byte order and layout: host order, fixed-size fields, every struct starts with its size
// (records: their total size) and the region and each ring carry kVersion.  Any layout
// change increments kVersion.
//
// Thread-safety: Ring::push() from the ring's single producer thread, Ring::pop() from its
// single consumer thread; the two may run concurrently.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace vpf::channel {

inline constexpr uint32_t kMagic = 0x43465056;  // "VPFC"
inline constexpr uint32_t kVersion = 4;
inline constexpr size_t kMaxControlMessage = size_t(64) << 20;  // one JSON line

enum RecordType : uint16_t {
  kPad = 0,       // fills the end of the buffer; skipped
  kNotify = 1,    // PacketEvent: an asynchronous copy
  kCapture = 2,   // PacketEvent: a held packet waiting for a verdict
  kVerdict = 3,   // Verdict: what to do with a held packet
  kInject = 4,    // Inject: a packet to send toward the switch or the VM
  kConnection = 5,  // PacketEvent whose data is a ConnectionRecord: a connection's event
};

struct RecordHeader {
  uint32_t size;  // total bytes of the record, header included, a multiple of 8
  uint16_t type;  // RecordType
  uint16_t flags;  // RecordFlags
};

enum RecordFlags : uint16_t {
  // An event in the agent's ring that also went to its client's own channel (see
  // "Client channels" in docs/channel.md): a copy for monitors and logging; the client
  // decides a capture, the agent does not.
  kFlagMirrored = 1,
};
static_assert(sizeof(RecordHeader) == 8);

// Notify and capture events.  `data` holds cap_len bytes of the frame (cap_len <=
// orig_len: the adapter's snaplen).
struct PacketEvent {
  RecordHeader h;
  uint32_t adapter;
  uint8_t direction;   // 0 outgoing (from the VM), 1 incoming (to the VM)
  uint8_t rule_kind;   // matcher::RuleKind of the deciding rule
  uint16_t l3_offset;  // where the IP header starts in the data (matcher::l3_offset), 0: none
  uint32_t rule_id;
  uint32_t orig_len;
  uint32_t cap_len;
  uint32_t reserved2;
  uint64_t timestamp_ns;  // CLOCK_REALTIME when the datapath saw the packet
  uint64_t capture_id;    // kCapture: names the held packet in the verdict; 0 for kNotify
  uint64_t deadline_ns;   // kCapture: CLOCK_MONOTONIC time after which the expiry policy applies
  // uint8_t data[cap_len] follows
};
static_assert(sizeof(PacketEvent) == 56);

// The data of a kConnection event (docs/connections.md): a connection the plugin follows
// opened, closed or expired.  The PacketEvent around it names the connection rule that
// governs the connection (rule_kind, rule_id), its adapter, and as direction who opened
// it; cap_len = orig_len = sizeof(ConnectionRecord).
enum class ConnectionEventKind : uint8_t {
  TcpConnected = 1,
  TcpClosed = 2,
  UdpCreated = 3,
  UdpClosed = 4,
  TcpConnectRequest = 5,  // the VM's SYN under a rule with indicate_connect_requests
};
struct ConnectionRecord {
  uint64_t id;          // the connection's, unique for the plugin's life
  uint8_t event;        // ConnectionEventKind
  uint8_t protocol;     // 6 (TCP) or 17 (UDP)
  uint8_t ip_version;   // 4 or 6
  uint8_t reserved;
  uint32_t vm;
  uint16_t local_port;  // the VM's side
  uint16_t remote_port;
  uint32_t reserved2;
  uint32_t local_ip[4];   // IPv4: word 0; each word the integer its network-order bytes spell
  uint32_t remote_ip[4];
  uint64_t packets[2];  // [0] opener -> peer, [1] peer -> opener (frames)
  uint64_t bytes[2];
  uint64_t age_ns;      // since the connection's first packet
};
static_assert(sizeof(ConnectionRecord) == 96);

enum class VerdictAction : uint8_t { Drop = 1, Send = 2, SendModified = 3 };

struct Verdict {
  RecordHeader h;
  uint64_t capture_id;
  uint8_t action;      // VerdictAction
  uint8_t reserved[3];
  uint32_t len;        // SendModified: bytes of the replacement frame that follow
  // uint8_t data[len] follows
};
static_assert(sizeof(Verdict) == 24);

struct Inject {
  RecordHeader h;
  uint32_t adapter;
  uint8_t direction;   // 0: into the switch as if sent by the VM; 1: to the VM
  uint8_t reserved[3];
  uint32_t num_times;  // the frame is injected this many times (>= 1)
  uint32_t len;
  // uint8_t data[len] follows
};
static_assert(sizeof(Inject) == 24);

// One ring's header.  Positions count bytes since the ring was made and only grow; the
// offset in the buffer is position & (capacity - 1).
struct alignas(64) RingHeader {
  uint32_t size;        // sizeof(RingHeader)
  uint32_t version;     // kVersion
  uint64_t capacity;    // bytes in the buffer: a power of two, >= 4096
  alignas(64) std::atomic<uint64_t> head;     // written by the producer only
  alignas(64) std::atomic<uint64_t> tail;     // written by the consumer only
  alignas(64) std::atomic<uint64_t> dropped;  // records the producer refused (ring full)
  std::atomic<uint64_t> pushed;               // records the producer wrote
};
static_assert(std::atomic<uint64_t>::is_always_lock_free, "rings need address-free atomics");

struct RegionHeader {
  uint32_t magic;       // kMagic
  uint32_t version;     // kVersion
  uint32_t size;        // sizeof(RegionHeader)
  uint32_t ring_count;  // event rings + 1 command ring
  uint64_t ring_capacity;  // every ring's buffer size
  uint64_t total_size;     // bytes of the whole region
  std::atomic<uint32_t> agent_waiting;   // the agent sleeps on the events eventfd
  std::atomic<uint32_t> plugin_waiting;  // the plugin sleeps on the commands eventfd
};
static_assert(sizeof(RegionHeader) <= 64);

// Bytes a region of `rings` rings of `capacity` bytes needs.
size_t region_size(uint32_t rings, uint64_t capacity);

// A view of one ring inside a mapped region.  Cheap to copy.
class Ring {
 public:
  enum class Status { Ok, Empty, Corrupt };

  Ring() = default;
  Ring(RingHeader* hdr, uint8_t* buf, uint64_t capacity) : hdr_(hdr), buf_(buf), cap_(capacity) {}

  // Writes one record of `type` whose body (after the RecordHeader) is `fixed` (fixed_len
  // bytes, which must start with the RecordHeader's space: the record's own struct) then
  // `data` (data_len bytes).  Returns false, counting a drop, if the ring lacks room or the
  // record is larger than half the ring.
  bool push(uint16_t type, const void* fixed, uint32_t fixed_len, const void* data, uint32_t data_len,
            uint16_t flags = 0);

  // Reads the next record: on Ok, *rec points at it (valid until release() or the next
  // peek(), which frees it), *len is its total size.  Padding is skipped.  Corrupt if the
  // producer wrote something impossible; the ring is then unusable.
  Status peek(const RecordHeader** rec, uint32_t* len);
  void release();  // frees the record last returned by peek()

  uint64_t dropped() const { return hdr_->dropped.load(std::memory_order_relaxed); }
  uint64_t pushed() const { return hdr_->pushed.load(std::memory_order_relaxed); }
  uint64_t used() const;  // bytes written and not yet freed (may be stale)
  uint64_t capacity() const { return cap_; }
  bool empty() const { return used() == 0; }
  RingHeader* header() const { return hdr_; }

 private:
  RingHeader* hdr_ = nullptr;
  uint8_t* buf_ = nullptr;
  uint64_t cap_ = 0;
  uint64_t pending_ = 0;  // consumer: bytes to free on release()
};

// A mapped region (owning the mapping).
class Region {
 public:
  // Creates an anonymous memfd of `rings` rings of `capacity` bytes (a power of two >=
  // 4096), maps it and initialises it.  Throws std::runtime_error.
  static Region create(uint32_t rings, uint64_t capacity);
  // Maps `fd` (not taken over) and checks its header against the file's size.  Throws
  // std::runtime_error naming what is wrong.
  static Region attach(int fd);

  Region() = default;
  Region(Region&&) noexcept;
  Region& operator=(Region&&) noexcept;
  ~Region();

  int fd() const { return fd_; }
  uint32_t ring_count() const { return rings_; }
  uint32_t event_rings() const { return rings_ - 1; }
  Ring ring(uint32_t i) const;
  Ring command_ring() const { return ring(rings_ - 1); }
  RegionHeader* header() const { return static_cast<RegionHeader*>(base_); }
  // Consumer side of the ring `i`: forgets every record (tail = head).
  void drain(uint32_t i) const;
  // Resets ring `i` to empty (head = tail = 0).  Only while it has no producer.
  void reset(uint32_t i) const;

 private:
  void* base_ = nullptr;
  size_t size_ = 0;
  int fd_ = -1;
  bool owns_fd_ = false;
  uint32_t rings_ = 0;
  uint64_t capacity_ = 0;
};

// Consumer side of an event ring: copies the event record `rec` (`len` bytes, as peek()
// returned it) to *ev if it is a notify, capture or connection event whose sizes agree
// (cap_len bytes of frame follow it, no more than orig_len; a connection event's are one
// ConnectionRecord); false for anything else.
bool read_event(const RecordHeader* rec, uint32_t len, PacketEvent* ev);

// Wakes the consumer sleeping on `efd` if `waiting` says it sleeps (producer side, after
// publishing records).
void wake_consumer(std::atomic<uint32_t>& waiting, int efd);

// Consumer side: announces sleep.  Returns true if the caller may block on its eventfd
// (after checking its rings once more: call has_work, then block only if it is false).
inline void prepare_sleep(std::atomic<uint32_t>& waiting) {
  waiting.store(1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_seq_cst);
}

// Sends `len` bytes of `buf` and `nfds` descriptors in one sendmsg (SCM_RIGHTS).  Returns
// false with errno set on failure (also when a non-blocking socket stays full for 1 s).
bool send_with_fds(int sock, const void* buf, size_t len, const int* fds, int nfds);
// One recvmsg: up to `len` bytes into `buf`, and up to `max_fds` descriptors into `fds`
// (*nfds set; descriptors beyond max_fds are closed).  Returns bytes read, 0 at end of
// stream, -1 with errno set.
long recv_with_fds(int sock, void* buf, size_t len, int* fds, int max_fds, int* nfds);

}  // namespace vpf::channel
