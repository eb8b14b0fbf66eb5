// vpfctl: what every command that talks to vpf-agent shares — its common options, the
// connection, a call whose failure is reported and becomes the exit code.
#pragma once

#include <signal.h>

#include <boost/program_options.hpp>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "commands.h"
#include "vpf/agent_connection.h"

namespace vpfctl {

// A failed agent request, already reported on stderr; carries the exit code.
struct Failed {
  int code;
};

// Set by SIGINT/SIGTERM (on_signal) for the commands that run until interrupted.
extern volatile sig_atomic_t g_stop;
void on_signal(int);

struct Common {
  std::string socket, format = "table", instance = "default";
};

// Parses `args` for `cmd` (adding --socket, --format and --instance as asked, and --help);
// returns an exit code when the command is done (help, error).
std::optional<int> parse(const char* cmd, boost::program_options::options_description& opts,
                         const std::vector<std::string>& args, boost::program_options::variables_map& vm,
                         Common* common, bool with_format = true, bool with_instance = false,
                         const boost::program_options::positional_options_description* pos = nullptr);

// The agent's connection; reports and throws Failed when it cannot be made.
std::unique_ptr<vpf::AgentConnection> connect(const char* cmd, const Common& c, vpf::AgentConnection::EventFn ev = {});

// One request; an error is reported and thrown as Failed (kExitRefused for bad input or
// what does not exist, kExitFailure otherwise).
nlohmann::json call(const char* cmd, vpf::AgentConnection& a, const std::string& method,
                    const nlohmann::json& params = nlohmann::json::object());

// Runs fn, turning a Failed into its exit code.
template <class F>
int guarded(F fn) {
  try {
    return fn();
  } catch (const Failed& f) {
    return f.code;
  }
}

void print_json_lines(const nlohmann::json& list);

// ADDRESS:PORT, an IPv6 address in brackets ([fd00::1]:80).
std::string endpoint(const std::string& address, unsigned port);

// Runs the subcommand of `cmd` (e.g. "rule") that all[0] names, or prints the table
// (to stdout for --help, else with the reason to stderr and kExitUsage).
int subcommand(const char* cmd, std::span<const Command> table, const std::vector<std::string>& all);

}  // namespace vpfctl
