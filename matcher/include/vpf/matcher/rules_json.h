// vportfilter matcher: the JSON rules format (docs/rules.md), shared by vpfctl, the agent
// and the console.
//
// A rules file is either an array of rule objects or an object {"rules": [...]}.  Every
// field of Rule (rule.h) has a key; unknown keys are refused so that a typo never silently
// widens a rule.  Reading validates each rule (validate_rule) but does not compile BPF.
#pragma once

#include <nlohmann/json.hpp>

#include <stdexcept>
#include <string>
#include <vector>

#include "vpf/matcher/rule.h"

namespace vpf::matcher {

// Thrown for a file that cannot be read as rules.  what() names the rule (its position
// in the file and its id when known), the key and the reason.
class RulesFileError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
  // io: the file could not be read (the rules in it, if any, were not judged).
  RulesFileError(const std::string& what, bool io) : std::runtime_error(what), io_(io) {}
  bool io() const { return io_; }

 private:
  bool io_ = false;
};

// What a reader checks: the format only, or also that each BPF expression compiles
// (libpcap's message becomes the error of the rule's field 'bpf'), so that a rule read is
// one the classifier accepts: the agent and vpfctl refuse bad rules before they are stored.
enum class Check { Format, Compile };

Rule rule_from_json(const nlohmann::json& j, size_t position = 0, Check check = Check::Format);
std::vector<Rule> rules_from_json(const nlohmann::json& j, Check check = Check::Format);
// Parse errors -> RulesFileError.
std::vector<Rule> rules_from_text(const std::string& text, Check check = Check::Format);
// I/O errors -> RulesFileError with io().
std::vector<Rule> rules_from_file(const std::string& path, Check check = Check::Format);

// The canonical form: defaults are left out, directions/actions/protocols are names.
nlohmann::json rule_to_json(const Rule& rule);
nlohmann::json rules_to_json(const std::vector<Rule>& rules);

// Names accepted for directions and actions, and their numbers.
Direction parse_direction(const nlohmann::json& v);  // throws std::invalid_argument
Action parse_action(const nlohmann::json& v);

}  // namespace vpf::matcher
