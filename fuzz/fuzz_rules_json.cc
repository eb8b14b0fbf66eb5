// libFuzzer harness: the rules file reader on any text.  It may refuse the text (a
// RulesFileError or RuleError naming what was wrong); anything else -- another exception,
// a crash, a sanitizer report -- is a finding.  Rules it accepts must be accepted or
// refused whole by a classifier, and must survive a round trip through rules_to_json.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "vpf/matcher/classifier.h"
#include "vpf/matcher/rules_json.h"

using namespace vpf::matcher;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 8192) return 0;
  const std::string text(reinterpret_cast<const char*>(data), size);
  std::vector<Rule> rules;
  try {
    rules = rules_from_text(text);
  } catch (const RulesFileError&) {
    return 0;
  } catch (const RuleError&) {
    return 0;
  }
  const auto again = rules_from_json(rules_to_json(rules));
  if (again.size() != rules.size()) std::abort();
  Classifier c;
  try {
    c.apply({}, rules);
  } catch (const RuleError&) {
    if (!c.rules().empty()) std::abort();  // refused whole
  }
  return 0;
}
