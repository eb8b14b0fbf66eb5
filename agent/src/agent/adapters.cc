// Adapters: see adapters.h.
#include "adapters.h"

#include <cctype>
#include <cstdlib>

#include "ovsdb_client.h"

namespace vpf::agent {

using nlohmann::json;

namespace {
int64_t setting(const std::map<std::string, std::string>& s, const char* name, int64_t def) {
  const auto it = s.find(name);
  if (it == s.end()) return def;
  char* end = nullptr;
  const long long v = std::strtoll(it->second.c_str(), &end, 10);
  return end && *end == 0 && !it->second.empty() ? v : def;
}
}  // namespace

uint32_t Adapter::max_packet_bytes() const {
  const int64_t v = setting(settings, "max_packet_bytes", kDefaultMaxPacketBytes);
  return v <= 0 || v > kDefaultMaxPacketBytes ? kDefaultMaxPacketBytes : uint32_t(v);
}

bool Adapter::collect_statistics() const {
  const auto cs = settings.find("collect_statistics");
  return cs == settings.end() || cs->second != "false";
}

json Adapter::to_json() const {
  return {{"id", id},     {"key", key}, {"name", name},      {"type", type.empty() ? "system" : type},
          {"description", description}, {"friendly_name", friendly_name},
          {"mac", mac},   {"vm", vm},   {"bridge", bridge},
          // The seed's adapter properties.  interface_type is IANA's ifType: every VM port
          // carries Ethernet frames (ethernetCsmacd, 6).
          {"interface_type", 6},
          {"max_packet_bytes", max_packet_bytes()},
          {"collect_statistics", collect_statistics()},
          {"buffer_size", setting(settings, "buffer_size", 1024)},
          {"packet_timeout", setting(settings, "packet_timeout", 1000)},
          {"promiscuous_mode", false},
          {"wifi_monitor_mode", false},
          {"wifi_monitor_mode_supported", false}};
}

void OvsView::apply(const json& updates) {
  if (!updates.is_object()) return;
  for (const auto& [table, rows] : updates.items()) {
    auto* t = table == "Bridge" ? &bridges : table == "Port" ? &ports : table == "Interface" ? &interfaces : nullptr;
    if (t) ovsdb_apply_rows(*t, rows);
  }
}

std::set<std::string> default_vm_types() {
  return {"", "system", "tap", "afxdp", "dpdk", "dpdkvhostuser", "dpdkvhostuserclient", "dummy", "dummy-pmd"};
}

std::string hyphen_mac(const std::string& m) {
  std::string out;
  for (char c : m) out.push_back(c == ':' ? '-' : char(std::toupper(static_cast<unsigned char>(c))));
  return out;
}

namespace {

std::string str(const json& row, const char* col) {
  if (!row.contains(col)) return "";
  const auto vals = ovsdb_set(row[col]);
  return !vals.empty() && vals[0].is_string() ? vals[0].get<std::string>() : "";
}

std::vector<std::string> uuids(const json& v) {
  std::vector<std::string> out;
  for (const auto& a : ovsdb_set(v))
    if (a.is_array() && a.size() == 2 && a[0] == "uuid" && a[1].is_string()) out.push_back(a[1].get<std::string>());
  return out;
}

}  // namespace

std::map<std::string, Adapter> vm_ports(const OvsView& view, const std::set<std::string>& vm_types) {
  std::map<std::string, Adapter> out;
  for (const auto& [buuid, br] : view.bridges) {
    const std::string dpt = str(br, "datapath_type");
    if (dpt != "netdev" && dpt != "dummy") continue;
    const std::string bname = str(br, "name");
    for (const auto& puuid : uuids(br.value("ports", json()))) {
      const auto pit = view.ports.find(puuid);
      if (pit == view.ports.end()) continue;
      for (const auto& iuuid : uuids(pit->second.value("interfaces", json()))) {
        const auto iit = view.interfaces.find(iuuid);
        if (iit == view.interfaces.end()) continue;
        const json& row = iit->second;
        Adapter a;
        a.name = str(row, "name");
        a.type = str(row, "type");
        if (a.name.empty() || !vm_types.count(a.type)) continue;
        const auto ext = ovsdb_map(row.value("external_ids", json()));
        const auto get = [&](const char* k) { auto it = ext.find(k); return it == ext.end() ? std::string() : it->second; };
        a.key = !get("iface-id").empty() ? get("iface-id") : a.name;
        a.friendly_name = !get("vm-name").empty() ? get("vm-name") : !get("iface-id").empty() ? get("iface-id") : a.name;
        const std::string mac = !get("attached-mac").empty() ? get("attached-mac") : str(row, "mac_in_use");
        a.mac = hyphen_mac(mac);
        const std::string vm = get("vm-id");
        char* end = nullptr;
        const unsigned long v = vm.empty() ? 0 : std::strtoul(vm.c_str(), &end, 10);
        if (!vm.empty() && *end == 0 && v <= 0xffffffffUL) a.vm = uint32_t(v);
        a.bridge = bname;
        a.description = (a.type.empty() ? std::string("system") : a.type) + " port " + a.name + " on bridge " + bname;
        out.emplace(a.key, std::move(a));
      }
    }
  }
  return out;
}

int32_t smallest_free_id(const std::set<int32_t>& used) {
  int32_t id = 0;
  for (int32_t u : used) {
    if (u == id) ++id;
    else if (u > id) break;
  }
  return id;
}

}  // namespace vpf::agent
