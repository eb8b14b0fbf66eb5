// libFuzzer harness: the agent's client protocol end to end, through its real session and
// method table.  Once, at start: a private ovsdb-server (the patched switch's, with the
// Open_vSwitch and vportfilter databases) and a real Agent on it, started as vpf-agent
// starts it (no plugin: its socket is absent).  Per input: a client connects to the
// agent's socket (the accept path and its credential check; the harness runs as root),
// writes the input's bytes (after the first byte, which sets the chunk size) in chunks
// while the agent's io_context runs, and reads what comes back.  Every line the client
// sent must get exactly one answer (a result or an error with a code and a message) unless
// the stream broke the protocol (then the agent says why and closes); every line the
// agent writes must be JSON-RPC 2.0; the agent must answer within 5 s (a stall found so: a
// BPF host name looked up in DNS; the finding prints what the agent wrote and logged).
// Anything else, a
// crash or a sanitizer report is a finding.  The rows inputs make are deleted when they
// pile up (the database stays small and executions stay fast).
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "agent.h"
#include "ovsdb_client.h"
#include "policy_store.h"
#include "vpf/protocol.h"

using nlohmann::json;
using namespace vpf::agent;
namespace proto = vpf::protocol;

namespace {

void finding(const std::string& what) {
  std::fprintf(stderr, "finding: %s\n", what.c_str());
  std::abort();
}

// Runs ARGV to completion; aborts the harness (a setup failure, not a finding) on failure.
void run(const std::vector<std::string>& argv) {
  std::string cmd;
  for (const auto& a : argv) cmd += "'" + a + "' ";
  if (std::system((cmd + ">/dev/null 2>&1").c_str()) != 0) {
    std::fprintf(stderr, "setup failed: %s\n", cmd.c_str());
    std::exit(2);
  }
}

struct World {
  std::string dir;
  pid_t server = -1;
  boost::asio::io_context io;
  std::unique_ptr<Agent> agent;
  std::unique_ptr<std::ostringstream> quiet = std::make_unique<std::ostringstream>();

  World() {
    // In memory where there is a tmpfs: the server writes every transaction to its file.
    std::string tmpl = ::access("/dev/shm", W_OK) == 0 ? "/dev/shm/vpf-fuzz-rpc.XXXXXX" : "/tmp/vpf-fuzz-rpc.XXXXXX";
    dir = ::mkdtemp(tmpl.data());
    const std::string ovs = VPF_FUZZ_OVS_DIR;
    run({ovs + "/ovsdb/ovsdb-tool", "create", dir + "/conf.db", ovs + "/vswitchd/vswitch.ovsschema"});
    run({ovs + "/ovsdb/ovsdb-tool", "create", dir + "/policy.db", VPF_FUZZ_SCHEMA});
    server = ::fork();
    if (server == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // the server never outlives the harness
      const int null = ::open("/dev/null", O_RDWR);
      ::dup2(null, 1);
      ::dup2(null, 2);
      const std::string bin = ovs + "/ovsdb/ovsdb-server", remote = "--remote=punix:" + dir + "/db.sock",
                        ctl = "--unixctl=" + dir + "/ovsdb.ctl", a = dir + "/conf.db", b = dir + "/policy.db";
      ::execl(bin.c_str(), bin.c_str(), a.c_str(), b.c_str(), remote.c_str(), ctl.c_str(), "--no-chdir",
              static_cast<char*>(nullptr));
      ::_exit(127);
    }
    for (int i = 0; i < 1000 && ::access((dir + "/db.sock").c_str(), F_OK) != 0; ++i) ::usleep(10000);
    std::cerr.rdbuf(quiet->rdbuf());  // the agent's log (libFuzzer writes with stdio)
    Options o;
    o.ovsdb = "unix:" + dir + "/db.sock";
    o.db_file = dir + "/policy.db";
    o.schema = VPF_FUZZ_SCHEMA;
    o.plugin_socket = dir + "/vportfilter.sock";
    o.socket = dir + "/agent.sock";
    agent = std::make_unique<Agent>(io, o);
    agent->start();
    io.poll();
  }
  ~World() {
    agent.reset();
    if (server > 0) {
      ::kill(server, SIGTERM);
      ::waitpid(server, nullptr, 0);
    }
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }

  // Runs the agent's ready handlers, waiting up to `us` microseconds for one if none is.
  void pump(int us) {
    io.restart();
    if (io.poll() == 0 && us > 0) io.run_one_for(std::chrono::microseconds(us));
    io.poll();
  }

  // Deletes every Rule and Instance row once inputs have made many (a transaction of the
  // harness's own, through a client of its own).
  void tidy() {
    if (agent->store().rule_rows().size() < 64 && agent->store().instances().size() < 16) return;
    auto c = std::make_shared<OvsdbClient>(io);
    c->connect("unix:" + dir + "/db.sock");
    c->call_sync("transact", json::array({"vportfilter",
                                          {{"op", "delete"}, {"table", "Rule"}, {"where", json::array()}},
                                          {{"op", "delete"}, {"table", "Instance"}, {"where", json::array()}}}));
    c->close();
    pump(2000);
  }
};

World& world() {
  static World* w = new World;  // lives to the end: exit() skips it, the server dies with the harness
  return *w;
}

// The lines of a client stream that the agent answers: every line before the first
// protocol violation (binary verdict frames get no answer).  `broken`: the stream violates
// the protocol (the agent answers what came before, then says why and closes).
size_t lines_to_answer(const std::string& s, bool* broken) {
  size_t pos = 0, n = 0;
  *broken = false;
  for (;;) {
    const auto it = proto::next_item<proto::VerdictFrame>(s.data(), s.size(), pos);
    if (it.kind == it.kNeedMore) return n;
    if (it.kind == it.kBad) {
      *broken = true;
      return n;
    }
    if (it.kind == it.kLine) ++n;
  }
}

// Checks one line the agent wrote; returns 1 if it answers a request, 0 for a notification.
int check_answer(const std::string& line) {
  const json m = json::parse(line, nullptr, false);
  if (m.is_discarded() || !m.is_object() || m.value("jsonrpc", "") != "2.0") finding("not JSON-RPC 2.0: " + line);
  if (m.contains("method")) return 0;  // a notification (adapters, events, ...)
  if (!m.contains("id")) finding("an answer without an id: " + line);
  if (m.contains("result") == m.contains("error")) finding("an answer with neither or both result and error: " + line);
  if (m.contains("error")) {
    const json& e = m["error"];
    if (!e.is_object() || !e.contains("code") || !e["code"].is_number_integer() || !e.contains("message") ||
        !e["message"].is_string() || e["message"].get<std::string>().empty())
      finding("an error without a code and a message: " + line);
  }
  return 1;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1 || size > 8192) return 0;
  World& w = world();
  const size_t chunk = data[0] < 192 ? 1 + data[0] % 64 : size;
  const std::string in(reinterpret_cast<const char*>(data + 1), size - 1);
  bool broken = false;
  const size_t expected = lines_to_answer(in, &broken);

  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s/agent.sock", w.dir.c_str());
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) finding("the agent's socket refused a connection");

  std::string out;
  size_t answers = 0, parsed = 0, sent = 0;
  bool closed = false;
  auto drain = [&] {
    char buf[65536];
    for (;;) {
      const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n > 0) {
        out.append(buf, size_t(n));
        continue;
      }
      if (n == 0) closed = true;
      break;
    }
    for (;;) {  // the agent's stream: JSON lines and binary event frames
      const auto it = proto::next_item<proto::EventFrame>(out.data(), out.size(), parsed);
      if (it.kind == it.kNeedMore) break;
      if (it.kind == it.kBad) finding("the agent broke its own protocol: " + it.problem);
      if (it.kind == it.kLine) answers += check_answer(std::string(it.line));
    }
  };
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!closed) {
    if (sent < in.size()) {
      const ssize_t n = ::send(fd, in.data() + sent, std::min(chunk, in.size() - sent), MSG_NOSIGNAL);
      if (n > 0) sent += size_t(n);
    }
    w.pump(sent < in.size() ? 0 : 200);
    drain();
    if (sent == in.size() && answers >= expected && !broken) break;
    if (std::chrono::steady_clock::now() > deadline) {
      std::fprintf(stderr, "the agent wrote:\n%s\nits log:\n%s\n", out.c_str(), w.quiet->str().c_str());
      finding("no answer within 5 s: " + std::to_string(answers) + " of " + std::to_string(expected) + " lines answered");
    }
  }
  if (answers > expected + (broken ? 1 : 0))
    finding(std::to_string(answers) + " answers to " + std::to_string(expected) + " lines");
  if (!broken && answers != expected)
    finding("the agent closed with " + std::to_string(answers) + " of " + std::to_string(expected) + " lines answered");
  ::close(fd);
  w.pump(0);
  w.tidy();
  return 0;
}
