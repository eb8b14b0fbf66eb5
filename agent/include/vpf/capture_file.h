// vportfilter: writes pcap (nanosecond timestamps) or pcapng capture files, one frame at
// a time, to a FILE* (which may be a pipe: every frame is flushed).  Header-only; used
// by vpfctl capture and the console's export.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstring>

#include "vpf/limits.h"

namespace vpf {

class CaptureFileWriter {
 public:
  // Writes the file header; ok() is false if that failed.
  CaptureFileWriter(FILE* f, bool pcapng) : f_(f), ng_(pcapng) {
    if (ng_) {
      // Section header (byte-order magic, version 1.0, length unknown), then one
      // interface: Ethernet, snaplen kMaxSnaplen, if_tsresol = 9 (nanoseconds).
      const uint32_t shb[] = {0x0A0D0D0A, 28, 0x1A2B3C4D, 0x00000001, 0xFFFFFFFF, 0xFFFFFFFF, 28};
      const uint32_t idb[] = {1, 32, 1, kMaxSnaplen, 0x00010009u, 0x09, 0, 32};
      ok_ = std::fwrite(shb, sizeof shb, 1, f_) == 1 && std::fwrite(idb, sizeof idb, 1, f_) == 1;
    } else {
      // pcap with nanosecond timestamps (magic 0xa1b23c4d), version 2.4, Ethernet.
      const uint32_t hdr[] = {0xa1b23c4d, 0x00040002, 0, 0, kMaxSnaplen, 1};
      ok_ = std::fwrite(hdr, sizeof hdr, 1, f_) == 1;
    }
    ok_ = ok_ && std::fflush(f_) == 0;
  }
  bool ok() const { return ok_; }

  bool write(uint64_t ts_ns, const uint8_t* data, uint32_t len, uint32_t orig_len) {
    if (ng_) {
      const uint32_t pad = (4 - len % 4) % 4;
      const uint32_t total = 32 + len + pad;
      const uint32_t hdr[] = {6, total, 0, uint32_t(ts_ns >> 32), uint32_t(ts_ns), len, orig_len};
      const uint32_t zero = 0;
      ok_ = ok_ && std::fwrite(hdr, sizeof hdr, 1, f_) == 1 && (len == 0 || std::fwrite(data, len, 1, f_) == 1) &&
            (pad == 0 || std::fwrite(&zero, pad, 1, f_) == 1) && std::fwrite(&total, 4, 1, f_) == 1;
    } else {
      const uint32_t hdr[] = {uint32_t(ts_ns / 1000000000), uint32_t(ts_ns % 1000000000), len, orig_len};
      ok_ = ok_ && std::fwrite(hdr, sizeof hdr, 1, f_) == 1 && (len == 0 || std::fwrite(data, len, 1, f_) == 1);
    }
    return ok_ = ok_ && std::fflush(f_) == 0;
  }

 private:
  FILE* f_;
  bool ng_;
  bool ok_ = false;
};

}  // namespace vpf
