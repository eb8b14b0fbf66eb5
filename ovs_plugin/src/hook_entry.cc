// The plugin's entry point and the hook ABI glue (include/openvswitch/packet-hook.h of
// the patched Open vSwitch).  The only exported symbols are ovs_packet_hook_init and
// ovs_packet_hook_abi (the header's current version: batches carry the packets' bytes
// and lengths, ports say which directions they want, the plugin names itself, it hands
// the switch the received packets whose headers it checked, and the passes the switch may
// remember per exact flow until the port's memo_gen changes).
//
// Arguments (other_config:packet-hook-args), space-separated key=value words:
//   rules=FILE      rules to start with (docs/rules.md); a bare word is taken as FILE
//   control=PATH    the agent's control socket; default $OVS_RUNDIR/vportfilter.sock
//                   (/var/run/openvswitch without OVS_RUNDIR); "none": no agent
//   policy=fail-open|fail-closed
//   cache=FLOWS     each datapath thread's decision cache size (default 65536; 0: none)
//   conns=N         the connection table's size (default 65536; 0: no tracking): the
//                   connections of the adapters that connection rules are in force on
//                   are followed (conn_tracking.h); vportfilter/conn-list lists them
//   conns_per_adapter=M  at most M of them on one adapter (default: N)
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <sstream>
#include <string>

#include "control.h"
#include "plugin.h"

namespace {

using vpf::plugin::ControlServer;
using vpf::plugin::Plugin;
using vpf::plugin::Port;

std::unique_ptr<Plugin> g_plugin;
std::unique_ptr<ControlServer> g_control;
const ovs_packet_hook_host* g_host;

void* port_open(const char* name, const char* type) { return g_plugin->port_open(name, type); }
void port_close(void* p) { g_plugin->port_close(static_cast<Port*>(p)); }
void port_attach(void* p, ovs_packet_hook_port_state* s) { g_plugin->port_attach(static_cast<Port*>(p), s); }
void rx(void* p, int, ovs_packet_hook_batch* b) {
  g_plugin->hook(static_cast<Port*>(p), vpf::matcher::Direction::Outgoing, b);
}
void tx(void* p, int, ovs_packet_hook_batch* b) {
  g_plugin->hook(static_cast<Port*>(p), vpf::matcher::Direction::Incoming, b);
}
void fini() {
  g_control.reset();  // first: its thread uses the plugin
  g_plugin.reset();
}

void reply(ovs_packet_hook_reply* r, bool ok, const std::string& text) {
  g_host->command_reply(r, ok ? 1 : 0, text.c_str());
}

void cmd_show(int, const char*[], void*, ovs_packet_hook_reply* r) {
  std::string text = g_plugin->show();
  if (g_control) text += "control socket: " + g_control->path() + "\n";
  reply(r, true, text);
}
void cmd_stats(int, const char*[], void*, ovs_packet_hook_reply* r) { reply(r, true, g_plugin->stats().dump(2)); }
void cmd_conn_list(int, const char*[], void*, ovs_packet_hook_reply* r) {
  bool ok;
  const std::string text = g_plugin->conn_list(&ok);
  reply(r, ok, text);
}
void cmd_rules_load(int, const char* argv[], void*, ovs_packet_hook_reply* r) {
  bool ok;
  const std::string text = g_plugin->rules_load(argv[1], &ok);
  reply(r, ok, text);
}
void cmd_rule_add(int, const char* argv[], void*, ovs_packet_hook_reply* r) {
  bool ok;
  const std::string text = g_plugin->rule_add(argv[1], &ok);
  reply(r, ok, text);
}
void cmd_rule_remove(int, const char* argv[], void*, ovs_packet_hook_reply* r) {
  bool ok;
  const std::string text = g_plugin->rule_remove(argv[1], &ok);
  reply(r, ok, text);
}
void cmd_adapter_set(int argc, const char* argv[], void*, ovs_packet_hook_reply* r) {
  bool ok;
  const std::string text = g_plugin->adapter_set(argv[1], argv[2], argc > 3 ? argv[3] : "", &ok);
  reply(r, ok, text);
}
void cmd_policy(int, const char* argv[], void*, ovs_packet_hook_reply* r) {
  bool ok;
  const std::string text = g_plugin->policy_set(argv[1], &ok);
  reply(r, ok, text);
}

const ovs_packet_hook_ops kOps = {
    .size = sizeof(ovs_packet_hook_ops),
    .version = OVS_PACKET_HOOK_ABI_VERSION,
    .port_open = port_open,
    .port_close = port_close,
    .rx = rx,
    .tx = tx,
    .fini = fini,
    .port_attach = port_attach,
    .name = "vportfilter",
    .plugin_version = VPF_VERSION,
};

struct Args {
  std::string rules, control, policy;
  uint32_t cache_flows = vpf::matcher::Classifier::kDefaultCacheFlows;
  uint32_t conns = vpf::plugin::ConnTracking::kDefaultConns;
  int64_t conns_per_adapter = -1;  // -1: conns
};

// KEY=V as a count of WHAT from 0 to max.
uint32_t parse_count(const std::string& key, const std::string& v, const char* what, uint32_t max) {
  char* end = nullptr;
  const unsigned long n = std::strtoul(v.c_str(), &end, 10);
  if (v.empty() || !std::isdigit(static_cast<unsigned char>(v[0])) || *end || n > max)
    throw std::invalid_argument(key + "=" + v + ": a number of " + what + " from 0 to " + std::to_string(max) + " expected");
  return uint32_t(n);
}

Args parse_args(const char* text) {
  Args a;
  const char* rundir = std::getenv("OVS_RUNDIR");
  a.control = std::string(rundir && *rundir ? rundir : "/var/run/openvswitch") + "/vportfilter.sock";
  std::istringstream in(text ? text : "");
  for (std::string w; in >> w;) {
    const auto eq = w.find('=');
    if (eq == std::string::npos) {
      a.rules = w;
      continue;
    }
    const std::string k = w.substr(0, eq), v = w.substr(eq + 1);
    if (k == "rules") a.rules = v;
    else if (k == "control") a.control = v;
    else if (k == "policy") a.policy = v;
    else if (k == "cache") a.cache_flows = parse_count(k, v, "flows", 1u << 24);
    else if (k == "conns") a.conns = parse_count(k, v, "connections", vpf::plugin::ConnTracking::kMaxConns);
    else if (k == "conns_per_adapter")
      a.conns_per_adapter = parse_count(k, v, "connections", vpf::plugin::ConnTracking::kMaxConns);
    else
      throw std::invalid_argument("unknown argument '" + k +
                                  "' (rules=, control=, policy=, cache=, conns=, conns_per_adapter=)");
  }
  return a;
}

}  // namespace

// The ABI version this plugin speaks (the switch looks it up before init).
extern "C" __attribute__((visibility("default"))) const uint32_t ovs_packet_hook_abi = OVS_PACKET_HOOK_ABI_VERSION;

extern "C" __attribute__((visibility("default"))) const ovs_packet_hook_ops* ovs_packet_hook_init(
    const ovs_packet_hook_host* host, const char* args, char* err, size_t errlen) {
  if (!host || host->size < sizeof(ovs_packet_hook_host) || host->version != OVS_PACKET_HOOK_ABI_VERSION) {
    std::snprintf(err, errlen, "vportfilter: host ABI %u, this plugin needs ABI %d", host ? host->version : 0,
                  OVS_PACKET_HOOK_ABI_VERSION);
    return nullptr;
  }
  try {
    g_host = host;
    const Args a = parse_args(args);
    const uint32_t per_adapter = a.conns_per_adapter < 0 ? a.conns : uint32_t(a.conns_per_adapter);
    g_plugin = std::make_unique<Plugin>(host, a.cache_flows, vpf::conntrack::Limits{a.conns, per_adapter});
    bool ok = true;
    std::string text;
    if (!a.rules.empty()) text = g_plugin->rules_load(a.rules, &ok);
    if (ok && !a.policy.empty()) text = g_plugin->policy_set(a.policy, &ok);
    if (!ok) throw std::runtime_error(text);
    if (a.control != "none") g_control = std::make_unique<ControlServer>(*g_plugin, a.control);
    host->register_command("vportfilter/show", "", 0, 0, cmd_show, nullptr);
    host->register_command("vportfilter/stats", "", 0, 0, cmd_stats, nullptr);
    host->register_command("vportfilter/rules-load", "FILE", 1, 1, cmd_rules_load, nullptr);
    host->register_command("vportfilter/rule-add", "JSON-RULE", 1, 1, cmd_rule_add, nullptr);
    host->register_command("vportfilter/rule-remove", "KIND:ID", 1, 1, cmd_rule_remove, nullptr);
    host->register_command("vportfilter/adapter-set", "PORT ADAPTER-ID [VM-ID]", 2, 3, cmd_adapter_set, nullptr);
    host->register_command("vportfilter/policy", "fail-open|fail-closed", 1, 1, cmd_policy, nullptr);
    host->register_command("vportfilter/conn-list", "", 0, 0, cmd_conn_list, nullptr);
    host->log(OVS_PACKET_HOOK_LOG_INFO,
              ("vportfilter: started" + (g_control ? ", control socket " + g_control->path() : std::string())).c_str());
    return &kOps;
  } catch (const std::exception& e) {
    std::snprintf(err, errlen, "vportfilter: %s", e.what());
    g_control.reset();
    g_plugin.reset();
    return nullptr;
  }
}
