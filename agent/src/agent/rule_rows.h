// The vportfilter database's Rule rows as an instance's rules.
//
// A row names its instance, kind, rule id and position, and carries the rest of the rule
// as JSON text (`spec`).  The rules come out in the order the plugin applies them: by
// kind, then priority (higher first; the spec's "priority", 0 when absent), then position,
// then id; each is its spec with "kind" and "id" set from the row's columns.  Rows and
// specs written by other clients may be anything: a spec that is not a JSON object counts
// as empty (the rule is then checked, and refused with a reason, where it is used).
#pragma once

#include <map>
#include <string>

#include <nlohmann/json.hpp>

namespace vpf::agent {

// The rules of `instance` (of `kind` only, unless empty) among `rows` (uuid -> row).
nlohmann::json rules_of_rows(const std::map<std::string, nlohmann::json>& rows, const std::string& instance,
                             const std::string& kind);

}  // namespace vpf::agent
