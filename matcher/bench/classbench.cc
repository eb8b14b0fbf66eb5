#include "classbench.h"

#include <pcap/pcap.h>

#include <cmath>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>

#include "vpf/limits.h"

namespace vpf::bench {
namespace {

using matcher::IpAddr;
using matcher::PortRange;
using matcher::Rule;

struct Dist {
  // (prefix length, weight) pairs
  std::vector<std::pair<int, int>> v;
  int draw(std::mt19937_64& rng) const {
    int total = 0;
    for (auto& [l, w] : v) total += w;
    int x = int(rng() % uint64_t(total));
    for (auto& [l, w] : v) {
      if (x < w) return l;
      x -= w;
    }
    return v.back().first;
  }
};

struct StyleParams {
  Dist src4, dst4, src6, dst6;
  int sport_any, sport_range, sport_exact;   // weights
  int dport_exact, dport_range, dport_any;
  int tcp, udp, icmp, any_proto;
};

StyleParams params(Style s) {
  switch (s) {
    case Style::Acl:
      return {{{{0, 5}, {8, 3}, {16, 7}, {24, 30}, {28, 5}, {32, 50}}},
              {{{0, 2}, {16, 8}, {24, 30}, {30, 5}, {32, 55}}},
              {{{0, 5}, {32, 5}, {48, 20}, {64, 30}, {128, 40}}},
              {{{0, 2}, {48, 18}, {64, 30}, {128, 50}}},
              90, 5, 5, 65, 20, 15, 75, 15, 5, 5};
    case Style::Fw:
      return {{{{0, 30}, {8, 10}, {16, 10}, {24, 25}, {32, 25}}},
              {{{0, 25}, {8, 5}, {16, 15}, {24, 25}, {32, 30}}},
              {{{0, 30}, {32, 10}, {48, 20}, {64, 20}, {128, 20}}},
              {{{0, 25}, {32, 10}, {48, 20}, {64, 20}, {128, 25}}},
              60, 25, 15, 40, 35, 25, 50, 25, 5, 20};
    case Style::Ipc:
      return {{{{0, 15}, {8, 5}, {16, 10}, {24, 30}, {32, 40}}},
              {{{0, 10}, {16, 10}, {24, 30}, {32, 50}}},
              {{{0, 15}, {32, 5}, {48, 20}, {64, 30}, {128, 30}}},
              {{{0, 10}, {48, 20}, {64, 30}, {128, 40}}},
              80, 10, 10, 55, 25, 20, 60, 25, 5, 10};
  }
  return params(Style::Acl);
}

int pick(std::mt19937_64& rng, std::initializer_list<int> weights) {
  int total = 0;
  for (int w : weights) total += w;
  int x = int(rng() % uint64_t(total)), i = 0;
  for (int w : weights) {
    if (x < w) return i;
    x -= w;
    ++i;
  }
  return i - 1;
}

const uint16_t kPorts[] = {80, 443, 22, 53, 25, 110, 143, 3306, 5432, 8080, 8443, 123, 161, 389, 636, 1521, 6379, 11211, 9200, 5000};

IpAddr mask_of(int family, int plen) {
  IpAddr m;
  const int words = family == 4 ? 1 : 4;
  for (int w = 0; w < words; ++w) {
    const int bits = plen - 32 * w;
    m.w[w] = bits >= 32 ? ~0u : bits <= 0 ? 0 : ~0u << (32 - bits);
  }
  return m;
}

// Addresses come from 24 "networks" so that rules nest and overlap.
struct AddressPool {
  std::vector<IpAddr> bases;
  AddressPool(int family, std::mt19937_64& rng) {
    for (int i = 0; i < 24; ++i) {
      IpAddr a;
      if (family == 4) a.w[0] = uint32_t(rng()) & 0xffff0000u;
      else a.w = {0x20010db8u ^ (uint32_t(rng()) & 0x0000ffffu), uint32_t(rng()) & 0xffff0000u, 0, 0};
      bases.push_back(a);
    }
  }
  IpAddr draw(int family, std::mt19937_64& rng) const {
    IpAddr a = bases[std::min<size_t>(bases.size() - 1, size_t(std::abs(std::normal_distribution<double>(0, 7)(rng))))];
    if (family == 4) a.w[0] |= uint32_t(rng()) & 0x0000ffffu;
    else {
      a.w[1] |= uint32_t(rng()) & 0xffffu;
      a.w[2] = uint32_t(rng());
      a.w[3] = uint32_t(rng());
    }
    return a;
  }
};

PortRange range_between(std::mt19937_64& rng) {
  switch (rng() % 3) {
    case 0: return {1024, 65535};
    case 1: return {0, 1023};
    default: {
      const uint16_t lo = uint16_t(rng() % 60000);
      return {lo, uint16_t(lo + rng() % 5000)};
    }
  }
}

}  // namespace

const char* style_name(Style s) { return s == Style::Acl ? "acl" : s == Style::Fw ? "fw" : "ipc"; }

bool parse_style(const std::string& n, Style* out) {
  if (n == "acl") *out = Style::Acl;
  else if (n == "fw") *out = Style::Fw;
  else if (n == "ipc") *out = Style::Ipc;
  else return false;
  return true;
}

std::vector<Rule> generate_rules(const GenOptions& opt) {
  std::mt19937_64 rng(opt.seed);
  const StyleParams p = params(opt.style);
  const AddressPool pool(opt.family, rng);
  std::vector<Rule> out;
  out.reserve(opt.count);
  for (size_t i = 0; i < opt.count; ++i) {
    Rule r;
    r.kind = matcher::RuleKind::Filter;
    r.id = uint32_t(i);
    r.action = matcher::Action::Drop;
    r.direction = matcher::Direction::Outgoing;
    r.ip_family = uint8_t(opt.family);
    const int proto = pick(rng, {p.tcp, p.udp, p.icmp, p.any_proto});
    r.protocol = proto == 0 ? 6 : proto == 1 ? 17 : proto == 2 ? (opt.family == 4 ? 1 : 58) : 0;
    const int sl = (opt.family == 4 ? p.src4 : p.src6).draw(rng);
    int dl = (opt.family == 4 ? p.dst4 : p.dst6).draw(rng);
    // A rule wildcarding both addresses would shadow most of the set; policies put such
    // rules last, if at all.  Give it a destination prefix instead.
    if (sl == 0 && dl == 0) dl = opt.family == 4 ? 24 : 64;
    if (sl > 0) {
      r.local_mask = mask_of(opt.family, sl);
      r.local_ip = pool.draw(opt.family, rng);
      for (int w = 0; w < 4; ++w) r.local_ip.w[w] &= r.local_mask.w[w];
    }
    if (dl > 0) {
      r.remote_mask = mask_of(opt.family, dl);
      r.remote_ip = pool.draw(opt.family, rng);
      for (int w = 0; w < 4; ++w) r.remote_ip.w[w] &= r.remote_mask.w[w];
    }
    if (r.protocol == 6 || r.protocol == 17) {
      switch (pick(rng, {p.sport_any, p.sport_range, p.sport_exact})) {
        case 1: r.local_port = range_between(rng); break;
        case 2: r.local_port = {uint16_t(1024 + rng() % 60000), 0}; r.local_port.hi = r.local_port.lo; break;
        default: break;
      }
      switch (pick(rng, {p.dport_exact, p.dport_range, p.dport_any})) {
        case 0: {
          const uint16_t d = kPorts[std::min<size_t>(19, size_t(std::abs(std::normal_distribution<double>(0, 5)(rng))))];
          r.remote_port = {d, d};
          break;
        }
        case 1: r.remote_port = range_between(rng); break;
        default: break;
      }
    }
    out.push_back(r);
  }
  return out;
}

std::vector<Header> generate_trace(const std::vector<Rule>& rules, size_t count, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<Header> out;
  out.reserve(count);
  const int family = rules.empty() ? 4 : rules[0].ip_family;
  auto within = [&](const IpAddr& a, const IpAddr& m) {
    IpAddr x;
    for (int w = 0; w < 4; ++w) x.w[w] = (a.w[w] & m.w[w]) | (uint32_t(rng()) & ~m.w[w]);
    if (family == 4) x.w[1] = x.w[2] = x.w[3] = 0;
    return x;
  };
  auto port_in = [&](const PortRange& r) { return uint16_t(r.lo + rng() % (uint32_t(r.hi - r.lo) + 1)); };
  while (out.size() < count) {
    Header h;
    h.family = family;
    if (rules.empty() || rng() % 20 == 0) {
      h.proto = rng() % 2 ? 6 : 17;
      IpAddr zero;
      h.src = within(zero, zero);
      h.dst = within(zero, zero);
      h.sport = uint16_t(rng());
      h.dport = uint16_t(rng());
    } else {
      const Rule& r = rules[rng() % rules.size()];
      h.proto = r.protocol ? r.protocol : (rng() % 2 ? 6 : 17);
      h.src = within(r.local_ip, r.local_mask);
      h.dst = within(r.remote_ip, r.remote_mask);
      h.sport = port_in(r.local_port);
      h.dport = port_in(r.remote_port);
    }
    // Locality: repeat the header a Pareto-distributed number of times (mean ~ 3).
    const double u = std::uniform_real_distribution<double>(1e-9, 1.0)(rng);
    size_t repeat = size_t(std::min(64.0, std::floor(1.0 / std::pow(u, 1.0 / 1.5))));
    for (size_t k = 0; k < repeat && out.size() < count; ++k) out.push_back(h);
  }
  return out;
}

std::vector<uint8_t> header_frame(const Header& h, size_t min_len) {
  std::vector<uint8_t> f = {0x52, 0x54, 0, 0, 0, 2, 0x52, 0x54, 0, 0, 0, 1};
  auto put16 = [&](uint16_t v) {
    f.push_back(uint8_t(v >> 8));
    f.push_back(uint8_t(v));
  };
  auto put32 = [&](uint32_t v) {
    put16(uint16_t(v >> 16));
    put16(uint16_t(v));
  };
  const size_t l4len = h.proto == 6 ? 20 : h.proto == 132 ? 12 : 8;
  if (h.family == 4) {
    put16(0x0800);
    const size_t ip = f.size();
    put16(0x4500);
    put16(uint16_t(20 + l4len));
    put32(0);
    f.push_back(64);
    f.push_back(h.proto);
    put16(0);
    put32(h.src.w[0]);
    put32(h.dst.w[0]);
    uint32_t sum = 0;
    for (size_t i = 0; i < 20; i += 2) sum += uint32_t(f[ip + i] << 8 | f[ip + i + 1]);
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    f[ip + 10] = uint8_t(~sum >> 8);
    f[ip + 11] = uint8_t(~sum);
  } else {
    put16(0x86dd);
    put32(0x60000000);
    put16(uint16_t(l4len));
    f.push_back(h.proto);
    f.push_back(64);
    for (uint32_t w : h.src.w) put32(w);
    for (uint32_t w : h.dst.w) put32(w);
  }
  if (h.proto == 6) {
    put16(h.sport);
    put16(h.dport);
    put32(1);
    put32(0);
    put16(0x5002);
    put16(65535);
    put32(0);
  } else if (h.proto == 17 || h.proto == 136) {  // UDP; UDP-Lite (checksum coverage 8)
    put16(h.sport);
    put16(h.dport);
    put16(8);
    put16(0);
  } else if (h.proto == 132) {  // SCTP: ports, verification tag, checksum
    put16(h.sport);
    put16(h.dport);
    put32(1);
    put32(0);
  } else {
    f.push_back(8);
    f.push_back(0);
    put16(0);
    put32(0x00010001);
  }
  if (f.size() < min_len) f.resize(min_len, 0);
  return f;
}

namespace {

// The lines of a ClassBench file, each with its number; blank lines skipped.
template <class F>
void each_line(const std::string& path, F&& f) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error(path + ": cannot open");
  std::string line;
  for (size_t no = 1; std::getline(in, line); ++no) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      f(line);
    } catch (const std::exception& e) {
      throw std::runtime_error(path + ":" + std::to_string(no) + ": " + e.what() + ": " + line);
    }
  }
}

uint32_t number(const std::string& text, uint64_t max, const char* what) {
  size_t used = 0;
  uint64_t v = 0;
  try {
    v = std::stoull(text, &used, 0);
  } catch (const std::exception&) {
    used = 0;
  }
  if (text.empty() || used != text.size() || v > max)
    throw std::invalid_argument(std::string(what) + " '" + text + "' is not a number up to " + std::to_string(max));
  return uint32_t(v);
}

// "A.B.C.D/LEN" -> address and mask (both zero for /0).
void prefix(const std::string& text, IpAddr* addr, IpAddr* mask) {
  const size_t slash = text.find('/');
  if (slash == std::string::npos) throw std::invalid_argument("'" + text + "' is not ADDRESS/LENGTH");
  const uint32_t len = number(text.substr(slash + 1), 32, "prefix length");
  uint32_t a = 0;
  std::stringstream ss(text.substr(0, slash));
  std::string part;
  int parts = 0;
  while (std::getline(ss, part, '.')) a = a << 8 | number(part, 255, "address byte"), ++parts;
  if (parts != 4) throw std::invalid_argument("'" + text + "' is not a dotted IPv4 address");
  *mask = IpAddr{};
  *addr = IpAddr{};
  if (len == 0) return;
  *mask = mask_of(4, int(len));
  addr->w[0] = a & mask->w[0];
}

bool has_ports(uint8_t proto) { return proto == 6 || proto == 17 || proto == 132 || proto == 136; }

}  // namespace

std::vector<Rule> read_classbench_filters(const std::string& path) {
  std::vector<Rule> out;
  each_line(path, [&](const std::string& line) {
    if (line[0] != '@') throw std::invalid_argument("a filter starts with '@'");
    std::stringstream ss(line.substr(1));
    std::string src, dst, splo, c1, sphi, dplo, c2, dphi, proto;
    if (!(ss >> src >> dst >> splo >> c1 >> sphi >> dplo >> c2 >> dphi >> proto) || c1 != ":" || c2 != ":")
      throw std::invalid_argument("expected SRC/LEN DST/LEN SPLO : SPHI DPLO : DPHI PROTO/MASK");
    Rule r;
    r.kind = matcher::RuleKind::Filter;
    r.id = uint32_t(out.size() + 1);
    r.action = matcher::Action::Drop;
    r.direction = matcher::Direction::Outgoing;
    r.ip_family = 4;
    prefix(src, &r.local_ip, &r.local_mask);
    prefix(dst, &r.remote_ip, &r.remote_mask);
    r.local_port = {uint16_t(number(splo, 65535, "port")), uint16_t(number(sphi, 65535, "port"))};
    r.remote_port = {uint16_t(number(dplo, 65535, "port")), uint16_t(number(dphi, 65535, "port"))};
    if (r.local_port.lo > r.local_port.hi || r.remote_port.lo > r.remote_port.hi)
      throw std::invalid_argument("a port range ends below its start");
    const size_t slash = proto.find('/');
    if (slash == std::string::npos) throw std::invalid_argument("'" + proto + "' is not PROTO/MASK");
    const uint32_t p = number(proto.substr(0, slash), 255, "protocol");
    const uint32_t m = number(proto.substr(slash + 1), 255, "protocol mask");
    if (m != 0 && m != 0xff) throw std::invalid_argument("protocol mask " + proto.substr(slash + 1) + " is not 0x00 or 0xFF");
    r.protocol = m ? uint8_t(p) : 0;
    if (r.protocol && !has_ports(r.protocol)) r.local_port = r.remote_port = PortRange{};
    out.push_back(r);
  });
  return out;
}

std::vector<Header> read_classbench_trace(const std::string& path) {
  std::vector<Header> out;
  each_line(path, [&](const std::string& line) {
    std::stringstream ss(line);
    std::string f[5];
    for (auto& x : f)
      if (!(ss >> x)) throw std::invalid_argument("expected SRC DST SPORT DPORT PROTO");
    Header h;
    h.family = 4;
    h.src.w[0] = number(f[0], 0xffffffffu, "source address");
    h.dst.w[0] = number(f[1], 0xffffffffu, "destination address");
    h.sport = uint16_t(number(f[2], 65535, "source port"));
    h.dport = uint16_t(number(f[3], 65535, "destination port"));
    h.proto = uint8_t(number(f[4], 255, "protocol"));
    out.push_back(h);
  });
  return out;
}

void write_pcap(const std::string& path, const std::vector<std::vector<uint8_t>>& frames) {
  pcap_t* p = pcap_open_dead(DLT_EN10MB, int(vpf::kMaxSnaplen));
  pcap_dumper_t* d = pcap_dump_open(p, path.c_str());
  if (!d) {
    std::string err = pcap_geterr(p);
    pcap_close(p);
    throw std::runtime_error(path + ": " + err);
  }
  uint64_t usec = 1700000000ull * 1000000ull;
  for (const auto& f : frames) {
    pcap_pkthdr h{};
    h.ts.tv_sec = time_t(usec / 1000000);
    h.ts.tv_usec = suseconds_t(usec % 1000000);
    h.caplen = h.len = bpf_u_int32(f.size());
    pcap_dump(reinterpret_cast<u_char*>(d), &h, f.data());
    usec += 10;
  }
  pcap_dump_close(d);
  pcap_close(p);
}

}  // namespace vpf::bench
