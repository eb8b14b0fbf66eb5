// Frame parser: Ethernet / VLAN / IPv4 / IPv6 (+ extension headers) / L4.
#include "vpf/matcher/parser.h"

#include <emmintrin.h>

#include <cstring>

namespace vpf::matcher {
namespace {

constexpr uint16_t kEthIpv4 = 0x0800;
constexpr uint16_t kEthIpv6 = 0x86dd;
constexpr uint16_t kEthVlan = 0x8100;
constexpr uint16_t kEthQinQ = 0x88a8;
constexpr uint16_t kEthQinQOld = 0x9100;
constexpr int kMaxTagsWalked = 8;
constexpr int kMaxExtHeaders = 16;

constexpr uint8_t kProtoIcmp = 1;
constexpr uint8_t kProtoTcp = 6;
constexpr uint8_t kProtoUdp = 17;
constexpr uint8_t kProtoSctp = 132;
constexpr uint8_t kProtoIcmp6 = 58;
constexpr uint8_t kProtoUdpLite = 136;

inline uint16_t rd16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return __builtin_bswap16(v);
}
inline uint32_t rd32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return __builtin_bswap32(v);
}

// Starts a key: the fixed fields zeroed but for the packet's metadata and frame length,
// the offsets 0; dynamic slots are the snapshot's to fill.
inline void start_key(const PacketMeta& meta, uint32_t len, PacketKey* k) {
  // Sixteen bytes at a time: for a 128-byte memset (or a loop it recognises as one) GCC
  // emits `rep stos`, whose start-up costs more than the rest of the parse; the empty asm
  // hides that the value is zero.
  static_assert(kFixedFields % 4 == 0);
  __m128i zero = _mm_setzero_si128();
  asm("" : "+x"(zero));
  for (int i = 0; i < kFixedFields; i += 4) _mm_store_si128(reinterpret_cast<__m128i*>(k->f + i), zero);
  k->l3_offset = k->l3_size = k->l4_offset = k->reserved = 0;
  k->f[F_ADAPTER] = meta.adapter;
  k->f[F_DIRECTION] = static_cast<uint32_t>(meta.direction);
  k->f[F_VM] = meta.vm;
  k->f[F_FRAME_LEN] = len;
}

// Transport header at frame[off, end).  Fills ports / flags / ICMP type and code.
void parse_l4(const uint8_t* frame, uint32_t off, uint32_t end, uint8_t proto, PacketKey* k) {
  const uint32_t avail = end > off ? end - off : 0;
  const uint8_t* p = frame + off;
  uint32_t& flags = k->f[F_PARSE_FLAGS];
  k->l4_offset = static_cast<uint16_t>(off);
  switch (proto) {
    case kProtoTcp:
    case kProtoUdp:
    case kProtoUdpLite:
    case kProtoSctp: {
      const uint32_t need = proto == kProtoTcp ? 20 : proto == kProtoSctp ? 12 : 8;
      if (avail >= 4) {
        k->f[F_SRC_PORT] = rd16(p);
        k->f[F_DST_PORT] = rd16(p + 2);
        flags |= PARSE_L4 | PARSE_PORTS;
      }
      if (proto == kProtoTcp && avail >= 14) k->f[F_TCP_FLAGS] = p[13];
      if (avail < need) flags |= PARSE_TRUNCATED;
      break;
    }
    case kProtoIcmp:
    case kProtoIcmp6:
      if (avail >= 2) {
        k->f[F_ICMP_TYPE] = p[0];
        k->f[F_ICMP_CODE] = p[1];
        flags |= PARSE_L4;
      }
      if (avail < 8) flags |= PARSE_TRUNCATED;
      break;
    default:
      break;
  }
}

void parse_ipv4(const uint8_t* frame, uint32_t off, uint32_t len, PacketKey* k) {
  uint32_t& flags = k->f[F_PARSE_FLAGS];
  const uint32_t avail = len - off;
  k->l3_offset = static_cast<uint16_t>(off);
  k->l3_size = static_cast<uint16_t>(avail);
  if (avail < 20) {
    flags |= PARSE_TRUNCATED;
    return;
  }
  const uint8_t* ip = frame + off;
  const uint32_t ihl = (ip[0] & 0xf) * 4u;
  const uint32_t tot = rd16(ip + 2);
  if ((ip[0] >> 4) != 4 || ihl < 20 || tot < ihl) {
    flags |= PARSE_BAD_IP_HEADER;
    return;
  }
  if (avail < ihl) {
    flags |= PARSE_TRUNCATED;
    return;
  }
  k->f[F_IP_VER] = 4;
  k->f[F_IP_PROTO] = ip[9];
  k->f[F_SRC_IP0] = rd32(ip + 12);
  k->f[F_DST_IP0] = rd32(ip + 16);
  if (ihl > 20) flags |= PARSE_IP_OPTIONS;
  flags |= PARSE_L3;
  // Ethernet padding is not part of the IP packet; a short frame keeps what it has.
  const uint32_t l3_end = off + (tot < avail ? tot : avail);
  if (tot > avail) flags |= PARSE_TRUNCATED;
  k->l3_size = static_cast<uint16_t>(l3_end - off);
  const uint16_t frag = rd16(ip + 6);
  const uint16_t frag_off = frag & 0x1fff;
  if ((frag & 0x2000) || frag_off) k->f[F_IP_FRAG] |= FRAG_IS_FRAGMENT;
  if (frag_off) {
    k->f[F_IP_FRAG] |= FRAG_LATER;
    return;  // a non-first fragment has no transport header
  }
  parse_l4(frame, off + ihl, l3_end, ip[9], k);
}

void parse_ipv6(const uint8_t* frame, uint32_t off, uint32_t len, PacketKey* k) {
  uint32_t& flags = k->f[F_PARSE_FLAGS];
  const uint32_t avail = len - off;
  k->l3_offset = static_cast<uint16_t>(off);
  k->l3_size = static_cast<uint16_t>(avail);
  if (avail < 40) {
    flags |= PARSE_TRUNCATED;
    return;
  }
  const uint8_t* ip = frame + off;
  if ((ip[0] >> 4) != 6) {
    flags |= PARSE_BAD_IP_HEADER;
    return;
  }
  k->f[F_IP_VER] = 6;
  for (int w = 0; w < 4; ++w) {
    k->f[F_SRC_IP0 + w] = rd32(ip + 8 + 4 * w);
    k->f[F_DST_IP0 + w] = rd32(ip + 24 + 4 * w);
  }
  flags |= PARSE_L3;
  const uint32_t plen = rd16(ip + 4);
  const uint32_t l3_end = off + 40 + plen < len ? off + 40 + plen : len;
  if (off + 40 + plen > len) flags |= PARSE_TRUNCATED;
  k->l3_size = static_cast<uint16_t>(l3_end - off);

  uint8_t nh = ip[6];
  uint32_t pos = off + 40;
  for (int n = 0; n <= kMaxExtHeaders; ++n) {
    if (n == kMaxExtHeaders) {
      flags |= PARSE_BAD_EXT_HEADER;
      k->f[F_IP_PROTO] = nh;
      return;
    }
    uint32_t hlen;
    switch (nh) {
      case 0:    // hop-by-hop options
      case 43:   // routing
      case 60:   // destination options
        if (pos + 2 > l3_end) goto truncated;
        hlen = (frame[pos + 1] + 1u) * 8u;
        break;
      case 51:   // authentication header
        if (pos + 2 > l3_end) goto truncated;
        hlen = (frame[pos + 1] + 2u) * 4u;
        break;
      case 44: {  // fragment
        if (pos + 8 > l3_end) goto truncated;
        const uint16_t fo = rd16(frame + pos + 2);
        k->f[F_IP_FRAG] |= FRAG_IS_FRAGMENT;
        if (fo >> 3) {
          k->f[F_IP_FRAG] |= FRAG_LATER;
          k->f[F_IP_PROTO] = frame[pos];
          return;
        }
        hlen = 8;
        break;
      }
      case 50:   // ESP: everything after it is encrypted
        flags |= PARSE_STOPPED_AT_ESP;
        k->f[F_IP_PROTO] = nh;
        return;
      case 135: case 139: case 140:  // mobility, HIP, shim6: not walked
        flags |= PARSE_UNKNOWN_EXT;
        k->f[F_IP_PROTO] = nh;
        return;
      default:   // a transport (or unknown upper-layer) protocol
        k->f[F_IP_PROTO] = nh;
        parse_l4(frame, pos, l3_end, nh, k);
        return;
    }
    if (pos + hlen > l3_end) goto truncated;
    nh = frame[pos];
    pos += hlen;
  }
  return;
truncated:
  flags |= PARSE_TRUNCATED | PARSE_BAD_EXT_HEADER;
  k->f[F_IP_PROTO] = nh;
}

// The Ethernet header's VLAN tags (at most kMaxTagsWalked), for a frame of len >= 14:
// the ethertype after them and where its payload starts, or `truncated` (the frame ends
// inside a tag; off and type are then meaningless).
struct L2Walk {
  uint32_t off = 12;  // of the ethertype while walking; of the payload when done
  uint16_t type = 0;
  uint32_t tags = 0;
  uint32_t vlan = 0;  // the outer VID << 16 | the inner VID
  bool truncated = false;
};

L2Walk walk_l2(const uint8_t* frame, uint32_t len) {
  L2Walk w;
  w.type = rd16(frame + w.off);
  while (w.type == kEthVlan || w.type == kEthQinQ || w.type == kEthQinQOld) {
    if (w.off + 6 > len) {
      w.truncated = true;
      return w;
    }
    const uint32_t vid = rd16(frame + w.off + 2) & 0x0fff;
    if (w.tags == 0) w.vlan |= vid << 16;
    else if (w.tags == 1) w.vlan |= vid;
    ++w.tags;
    w.off += 4;
    w.type = rd16(frame + w.off);
    if (w.tags == kMaxTagsWalked) break;
  }
  w.off += 2;
  return w;
}

}  // namespace

bool parse_common_frame(const uint8_t* frame, uint32_t len, const PacketMeta& meta, PacketKey* k) {
  if (len < 14 + 20 + 8) return false;
  const uint8_t* ip = frame + 14;
  const uint8_t proto = ip[9];
  const uint32_t tot = rd16(ip + 2);
  const uint32_t l4_len = proto == kProtoTcp ? 20 : proto == kProtoUdp ? 8 : 0;
  if (rd16(frame + 12) != kEthIpv4 || ip[0] != 0x45 || l4_len == 0 || (rd16(ip + 6) & 0x3fff) != 0 ||
      tot < 20 + l4_len || tot > len - 14)
    return false;
  start_key(meta, len, k);
  k->f[F_ETH_DST_HI] = rd16(frame);
  k->f[F_ETH_DST_LO] = rd32(frame + 2);
  k->f[F_ETH_SRC_HI] = rd16(frame + 6);
  k->f[F_ETH_SRC_LO] = rd32(frame + 8);
  k->f[F_ETH_TYPE] = kEthIpv4;
  k->f[F_IP_VER] = 4;
  k->f[F_IP_PROTO] = proto;
  k->f[F_SRC_IP0] = rd32(ip + 12);
  k->f[F_DST_IP0] = rd32(ip + 16);
  k->f[F_SRC_PORT] = rd16(ip + 20);
  k->f[F_DST_PORT] = rd16(ip + 22);
  if (proto == kProtoTcp) k->f[F_TCP_FLAGS] = ip[33];
  k->f[F_PARSE_FLAGS] = PARSE_L2 | PARSE_L3 | PARSE_L4 | PARSE_PORTS;
  k->l3_offset = 14;
  k->l3_size = static_cast<uint16_t>(tot);
  k->l4_offset = 34;
  return true;
}

uint32_t l3_offset(const uint8_t* frame, uint32_t len) {
  if (len < 14) return 0;
  const L2Walk w = walk_l2(frame, len);
  if (w.truncated || (w.type != kEthIpv4 && w.type != kEthIpv6)) return 0;
  return len > w.off ? w.off : 0;
}

void parse_frame(const uint8_t* frame, uint32_t len, const PacketMeta& meta, PacketKey* k) {
  if (parse_common_frame(frame, len, meta, k)) return;
  parse_any_frame(frame, len, meta, k);
}

void parse_any_frame(const uint8_t* frame, uint32_t len, const PacketMeta& meta, PacketKey* k) {
  start_key(meta, len, k);
  uint32_t& flags = k->f[F_PARSE_FLAGS];
  if (len >= 6) {
    k->f[F_ETH_DST_HI] = rd16(frame);
    k->f[F_ETH_DST_LO] = rd32(frame + 2);
  }
  if (len >= 12) {
    k->f[F_ETH_SRC_HI] = rd16(frame + 6);
    k->f[F_ETH_SRC_LO] = rd32(frame + 8);
  }
  if (len < 14) {
    flags |= PARSE_TRUNCATED;
    return;
  }
  const L2Walk w = walk_l2(frame, len);
  k->f[F_VLAN] = (w.tags > 3 ? 3 : w.tags) << 28 | w.vlan;
  if (w.truncated) {
    flags |= PARSE_TRUNCATED;
    return;
  }
  if (w.tags > 2) flags |= PARSE_TOO_MANY_TAGS;
  const uint32_t off = w.off;
  const uint16_t type = w.type;
  flags |= PARSE_L2;
  if (type < 0x0600) return;  // 802.3 length field: LLC follows, no ethertype
  k->f[F_ETH_TYPE] = type;
  if (type == kEthIpv4) parse_ipv4(frame, off, len, k);
  else if (type == kEthIpv6) parse_ipv6(frame, off, len, k);
}

}  // namespace vpf::matcher
