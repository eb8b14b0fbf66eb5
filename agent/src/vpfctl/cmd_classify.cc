// vpfctl classify: rules file + capture file -> one decision per packet.
#include <pcap/pcap.h>

#include <boost/program_options.hpp>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "vpf/matcher/classifier.h"
#include "vpf/matcher/rules_json.h"

namespace po = boost::program_options;
using namespace vpf::matcher;

namespace vpfctl {

int cmd_classify(const std::vector<std::string>& args) {
  po::options_description opts(
      "vpfctl classify --rules RULES.json --pcap CAPTURE.pcap [options]\n\n"
      "Decides every packet of a capture file (pcap or pcapng, Ethernet) against a rules\n"
      "file (docs/rules.md), as the datapath would on one adapter and direction, and prints\n"
      "the packet's index, length, the deciding rule and the action.\n\noptions");
  std::string rules_path, pcap_path, direction = "out", format = "table", isa;
  uint32_t adapter = 0, vm = 0;
  opts.add_options()
      ("help,h", "show this help")
      ("rules", po::value(&rules_path)->required(), "rules file (JSON)")
      ("pcap", po::value(&pcap_path)->required(), "capture file (pcap or pcapng)")
      ("adapter", po::value(&adapter)->default_value(0), "adapter id the packets are seen on")
      ("direction", po::value(&direction)->default_value("out"), "in (to the VM) or out (from the VM)")
      ("vm", po::value(&vm)->default_value(0), "VM id of the adapter")
      ("format", po::value(&format)->default_value("table"), "table or json (one object per line)")
      ("isa", po::value(&isa), "classifier kernel: scalar, sse42, avx2, avx512 (default: best)");
  po::variables_map vm_map;
  try {
    po::store(po::command_line_parser(args).options(opts).run(), vm_map);
    if (vm_map.count("help")) {
      std::cout << opts << "\n";
      return kExitOk;
    }
    po::notify(vm_map);
  } catch (const po::error& e) {
    std::fprintf(stderr, "vpfctl classify: %s\n", e.what());
    return kExitUsage;
  }
  PacketMeta meta;
  meta.adapter = adapter;
  meta.vm = vm;
  if (direction == "out" || direction == "outgoing") meta.direction = Direction::Outgoing;
  else if (direction == "in" || direction == "incoming") meta.direction = Direction::Incoming;
  else {
    std::fprintf(stderr, "vpfctl classify: --direction: '%s' is not in or out\n", direction.c_str());
    return kExitUsage;
  }
  if (format != "table" && format != "json") {
    std::fprintf(stderr, "vpfctl classify: --format: '%s' is not table or json\n", format.c_str());
    return kExitUsage;
  }

  Classifier c;
  if (!isa.empty()) {
    auto chosen = parse_isa(isa);
    if (!chosen) {
      std::fprintf(stderr, "vpfctl classify: --isa: '%s' is not scalar, sse42, avx2 or avx512\n", isa.c_str());
      return kExitUsage;
    }
    try {
      c.set_isa(*chosen);
    } catch (const std::invalid_argument& e) {
      std::fprintf(stderr, "vpfctl classify: --isa: %s\n", e.what());
      return kExitFailure;
    }
  }
  try {
    c.apply({}, rules_from_file(rules_path));
  } catch (const RulesFileError& e) {
    std::fprintf(stderr, "vpfctl classify: %s\n", e.what());
    return e.io() ? kExitFailure : kExitRefused;
  } catch (const RuleError& e) {
    std::fprintf(stderr, "vpfctl classify: %s: %s\n", rules_path.c_str(), e.what());
    return kExitRefused;
  }

  char err[PCAP_ERRBUF_SIZE] = {0};
  pcap_t* p = pcap_open_offline(pcap_path.c_str(), err);
  if (!p) {
    std::fprintf(stderr, "vpfctl classify: %s\n", err);
    return kExitFailure;
  }
  if (pcap_datalink(p) != DLT_EN10MB) {
    std::fprintf(stderr, "vpfctl classify: %s: link type %s is not Ethernet\n", pcap_path.c_str(),
                 pcap_datalink_val_to_name(pcap_datalink(p)));
    pcap_close(p);
    return kExitRefused;
  }
  if (format == "table")
    std::printf("%6s %6s  %-9s %6s  %-11s %s\n", "index", "length", "direction", "rule", "kind", "action");
  uint64_t index = 0, counts[4] = {0, 0, 0, 0}, unmatched = 0;
  pcap_pkthdr* h;
  const u_char* data;
  int rc;
  while ((rc = pcap_next_ex(p, &h, &data)) == 1) {
    // A truncated capture record is classified on what it holds, like the datapath would
    // classify a short frame.
    const Decision d = c.classify_one(data, h->caplen, meta);
    counts[int(d.action)]++;
    unmatched += !d.matched();
    if (format == "json") {
      nlohmann::json j = {{"index", index}, {"length", h->caplen}, {"direction", to_string(meta.direction)},
                          {"action", to_string(d.action)}};
      j["rule"] = d.matched() ? nlohmann::json(d.rule_id) : nlohmann::json(nullptr);
      j["kind"] = d.matched() ? nlohmann::json(to_string(d.kind)) : nlohmann::json(nullptr);
      std::printf("%s\n", j.dump().c_str());
    } else if (d.matched()) {
      std::printf("%6llu %6u  %-9s %6u  %-11s %s\n", (unsigned long long)index, h->caplen,
                  to_string(meta.direction), d.rule_id, to_string(d.kind), to_string(d.action));
    } else {
      std::printf("%6llu %6u  %-9s %6s  %-11s %s\n", (unsigned long long)index, h->caplen,
                  to_string(meta.direction), "-", "-", "pass");
    }
    ++index;
  }
  if (rc == PCAP_ERROR) {
    std::fprintf(stderr, "vpfctl classify: %s: %s\n", pcap_path.c_str(), pcap_geterr(p));
    pcap_close(p);
    return kExitFailure;
  }
  pcap_close(p);
  if (format == "table")
    std::printf("\n%llu packets: %llu dropped, %llu captured, %llu notified, %llu passed (%llu by no rule)\n",
                (unsigned long long)index, (unsigned long long)counts[1], (unsigned long long)counts[2],
                (unsigned long long)counts[3], (unsigned long long)counts[0], (unsigned long long)unmatched);
  return kExitOk;
}

}  // namespace vpfctl
