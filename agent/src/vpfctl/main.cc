// vpfctl: command-line front end of vportfilter.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "commands.h"

namespace {

const vpfctl::Command kCommands[] = {
    {.name = "adapters", .summary = "list the adapters (VM ports)", .run = vpfctl::cmd_adapters},
    {.name = "rule", .summary = "add, del, list, import or export rules", .run = vpfctl::cmd_rule},
    {.name = "start", .summary = "put an instance's rules in force", .run = vpfctl::cmd_start},
    {.name = "stop", .summary = "take an instance's rules out of the datapath", .run = vpfctl::cmd_stop},
    {.name = "stats", .summary = "counters per adapter and per rule", .run = vpfctl::cmd_stats},
    {.name = "conn", .summary = "list or show the connections the plugin follows", .run = vpfctl::cmd_conn},
    {.name = "capture", .summary = "record notified and captured packets to pcap/pcapng", .run = vpfctl::cmd_capture},
    {.name = "notify", .summary = "print notified and captured packets as they come", .run = vpfctl::cmd_notify},
    {.name = "send", .summary = "put frames into the switch as a VM", .run = vpfctl::cmd_send},
    {.name = "insert", .summary = "deliver frames to a VM", .run = vpfctl::cmd_insert},
    {.name = "install", .summary = "register an instance (and the plugin)", .run = vpfctl::cmd_install},
    {.name = "uninstall", .summary = "remove an instance and its rules", .run = vpfctl::cmd_uninstall},
    {.name = "status", .summary = "the agent, the plugin and the instances", .run = vpfctl::cmd_status},
    {.name = "classify", .summary = "decide a capture file offline against a rules file", .run = vpfctl::cmd_classify},
};

void usage(FILE* out) {
  std::fprintf(out,
               "usage: vpfctl COMMAND [OPTIONS]\n"
               "       vpfctl COMMAND --help\n\ncommands:\n");
  for (const auto& c : kCommands) std::fprintf(out, "  %-10s %s\n", c.name, c.summary);
  std::fprintf(out,
               "\nexit codes: 0 ok, 1 failed (also: vpf-agent unreachable), 2 bad command line,\n"
               "            3 input refused as invalid (a rule, a frame, a file)\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    usage(stderr);
    return vpfctl::kExitUsage;
  }
  const std::string cmd = argv[1];
  if (cmd == "-h" || cmd == "--help" || cmd == "help") {
    usage(stdout);
    return vpfctl::kExitOk;
  }
  if (cmd == "--version") {
    std::printf("vpfctl 0.1.0\n");
    return vpfctl::kExitOk;
  }
  for (const auto& c : kCommands)
    if (cmd == c.name) return c.run(std::vector<std::string>(argv + 2, argv + argc));
  std::fprintf(stderr, "vpfctl: unknown command '%s'\n\n", cmd.c_str());
  usage(stderr);
  return vpfctl::kExitUsage;
}
