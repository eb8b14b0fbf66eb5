// vpfctl: one handler per command, registered in the table in main.cc.
#pragma once

#include <string>
#include <vector>

namespace vpfctl {

// Exit codes (docs/vpfctl.md).
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;   // the command ran and failed (I/O, agent error)
inline constexpr int kExitUsage = 2;     // bad command line
inline constexpr int kExitRefused = 3;   // rules or input refused as invalid

struct Command {
  const char* name;
  const char* summary;
  // args: the command's own arguments (argv after the command name).
  int (*run)(const std::vector<std::string>& args);
};

int cmd_classify(const std::vector<std::string>& args);
int cmd_adapters(const std::vector<std::string>& args);
int cmd_rule(const std::vector<std::string>& args);
int cmd_start(const std::vector<std::string>& args);
int cmd_stop(const std::vector<std::string>& args);
int cmd_stats(const std::vector<std::string>& args);
int cmd_conn(const std::vector<std::string>& args);
int cmd_capture(const std::vector<std::string>& args);
int cmd_notify(const std::vector<std::string>& args);
int cmd_send(const std::vector<std::string>& args);
int cmd_insert(const std::vector<std::string>& args);
int cmd_install(const std::vector<std::string>& args);
int cmd_uninstall(const std::vector<std::string>& args);
int cmd_status(const std::vector<std::string>& args);

}  // namespace vpfctl
