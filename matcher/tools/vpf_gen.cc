// vpf-gen: writes ClassBench-like rule sets (JSON) and traces (pcap), and the demo's
// sample capture.
#include <boost/program_options.hpp>
#include <cstdio>
#include <fstream>
#include <iostream>

#include "classbench.h"
#include "vpf/matcher/rules_json.h"

namespace po = boost::program_options;
using namespace vpf;

namespace {

int usage(FILE* to = stderr) {
  std::fprintf(to,
               "usage: vpf-gen rules --style acl|fw|ipc --count N [--family 4|6] [--seed S] [--out FILE]\n"
               "       vpf-gen trace --rules FILE --count N [--seed S] --out FILE.pcap\n"
               "       vpf-gen demo --out FILE.pcap\n"
               "       vpf-gen mix --count N [--flows F] [--len BYTES] [--drop-share PERCENT] --out FILE.pcap\n"
               "       vpf-gen --from-classbench FILTERS [--out RULES.json]\n"
               "         (a ClassBench filter file as a rules file: rule i gets id i+1, outgoing, local = source)\n");
  return to == stdout ? 0 : 2;
}

matcher::IpAddr v4(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
  matcher::IpAddr x;
  x.w[0] = uint32_t(a) << 24 | uint32_t(b) << 16 | uint32_t(c) << 8 | d;
  return x;
}

// The demo capture: what a VM at 10.0.0.1 might send.
std::vector<std::vector<uint8_t>> demo_frames() {
  struct H {
    uint8_t proto;
    matcher::IpAddr dst;
    uint16_t sport, dport;
    size_t len;
  };
  const H hs[] = {
      {6, v4(10, 0, 0, 2), 40001, 22, 74},     {6, v4(10, 0, 0, 2), 40002, 80, 74},
      {6, v4(10, 0, 0, 2), 40003, 443, 590},   {17, v4(10, 0, 0, 53), 5353, 53, 80},
      {1, v4(10, 0, 0, 2), 0, 0, 98},          {6, v4(192, 168, 7, 7), 40004, 3306, 74},
      {17, v4(10, 0, 0, 2), 6000, 5001, 1400}, {6, v4(10, 0, 0, 2), 40005, 23, 74},
      {17, v4(8, 8, 8, 8), 5353, 53, 80},      {6, v4(10, 0, 0, 2), 40006, 8080, 1200},
  };
  std::vector<std::vector<uint8_t>> out;
  for (const auto& h : hs) {
    bench::Header x;
    x.proto = h.proto;
    x.src = v4(10, 0, 0, 1);
    x.dst = h.dst;
    x.sport = h.sport;
    x.dport = h.dport;
    out.push_back(bench::header_frame(x, h.len));
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return usage();
  const std::string cmd = argv[1];
  if (cmd == "--help" || cmd == "-h") return usage(stdout);
  if (cmd == "--from-classbench") {
    if (argc != 3 && !(argc == 5 && std::string(argv[3]) == "--out")) return usage();
    try {
      const std::string text = matcher::rules_to_json(bench::read_classbench_filters(argv[2])).dump(1) + "\n";
      if (argc == 3) {
        std::fwrite(text.data(), 1, text.size(), stdout);
      } else if (!(std::ofstream(argv[4]) << text)) {
        std::fprintf(stderr, "vpf-gen: cannot write %s\n", argv[4]);
        return 1;
      }
      return 0;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "vpf-gen: %s\n", e.what());
      return 1;
    }
  }
  std::string style = "acl", out, rules_path;
  size_t count = 1000, len = 64, flows = 0;
  int family = 4, drop_share = 0;
  uint64_t seed = 1;
  po::options_description opts;
  opts.add_options()("style", po::value(&style))("count", po::value(&count))("family", po::value(&family))(
      "seed", po::value(&seed))("out", po::value(&out))("rules", po::value(&rules_path))(
      "len", po::value(&len))("drop-share", po::value(&drop_share))("flows", po::value(&flows));
  try {
    po::variables_map vm;
    po::store(po::command_line_parser(argc - 1, argv + 1).options(opts).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::fprintf(stderr, "vpf-gen: %s\n", e.what());
    return usage();
  }
  try {
    if (cmd == "rules") {
      bench::GenOptions g;
      if (!bench::parse_style(style, &g.style)) {
        std::fprintf(stderr, "vpf-gen: --style: '%s' is not acl, fw or ipc\n", style.c_str());
        return 2;
      }
      if (family != 4 && family != 6) {
        std::fprintf(stderr, "vpf-gen: --family must be 4 or 6\n");
        return 2;
      }
      g.count = count;
      g.family = family;
      g.seed = seed;
      const std::string text = matcher::rules_to_json(bench::generate_rules(g)).dump(1) + "\n";
      if (out.empty()) std::fwrite(text.data(), 1, text.size(), stdout);
      else std::ofstream(out) << text;
      return 0;
    }
    if (cmd == "trace") {
      if (rules_path.empty() || out.empty()) return usage();
      const auto rules = matcher::rules_from_file(rules_path);
      std::vector<std::vector<uint8_t>> frames;
      for (const auto& h : bench::generate_trace(rules, count, seed)) frames.push_back(bench::header_frame(h));
      bench::write_pcap(out, frames);
      return 0;
    }
    if (cmd == "mix") {
      // Datapath replay traffic: `flows` flows (default: one per frame), frame i of flow
      // i % flows; flow f is UDP if f is even, else TCP, from 10.0.0.1 + f / 50000 port
      // 10000 + f % 50000 to 10.0.0.2 port 5001; drop_share percent of the frames come from
      // source port 9 (what a drop rule can pick).
      if (flows == 0) flows = count;
      if (out.empty() || drop_share < 0 || drop_share > 100 || len < 60 || flows > count) return usage();
      std::vector<std::vector<uint8_t>> frames;
      for (size_t i = 0; i < count; ++i) {
        const size_t f = i % flows;
        bench::Header h;
        h.proto = f % 2 ? 6 : 17;
        h.src = v4(10, 0, 0, uint8_t(1 + f / 50000));
        h.dst = v4(10, 0, 0, 2);
        h.sport = (i * 100 / count) < size_t(drop_share) ? 9 : uint16_t(10000 + f % 50000);
        h.dport = 5001;
        frames.push_back(bench::header_frame(h, len));
      }
      bench::write_pcap(out, frames);
      return 0;
    }
    if (cmd == "demo") {
      if (out.empty()) return usage();
      bench::write_pcap(out, demo_frames());
      return 0;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vpf-gen: %s\n", e.what());
    return 1;
  }
  return usage();
}
