// The vportfilter database's Rule rows as an instance's rules (rule_rows.h).
#include "rule_rows.h"

#include <algorithm>
#include <tuple>
#include <vector>

#include "agent_common.h"

namespace vpf::agent {

using nlohmann::json;

json rules_of_rows(const std::map<std::string, json>& rows, const std::string& instance, const std::string& kind) {
  // Each row's spec is parsed once; the order is kind, then priority (higher first), then
  // position, then id.
  struct Item {
    std::string kind;
    int64_t priority, position, id;
    json spec;
  };
  std::vector<Item> items;
  for (const auto& [u, row] : rows) {
    if (str(row, "instance") != instance || (!kind.empty() && str(row, "kind") != kind)) continue;
    json spec = json::parse(str(row, "spec"), nullptr, false);
    if (!spec.is_object()) spec = json::object();
    const int64_t prio = spec.contains("priority") && spec["priority"].is_number_integer() ? spec["priority"].get<int64_t>() : 0;
    items.push_back({str(row, "kind"), prio, num(row, "position"), num(row, "rule_id"), std::move(spec)});
  }
  std::sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
    // Higher priority first, compared as it is (negating INT64_MIN would overflow).
    return std::tie(a.kind, b.priority, a.position, a.id) < std::tie(b.kind, a.priority, b.position, b.id);
  });
  json out = json::array();
  for (auto& it : items) {
    it.spec["kind"] = it.kind;
    it.spec["id"] = it.id;
    out.push_back(std::move(it.spec));
  }
  return out;
}

}  // namespace vpf::agent
