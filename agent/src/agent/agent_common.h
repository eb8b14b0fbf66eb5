// vpf-agent: what the agent's source files share — the error codes its replies carry
// (vpf::ErrorCode in vpf/protocol.h, vpf::rpc::Code in vpf/rpc_codes.h) and its log.
#pragma once

#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "vpf/protocol.h"

namespace vpf::agent {

// The instance of requests that name none, and of rules without one.
inline constexpr const char* kDefaultInstance = "default";

// A column of an OVSDB row: its string ("" when absent or of another type), its integer (0).
inline std::string str(const nlohmann::json& row, const char* col) {
  return row.contains(col) && row[col].is_string() ? row[col].get<std::string>() : "";
}
inline int64_t num(const nlohmann::json& row, const char* col) {
  return row.contains(col) && row[col].is_number_integer() ? row[col].get<int64_t>() : 0;
}

// A boolean as settings spell it: True, False, 1, 0, Yes or No in any case; nullopt for
// anything else.  truthy(): true only for the true spellings.
inline std::optional<bool> boolean_text(const std::string& v) {
  std::string l;
  for (char c : v) l += char(std::tolower(static_cast<unsigned char>(c)));
  if (l == "true" || l == "1" || l == "yes") return true;
  if (l == "false" || l == "0" || l == "no") return false;
  return std::nullopt;
}
inline bool truthy(const std::string& v) { return boolean_text(v).value_or(false); }

// One line on standard error: UTC time, "vpf-agent:", the message.
void log(const std::string& msg);

}  // namespace vpf::agent
