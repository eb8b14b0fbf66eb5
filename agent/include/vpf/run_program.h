// Runs a program with an argument vector and waits for it: no shell, so a path or option
// with a quote, a space or a `$` reaches the program as it is.  The agent, the library and
// vpfctl run Open vSwitch's tools (ovsdb-tool, ovsdb-client, ovs-appctl, ovs-vsctl) with it.
#pragma once

#include <spawn.h>
#include <sys/wait.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

extern char** environ;

namespace vpf {

// The command as one would type it (arguments with blanks or quotes in single quotes),
// for messages.
inline std::string command_line(const std::vector<std::string>& argv) {
  std::string out;
  for (const std::string& a : argv) {
    if (!out.empty()) out += ' ';
    if (!a.empty() && a.find_first_of(" \t'\"\\$`") == std::string::npos) {
      out += a;
      continue;
    }
    out += '\'';
    for (char c : a) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
    out += '\'';
  }
  return out;
}

// "" when the program exited with status 0; else the command and what went wrong ("exited
// with status 1", "killed by signal 9", "cannot run: No such file or directory").
inline std::string run_program(const std::vector<std::string>& argv) {
  if (argv.empty()) return "no program to run";
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid;
  const int rc = posix_spawnp(&pid, args[0], nullptr, nullptr, args.data(), environ);
  if (rc != 0) return command_line(argv) + ": cannot run: " + std::strerror(rc);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return command_line(argv) + ": " + std::strerror(errno);
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return "";
  if (WIFEXITED(status)) return command_line(argv) + ": exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return command_line(argv) + ": killed by signal " + std::to_string(WTERMSIG(status));
  return command_line(argv) + ": ended abnormally";
}

}  // namespace vpf
