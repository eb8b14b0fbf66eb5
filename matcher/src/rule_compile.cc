// Rule -> entry specifications.
#include "rule_compile.h"

#include "bpf_vector.h"
#include "classifier_layout.h"
#include "vpf/matcher/packet_key.h"

namespace vpf::matcher {
namespace {

TestSpec fixed(uint8_t field, uint32_t lo, uint32_t hi, uint32_t mask = ~0u) {
  TestSpec t;
  t.field = field;
  t.mask = mask;
  t.lo = lo;
  t.hi = hi;
  return t;
}

void add_address(std::vector<TestSpec>& out, uint8_t first_field, uint8_t family, const IpAddr& addr,
                 const IpAddr& mask) {
  if (addr.is_zero() && mask.is_zero()) return;  // any address
  const int words = family == 4 ? 1 : 4;
  for (int w = 0; w < words; ++w) {
    const uint32_t m = mask.is_zero() ? ~0u : mask.w[w];  // zero mask = exact address
    if (m == 0) continue;
    const uint32_t v = addr.w[w] & m;
    out.push_back(fixed(uint8_t(first_field + w), v, v, m));
  }
}

void add_ports(std::vector<TestSpec>& out, uint8_t field, const PortRange& r) {
  if (!r.any()) out.push_back(fixed(field, r.lo, r.hi));
}

// The fixed-field tests of a rule for one direction variant (Any = no direction test).
std::vector<TestSpec> base_tests(const Rule& r, Direction d) {
  std::vector<TestSpec> t;
  if (r.adapter >= 0) t.push_back(fixed(F_ADAPTER, uint32_t(r.adapter), uint32_t(r.adapter)));
  if (d != Direction::Any) t.push_back(fixed(F_DIRECTION, uint32_t(d), uint32_t(d)));
  const uint32_t lo = r.min_size > 0 ? uint32_t(r.min_size) : 0;
  const uint32_t hi = r.max_size > 0 ? uint32_t(r.max_size) : ~0u;
  if (lo != 0 || hi != ~0u) t.push_back(fixed(F_FRAME_LEN, lo, hi));
  if (r.vm) t.push_back(fixed(F_VM, r.vm, r.vm));
  if (r.protocol) t.push_back(fixed(F_IP_PROTO, r.protocol, r.protocol));
  if (r.ip_family) t.push_back(fixed(F_IP_VER, r.ip_family, r.ip_family));
  if (!r.local_port.any() || !r.remote_port.any())
    t.push_back(fixed(F_PARSE_FLAGS, PARSE_PORTS, PARSE_PORTS, PARSE_PORTS));
  // Local is the VM's side: the source of an outgoing packet, the destination of an
  // incoming one.  Direction::Any only reaches here for rules with no local/remote fields.
  const bool out = d != Direction::Incoming;
  add_ports(t, out ? F_SRC_PORT : F_DST_PORT, r.local_port);
  add_ports(t, out ? F_DST_PORT : F_SRC_PORT, r.remote_port);
  if (r.ip_family) {
    add_address(t, out ? F_SRC_IP0 : F_DST_IP0, r.ip_family, r.local_ip, r.local_mask);
    add_address(t, out ? F_DST_IP0 : F_SRC_IP0, r.ip_family, r.remote_ip, r.remote_mask);
  }
  return t;
}

bool has_local_remote(const Rule& r) {
  return !r.local_port.any() || !r.remote_port.any() ||
         (r.ip_family && !(r.local_ip.is_zero() && r.local_mask.is_zero() && r.remote_ip.is_zero() &&
                           r.remote_mask.is_zero()));
}

// Adds a BPF conjunction's terms to `spec`, interning its loads into `out.loads`.
void add_conjunction(const BpfLowering& low, const BpfConjunction& c, EntrySpec& spec, CompiledRule& out) {
  auto intern = [&](uint16_t id) -> uint16_t {
    const BpfLoad& l = low.loads[id];
    for (size_t i = 0; i < out.loads.size(); ++i)
      if (out.loads[i] == l) return uint16_t(i);
    out.loads.push_back(l);
    return uint16_t(out.loads.size() - 1);
  };
  for (const BpfTerm& term : c.terms) {
    if (low.loads[term.load].kind == BpfLoad::Len) {
      spec.tests.push_back(fixed(F_FRAME_LEN, term.lo, term.hi, term.mask));
      continue;
    }
    TestSpec t;
    t.dynamic = true;
    t.load = intern(term.load);
    t.mask = term.mask;
    t.lo = term.lo;
    t.hi = term.hi;
    spec.tests.push_back(t);
  }
  for (uint16_t id : c.required) {
    if (low.loads[id].kind == BpfLoad::Len) continue;
    const uint16_t mapped = intern(id);
    bool dup = false;
    for (uint16_t x : spec.required) dup |= x == mapped;
    if (!dup) spec.required.push_back(mapped);
  }
}

size_t lanes(const EntrySpec& s) { return s.tests.size() + (s.required.empty() ? 0 : 1); }

}  // namespace

CompiledRule compile_rule(const Rule& r, BpfMode mode) {
  validate_rule(r);
  if (r.kind != RuleKind::Connection && r.id == kNoRule)
    throw RuleError(r, "id", "4294967295 is reserved");
  CompiledRule out;
  out.rule = r;
  out.action = effective_action(r);
  if (!r.enabled) return out;

  std::vector<std::vector<TestSpec>> variants;
  if (r.direction == Direction::Any && has_local_remote(r)) {
    variants.push_back(base_tests(r, Direction::Outgoing));
    variants.push_back(base_tests(r, Direction::Incoming));
  } else {
    variants.push_back(base_tests(r, r.direction));
  }

  std::vector<bpf_insn> prog;
  if (!r.bpf.empty()) {
    try {
      prog = compile_bpf(r.bpf);
    } catch (const BpfError& e) {
      throw RuleError(r, "bpf", e.what());
    }
  }

  if (prog.empty()) {
    for (auto& v : variants) out.entries.push_back(EntrySpec{std::move(v), {}});
    return out;
  }

  try {
    out.direct_jit = BpfJit::compile(prog);
  } catch (const BpfError& e) {
    throw RuleError(r, "bpf", e.what());
  }
  // Only Lower tries the full lowering; the fallback modes need at most the prefilter,
  // which a lowering with no path budget computes by itself.
  BpfLoweringLimits prefilter_only;
  prefilter_only.max_paths = 0;
  BpfLowering low;
  if (mode == BpfMode::Lower) low = lower_bpf(prog);
  else if (mode == BpfMode::JitWithPrefilter) low = lower_bpf(prog, prefilter_only);
  if (mode == BpfMode::Lower && low.lowered) {
    for (const auto& v : variants) {
      for (const auto& c : low.conjunctions) {
        EntrySpec spec;
        spec.tests = v;
        add_conjunction(low, c, spec, out);
        out.entries.push_back(std::move(spec));
      }
    }
    bool fits = out.entries.size() <= kMaxEntriesPerRule;
    for (const auto& e : out.entries) fits = fits && lanes(e) <= size_t(layout::kMaxTests);
    if (fits) {
      out.direct_vector = make_bpf_vector(low);
      return out;
    }
    low.lowered = false;
    low.why_not = "expands to more entries or tests than one rule may have";
  }

  // The expression runs in the JIT, behind the fixed-field tests and (if allowed) the
  // prefilter tests that every accepting path of the program makes.
  out.entries.clear();
  out.loads.clear();
  out.lowered = false;
  out.note = mode == BpfMode::Lower ? low.why_not : "dynamic slots exhausted";
  out.jit = out.direct_jit;
  if (low.lowered) low = lower_bpf(prog, prefilter_only);  // lowered but too large
  for (const auto& v : variants) {
    EntrySpec spec;
    spec.tests = v;
    if (mode != BpfMode::JitOnly) {
      EntrySpec with = spec;
      const auto loads_before = out.loads;
      add_conjunction(low, low.prefilter, with, out);
      if (lanes(with) <= size_t(layout::kMaxTests)) spec = std::move(with);
      else out.loads = loads_before;
    }
    out.entries.push_back(std::move(spec));
  }
  return out;
}

}  // namespace vpf::matcher
