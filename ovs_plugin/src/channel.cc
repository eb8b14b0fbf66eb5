// The plugin <-> agent channel's shared-memory rings (see include/vpf/channel.h).
#include "vpf/channel.h"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <new>
#include <stdexcept>

namespace vpf::channel {
namespace {

constexpr uint64_t align8(uint64_t n) { return (n + 7) & ~uint64_t(7); }
constexpr uint64_t kMinCapacity = 4096;
constexpr uint64_t kMaxCapacity = uint64_t(1) << 30;

size_t ring_stride(uint64_t capacity) { return sizeof(RingHeader) + size_t(capacity); }

std::string errno_text(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

// The producer's counters: one producer per ring at a time, so a plain increment (no
// locked instruction per record); readers of the statistics load them relaxed.
inline void count(std::atomic<uint64_t>& c) { c.store(c.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed); }

}  // namespace

size_t region_size(uint32_t rings, uint64_t capacity) {
  // The ring headers are 64-byte aligned: start the first after a 64-byte region header.
  return 64 + size_t(rings) * ring_stride(capacity);
}

bool Ring::push(uint16_t type, const void* fixed, uint32_t fixed_len, const void* data, uint32_t data_len,
                uint16_t flags) {
  const uint64_t total = align8(uint64_t(fixed_len) + data_len);
  if (fixed_len < sizeof(RecordHeader) || total > cap_ / 2) {
    count(hdr_->dropped);
    return false;
  }
  uint64_t head = hdr_->head.load(std::memory_order_relaxed);
  const uint64_t tail = hdr_->tail.load(std::memory_order_acquire);
  const uint64_t off = head & (cap_ - 1);
  const uint64_t contiguous = cap_ - off;
  const uint64_t need = total + (contiguous < total ? contiguous : 0);
  if (head - tail + need > cap_) {
    count(hdr_->dropped);
    return false;
  }
  if (contiguous < total) {
    RecordHeader pad{uint32_t(contiguous), kPad, 0};
    std::memcpy(buf_ + off, &pad, sizeof pad);
    head += contiguous;
  }
  uint8_t* p = buf_ + (head & (cap_ - 1));
  std::memcpy(p, fixed, fixed_len);
  RecordHeader rh{uint32_t(total), type, flags};
  std::memcpy(p, &rh, sizeof rh);
  if (data_len) std::memcpy(p + fixed_len, data, data_len);
  count(hdr_->pushed);
  hdr_->head.store(head + total, std::memory_order_release);
  return true;
}

bool read_event(const RecordHeader* rec, uint32_t len, PacketEvent* ev) {
  if (len < sizeof *ev) return false;
  std::memcpy(ev, rec, sizeof *ev);  // a copy: checked values stay checked
  const uint16_t type = ev->h.type;
  if (type != kNotify && type != kCapture && type != kConnection) return false;
  if (type == kConnection && (ev->cap_len != sizeof(ConnectionRecord) || ev->orig_len != ev->cap_len))
    return false;
  return ev->cap_len <= len - sizeof *ev && ev->cap_len <= ev->orig_len;
}

Ring::Status Ring::peek(const RecordHeader** rec, uint32_t* len) {
  release();  // the record of the previous peek(), if any
  for (;;) {
    const uint64_t tail = hdr_->tail.load(std::memory_order_relaxed);
    const uint64_t head = hdr_->head.load(std::memory_order_acquire);
    if (head == tail) return Status::Empty;
    const uint64_t avail = head - tail;
    const uint64_t off = tail & (cap_ - 1);
    if (avail > cap_ || avail < sizeof(RecordHeader) || (off & 7)) return Status::Corrupt;
    RecordHeader h;
    std::memcpy(&h, buf_ + off, sizeof h);  // a copy: the other side may change it
    if (h.size < sizeof(RecordHeader) || (h.size & 7) || h.size > avail || h.size > cap_ - off)
      return Status::Corrupt;
    if (h.type == kPad) {
      hdr_->tail.store(tail + h.size, std::memory_order_release);
      continue;
    }
    if (h.type > kConnection) return Status::Corrupt;
    *rec = reinterpret_cast<const RecordHeader*>(buf_ + off);
    *len = h.size;
    pending_ = h.size;
    return Status::Ok;
  }
}

void Ring::release() {
  if (!pending_) return;
  hdr_->tail.store(hdr_->tail.load(std::memory_order_relaxed) + pending_, std::memory_order_release);
  pending_ = 0;
}

uint64_t Ring::used() const {
  return hdr_->head.load(std::memory_order_acquire) - hdr_->tail.load(std::memory_order_acquire);
}

Region Region::create(uint32_t rings, uint64_t capacity) {
  if (rings < 2 || rings > 1024) throw std::runtime_error("ring count must be 2..1024 (events + commands)");
  if (capacity < kMinCapacity || capacity > kMaxCapacity || (capacity & (capacity - 1)))
    throw std::runtime_error("ring capacity must be a power of two from 4096 to 1 GiB");
  Region r;
  r.fd_ = memfd_create("vportfilter-channel", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (r.fd_ < 0) throw std::runtime_error(errno_text("memfd_create"));
  r.owns_fd_ = true;
  r.size_ = region_size(rings, capacity);
  if (ftruncate(r.fd_, off_t(r.size_)) != 0) throw std::runtime_error(errno_text("ftruncate"));
  // The other side must not be able to shrink the file under our mapping (SIGBUS).
  if (fcntl(r.fd_, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0)
    throw std::runtime_error(errno_text("sealing the channel memfd"));
  r.base_ = mmap(nullptr, r.size_, PROT_READ | PROT_WRITE, MAP_SHARED, r.fd_, 0);
  if (r.base_ == MAP_FAILED) {
    r.base_ = nullptr;
    throw std::runtime_error(errno_text("mmap"));
  }
  r.rings_ = rings;
  r.capacity_ = capacity;
  auto* rh = static_cast<RegionHeader*>(r.base_);
  new (rh) RegionHeader{kMagic, kVersion, sizeof(RegionHeader), rings, capacity, uint64_t(r.size_), {0}, {0}};
  for (uint32_t i = 0; i < rings; ++i) {
    auto* h = new (static_cast<uint8_t*>(r.base_) + 64 + i * ring_stride(capacity)) RingHeader;
    h->size = sizeof(RingHeader);
    h->version = kVersion;
    h->capacity = capacity;
    h->head.store(0);
    h->tail.store(0);
    h->dropped.store(0);
    h->pushed.store(0);
  }
  return r;
}

Region Region::attach(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0) throw std::runtime_error(errno_text("fstat"));
  if (st.st_size < 64) throw std::runtime_error("channel region is smaller than its header");
  Region r;
  r.fd_ = fd;
  r.size_ = size_t(st.st_size);
  r.base_ = mmap(nullptr, r.size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (r.base_ == MAP_FAILED) {
    r.base_ = nullptr;
    throw std::runtime_error(errno_text("mmap"));
  }
  struct {
    uint32_t magic, version, size, ring_count;
    uint64_t ring_capacity, total_size;
  } h;  // the plain fields of RegionHeader, copied: the other side may change them
  std::memcpy(&h, r.base_, sizeof h);
  if (h.magic != kMagic) throw std::runtime_error("not a vportfilter channel region (bad magic)");
  if (h.version != kVersion || h.size != sizeof(RegionHeader))
    throw std::runtime_error("channel version " + std::to_string(h.version) + ", this side speaks " +
                             std::to_string(kVersion));
  if (h.ring_count < 2 || h.ring_count > 1024 || h.ring_capacity < kMinCapacity || h.ring_capacity > kMaxCapacity ||
      (h.ring_capacity & (h.ring_capacity - 1)))
    throw std::runtime_error("channel region header has impossible ring geometry");
  if (region_size(h.ring_count, h.ring_capacity) != r.size_ || h.total_size != r.size_)
    throw std::runtime_error("channel region size does not match its header");
  for (uint32_t i = 0; i < h.ring_count; ++i) {
    const auto* rh = reinterpret_cast<const RingHeader*>(static_cast<uint8_t*>(r.base_) + 64 +
                                                         i * ring_stride(h.ring_capacity));
    if (rh->size != sizeof(RingHeader) || rh->version != kVersion || rh->capacity != h.ring_capacity)
      throw std::runtime_error("channel ring " + std::to_string(i) + " has a bad header");
  }
  r.rings_ = h.ring_count;
  r.capacity_ = h.ring_capacity;
  return r;
}

Region::Region(Region&& o) noexcept { *this = std::move(o); }

Region& Region::operator=(Region&& o) noexcept {
  if (this != &o) {
    this->~Region();
    base_ = o.base_;
    size_ = o.size_;
    fd_ = o.fd_;
    owns_fd_ = o.owns_fd_;
    rings_ = o.rings_;
    capacity_ = o.capacity_;
    o.base_ = nullptr;
    o.fd_ = -1;
    o.owns_fd_ = false;
  }
  return *this;
}

Region::~Region() {
  if (base_) munmap(base_, size_);
  if (owns_fd_ && fd_ >= 0) close(fd_);
  base_ = nullptr;
  fd_ = -1;
}

Ring Region::ring(uint32_t i) const {
  if (i >= rings_) throw std::out_of_range("no channel ring " + std::to_string(i));
  auto* h = reinterpret_cast<RingHeader*>(static_cast<uint8_t*>(base_) + 64 + i * ring_stride(capacity_));
  return Ring(h, reinterpret_cast<uint8_t*>(h + 1), capacity_);
}

void Region::drain(uint32_t i) const {
  RingHeader* h = ring(i).header();
  h->tail.store(h->head.load(std::memory_order_acquire), std::memory_order_release);
}

void Region::reset(uint32_t i) const {
  RingHeader* h = ring(i).header();
  h->head.store(0, std::memory_order_relaxed);
  h->tail.store(0, std::memory_order_release);
}

void wake_consumer(std::atomic<uint32_t>& waiting, int efd) {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (waiting.load(std::memory_order_relaxed) && waiting.exchange(0)) {
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t n = write(efd, &one, sizeof one);
  }
}

bool send_with_fds(int sock, const void* buf, size_t len, const int* fds, int nfds) {
  iovec iov{const_cast<void*>(buf), len};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 8)];
  if (nfds > 8) {
    errno = EINVAL;
    return false;
  }
  if (nfds > 0) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * size_t(nfds));
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * size_t(nfds));
    std::memcpy(CMSG_DATA(c), fds, sizeof(int) * size_t(nfds));
  }
  size_t done = 0;
  int waits = 0;
  while (done < len) {
    iov.iov_base = static_cast<char*>(const_cast<void*>(buf)) + done;
    iov.iov_len = len - done;
    const ssize_t n = sendmsg(sock, &msg, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN && ++waits < 10000) {  // a non-blocking socket with a full buffer: up to 1 s
        usleep(100);
        continue;
      }
      return false;
    }
    done += size_t(n);
    msg.msg_control = nullptr;  // the descriptors went with the first bytes
    msg.msg_controllen = 0;
  }
  return true;
}

long recv_with_fds(int sock, void* buf, size_t len, int* fds, int max_fds, int* nfds) {
  iovec iov{buf, len};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 16)];
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  *nfds = 0;
  ssize_t n;
  do n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n < 0) return -1;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const int count = int((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
    for (int k = 0; k < count; ++k) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + sizeof(int) * size_t(k), sizeof fd);
      if (*nfds < max_fds) fds[(*nfds)++] = fd;
      else close(fd);
    }
  }
  return long(n);
}

}  // namespace vpf::channel
