// A ClassBench-like generator of 5-tuple rule sets and header traces.
//
// It follows the structure of ClassBench (Taylor & Turner): rule sets in three styles with
// their own prefix-length and port-range distributions, addresses drawn from a small set
// of nested "networks" so that rules overlap as in real policies, and traces made by
// picking a rule, drawing a header inside it, and repeating it a Pareto-distributed number
// of times (locality of reference).  The numbers are the project's own approximation, not
// ClassBench's seed files.
//
//   acl: long source and destination prefixes, exact destination ports, mostly TCP;
//   fw:  many wildcards and port ranges, any-protocol rules;
//   ipc: in between.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "vpf/matcher/rule.h"

namespace vpf::bench {

enum class Style { Acl, Fw, Ipc };
const char* style_name(Style s);
bool parse_style(const std::string& name, Style* out);

struct GenOptions {
  Style style = Style::Acl;
  size_t count = 1000;
  int family = 4;  // 4 or 6
  uint64_t seed = 1;
};

// Filter rules (action drop), direction outgoing, local = source, remote = destination,
// ids 0..count-1 in priority order (rule 0 decides first).  No rule wildcards both
// addresses (it would shadow the rules after it), and there is no catch-all: unmatched
// headers exist.
std::vector<matcher::Rule> generate_rules(const GenOptions& opt);

struct Header {
  int family = 4;
  uint8_t proto = 6;
  matcher::IpAddr src, dst;
  uint16_t sport = 0, dport = 0;
};

// `count` headers; about 1 in 20 is random (matches whatever it matches).
std::vector<Header> generate_trace(const std::vector<matcher::Rule>& rules, size_t count, uint64_t seed);

// An Ethernet frame carrying the header (TCP, UDP, SCTP or UDP-Lite with its ports; an
// ICMP echo body for any other protocol; IPv4 or IPv6), padded to
// `min_len` bytes (no FCS).
std::vector<uint8_t> header_frame(const Header& h, size_t min_len = 64);

// Standard ClassBench inputs (the files of Taylor & Turner's filter sets and trace_generator).
//
// A filter file has one rule per line, "@SRC/LEN DST/LEN SPLO : SPHI DPLO : DPHI PROTO/MASK"
// and optionally more fields (flags), which are ignored; line order is priority (the first
// rule that matches wins).  Rule i (from 0) becomes filter rule id i+1, action drop,
// direction outgoing, IPv4, local = source, remote = destination.  A port range applies to
// TCP, UDP, SCTP and UDP-Lite only (docs/rules.md): a rule for another protocol keeps no
// port condition; a rule for any protocol keeps its ranges, which then match packets of
// those four.  A protocol mask is 0xFF (exact) or 0x00 (any).  Throws std::runtime_error
// naming the file, the line and what is wrong.
std::vector<matcher::Rule> read_classbench_filters(const std::string& path);

// A header trace has one header per line, "SRC DST SPORT DPORT PROTO ..." (addresses as
// unsigned 32-bit decimals; later fields ignored).  Throws std::runtime_error as above.
std::vector<Header> read_classbench_trace(const std::string& path);

// Writes Ethernet frames to a pcap file; throws std::runtime_error on failure.
void write_pcap(const std::string& path, const std::vector<std::vector<uint8_t>>& frames);

}  // namespace vpf::bench
