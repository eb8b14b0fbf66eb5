// vpf-console: see decode.h.
#include "decode.h"

#include <QStringList>

namespace vpf::console {

namespace {

struct Reader {
  const QByteArray& d;
  int off;
  bool has(int n) const { return off + n <= d.size(); }
  int u8(int at) const { return uint8_t(d[off + at]); }
  int u16(int at) const { return u8(at) << 8 | u8(at + 1); }
};

QString mac(const QByteArray& d, int at) {
  QStringList p;
  for (int i = 0; i < 6; ++i) p << QString("%1").arg(uint8_t(d[at + i]), 2, 16, QChar('0'));
  return p.join(':');
}
QString ipv4(const Reader& r, int at) {
  return QString("%1.%2.%3.%4").arg(r.u8(at)).arg(r.u8(at + 1)).arg(r.u8(at + 2)).arg(r.u8(at + 3));
}
QString ipv6(const Reader& r, int at) {
  QStringList p;
  for (int i = 0; i < 8; ++i) p << QString::number(r.u16(at + 2 * i), 16);
  return p.join(':');
}
QString tcp_flags(int f) {
  static const char* names[] = {"FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"};
  QStringList out;
  for (int i = 0; i < 8; ++i)
    if (f & (1 << i)) out << names[i];
  return out.join(", ");
}

// The transport layer at r.off with `len` bytes of IP payload.
void transport(Summary& s, QStringList* lines, const Reader& r, int proto, int len, bool first_fragment) {
  if (!first_fragment) {
    s.protocol = "IP fragment";
    s.info = QString("protocol %1, not the first fragment").arg(proto);
    return;
  }
  if ((proto == 6 || proto == 17 || proto == 132) && r.has(4)) {
    const int sp = r.u16(0), dp = r.u16(2);
    if (proto == 6 && r.has(16)) {
      s.protocol = "TCP";
      s.info = QString("%1 → %2 [%3] Seq=%4 Win=%5")
                   .arg(sp).arg(dp).arg(tcp_flags(r.u8(13)))
                   .arg(quint32(r.u16(4)) << 16 | quint32(r.u16(6))).arg(r.u16(14));
    } else if (proto == 17) {
      s.protocol = "UDP";
      s.info = QString("%1 → %2 Len=%3").arg(sp).arg(dp).arg(std::max(0, len - 8));
    } else {
      s.protocol = proto == 6 ? "TCP" : "SCTP";
      s.info = QString("%1 → %2%3").arg(sp).arg(dp).arg(proto == 6 ? " [truncated]" : "");
    }
    if (lines) *lines << QString("%1: source port %2, destination port %3").arg(s.protocol).arg(sp).arg(dp);
    return;
  }
  if ((proto == 1 || proto == 58) && r.has(2)) {
    const int type = r.u8(0), code = r.u8(1);
    s.protocol = proto == 1 ? "ICMP" : "ICMPv6";
    const bool echo_req = (proto == 1 && type == 8) || (proto == 58 && type == 128);
    const bool echo_rep = (proto == 1 && type == 0) || (proto == 58 && type == 129);
    if ((echo_req || echo_rep) && r.has(8))
      s.info = QString("Echo (ping) %1 id=0x%2, seq=%3")
                   .arg(echo_req ? "request" : "reply").arg(r.u16(4), 4, 16, QChar('0')).arg(r.u16(6));
    else
      s.info = QString("type %1, code %2").arg(type).arg(code);
    if (lines) *lines << QString("%1: type %2, code %3").arg(s.protocol).arg(type).arg(code);
    return;
  }
  s.protocol = QString("IP proto %1").arg(proto);
  s.info = r.has(1) ? QString("%1 bytes").arg(len) : "truncated";
}

Summary decode(const QByteArray& d, QStringList* lines) {
  Summary s;
  if (d.size() < 14) {
    s.protocol = "?";
    s.info = QString("truncated Ethernet frame (%1 bytes)").arg(d.size());
    if (lines) *lines << s.info;
    return s;
  }
  s.source = mac(d, 6);
  s.destination = mac(d, 0);
  if (lines) *lines << QString("Ethernet: %1 → %2").arg(s.source, s.destination);
  Reader r{d, 12};
  int type = r.u16(0);
  r.off += 2;
  while ((type == 0x8100 || type == 0x88a8) && r.has(4)) {
    if (lines) *lines << QString("802.1Q: VLAN %1, priority %2").arg(r.u16(0) & 0xfff).arg(r.u8(0) >> 5);
    type = r.u16(2);
    r.off += 4;
  }
  if (type == 0x0806 && r.has(28)) {
    s.protocol = "ARP";
    const int op = r.u16(6);
    s.info = op == 1 ? QString("Who has %1? Tell %2").arg(ipv4(r, 24), ipv4(r, 14))
                     : op == 2 ? QString("%1 is at %2").arg(ipv4(r, 14), mac(d, r.off + 8))
                               : QString("operation %1").arg(op);
  } else if (type == 0x0800 && r.has(20)) {
    const int ihl = (r.u8(0) & 15) * 4, total = r.u16(2), proto = r.u8(9);
    const bool first = (r.u16(6) & 0x1fff) == 0;
    s.source = ipv4(r, 12);
    s.destination = ipv4(r, 16);
    if (lines) *lines << QString("IPv4: %1 → %2, TTL %3, protocol %4, total length %5")
                            .arg(s.source, s.destination).arg(r.u8(8)).arg(proto).arg(total);
    if (ihl < 20 || !r.has(ihl)) {
      s.protocol = "IPv4";
      s.info = "bad header length";
    } else {
      Reader t{d, r.off + ihl};
      transport(s, lines, t, proto, total - ihl, first);
    }
  } else if (type == 0x86dd && r.has(40)) {
    s.source = ipv6(r, 8);
    s.destination = ipv6(r, 24);
    const int next = r.u8(6), len = r.u16(4);
    if (lines) *lines << QString("IPv6: %1 → %2, next header %3, payload %4").arg(s.source, s.destination).arg(next).arg(len);
    Reader t{d, r.off + 40};
    transport(s, lines, t, next, len, true);
  } else {
    s.protocol = QString("0x%1").arg(type, 4, 16, QChar('0'));
    s.info = (type == 0x0800 || type == 0x86dd || type == 0x0806) ? "truncated" : "unknown EtherType";
  }
  if (lines && !s.info.isEmpty()) *lines << QString("%1: %2").arg(s.protocol, s.info);
  return s;
}

}  // namespace

Summary summarize(const QByteArray& frame) { return decode(frame, nullptr); }

QString describe(const QByteArray& frame) {
  QStringList lines;
  decode(frame, &lines);
  return lines.join('\n');
}

QString hex_dump(const QByteArray& d) {
  QString out;
  for (int i = 0; i < d.size(); i += 16) {
    QString hex, text;
    for (int j = i; j < i + 16; ++j) {
      if (j < d.size()) {
        const uint8_t b = uint8_t(d[j]);
        hex += QString("%1 ").arg(b, 2, 16, QChar('0'));
        text += (b >= 32 && b < 127) ? QChar(b) : QChar('.');
      } else {
        hex += "   ";
      }
      if (j == i + 7) hex += ' ';
    }
    out += QString("%1  %2 %3\n").arg(i, 4, 16, QChar('0')).arg(hex, text);
  }
  return out;
}

}  // namespace vpf::console
