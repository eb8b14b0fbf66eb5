// libFuzzer harness: the consumer side of the plugin <-> agent channel (vpf/channel.h), on
// what a hostile or broken other side can write.  (1) Any bytes as a whole shared-memory
// region handed over by descriptor: Region::attach() must accept it or throw naming what
// is wrong, and every ring of an accepted region must read as records, Empty or Corrupt.
// (2) Any bytes as one ring's buffer and positions: peek() must give records that lie in
// the buffer, with a size that is a multiple of 8 and at least a header, never loop, and
// stop at Corrupt.  A read outside the bytes (ASan), an endless loop (the run's timeout)
// or an abort is a finding.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "vpf/channel.h"

using namespace vpf::channel;

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

// Reads a ring to its end: every record checked and touched whole.
void drain(Ring ring, const uint8_t* buf_begin, const uint8_t* buf_end) {
  for (int n = 0; n < 100000; ++n) {
    const RecordHeader* rec = nullptr;
    uint32_t len = 0;
    const Ring::Status st = ring.peek(&rec, &len);
    if (st != Ring::Status::Ok) return;
    const auto* p = reinterpret_cast<const uint8_t*>(rec);
    check(p >= buf_begin && p + len <= buf_end);
    check(len >= sizeof(RecordHeader) && len % 8 == 0);
    std::vector<uint8_t> copy(p, p + len);  // every byte of the record is readable
    check(copy.size() == len);
    ring.release();
  }
  std::abort();  // a ring of at most 64 KiB holds fewer records than this
}

void whole_region(const uint8_t* data, size_t size) {
  const int fd = memfd_create("vpf-fuzz-region", MFD_CLOEXEC);
  if (fd < 0) return;
  if (size && write(fd, data, size) != ssize_t(size)) {
    close(fd);
    return;
  }
  try {
    Region r = Region::attach(fd);
    for (uint32_t i = 0; i < r.ring_count(); ++i) {
      Ring ring = r.ring(i);
      const uint8_t* begin = reinterpret_cast<const uint8_t*>(ring.header()) + sizeof(RingHeader);
      drain(ring, begin, begin + ring.capacity());
    }
  } catch (const std::runtime_error&) {
    // refused, naming why
  }
  close(fd);
}

void one_ring(const uint8_t* data, size_t size) {
  constexpr uint64_t kCap = 4096;
  if (size < 16) return;
  alignas(64) static RingHeader hdr;
  alignas(64) static uint8_t buf[kCap];
  uint64_t head, tail;
  std::memcpy(&head, data, 8);
  std::memcpy(&tail, data + 8, 8);
  // Positions near each other make records likelier; the raw ones test the bounds.
  if (head & 1) head = tail + (head >> 1) % (2 * kCap);
  hdr.size = sizeof hdr;
  hdr.capacity = kCap;
  hdr.head.store(head);
  hdr.tail.store(tail);
  std::memset(buf, 0, sizeof buf);
  std::memcpy(buf, data + 16, std::min<size_t>(size - 16, kCap));
  drain(Ring(&hdr, buf, kCap), buf, buf + kCap);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  if (data[0] & 1) whole_region(data + 1, size - 1);
  else one_ring(data + 1, size - 1);
  return 0;
}
