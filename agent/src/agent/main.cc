// vpf-agent: the vportfilter daemon (see agent.h and docs/protocol.md).
#include <utility>  // before Asio: its awaitable.hpp uses std::exchange without it
#include <boost/asio.hpp>
#include <boost/program_options.hpp>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <sstream>

#include "agent.h"

namespace po = boost::program_options;

#ifndef VPF_SCHEMA_PATH
#define VPF_SCHEMA_PATH "/usr/share/vportfilter/vportfilter.ovsschema"
#endif

namespace {
// The schema beside an installed agent (PREFIX/bin/vpf-agent → PREFIX/share/vportfilter/),
// else the one the build names (the source tree's).
std::string default_schema() {
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    const auto installed = exe.parent_path().parent_path() / "share/vportfilter/vportfilter.ovsschema";
    if (std::filesystem::exists(installed, ec)) return installed.string();
  }
  return VPF_SCHEMA_PATH;
}
}  // namespace

int main(int argc, char** argv) {
  const char* rd = std::getenv("OVS_RUNDIR");
  const char* dd = std::getenv("OVS_DBDIR");
  const std::string rundir = rd && *rd ? rd : "/var/run/openvswitch";
  const std::string dbdir = dd && *dd ? dd : "/var/lib/openvswitch";
  vpf::agent::Options o;
  std::string vm_types;
  po::options_description desc("vpf-agent options");
  desc.add_options()("help,h", "this help")
      ("ovsdb", po::value(&o.ovsdb)->default_value("unix:" + rundir + "/db.sock"),
       "ovsdb-server with the Open_vSwitch database")
      ("db", po::value(&o.policy_db)->default_value(""),
       "ovsdb-server with the vportfilter database (default: the same; one policy may serve many hosts)")
      ("db-file", po::value(&o.db_file)->default_value(dbdir + "/vportfilter.db"),
       "where to create the vportfilter database if the local server lacks it")
      ("schema", po::value(&o.schema)->default_value(default_schema()), "the vportfilter database schema")
      ("plugin-socket", po::value(&o.plugin_socket)->default_value(rundir + "/vportfilter.sock"),
       "the plugin's control socket")
      ("socket", po::value(&o.socket)->default_value(rundir + "/vpf-agent.sock"), "the socket clients connect to")
      ("client-queue-bytes", po::value(&o.client_queue_bytes)->default_value(o.client_queue_bytes),
       "per client: bytes of events waiting to be written beyond which events are dropped (counted)")
      ("vm-types", po::value(&vm_types),
       "comma-separated Interface types that are VM ports (default: system,tap,afxdp,dpdk,dpdkvhostuser,"
       "dpdkvhostuserclient,dummy,dummy-pmd)");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, desc), vm);
    po::notify(vm);
  } catch (const std::exception& e) {
    std::cerr << "vpf-agent: " << e.what() << "\n" << desc;
    return 2;
  }
  if (vm.count("help")) {
    std::cout << desc;
    return 0;
  }
  if (!vm_types.empty()) {
    o.vm_types.clear();
    std::stringstream ss(vm_types);
    for (std::string t; std::getline(ss, t, ',');) o.vm_types.insert(t == "system" ? "" : t), o.vm_types.insert(t);
  }
  std::signal(SIGPIPE, SIG_IGN);
  try {
    boost::asio::io_context io;
    vpf::agent::Agent agent(io, o);
    agent.start();
    boost::asio::signal_set sigs(io, SIGINT, SIGTERM);
    sigs.async_wait([&](const boost::system::error_code&, int) { io.stop(); });
    io.run();
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "vpf-agent: " << e.what() << "\n";
    return 1;
  }
}
