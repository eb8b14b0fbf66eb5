// libFuzzer harness: the one splitter of the agent's client protocol (vpf/protocol.h,
// next_item: JSON lines and binary event/verdict frames) on any byte stream, read whole
// and read in chunks (sizes from the input) as a session reads its socket.  Both reads
// must give the same messages, every message must lie inside the bytes read, and a
// violation must end the stream with a reason.  Anything else is a finding.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "vpf/protocol.h"

using namespace vpf::protocol;

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

// The messages of a stream, as text: "L<line>", "F<frame fixed part and data>", "B<why>".
template <typename Body>
std::vector<std::string> split(const uint8_t* data, size_t size, size_t chunk) {
  std::vector<std::string> out;
  std::string buf;
  size_t fed = 0;
  while (fed < size) {
    const size_t n = std::min(chunk, size - fed);
    buf.append(reinterpret_cast<const char*>(data + fed), n);
    fed += n;
    size_t pos = 0;
    for (;;) {
      const size_t before = pos;
      StreamItem<Body> it = next_item<Body>(buf.data(), buf.size(), pos);
      check(pos >= before && pos <= buf.size());
      if (it.kind == it.kNeedMore) break;
      if (it.kind == it.kBad) {
        check(!it.problem.empty());
        out.push_back("B" + it.problem);
        return out;  // a violation ends the connection
      }
      if (it.kind == it.kLine) {
        check(it.line.data() >= buf.data() && it.line.data() + it.line.size() <= buf.data() + buf.size());
        check(it.line.find('\n') == std::string_view::npos);
        out.push_back("L" + std::string(it.line));
      } else {
        const auto* d = reinterpret_cast<const uint8_t*>(buf.data());
        check(it.data >= d && it.data + it.body.data_size <= d + buf.size());
        std::string f(reinterpret_cast<const char*>(&it.body), sizeof it.body);
        f.append(reinterpret_cast<const char*>(it.data), it.body.data_size);
        out.push_back("F" + f);
      }
      check(pos > before);  // a message was consumed
    }
    buf.erase(0, pos);
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1 || size > 65536) return 0;
  const size_t chunk = 1 + data[0] % 64;
  check(split<EventFrame>(data + 1, size - 1, size) == split<EventFrame>(data + 1, size - 1, chunk));
  check(split<VerdictFrame>(data + 1, size - 1, size) == split<VerdictFrame>(data + 1, size - 1, chunk));
  return 0;
}
