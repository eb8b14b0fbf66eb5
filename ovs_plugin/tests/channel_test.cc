// The channel's rings: records round trip, wrap, refuse when full, survive a concurrent
// producer, and a reader facing a corrupt or hostile region never reads out of bounds.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <random>
#include <thread>
#include <vector>

#include "vpf/channel.h"

using namespace vpf::channel;

namespace {

bool push_event(Ring& r, uint64_t id, const std::vector<uint8_t>& data) {
  PacketEvent e{};
  e.adapter = uint32_t(id % 7);
  e.capture_id = id;
  e.cap_len = uint32_t(data.size());
  e.orig_len = uint32_t(data.size()) + 3;
  return r.push(kCapture, &e, sizeof e, data.data(), uint32_t(data.size()));
}

std::vector<uint8_t> payload(uint64_t id, size_t n) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = uint8_t(id * 31 + i);
  return v;
}

// Reads one event and checks it against what push_event(id, payload(id, n)) wrote.
void expect_event(Ring& r, uint64_t id, size_t n) {
  const RecordHeader* rec;
  uint32_t len;
  ASSERT_EQ(r.peek(&rec, &len), Ring::Status::Ok) << "id " << id;
  ASSERT_EQ(rec->type, kCapture);
  ASSERT_GE(len, sizeof(PacketEvent) + n);
  const auto* e = reinterpret_cast<const PacketEvent*>(rec);
  ASSERT_EQ(e->capture_id, id);
  ASSERT_EQ(e->cap_len, n);
  const auto want = payload(id, n);
  ASSERT_EQ(std::memcmp(reinterpret_cast<const uint8_t*>(e + 1), want.data(), n), 0);
  r.release();
}

}  // namespace

TEST(Channel, RoundTripWrapAndFull) {
  Region reg = Region::create(2, 4096);
  Ring r = reg.ring(0);
  const RecordHeader* rec;
  uint32_t len;
  EXPECT_EQ(r.peek(&rec, &len), Ring::Status::Empty);
  // Many records of awkward sizes: the buffer wraps dozens of times.
  for (uint64_t id = 1; id <= 500; ++id) {
    const size_t n = (id * 37) % 700;
    ASSERT_TRUE(push_event(r, id, payload(id, n)));
    expect_event(r, id, n);
  }
  EXPECT_EQ(r.peek(&rec, &len), Ring::Status::Empty);
  // Fill it: pushes are refused and counted, nothing is overwritten.
  uint64_t id = 1000;
  while (push_event(r, id, payload(id, 100))) ++id;
  EXPECT_EQ(r.dropped(), 1u);
  EXPECT_FALSE(push_event(r, 99999, payload(1, 3000))) << "larger than half the ring";
  EXPECT_EQ(r.dropped(), 2u);
  for (uint64_t k = 1000; k < id; ++k) expect_event(r, k, 100);
  EXPECT_EQ(r.peek(&rec, &len), Ring::Status::Empty);
  EXPECT_EQ(r.used(), 0u);
  // The second ring is independent.
  EXPECT_EQ(reg.ring(1).pushed(), 0u);
  EXPECT_THROW(reg.ring(2), std::out_of_range);
}

TEST(Channel, ConcurrentProducerAndConsumerAcrossMappings) {
  Region a = Region::create(2, 1 << 16);
  Region b = Region::attach(a.fd());  // a second mapping, as the other process has
  Ring prod = a.ring(0), cons = b.ring(0);
  constexpr uint64_t kCount = 100000;
  std::thread t([&] {
    for (uint64_t id = 1; id <= kCount;) {
      if (push_event(prod, id, payload(id, id % 300))) ++id;
    }
  });
  uint64_t next = 1;
  while (next <= kCount) {
    const RecordHeader* rec;
    uint32_t len;
    const auto st = cons.peek(&rec, &len);
    ASSERT_NE(st, Ring::Status::Corrupt);
    if (st == Ring::Status::Empty) continue;
    const auto* e = reinterpret_cast<const PacketEvent*>(rec);
    ASSERT_EQ(e->capture_id, next);
    ASSERT_EQ(e->cap_len, next % 300);
    if (e->cap_len) {
      const auto* data = reinterpret_cast<const uint8_t*>(e + 1);
      ASSERT_EQ(data[0], payload(next, 1)[0]);
      ASSERT_EQ(data[e->cap_len - 1], payload(next, e->cap_len)[e->cap_len - 1]);
    }
    cons.release();
    ++next;
  }
  t.join();
  EXPECT_EQ(prod.pushed(), kCount);
}

TEST(Channel, CorruptRecordsAreDetectedNotFollowed) {
  Region reg = Region::create(2, 4096);
  Ring r = reg.ring(0);
  ASSERT_TRUE(push_event(r, 1, payload(1, 10)));
  auto* base = static_cast<uint8_t*>(mmap(nullptr, region_size(2, 4096), PROT_READ | PROT_WRITE, MAP_SHARED, reg.fd(), 0));
  ASSERT_NE(base, MAP_FAILED);
  auto* hdr = reinterpret_cast<RingHeader*>(base + 64);
  auto* first = reinterpret_cast<RecordHeader*>(hdr + 1);
  const RecordHeader* rec;
  uint32_t len;
  for (uint32_t bad_size : {0u, 4u, 12u, 1u << 20, 4096u}) {
    const RecordHeader saved = *first;
    first->size = bad_size;
    EXPECT_EQ(r.peek(&rec, &len), Ring::Status::Corrupt) << bad_size;
    *first = saved;
  }
  first->type = 77;
  EXPECT_EQ(r.peek(&rec, &len), Ring::Status::Corrupt);
  first->type = kCapture;
  const uint64_t head = hdr->head.load();
  hdr->head.store(head + (1 << 20));  // the producer claims more than the ring holds
  EXPECT_EQ(r.peek(&rec, &len), Ring::Status::Corrupt);
  hdr->head.store(head);
  EXPECT_EQ(r.peek(&rec, &len), Ring::Status::Ok);
  munmap(base, region_size(2, 4096));
}

TEST(Channel, AttachRefusesBadRegions) {
  auto expect_refused = [](int fd, const char* what) {
    try {
      Region::attach(fd);
      ADD_FAILURE() << "accepted: " << what;
    } catch (const std::runtime_error& e) {
      SUCCEED() << e.what();
    }
  };
  Region good = Region::create(3, 8192);
  EXPECT_NO_THROW(Region::attach(good.fd()));
  const int fd = memfd_create("t", 0);
  expect_refused(fd, "empty file");
  ASSERT_EQ(ftruncate(fd, off_t(region_size(3, 8192))), 0);
  expect_refused(fd, "zeroes (bad magic)");
  std::vector<uint8_t> copy(region_size(3, 8192));
  ASSERT_EQ(pread(good.fd(), copy.data(), copy.size(), 0), ssize_t(copy.size()));
  auto write_with = [&](auto mutate) {
    std::vector<uint8_t> c = copy;
    mutate(reinterpret_cast<RegionHeader*>(c.data()));
    ASSERT_EQ(pwrite(fd, c.data(), c.size(), 0), ssize_t(c.size()));
  };
  write_with([](RegionHeader* h) { h->version = kVersion + 1; });
  expect_refused(fd, "other version");
  write_with([](RegionHeader* h) { h->ring_capacity = 12345; });
  expect_refused(fd, "capacity not a power of two");
  write_with([](RegionHeader* h) { h->ring_count = 4; });
  expect_refused(fd, "more rings than the file holds");
  write_with([](RegionHeader*) {});
  EXPECT_NO_THROW(Region::attach(fd));
  close(fd);
  EXPECT_THROW(Region::create(0, 4096), std::runtime_error);
  EXPECT_THROW(Region::create(1, 4096), std::runtime_error);  // no command ring
  EXPECT_THROW(Region::create(2, 5000), std::runtime_error);
}

TEST(Channel, RegionCannotBeResizedByTheOtherSide) {
  Region reg = Region::create(2, 4096);
  EXPECT_NE(ftruncate(reg.fd(), 64), 0);  // would SIGBUS the plugin's mapping
  EXPECT_NE(ftruncate(reg.fd(), off_t(region_size(2, 4096)) * 2), 0);
  EXPECT_EQ(reg.event_rings(), 1u);
  EXPECT_EQ(reg.command_ring().header(), reg.ring(1).header());
}

TEST(Channel, DescriptorsTravelOverTheSocket) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  Region reg = Region::create(2, 4096);
  const int efd = eventfd(0, EFD_CLOEXEC);
  const int fds[2] = {reg.fd(), efd};
  const std::string msg = "{\"id\":1}\n";
  ASSERT_TRUE(send_with_fds(sv[0], msg.data(), msg.size(), fds, 2));
  char buf[64];
  int got[4], n = 0;
  const long len = recv_with_fds(sv[1], buf, sizeof buf, got, 4, &n);
  ASSERT_EQ(len, long(msg.size()));
  ASSERT_EQ(n, 2);
  Region other = Region::attach(got[0]);  // the same memory, seen through the passed fd
  Ring r0 = reg.ring(0);
  ASSERT_TRUE(push_event(r0, 9, payload(9, 5)));
  EXPECT_EQ(other.ring(0).pushed(), 1u);
  // wake_consumer writes the eventfd only while the consumer says it sleeps.
  std::atomic<uint32_t>& waiting = reg.header()->agent_waiting;
  wake_consumer(waiting, got[1]);
  uint64_t v = 0;
  fcntl(efd, F_SETFL, O_NONBLOCK);
  EXPECT_LT(read(efd, &v, sizeof v), 0);
  prepare_sleep(other.header()->agent_waiting);
  wake_consumer(waiting, got[1]);
  EXPECT_EQ(read(efd, &v, sizeof v), ssize_t(sizeof v));
  EXPECT_EQ(waiting.load(), 0u);
  for (int i = 0; i < n; ++i) close(got[i]);
  close(efd);
  close(sv[0]);
  close(sv[1]);
}
