// vpfctl: what the agent's commands share (agent_calls.h).
#include "agent_calls.h"

#include <cstdio>
#include <iostream>

#include "commands.h"
#include "vpf/protocol.h"

namespace po = boost::program_options;
using nlohmann::json;

namespace vpfctl {

volatile sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

std::optional<int> parse(const char* cmd, po::options_description& opts, const std::vector<std::string>& args,
                         po::variables_map& vm, Common* common, bool with_format, bool with_instance,
                         const po::positional_options_description* pos) {
  if (common) {
    opts.add_options()("socket", po::value(&common->socket), "vpf-agent's socket (default: $VPF_AGENT_SOCKET, "
                                                             "$OVS_RUNDIR/vpf-agent.sock, /var/run/openvswitch/vpf-agent.sock)");
    if (with_format) opts.add_options()("format", po::value(&common->format)->default_value("table"), "table or json");
    if (with_instance)
      opts.add_options()("instance", po::value(&common->instance)->default_value("default"),
                         "the instance (product GUID) whose rules to use");
  }
  opts.add_options()("help,h", "show this help");
  try {
    auto p = po::command_line_parser(args).options(opts);
    if (pos) p.positional(*pos);
    po::store(p.run(), vm);
    if (vm.count("help")) {
      std::cout << opts << "\n";
      return kExitOk;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    std::fprintf(stderr, "vpfctl %s: %s (see vpfctl %s --help)\n", cmd, e.what(), cmd);
    return kExitUsage;
  }
  if (common && common->format != "table" && common->format != "json") {
    std::fprintf(stderr, "vpfctl %s: --format: '%s' is not table or json\n", cmd, common->format.c_str());
    return kExitUsage;
  }
  return std::nullopt;
}

std::unique_ptr<vpf::AgentConnection> connect(const char* cmd, const Common& c,
                                              vpf::AgentConnection::EventFn ev) {
  try {
    return std::make_unique<vpf::AgentConnection>(c.socket.empty() ? vpf::AgentConnection::default_socket() : c.socket,
                                                  std::move(ev));
  } catch (const vpf::NetFilterError& e) {
    std::fprintf(stderr, "vpfctl %s: %s (is vpf-agent running?)\n", cmd, e.what());
    throw Failed{kExitFailure};
  }
}

json call(const char* cmd, vpf::AgentConnection& a, const std::string& method, const json& params) {
  try {
    return a.call(method, params);
  } catch (const vpf::NetFilterError& e) {
    std::fprintf(stderr, "vpfctl %s: %s\n", cmd, e.what());
    const bool invalid = e.code() == vpf::kErrorInvalidParameter || e.code() == vpf::kErrorAlreadyExists ||
                         e.code() == vpf::kErrorNotFound;
    throw Failed{invalid ? kExitRefused : kExitFailure};
  }
}

void print_json_lines(const json& list) {
  for (const auto& x : list) std::printf("%s\n", x.dump().c_str());
}

std::string endpoint(const std::string& address, unsigned port) {
  const bool v6 = address.find(':') != std::string::npos;
  return (v6 ? "[" + address + "]" : address) + ":" + std::to_string(port);
}

int subcommand(const char* cmd, std::span<const Command> table, const std::vector<std::string>& all) {
  const std::string sub = all.empty() ? "" : all[0];
  for (const Command& c : table)
    if (sub == c.name) return c.run(std::vector<std::string>(all.begin() + 1, all.end()));
  const bool help = sub == "--help" || sub == "-h";
  FILE* out = help ? stdout : stderr;
  if (!help && !sub.empty()) std::fprintf(out, "vpfctl %s: '%s' is not a subcommand of %s\n", cmd, sub.c_str(), cmd);
  std::fprintf(out, "usage: vpfctl %s SUBCOMMAND [options]   (vpfctl %s SUBCOMMAND --help)\n", cmd, cmd);
  for (const Command& c : table) std::fprintf(out, "  %-8s %s\n", c.name, c.summary);
  return help ? kExitOk : kExitUsage;
}

}  // namespace vpfctl
