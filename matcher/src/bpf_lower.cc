// BPF lowering: a compiled cBPF program -> a disjunction of conjunctions of masked range
// tests on packet loads.  See bpf.h for the contract.
#include <algorithm>
#include <optional>

#include "vpf/matcher/bpf.h"

namespace vpf::matcher {
namespace {

// Symbolic value of the accumulator (or a scratch cell).
struct Sym {
  enum Kind : uint8_t { Unknown, Const, Load } kind = Unknown;
  uint32_t k = 0;       // Const
  uint16_t load = 0;    // Load: value = loads[load] & mask
  uint32_t mask = ~0u;
};

// Symbolic value of the index register.
struct XSym {
  enum Kind : uint8_t { Unknown, Const, Msh } kind = Const;  // cBPF starts with X = 0
  uint32_t k = 0;        // Const
  uint32_t msh_off = 0;  // Msh: 4 * (pkt[msh_off] & 0xf)
};

struct PathState {
  uint32_t pc = 0;
  Sym a{Sym::Const, 0};
  XSym x;
  Sym mem[BPF_MEMWORDS];
  std::vector<BpfTerm> terms;
  std::vector<uint16_t> required;

  PathState() {
    for (auto& m : mem) m = Sym{Sym::Const, 0};
  }
};

bool is_reject(const std::vector<bpf_insn>& prog, uint32_t pc) {
  return pc < prog.size() && prog[pc].code == (BPF_RET | BPF_K) && prog[pc].k == 0;
}

class Lowerer {
 public:
  Lowerer(const std::vector<bpf_insn>& prog, const BpfLoweringLimits& lim, BpfLowering* out)
      : prog_(prog), lim_(lim), out_(out) {}

  void run() {
    std::vector<PathState> stack;
    stack.emplace_back();
    unsigned paths = 0;
    while (!stack.empty() && !failed_) {
      PathState s = std::move(stack.back());
      stack.pop_back();
      if (++paths > lim_.max_paths) return fail("more than " + std::to_string(lim_.max_paths) + " paths");
      walk(std::move(s), &stack);
    }
    if (!failed_) out_->lowered = true;
  }

  // Necessary conditions: follow the program from its entry while every branch but one
  // rejects.  Used as the classifier prefilter for programs that are not lowered.
  BpfConjunction prefilter() {
    PathState s;
    failed_ = false;
    for (unsigned steps = 0; steps < prog_.size() && s.pc < prog_.size(); ++steps) {
      const bpf_insn& in = prog_[s.pc];
      if (BPF_CLASS(in.code) != BPF_JMP) {
        if (BPF_CLASS(in.code) == BPF_RET || !step_straight(s, in)) break;
        ++s.pc;
        continue;
      }
      if (BPF_OP(in.code) == BPF_JA) {
        const uint32_t t = s.pc + 1 + in.k;
        if (t <= s.pc) break;
        s.pc = t;
        continue;
      }
      const uint32_t jt = s.pc + 1 + in.jt, jf = s.pc + 1 + in.jf;
      const bool rt = is_reject(prog_, jt), rf = is_reject(prog_, jf);
      if (rt == rf) break;  // both reject (dead) or neither: the paths split here
      const bool take_true = rf;
      std::vector<PathState> forks;
      PathState copy = s;
      if (branch(copy, in, take_true, &forks) && forks.empty()) s = std::move(copy);
      // A test we cannot express as one interval is skipped: fewer tests stay necessary.
      s.pc = take_true ? jt : jf;
    }
    BpfConjunction c;
    c.terms = s.terms;
    c.required = s.required;
    failed_ = false;
    return c;
  }

 private:
  void fail(std::string why) {
    if (!failed_) out_->why_not = std::move(why);
    failed_ = true;
  }

  uint16_t intern(const BpfLoad& l) {
    for (size_t i = 0; i < out_->loads.size(); ++i)
      if (out_->loads[i] == l) return static_cast<uint16_t>(i);
    out_->loads.push_back(l);
    if (out_->loads.size() > lim_.max_loads) fail("more than " + std::to_string(lim_.max_loads) + " distinct loads");
    return static_cast<uint16_t>(out_->loads.size() - 1);
  }

  static void require(PathState& s, uint16_t load) {
    auto it = std::lower_bound(s.required.begin(), s.required.end(), load);
    if (it == s.required.end() || *it != load) s.required.insert(it, load);
  }

  // Adds (load & mask) in [lo, hi] to the path.  False if the path becomes infeasible.
  static bool constrain(PathState& s, uint16_t load, uint32_t mask, uint32_t lo, uint32_t hi) {
    if (hi > mask) hi = mask;  // (v & mask) never exceeds mask
    if (lo > hi) return false;
    if (lo == 0 && hi == mask) return true;  // no constraint
    for (auto& t : s.terms) {
      if (t.load == load && t.mask == mask) {
        t.lo = std::max(t.lo, lo);
        t.hi = std::min(t.hi, hi);
        return t.lo <= t.hi;
      }
    }
    s.terms.push_back(BpfTerm{load, mask, lo, hi});
    return true;
  }

  // Executes a non-jump, non-return instruction.  False if it cannot be followed.
  bool step_straight(PathState& s, const bpf_insn& in) {
    const uint16_t code = in.code;
    switch (BPF_CLASS(code)) {
      case BPF_LD: {
        const uint8_t size = BPF_SIZE(code) == BPF_W ? 4 : BPF_SIZE(code) == BPF_H ? 2 : 1;
        switch (BPF_MODE(code)) {
          case BPF_ABS: {
            const uint16_t id = intern(BpfLoad{BpfLoad::Abs, size, in.k, 0});
            require(s, id);
            s.a = Sym{Sym::Load, 0, id, ~0u};
            return true;
          }
          case BPF_IND: {
            if (s.x.kind == XSym::Const) {
              const uint64_t off = uint64_t(s.x.k) + in.k;
              if (off > 0xffffffffu) return false;
              const uint16_t id = intern(BpfLoad{BpfLoad::Abs, size, uint32_t(off), 0});
              require(s, id);
              s.a = Sym{Sym::Load, 0, id, ~0u};
              return true;
            }
            if (s.x.kind != XSym::Msh) return false;
            const uint16_t id = intern(BpfLoad{BpfLoad::Ind, size, in.k, s.x.msh_off});
            require(s, id);
            s.a = Sym{Sym::Load, 0, id, ~0u};
            return true;
          }
          case BPF_LEN:
            s.a = Sym{Sym::Load, 0, intern(BpfLoad{BpfLoad::Len, 4, 0, 0}), ~0u};
            return true;
          case BPF_IMM:
            s.a = Sym{Sym::Const, in.k};
            return true;
          case BPF_MEM:
            if (in.k >= BPF_MEMWORDS) return false;
            s.a = s.mem[in.k];
            return true;
        }
        return false;
      }
      case BPF_LDX:
        switch (BPF_MODE(code)) {
          case BPF_IMM: s.x = XSym{XSym::Const, in.k, 0}; return true;
          case BPF_MSH:
            require(s, intern(BpfLoad{BpfLoad::Abs, 1, in.k, 0}));
            s.x = XSym{XSym::Msh, 0, in.k};
            return true;
          case BPF_MEM:
            if (in.k >= BPF_MEMWORDS) return false;
            s.x = s.mem[in.k].kind == Sym::Const ? XSym{XSym::Const, s.mem[in.k].k, 0} : XSym{XSym::Unknown};
            return true;
          default: s.x = XSym{XSym::Unknown}; return true;  // BPF_LEN
        }
      case BPF_ST:
        if (in.k >= BPF_MEMWORDS) return false;
        s.mem[in.k] = s.a;
        return true;
      case BPF_STX:
        if (in.k >= BPF_MEMWORDS) return false;
        s.mem[in.k] = s.x.kind == XSym::Const ? Sym{Sym::Const, s.x.k} : Sym{};
        return true;
      case BPF_ALU:
        return alu(s, in);
      case BPF_MISC:
        if (BPF_MISCOP(code) == BPF_TAX)
          s.x = s.a.kind == Sym::Const ? XSym{XSym::Const, s.a.k, 0} : XSym{XSym::Unknown};
        else
          s.a = s.x.kind == XSym::Const ? Sym{Sym::Const, s.x.k} : Sym{};
        return true;
    }
    return false;
  }

  static bool alu(PathState& s, const bpf_insn& in) {
    const uint32_t op = BPF_OP(in.code);
    if (op == BPF_NEG) {
      s.a = s.a.kind == Sym::Const ? Sym{Sym::Const, 0u - s.a.k} : Sym{};
      return true;
    }
    std::optional<uint32_t> k;
    if (BPF_SRC(in.code) == BPF_K) k = in.k;
    else if (s.x.kind == XSym::Const) k = s.x.k;
    if (!k) {
      s.a = Sym{};
      return true;
    }
    if (s.a.kind == Sym::Const) {
      uint32_t& a = s.a.k;
      switch (op) {
        case BPF_ADD: a += *k; break;
        case BPF_SUB: a -= *k; break;
        case BPF_MUL: a *= *k; break;
        case BPF_DIV: if (*k == 0) return false; a /= *k; break;
        case BPF_MOD: if (*k == 0) return false; a %= *k; break;
        case BPF_AND: a &= *k; break;
        case BPF_OR: a |= *k; break;
        case BPF_XOR: a ^= *k; break;
        case BPF_LSH: a = *k < 32 ? a << *k : 0; break;
        case BPF_RSH: a = *k < 32 ? a >> *k : 0; break;
        default: return false;
      }
      return true;
    }
    if (s.a.kind == Sym::Load) {
      if (op == BPF_AND) {
        s.a.mask &= *k;
        return true;
      }
      if (*k == 0 && (op == BPF_ADD || op == BPF_SUB || op == BPF_OR || op == BPF_XOR ||
                      op == BPF_LSH || op == BPF_RSH))
        return true;  // identity
    }
    s.a = Sym{};
    return true;
  }

  // Applies the outcome `taken` of conditional jump `in` to s.  May push extra forks for
  // outcomes that need several intervals.  False if the outcome is infeasible.  Sets
  // failed_ when the test cannot be expressed.
  bool branch(PathState& s, const bpf_insn& in, bool taken, std::vector<PathState>* forks) {
    uint32_t k = in.k;
    if (BPF_SRC(in.code) == BPF_X) {
      if (s.x.kind != XSym::Const) {
        fail("jump compares with a non-constant x");
        return false;
      }
      k = s.x.k;
    }
    const uint32_t op = BPF_OP(in.code);
    if (s.a.kind == Sym::Const) {
      const uint32_t a = s.a.k;
      bool r = op == BPF_JEQ ? a == k : op == BPF_JGT ? a > k : op == BPF_JGE ? a >= k : (a & k) != 0;
      return r == taken;
    }
    if (s.a.kind != Sym::Load) {
      fail("jump tests a computed value");
      return false;
    }
    const uint16_t ld = s.a.load;
    const uint32_t m = s.a.mask;
    switch (op) {
      case BPF_JEQ:
        if (taken) return constrain(s, ld, m, k, k);
        // != k: below or above
        {
          bool any = false;
          if (k < m) {  // above
            PathState above = s;
            if (constrain(above, ld, m, k + 1, m)) {
              forks->push_back(std::move(above));
              any = true;
            }
          }
          if (k > 0 && constrain(s, ld, m, 0, std::min(k - 1, m))) return true;
          if (any) {
            s = std::move(forks->back());
            forks->pop_back();
            return true;
          }
          return false;
        }
      case BPF_JGT:
        if (taken) return k < 0xffffffffu && constrain(s, ld, m, k + 1, m);
        return constrain(s, ld, m, 0, k);
      case BPF_JGE:
        if (taken) return constrain(s, ld, m, k, m);
        return k > 0 && constrain(s, ld, m, 0, k - 1);
      case BPF_JSET: {
        const uint32_t bits = m & k;
        if (!taken) return constrain(s, ld, bits, 0, 0) || bits == 0;
        if (bits == 0) return false;
        // Any one of the bits set: one fork per bit.
        bool first = true;
        PathState base = s;
        for (int b = 31; b >= 0; --b) {
          const uint32_t bit = 1u << b;
          if (!(bits & bit)) continue;
          PathState t = base;
          if (!constrain(t, ld, bit, bit, bit)) continue;
          if (first) {
            s = std::move(t);
            first = false;
          } else {
            forks->push_back(std::move(t));
          }
        }
        return !first;
      }
    }
    fail("unknown jump");
    return false;
  }

  void walk(PathState s, std::vector<PathState>* stack) {
    while (!failed_) {
      if (s.pc >= prog_.size()) return fail("jump past the end");
      const bpf_insn& in = prog_[s.pc];
      const uint16_t cls = BPF_CLASS(in.code);
      if (cls == BPF_RET) {
        uint32_t v;
        if (BPF_RVAL(in.code) == BPF_K) v = in.k;
        else if (s.a.kind == Sym::Const) v = s.a.k;
        else return fail("returns a computed value");
        if (v != 0) accept(std::move(s));
        return;
      }
      if (cls != BPF_JMP) {
        if (!step_straight(s, in)) return fail("instruction " + std::to_string(s.pc) + " cannot be followed");
        ++s.pc;
        continue;
      }
      if (BPF_OP(in.code) == BPF_JA) {
        const uint32_t t = s.pc + 1 + in.k;
        if (t <= s.pc) return fail("backward jump (loop)");
        s.pc = t;
        continue;
      }
      const uint32_t jt = s.pc + 1 + in.jt, jf = s.pc + 1 + in.jf;
      std::vector<PathState> forks;
      PathState f = s;
      if (!is_reject(prog_, jf) && branch(f, in, false, &forks)) {
        f.pc = jf;
        stack->push_back(std::move(f));
        for (auto& x : forks) {
          x.pc = jf;
          stack->push_back(std::move(x));
        }
      }
      if (failed_) return;
      forks.clear();
      if (is_reject(prog_, jt) || !branch(s, in, true, &forks)) return;
      for (auto& x : forks) {
        x.pc = jt;
        stack->push_back(std::move(x));
      }
      s.pc = jt;
    }
  }

  void accept(PathState s) {
    if (out_->conjunctions.size() >= lim_.max_conjunctions)
      return fail("more than " + std::to_string(lim_.max_conjunctions) + " accepting paths");
    BpfConjunction c;
    c.terms = std::move(s.terms);
    c.required = std::move(s.required);
    // A Len load is always in bounds.
    std::erase_if(c.required, [&](uint16_t id) { return out_->loads[id].kind == BpfLoad::Len; });
    out_->conjunctions.push_back(std::move(c));
  }

  const std::vector<bpf_insn>& prog_;
  BpfLoweringLimits lim_;
  BpfLowering* out_;
  bool failed_ = false;
};

}  // namespace

BpfLowering lower_bpf(const std::vector<bpf_insn>& prog, const BpfLoweringLimits& lim) {
  BpfLowering out;
  if (prog.empty()) {
    out.why_not = "empty program";
    return out;
  }
  Lowerer l(prog, lim, &out);
  l.run();
  if (!out.lowered) {
    out.conjunctions.clear();
    out.loads.clear();
    BpfLoweringLimits loose = lim;
    loose.max_loads = 64;
    const std::string why = out.why_not;
    Lowerer p(prog, loose, &out);
    out.prefilter = p.prefilter();
    out.why_not = why;
    std::erase_if(out.prefilter.required, [&](uint16_t id) { return out.loads[id].kind == BpfLoad::Len; });
  }
  return out;
}

bool eval_lowering(const BpfLowering& low, const uint8_t* pkt, uint32_t len) {
  std::vector<uint32_t> val(low.loads.size());
  std::vector<bool> ok(low.loads.size());
  for (size_t i = 0; i < low.loads.size(); ++i) {
    uint32_t v = 0;
    ok[i] = bpf_load(low.loads[i], pkt, len, &v);
    val[i] = v;
  }
  auto holds = [&](const BpfConjunction& c) {
    for (uint16_t r : c.required)
      if (!ok[r]) return false;
    for (const auto& t : c.terms) {
      if (!ok[t.load]) return false;
      const uint32_t v = val[t.load] & t.mask;
      if (v < t.lo || v > t.hi) return false;
    }
    return true;
  };
  if (!low.lowered) return holds(low.prefilter);
  for (const auto& c : low.conjunctions)
    if (holds(c)) return true;
  return false;
}

}  // namespace vpf::matcher
