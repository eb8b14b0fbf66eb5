// vpfctl conn: the connections the plugin follows (docs/connections.md, docs/vpfctl.md).
#include <boost/program_options.hpp>
#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "agent_calls.h"
#include "commands.h"

namespace po = boost::program_options;
using nlohmann::json;

namespace vpfctl {

namespace {

std::string endpoint(const json& c, const char* side) {
  return vpfctl::endpoint(c[std::string(side) + "_address"].get<std::string>(), c[std::string(side) + "_port"].get<unsigned>());
}

void print_table(const json& conns) {
  std::printf("%8s %7s %6s %-5s %-21s %-21s %-8s %-12s %10s %12s %10s %12s %9s\n", "id", "adapter", "vm", "proto",
              "local", "remote", "opened", "state", "tx packets", "tx bytes", "rx packets", "rx bytes", "idle ms");
  for (const json& c : conns)
    std::printf("%8lu %7d %6u %-5s %-21s %-21s %-8s %-12s %10lu %12lu %10lu %12lu %9lu%s\n", c["id"].get<unsigned long>(),
                c["adapter_id"].get<int>(), c["vm"].get<unsigned>(), c["protocol"].get<std::string>().c_str(),
                endpoint(c, "local").c_str(), endpoint(c, "remote").c_str(), c["direction"].get<std::string>().c_str(),
                c["state"].get<std::string>().c_str(), c["packets_sent"].get<unsigned long>(),
                c["bytes_sent"].get<unsigned long>(), c["packets_received"].get<unsigned long>(),
                c["bytes_received"].get<unsigned long>(), c["idle_ms"].get<unsigned long>(),
                c.value("suspended", false) ? " suspended" : c.value("pending", false) ? " pending" : "");
}

int conn_list(const std::vector<std::string>& args) {
  po::options_description opts(
      "vpfctl conn list [--adapter N] [options]\n\nThe TCP connections and UDP flows the plugin follows (on the "
      "adapters that connection\nrules are in force on), by id: the VM's side first; tx/rx from the VM's point of "
      "view.\n\noptions");
  int64_t adapter = -1;
  opts.add_options()("adapter,i", po::value(&adapter), "only this adapter");
  po::variables_map vm;
  Common c;
  if (auto r = parse("conn list", opts, args, vm, &c)) return *r;
  if (vm.count("adapter") && adapter < 0) {
    std::fprintf(stderr, "vpfctl conn list: --adapter: an adapter id is 0 or more\n");
    return kExitUsage;
  }
  return guarded([&] {
    auto a = connect("conn list", c);
    const json got = call("conn list", *a, "list_connections", adapter >= 0 ? json{{"adapter", adapter}} : json::object());
    if (!got["tracking"].get<bool>())
      std::fprintf(stderr, "vpfctl conn list: the plugin tracks no connections (it runs with conns=0)\n");
    if (c.format == "json")
      print_json_lines(got["connections"]);
    else
      print_table(got["connections"]);
    return kExitOk;
  });
}

int conn_show(const std::vector<std::string>& args) {
  po::options_description opts("vpfctl conn show ID [options]\n\nOne connection, field by field.\n\noptions");
  int64_t id = 0;
  opts.add_options()("id", po::value(&id)->required(), "the connection's id (as conn list shows it)");
  po::positional_options_description pos;
  pos.add("id", 1);
  po::variables_map vm;
  Common c;
  if (auto r = parse("conn show", opts, args, vm, &c, true, false, &pos)) return *r;
  if (id <= 0) {
    std::fprintf(stderr, "vpfctl conn show: ID: connection ids start at 1\n");
    return kExitUsage;
  }
  return guarded([&] {
    auto a = connect("conn show", c);
    const json conn = call("conn show", *a, "get_connection", {{"id", id}});
    if (c.format == "json") {
      std::printf("%s\n", conn.dump().c_str());
    } else {
      for (const auto& [k, v] : conn.items())
        std::printf("%-17s %s\n", (k + ":").c_str(), v.is_string() ? v.get<std::string>().c_str() : v.dump().c_str());
    }
    return kExitOk;
  });
}

// `vpfctl conn NAME ID WORD`: one call of the agent's `method` about connection ID, WORD one
// of `words`, its parameters made by params(id, word).
int conn_word_command(const std::vector<std::string>& args, const std::string& name, const std::string& usage,
                      const std::vector<std::string>& words, const char* method,
                      json (*params)(int64_t id, const std::string& word)) {
  po::options_description opts(usage);
  int64_t id = 0;
  std::string word, choices;
  for (const auto& w : words) choices += (choices.empty() ? "" : " or ") + w;
  opts.add_options()("id", po::value(&id)->required(), "the connection's id")
      ("word", po::value(&word)->required(), choices.c_str());
  po::positional_options_description pos;
  pos.add("id", 1).add("word", 1);
  po::variables_map vm;
  Common c;
  if (auto r = parse(name.c_str(), opts, args, vm, &c, false, false, &pos)) return *r;
  if (id <= 0) {
    std::fprintf(stderr, "vpfctl %s: ID: connection ids start at 1\n", name.c_str());
    return kExitUsage;
  }
  if (std::find(words.begin(), words.end(), word) == words.end()) {
    std::fprintf(stderr, "vpfctl %s: '%s' is not %s\n", name.c_str(), word.c_str(), choices.c_str());
    return kExitUsage;
  }
  return guarded([&] {
    auto a = connect(name.c_str(), c);
    call(name.c_str(), *a, method, params(id, word));
    return kExitOk;
  });
}

int conn_set_state(const std::vector<std::string>& args) {
  return conn_word_command(
      args, "conn set-state",
      "vpfctl conn set-state ID suspended|resumed [options]\n\nWhile suspended, the connection's packets raise no "
      "events of its connection rule\n(they pass); connection events go on.\n\noptions",
      {"suspended", "resumed"}, "set_connection_state",
      [](int64_t id, const std::string& w) { return json{{"id", id}, {"suspended", w == "suspended"}}; });
}

int conn_complete(const std::vector<std::string>& args) {
  return conn_word_command(
      args, "conn complete",
      "vpfctl conn complete ID allow|block [options]\n\nCompletes the connection's pended connect request (a rule "
      "with\npend_connect_request holds the VM's SYN until then), whichever client it\nwas sent to: allow sends the "
      "SYN on and lets the connection through, block\ndrops it and blocks the connection.\n\noptions",
      {"allow", "block"}, "complete_connect_request",
      [](int64_t id, const std::string& w) { return json{{"id", id}, {"verdict", w}}; });
}

const Command kConnCommands[] = {
    {"list", "the connections followed, by id", conn_list},
    {"show", "one connection, field by field", conn_show},
    {"set-state", "suspend or resume a connection's events", conn_set_state},
    {"complete", "allow or block a pended connect request", conn_complete},
};

}  // namespace

int cmd_conn(const std::vector<std::string>& args) { return subcommand("conn", kConnCommands, args); }

}  // namespace vpfctl
