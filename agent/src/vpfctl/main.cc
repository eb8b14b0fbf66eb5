// vpfctl: command-line front end of vportfilter.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "commands.h"

namespace {

const vpfctl::Command kCommands[] = {
    {.name = "classify", .summary = "decide a capture file offline against a rules file", .run = vpfctl::cmd_classify},
};

void usage(FILE* out) {
  std::fprintf(out,
               "usage: vpfctl COMMAND [OPTIONS]\n"
               "       vpfctl COMMAND --help\n\ncommands:\n");
  for (const auto& c : kCommands) std::fprintf(out, "  %-10s %s\n", c.name, c.summary);
  std::fprintf(out,
               "\nexit codes: 0 ok, 1 failed, 2 bad command line, 3 input refused as invalid\n");
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
