// vpfctl: the commands that talk to vpf-agent (docs/vpfctl.md).
#include <pcap/pcap.h>
#include <signal.h>

#include <boost/program_options.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <deque>
#include <fstream>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <thread>

#include "agent_calls.h"
#include "commands.h"
#include "vpf/agent_connection.h"
#include "vpf/capture_file.h"
#include "vpf/limits.h"
#include "vpf/matcher/bpf.h"
#include "vpf/matcher/rules_json.h"
#include "vpf/run_program.h"

namespace po = boost::program_options;
using nlohmann::json;

namespace vpfctl {

namespace {

// ---- adapters ----

int adapters(const std::vector<std::string>& args) {
  po::options_description opts(
      "vpfctl adapters [--set ID [--snaplen N] [--collect-statistics yes|no]] [options]\n\nLists the adapters: the VM "
      "ports of Open vSwitch.  With --set, changes adapter ID's settings\n(kept in the database across restarts) "
      "instead.\n\noptions");
  int64_t set_id = -1, snaplen = 0;
  std::string collect;
  opts.add_options()("set", po::value(&set_id), "the adapter whose settings change")
      ("snaplen", po::value(&snaplen), "bytes of a frame in a notify event (0 = the whole frame)")
      ("collect-statistics", po::value(&collect), "yes or no: whether statistics mode reports the adapter");
  po::variables_map vm;
  Common c;
  if (auto r = parse("adapters", opts, args, vm, &c)) return *r;
  const bool setting = vm.count("snaplen") || vm.count("collect-statistics");
  if (vm.count("set") != (setting ? 1u : 0u)) {
    std::fprintf(stderr, "vpfctl adapters: --set ID goes with --snaplen and/or --collect-statistics, and they with it\n");
    return kExitUsage;
  }
  if (!collect.empty() && collect != "yes" && collect != "no") {
    std::fprintf(stderr, "vpfctl adapters: --collect-statistics takes yes or no, not '%s'\n", collect.c_str());
    return kExitUsage;
  }
  if (vm.count("set")) {
    return guarded([&] {
      auto a = connect("adapters", c);
      json p = {{"adapter", set_id}};
      if (vm.count("snaplen")) p["max_packet_bytes"] = snaplen;
      if (!collect.empty()) p["collect_statistics"] = collect == "yes";
      call("adapters", *a, "set_adapter", p);
      return kExitOk;
    });
  }
  return guarded([&] {
    auto a = connect("adapters", c);
    const json list = call("adapters", *a, "list_adapters");
    if (c.format == "json") {
      print_json_lines(list);
      return kExitOk;
    }
    std::printf("%4s  %-16s %-20s %-18s %-20s %6s %s\n", "id", "name", "type", "mac", "friendly name", "vm", "snaplen");
    for (const auto& x : list)
      std::printf("%4d  %-16s %-20s %-18s %-20s %6u %u\n", x["id"].get<int>(), x["name"].get<std::string>().c_str(),
                  x["type"].get<std::string>().c_str(), x["mac"].get<std::string>().c_str(),
                  x["friendly_name"].get<std::string>().c_str(), x["vm"].get<unsigned>(),
                  x["max_packet_bytes"].get<unsigned>());
    return kExitOk;
  });
}

// ---- rule ----

// A rule from options: --json TEXT, or one option per rules.md field.
json rule_from_options(const po::variables_map& vm) {
  if (vm.count("json")) {
    json r = json::parse(vm["json"].as<std::string>(), nullptr, false);
    if (!r.is_object()) throw std::invalid_argument("--json: not a JSON object");
    return r;
  }
  json r = json::object();
  static const char* text_fields[] = {"kind", "direction", "bpf", "action", "protocol", "local", "remote",
                                      "local-port", "remote-port"};
  static const char* int_fields[] = {"id", "adapter", "min-size", "max-size", "priority", "vm"};
  auto key = [](std::string k) {
    for (char& c : k)
      if (c == '-') c = '_';
    return k;
  };
  for (const char* f : text_fields)
    if (vm.count(f)) r[key(f)] = vm[f].as<std::string>();
  for (const char* f : int_fields)
    if (vm.count(f)) r[key(f)] = vm[f].as<int64_t>();
  for (const char* f : {"local-port", "remote-port"}) {
    if (!vm.count(f)) continue;
    const std::string v = vm[f].as<std::string>();
    if (!v.empty() && v.find_first_not_of("0123456789") == std::string::npos) r[key(f)] = std::stoll(v);
  }
  if (vm.count("flags")) {
    const std::string v = vm["flags"].as<std::string>();
    if (!v.empty() && v.find_first_not_of("0123456789") == std::string::npos) {
      r["flags"] = std::stoll(v);
    } else {
      json names = json::array();
      std::stringstream ss(v);
      for (std::string n; std::getline(ss, n, ',');) names.push_back(n);
      r["flags"] = names;
    }
  }
  if (!r.contains("id")) throw std::invalid_argument("a rule needs --id (or --json)");
  return r;
}

void table_rules(const json& rules) {
  std::printf("%-12s %10s %8s %-9s %-8s %-40s\n", "kind", "id", "adapter", "direction", "action", "match");
  for (const auto& r : rules) {
    std::string match;
    for (const auto& [k, v] : r.items()) {
      if (k == "kind" || k == "id" || k == "adapter" || k == "direction" || k == "action") continue;
      match += (match.empty() ? "" : " ") + k + "=" + (v.is_string() ? v.get<std::string>() : v.dump());
    }
    const std::string kind = r.value("kind", "filter");
    std::printf("%-12s %10u %8d %-9s %-8s %s\n", kind.c_str(), r.value("id", 0u), r.value("adapter", -1),
                r.value("direction", "any").c_str(),
                kind == "passthrough" ? "pass" : kind == "connection" ? "(flags)" : r.value("action", "drop").c_str(),
                match.c_str());
  }
}

int rule_add(const std::vector<std::string>& args) {
  po::options_description opts(
      "vpfctl rule add [--at head|tail] (--json RULE | --id N [field options])\n\n"
      "Adds one rule (docs/rules.md).  It is in force in the datapath when the command\n"
      "returns (if its instance is started).\n\noptions");
  opts.add_options()("json", po::value<std::string>(), "the whole rule as a JSON object")
      ("at", po::value<std::string>()->default_value("tail"), "head or tail of its kind's list")
      ("kind", po::value<std::string>(), "filter, passthrough or connection (default filter)")
      ("id", po::value<int64_t>(), "the rule's id, unique within its kind")
      ("adapter", po::value<int64_t>(), "adapter id, -1 = every adapter")
      ("direction", po::value<std::string>(), "outgoing, incoming or any")
      ("min-size", po::value<int64_t>(), "smallest frame, bytes")
      ("max-size", po::value<int64_t>(), "largest frame, bytes")
      ("bpf", po::value<std::string>(), "libpcap filter expression")
      ("action", po::value<std::string>(), "drop, capture, notify or count (filter rules)")
      ("priority", po::value<int64_t>(), "higher goes first (0..65535)")
      ("protocol", po::value<std::string>(), "tcp, udp, icmp, ... or a number")
      ("local", po::value<std::string>(), "the VM's address[/prefix]")
      ("remote", po::value<std::string>(), "the peer's address[/prefix]")
      ("local-port", po::value<std::string>(), "port or lo-hi")
      ("remote-port", po::value<std::string>(), "port or lo-hi")
      ("vm", po::value<int64_t>(), "VM id")
      ("flags", po::value<std::string>(), "connection rules: a number or names (block,filter,...)");
  po::variables_map vm;
  Common c;
  if (auto r = parse("rule add", opts, args, vm, &c, false, true)) return *r;
  json r;
  try {
    r = rule_from_options(vm);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vpfctl rule add: %s\n", e.what());
    return kExitUsage;
  }
  return guarded([&] {
    auto a = connect("rule add", c);
    call("rule add", *a, "add_rule", {{"instance", c.instance}, {"rule", r}, {"at", vm["at"].as<std::string>()}});
    return kExitOk;
  });
}

int rule_del(const std::vector<std::string>& args) {
  po::options_description opts("vpfctl rule del (--kind K --id N | --all [--kind K])\n\noptions");
  opts.add_options()("kind", po::value<std::string>(), "filter, passthrough or connection")
      ("id", po::value<int64_t>(), "the rule's id")("all", "every rule (of --kind)");
  po::variables_map vm;
  Common c;
  if (auto r = parse("rule del", opts, args, vm, &c, false, true)) return *r;
  if (vm.count("all") == vm.count("id")) {
    std::fprintf(stderr, "vpfctl rule del: give --id N (with --kind) or --all\n");
    return kExitUsage;
  }
  json p = {{"instance", c.instance}};
  if (vm.count("kind")) p["kind"] = vm["kind"].as<std::string>();
  if (vm.count("id")) {
    if (!vm.count("kind")) {
      std::fprintf(stderr, "vpfctl rule del: --id needs --kind\n");
      return kExitUsage;
    }
    p["id"] = vm["id"].as<int64_t>();
  }
  return guarded([&] {
    auto a = connect("rule del", c);
    const json r = call("rule del", *a, vm.count("all") ? "delete_all_rules" : "delete_rule", p);
    if (c.format == "json") std::printf("%s\n", r.dump().c_str());
    return kExitOk;
  });
}

int rule_list_or_export(const std::vector<std::string>& args, const std::string& sub) {
  po::options_description opts(sub == "list" ? "vpfctl rule list [--kind K] [options]\n\noptions"
                                             : "vpfctl rule export [-o FILE]\n\nWrites the instance's rules as a "
                                               "rules file (the input of rule import).\n\noptions");
  std::string out;
  opts.add_options()("kind", po::value<std::string>(), "only this kind");
  if (sub == "export") opts.add_options()("output,o", po::value(&out), "file (default: standard output)");
  po::variables_map vm;
  Common c;
  if (auto r = parse(sub == "list" ? "rule list" : "rule export", opts, args, vm, &c, sub == "list", true)) return *r;
  return guarded([&] {
    auto a = connect("rule", c);
    json p = {{"instance", c.instance}};
    if (vm.count("kind")) p["kind"] = vm["kind"].as<std::string>();
    const json rules = call("rule", *a, "list_rules", p);
    if (sub == "export") {
      const std::string text = json{{"rules", rules}}.dump(2) + "\n";
      if (out.empty() || out == "-") {
        std::fwrite(text.data(), 1, text.size(), stdout);
      } else {
        std::ofstream f(out);
        f << text;
        if (!f) {
          std::fprintf(stderr, "vpfctl rule export: cannot write %s\n", out.c_str());
          return kExitFailure;
        }
      }
    } else if (c.format == "json") {
      print_json_lines(rules);
    } else {
      table_rules(rules);
    }
    return kExitOk;
  });
}

int rule_list(const std::vector<std::string>& args) { return rule_list_or_export(args, "list"); }
int rule_export(const std::vector<std::string>& args) { return rule_list_or_export(args, "export"); }

int rule_import(const std::vector<std::string>& args) {
  po::options_description opts(
      "vpfctl rule import FILE [--replace]\n\nAdds every rule of a rules file in one transaction: all or none.\n\noptions");
  std::string file;
  opts.add_options()("file", po::value(&file)->required(), "the rules file")("replace", "instead of the instance's rules");
  po::positional_options_description pos;
  pos.add("file", 1);
  po::variables_map vm;
  Common c;
  if (auto r = parse("rule import", opts, args, vm, &c, false, true, &pos)) return *r;
  json rules;
  try {
    // Checked here first, so that the error names the file's rule positions; the agent
    // gets the rules as read (it stores each in this canonical form anyway).
    rules = vpf::matcher::rules_to_json(vpf::matcher::rules_from_file(file, vpf::matcher::Check::Compile));
  } catch (const vpf::matcher::RulesFileError& e) {
    std::fprintf(stderr, "vpfctl rule import: %s\n", e.what());
    return e.io() ? kExitFailure : kExitRefused;
  }
  return guarded([&] {
    auto a = connect("rule import", c);
    const json r = call("rule import", *a, "import_rules",
                        {{"instance", c.instance}, {"rules", rules}, {"replace", vm.count("replace") > 0}});
    std::fprintf(stderr, "imported %s rules\n", r["imported"].dump().c_str());
    return kExitOk;
  });
}

// The subcommands of `vpfctl rule`.
const Command kRuleCommands[] = {
    {"add", "add one rule", rule_add},
    {"del", "delete one rule (--kind, --id) or all (--all)", rule_del},
    {"list", "the instance's rules in evaluation order", rule_list},
    {"import", "add a rules file's rules in one transaction", rule_import},
    {"export", "write the instance's rules as a rules file", rule_export},
};

int rule(const std::vector<std::string>& all) { return subcommand("rule", kRuleCommands, all); }

// ---- start / stop ----

int start_stop(const std::vector<std::string>& args, bool start) {
  const char* name = start ? "start" : "stop";
  po::options_description opts(start ? "vpfctl start [--instance GUID]\n\nPuts the instance's rules in force.\n\noptions"
                                     : "vpfctl stop [--instance GUID]\n\nTakes the instance's rules out of the datapath "
                                       "(they are kept).\n\noptions");
  po::variables_map vm;
  Common c;
  if (auto r = parse(name, opts, args, vm, &c, false, true)) return *r;
  return guarded([&] {
    auto a = connect(name, c);
    call(name, *a, "set_active", {{"instance", c.instance}, {"active", start}});
    return kExitOk;
  });
}
int start(const std::vector<std::string>& a) { return start_stop(a, true); }
int stop(const std::vector<std::string>& a) { return start_stop(a, false); }

// ---- stats ----

int stats(const std::vector<std::string>& args) {
  po::options_description opts(
      "vpfctl stats [--adapter N] [--watch] [options]\n\nPer adapter: frames and bytes the VM received and sent, drops "
      "both ways,\nevents lost; per rule: hits.  --watch repeats every --interval seconds.\n\noptions");
  int64_t adapter = -1;
  double interval = 1;
  int64_t count = 0;
  opts.add_options()("adapter,i", po::value(&adapter), "only this adapter")
      ("watch,w", "repeat until interrupted (or --count times)")
      ("interval", po::value(&interval)->default_value(1), "seconds between reports with --watch")
      ("count,c", po::value(&count)->default_value(0), "reports with --watch (0 = until interrupted)");
  po::variables_map vm;
  Common c;
  if (auto r = parse("stats", opts, args, vm, &c)) return *r;
  if (interval <= 0) {
    std::fprintf(stderr, "vpfctl stats: --interval must be positive\n");
    return kExitUsage;
  }
  return guarded([&] {
    auto a = connect("stats", c);
    ::signal(SIGINT, on_signal);
    ::signal(SIGTERM, on_signal);
    for (int64_t n = 0; !g_stop; ++n) {
      const json st = call("stats", *a, "get_statistics");
      if (c.format == "json") {
        json out = st;
        if (adapter >= 0) {
          out["adapters"] = json::array();
          for (const auto& x : st["adapters"])
            if (x["adapter_id"] == adapter) out["adapters"].push_back(x);
        }
        std::printf("%s\n", out.dump().c_str());
      } else {
        std::printf("%7s %12s %14s %12s %14s %10s %10s %8s\n", "adapter", "rx packets", "rx bytes", "tx packets",
                    "tx bytes", "drop in", "drop out", "lost");
        for (const auto& x : st["adapters"]) {
          if (adapter >= 0 && x["adapter_id"] != adapter) continue;
          const json& t = x["total"];
          std::printf("%7d %12lu %14lu %12lu %14lu %10lu %10lu %8lu\n", x["adapter_id"].get<int>(),
                      t["packets_received"].get<unsigned long>(), t["bytes_received"].get<unsigned long>(),
                      t["packets_sent"].get<unsigned long>(), t["bytes_sent"].get<unsigned long>(),
                      t["packets_dropped_inbound"].get<unsigned long>(), t["packets_dropped_outbound"].get<unsigned long>(),
                      x["events_lost"].get<unsigned long>());
        }
        if (!st["rules"].empty()) {
          std::printf("%-40s %-12s %10s %12s\n", "instance", "kind", "rule", "hits");
          for (const auto& r : st["rules"])
            std::printf("%-40s %-12s %10u %12lu\n", r["instance"].get<std::string>().c_str(),
                        r["kind"].get<std::string>().c_str(), r["id"].get<unsigned>(), r["hits"].get<unsigned long>());
        }
      }
      std::fflush(stdout);
      if (!vm.count("watch") || (count > 0 && n + 1 >= count)) break;
      for (double slept = 0; slept < interval && !g_stop; slept += 0.05)
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return kExitOk;
  });
}

// ---- capture / notify: events of the rules ----

struct Event {
  vpf::protocol::EventFrame f;
  std::vector<uint8_t> data;
};

struct EventQueue {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Event> q;
  void push(const vpf::protocol::EventFrame& f, std::vector<uint8_t> d) {
    {
      std::lock_guard l(mu);
      q.push_back({f, std::move(d)});
    }
    cv.notify_one();
  }
  std::optional<Event> pop(std::chrono::steady_clock::time_point until) {
    std::unique_lock l(mu);
    cv.wait_until(l, std::min(until, std::chrono::steady_clock::now() + std::chrono::milliseconds(100)),
                  [&] { return !q.empty(); });
    if (q.empty()) return std::nullopt;
    Event e = std::move(q.front());
    q.pop_front();
    return e;
  }
};

// The selection shared by capture and notify.
struct Selection {
  int64_t adapter = -1;
  std::string direction = "any";
  int64_t count = 0;
  double duration = 0;
  std::string bpf;
  bpf_program prog{};
  bool has_prog = false;
  ~Selection() {
    if (has_prog) pcap_freecode(&prog);
  }
  void add_options(po::options_description& o) {
    o.add_options()("adapter,i", po::value(&adapter), "only this adapter")
        ("direction", po::value(&direction)->default_value("any"), "in (to the VM), out (from the VM) or any")
        ("count,c", po::value(&count)->default_value(0), "stop after this many packets (0 = until interrupted)")
        ("duration", po::value(&duration)->default_value(0), "stop after this many seconds (0 = until interrupted)");
  }
  // Returns an error text, or "".
  std::string prepare(const std::vector<std::string>& words) {
    if (direction == "out" || direction == "outgoing") direction = "out";
    else if (direction == "in" || direction == "incoming") direction = "in";
    else if (direction != "any") return "--direction: '" + direction + "' is not in, out or any";
    for (const auto& w : words) bpf += (bpf.empty() ? "" : " ") + w;
    if (bpf.empty()) return "";
    pcap_t* dead = pcap_open_dead(DLT_EN10MB, int(vpf::kMaxSnaplen));
    const vpf::matcher::LocalNamesOnly local;
    if (pcap_compile(dead, &prog, bpf.c_str(), 1, PCAP_NETMASK_UNKNOWN) != 0) {
      const std::string err = vpf::matcher::LocalNamesOnly::explain(pcap_geterr(dead));
      pcap_close(dead);
      return "filter expression: " + err;
    }
    pcap_close(dead);
    has_prog = true;
    return "";
  }
  // Connection events (no frame: `frames` false) only with no filter expression; their
  // direction is who opened the connection.
  bool wants(const Event& e, bool connections) const {
    if (e.f.type == vpf::protocol::kConnection && (!connections || has_prog)) return false;
    if (adapter >= 0 && e.f.adapter != adapter) return false;
    if (direction == "out" && e.f.direction != 0) return false;
    if (direction == "in" && e.f.direction != 1) return false;
    // The project's interpreter, not pcap_offline_filter(): libpcap's loops forever on a
    // crafted packet with `ip6 protochain` (matcher/include/vpf/matcher/bpf.h).
    if (has_prog && !vpf::matcher::bpf_interpret(prog.bf_insns, prog.bf_len, e.data.data(), e.f.packet_size,
                                                 uint32_t(e.data.size())))
      return false;
    return true;
  }
};

// Reads events until the selection's count or duration or a signal; calls fn for each
// (connection events too when `connections`).
template <class Fn>
int tail_events(const char* cmd, Common& c, Selection& sel, const std::string& instance, bool connections, Fn fn) {
  return guarded([&] {
    EventQueue q;
    auto a = connect(cmd, c, [&](const vpf::protocol::EventFrame& f, std::vector<uint8_t> d) { q.push(f, std::move(d)); });
    call(cmd, *a, "subscribe", {{"instance", instance}, {"packets", true}});
    // Like tcpdump: say when events can arrive (scripts wait for this line).
    std::fprintf(stderr, "vpfctl %s: listening to the events of %s\n", cmd,
                 instance == "*" ? "every instance" : ("instance " + instance).c_str());
    ::signal(SIGINT, on_signal);
    ::signal(SIGTERM, on_signal);
    ::signal(SIGPIPE, on_signal);
    const auto end = sel.duration > 0 ? std::chrono::steady_clock::now() +
                                            std::chrono::milliseconds(int64_t(sel.duration * 1000))
                                      : std::chrono::steady_clock::time_point::max();
    int64_t n = 0;
    while (!g_stop && std::chrono::steady_clock::now() < end && (sel.count == 0 || n < sel.count)) {
      if (a->closed()) {
        std::fprintf(stderr, "vpfctl %s: %s\n", cmd, a->close_reason().c_str());
        return kExitFailure;
      }
      auto e = q.pop(end);
      if (!e || !sel.wants(*e, connections)) continue;
      if (!fn(*e)) return kExitFailure;
      ++n;
    }
    std::fprintf(stderr, "%ld packets\n", long(n));
    return kExitOk;
  });
}

int capture(const std::vector<std::string>& args) {
  po::options_description opts(
      "vpfctl capture -w FILE|- [--pcapng] [-i ADAPTER] [--direction in|out|any] [-c COUNT] [EXPRESSION]\n\n"
      "Records the packets that the rules notify or capture (every instance, or --instance),\n"
      "selected by adapter, direction and a libpcap filter EXPRESSION, to a pcap file\n"
      "(or pcapng with --pcapng); '-w -' writes to standard output, for example\n"
      "  vpfctl capture -w - | tshark -r -\n\noptions");
  std::string out, instance = "*";
  std::vector<std::string> words;
  Selection sel;
  opts.add_options()("write,w", po::value(&out)->required(), "output file, - for standard output")
      ("pcapng", "write pcapng instead of pcap")("expression", po::value(&words), "libpcap filter expression");
  opts.add_options()("instance", po::value(&instance)->default_value("*"), "only this instance's events");
  sel.add_options(opts);
  po::positional_options_description pos;
  pos.add("expression", -1);
  po::variables_map vm;
  Common c;
  if (auto r = parse("capture", opts, args, vm, &c, false, false, &pos)) return *r;
  if (const std::string err = sel.prepare(words); !err.empty()) {
    std::fprintf(stderr, "vpfctl capture: %s\n", err.c_str());
    return kExitUsage;
  }
  FILE* f = out == "-" ? stdout : std::fopen(out.c_str(), "wb");
  if (!f) {
    std::fprintf(stderr, "vpfctl capture: cannot write %s: %s\n", out.c_str(), std::strerror(errno));
    return kExitFailure;
  }
  vpf::CaptureFileWriter writer(f, vm.count("pcapng") > 0);
  if (!writer.ok()) {
    std::fprintf(stderr, "vpfctl capture: cannot write %s\n", out.c_str());
    if (f != stdout) std::fclose(f);
    return kExitFailure;
  }
  const int rc = tail_events("capture", c, sel, instance, false, [&](const Event& e) {
    return writer.write(e.f.timestamp_ns, e.data.data(), uint32_t(e.data.size()), e.f.packet_size);
  });
  if (f != stdout) std::fclose(f);
  return rc;
}

// An event's time of day, local, to the microsecond (HH:MM:SS.uuuuuu).
std::string clock_text(uint64_t ns) {
  const time_t sec = time_t(ns / 1000000000);
  char ts[32];
  std::strftime(ts, sizeof ts, "%H:%M:%S", std::localtime(&sec));
  char out[48];
  std::snprintf(out, sizeof out, "%s.%06lu", ts, (unsigned long)(ns % 1000000000 / 1000));
  return out;
}

// One line for a connection event: what happened, the connection, its counters.
bool print_connection_event(const Event& e, bool as_json) {
  vpf::ConnectionEventParams ev;
  if (!vpf::connection_event_of(e.f, e.data, &ev)) return true;  // not readable: skipped
  static const char* names[] = {"", "tcp_connected", "tcp_closed", "udp_created", "udp_closed", "tcp_connect_request"};
  const vpf::ConnectionInfo& k = ev.connection;
  const char* opened = k.direction == vpf::kNfDirectionOut ? "out" : "in";
  if (as_json) {
    std::printf("%s\n", json{{"time_ns", e.f.timestamp_ns}, {"adapter", e.f.adapter}, {"direction", opened},
                             {"event", names[ev.event]}, {"rule_kind", "connection"}, {"rule", e.f.rule_id},
                             {"connection", k.id}, {"protocol", k.protocol == IPPROTO_TCP ? "tcp" : "udp"},
                             {"local", endpoint(k.local_address, k.local_port)},
                             {"remote", endpoint(k.remote_address, k.remote_port)},
                             {"packets_sent", k.packets_sent}, {"bytes_sent", k.bytes_sent},
                             {"packets_received", k.packets_received}, {"bytes_received", k.bytes_received}}
                            .dump()
                            .c_str());
  } else {
    std::printf("%s adapter %u %-3s %s connection rule %u, connection %lu %s -> %s, sent %lu/%lu received %lu/%lu\n",
                clock_text(e.f.timestamp_ns).c_str(), e.f.adapter, opened, names[ev.event],
                e.f.rule_id, (unsigned long)k.id, endpoint(k.local_address, k.local_port).c_str(),
                endpoint(k.remote_address, k.remote_port).c_str(), (unsigned long)k.packets_sent,
                (unsigned long)k.bytes_sent, (unsigned long)k.packets_received, (unsigned long)k.bytes_received);
  }
  return std::fflush(stdout) == 0;
}

int notify(const std::vector<std::string>& args) {
  po::options_description opts(
      "vpfctl notify [-i ADAPTER] [--direction in|out|any] [-c COUNT] [EXPRESSION]\n\n"
      "Prints one line per packet the rules notify or capture (every instance, or --instance).\n\noptions");
  std::string instance = "*";
  std::vector<std::string> words;
  Selection sel;
  opts.add_options()("expression", po::value(&words), "libpcap filter expression")
      ("instance", po::value(&instance)->default_value("*"), "only this instance's events");
  sel.add_options(opts);
  po::positional_options_description pos;
  pos.add("expression", -1);
  po::variables_map vm;
  Common c;
  if (auto r = parse("notify", opts, args, vm, &c, true, false, &pos)) return *r;
  if (const std::string err = sel.prepare(words); !err.empty()) {
    std::fprintf(stderr, "vpfctl notify: %s\n", err.c_str());
    return kExitUsage;
  }
  return tail_events("notify", c, sel, instance, true, [&](const Event& e) {
    static const char* kinds[] = {"passthrough", "filter", "connection"};
    const char* kind = e.f.rule_kind < 3 ? kinds[e.f.rule_kind] : "?";
    const char* dir = e.f.direction ? "in" : "out";
    const char* type = e.f.type == vpf::protocol::kCapture ? "capture" : "notify";
    if (e.f.type == vpf::protocol::kConnection) return print_connection_event(e, c.format == "json");
    if (c.format == "json") {
      std::printf("%s\n", json{{"time_ns", e.f.timestamp_ns}, {"adapter", e.f.adapter}, {"direction", dir},
                               {"event", type}, {"rule_kind", kind}, {"rule", e.f.rule_id},
                               {"packet_size", e.f.packet_size}, {"data_size", e.f.data_size}}
                              .dump()
                              .c_str());
    } else {
      std::printf("%s adapter %u %-3s %-7s %s rule %u, %u bytes\n", clock_text(e.f.timestamp_ns).c_str(),
                  e.f.adapter, dir, type, kind, e.f.rule_id,
                  e.f.packet_size);
    }
    return std::fflush(stdout) == 0;
  });
}

// ---- send / insert ----

int send_insert(const std::vector<std::string>& args, bool insert) {
  const char* name = insert ? "insert" : "send";
  po::options_description opts(insert ? "vpfctl insert -i ADAPTER (--hex HEX | --pcap FILE) [--times N]\n\n"
                                        "Delivers frames to the VM on ADAPTER, as if the switch had sent them.\n\noptions"
                                      : "vpfctl send -i ADAPTER (--hex HEX | --pcap FILE) [--times N]\n\n"
                                        "Puts frames into the switch as if the VM on ADAPTER had sent them.\n\noptions");
  int64_t adapter = -1, times = 1;
  std::string hex, pcap_file;
  opts.add_options()("adapter,i", po::value(&adapter)->required(), "adapter id")
      ("hex", po::value(&hex), "one Ethernet frame in hex")
      ("pcap", po::value(&pcap_file), "every frame of a capture file (Ethernet)")
      ("times,n", po::value(&times)->default_value(1), "send each frame this many times");
  po::variables_map vm;
  Common c;
  if (auto r = parse(name, opts, args, vm, &c, false)) return *r;
  if (hex.empty() == pcap_file.empty()) {
    std::fprintf(stderr, "vpfctl %s: give --hex or --pcap\n", name);
    return kExitUsage;
  }
  std::vector<std::string> frames;
  if (!hex.empty()) {
    frames.push_back(hex);
  } else {
    char err[PCAP_ERRBUF_SIZE];
    pcap_t* p = pcap_open_offline(pcap_file.c_str(), err);
    if (!p) {
      std::fprintf(stderr, "vpfctl %s: %s\n", name, err);
      return kExitFailure;
    }
    if (pcap_datalink(p) != DLT_EN10MB) {
      std::fprintf(stderr, "vpfctl %s: %s is not an Ethernet capture\n", name, pcap_file.c_str());
      pcap_close(p);
      return kExitRefused;
    }
    pcap_pkthdr* h;
    const u_char* d;
    static const char* x = "0123456789abcdef";
    while (pcap_next_ex(p, &h, &d) == 1) {
      std::string s;
      for (uint32_t i = 0; i < h->caplen; ++i) s += x[d[i] >> 4], s += x[d[i] & 15];
      frames.push_back(s);
    }
    pcap_close(p);
  }
  return guarded([&] {
    auto a = connect(name, c);
    for (const auto& f : frames)
      call(name, *a, insert ? "insert_incoming_packet" : "send_packet",
           {{"adapter", adapter}, {"data", f}, {"num_times", times}});
    return kExitOk;
  });
}
int send(const std::vector<std::string>& a) { return send_insert(a, false); }
int insert(const std::vector<std::string>& a) { return send_insert(a, true); }

// ---- install / uninstall / status ----

int install(const std::vector<std::string>& args) {
  po::options_description opts(
      "vpfctl install --guid GUID [--altitude N] [--allow EXE]... [--force-permission-check] [--plugin SO]\n\n"
      "Registers an instance (new instances start stopped), and with --plugin the datapath\n"
      "plugin with Open vSwitch.  Root only.\n\noptions");
  std::string guid, plugin;
  int64_t altitude = 0;
  std::vector<std::string> allow;
  opts.add_options()("guid", po::value(&guid)->required(), "the instance's product GUID")
      ("altitude", po::value(&altitude)->default_value(0), "higher decides first")
      ("allow", po::value(&allow), "an executable allowed to control the instance (repeatable)")
      ("force-permission-check", "only root may control the instance")
      ("plugin", po::value(&plugin), "the vportfilter_ovs.so to load into ovs-vswitchd");
  po::variables_map vm;
  Common c;
  if (auto r = parse("install", opts, args, vm, &c, false)) return *r;
  return guarded([&] {
    auto a = connect("install", c);
    call("install", *a, "install",
         {{"guid", guid}, {"altitude", altitude}, {"allowed_controllers", allow},
          {"force_app_permission_check", vm.count("force-permission-check") > 0}});
    if (!plugin.empty()) {
      if (::access(plugin.c_str(), R_OK) != 0) {
        std::fprintf(stderr, "vpfctl install: %s: %s\n", plugin.c_str(), std::strerror(errno));
        return kExitFailure;
      }
      const std::string err =
          vpf::run_program({"ovs-vsctl", "set", "Open_vSwitch", ".", "other_config:packet-hook-plugin=" + plugin});
      if (!err.empty()) {
        std::fprintf(stderr, "vpfctl install: failed: %s\n", err.c_str());
        return kExitFailure;
      }
    }
    return kExitOk;
  });
}

int uninstall(const std::vector<std::string>& args) {
  po::options_description opts("vpfctl uninstall --guid GUID\n\nRemoves an instance and its rules.  Root only.\n\noptions");
  std::string guid;
  opts.add_options()("guid", po::value(&guid)->required(), "the instance's product GUID");
  po::variables_map vm;
  Common c;
  if (auto r = parse("uninstall", opts, args, vm, &c, false)) return *r;
  return guarded([&] {
    auto a = connect("uninstall", c);
    call("uninstall", *a, "uninstall", {{"guid", guid}});
    return kExitOk;
  });
}

int status(const std::vector<std::string>& args) {
  po::options_description opts("vpfctl status [options]\n\nThe agent, the plugin and the instances.\n\noptions");
  po::variables_map vm;
  Common c;
  if (auto r = parse("status", opts, args, vm, &c)) return *r;
  return guarded([&] {
    auto a = connect("status", c);
    const json st = call("status", *a, "status");
    if (c.format == "json") {
      std::printf("%s\n", st.dump().c_str());
      return kExitOk;
    }
    std::printf("plugin: %s\nadapters: %s\nrules: %s\nclients: %s\nevents: %s\n",
                st["plugin_attached"].get<bool>() ? "attached" : "not attached", st["adapters"].dump().c_str(),
                st["rules"].dump().c_str(), st["clients"].dump().c_str(), st["events"].dump().c_str());
    std::printf("%-40s %9s %-8s %-9s %s\n", "instance", "altitude", "state", "installed", "client");
    for (const auto& i : st["instances"])
      std::printf("%-40s %9ld %-8s %-9s %s\n", i["guid"].get<std::string>().c_str(), i["altitude"].get<long>(),
                  i["active"].get<bool>() ? "started" : "stopped", i["installed"].get<bool>() ? "yes" : "no",
                  i["client_pid"].is_null() ? "-" : ("pid " + i["client_pid"].dump()).c_str());
    return kExitOk;
  });
}

}  // namespace

int cmd_adapters(const std::vector<std::string>& a) { return adapters(a); }
int cmd_rule(const std::vector<std::string>& a) { return rule(a); }
int cmd_start(const std::vector<std::string>& a) { return start(a); }
int cmd_stop(const std::vector<std::string>& a) { return stop(a); }
int cmd_stats(const std::vector<std::string>& a) { return stats(a); }
int cmd_capture(const std::vector<std::string>& a) { return capture(a); }
int cmd_notify(const std::vector<std::string>& a) { return notify(a); }
int cmd_send(const std::vector<std::string>& a) { return send(a); }
int cmd_insert(const std::vector<std::string>& a) { return insert(a); }
int cmd_install(const std::vector<std::string>& a) { return install(a); }
int cmd_uninstall(const std::vector<std::string>& a) { return uninstall(a); }
int cmd_status(const std::vector<std::string>& a) { return status(a); }

}  // namespace vpfctl
