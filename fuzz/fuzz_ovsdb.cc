// libFuzzer harness: the agent's handling of what ovsdb-server sends it.  The input's
// first byte sets a chunk size; the rest is the byte stream of the server's connection,
// fed in those chunks to the client's JsonSplitter.  Each text is taken as the agent takes
// monitor updates (the "update" notification's table updates, or the text itself): applied
// to the Open_vSwitch database's view (OvsView) and turned into adapters (vm_ports), and
// its "Rule" part applied to the vportfilter database's rule rows and turned into each
// instance's rules (rules_of_rows), which are then checked as the plugin link checks a
// row (rule_from_json).  The splitter may refuse a stream (std::runtime_error: the client
// then closes the connection) and a rule may be refused (its error); any other exception
// (it would end the agent's connection to the server over one bad row), a crash or a
// sanitizer report is a finding.
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>

#include "adapters.h"
#include "ovsdb_client.h"
#include "rule_rows.h"
#include "vpf/matcher/rules_json.h"

using nlohmann::json;
using namespace vpf::agent;

namespace {

void handle_text(const std::string& text, OvsView& view, std::map<std::string, json>& rule_rows) {
  const json msg = json::parse(text, nullptr, false);
  if (msg.is_discarded()) return;  // the client refuses it (a runtime_error) and closes
  const bool update = msg.is_object() && msg.contains("params") && msg["params"].is_array() && msg["params"].size() == 2;
  const json& updates = update ? msg["params"][1] : msg;
  view.apply(updates);
  for (const auto& [key, a] : vm_ports(view, default_vm_types())) (void)a.to_json();
  if (!updates.is_object() || !updates.contains("Rule")) return;
  ovsdb_apply_rows(rule_rows, updates["Rule"]);
  for (const char* instance : {"default", "{x}"}) {
    for (const char* kind : {"", "filter", "passthrough"}) {
      for (const json& r : rules_of_rows(rule_rows, instance, kind)) {
        try {
          (void)vpf::matcher::rule_from_json(r);
        } catch (const vpf::matcher::RuleError&) {
        } catch (const vpf::matcher::RulesFileError&) {
        }
      }
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1 || size > 16384) return 0;
  const size_t chunk = 1 + data[0] % 64;
  const char* bytes = reinterpret_cast<const char*>(data + 1);
  --size;
  JsonSplitter splitter(4096);
  OvsView view;
  std::map<std::string, json> rule_rows;
  try {
    for (size_t off = 0; off < size; off += chunk)
      splitter.feed(bytes + off, std::min(chunk, size - off),
                    [&](std::string&& text) { handle_text(text, view, rule_rows); });
  } catch (const std::runtime_error&) {
    // the splitter refused the stream: the client closes the connection
  }
  return 0;
}
