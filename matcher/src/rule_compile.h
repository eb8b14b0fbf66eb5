// Rule -> entry specifications (conjunctions of tests), before BPF loads are given slots.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "vpf/matcher/bpf.h"
#include "vpf/matcher/rule.h"

namespace vpf::matcher {

struct BpfVector;  // bpf_vector.h

// One test lane: on a fixed key field, or on a BPF load (index into CompiledRule::loads).
struct TestSpec {
  bool dynamic = false;
  uint8_t field = 0;    // fixed field (when !dynamic)
  uint16_t load = 0;    // load index (when dynamic)
  uint32_t mask = ~0u, lo = 0, hi = ~0u;
};

struct EntrySpec {
  std::vector<TestSpec> tests;
  std::vector<uint16_t> required;  // loads that must be in bounds
};

enum class BpfMode {
  Lower,              // lower the expression if possible, else JIT behind its prefilter
  JitWithPrefilter,   // do not lower; prefilter on loads
  JitOnly,            // do not lower; no load tests at all (no dynamic slots needed)
};

struct CompiledRule {
  Rule rule;
  Action action = Action::Pass;
  std::vector<BpfLoad> loads;         // dynamic loads the entries use (never Len)
  std::vector<EntrySpec> entries;
  std::shared_ptr<const BpfJit> jit;  // set when the BPF expression is not lowered
  std::shared_ptr<const BpfJit> direct_jit;  // the expression's code, for tiny rule sets
  std::shared_ptr<const BpfVector> direct_vector;  // lowered and fits: its branch-free form
  bool lowered = true;
  std::string note;                   // why not lowered
};

inline constexpr size_t kMaxEntriesPerRule = 64;

// Validates and compiles.  Throws RuleError (field "bpf" carries libpcap's message).
CompiledRule compile_rule(const Rule& rule, BpfMode mode = BpfMode::Lower);

}  // namespace vpf::matcher
