// cBPF -> x86-64 with asmjit.  Semantics follow libpcap's bpf_filter(): an out-of-bounds
// load or a division by zero returns 0; shifts by 32 or more give 0; scratch memory starts
// zeroed.  Unlike libpcap, backward jumps are bounded (kBpfMaxBackJumps, as in
// bpf_interpret()).
//
// Register use (System V, after the prologue moves the arguments (ctx, pkt, wirelen,
// buflen) into place): rdi = packet, esi = wire length, r9d = buffer length,
// eax = A, ecx = X (so shifts can use cl), edx/r10/r11 = scratch.  M[] lives in the red
// zone below rsp (the generated function is a leaf).
#include "vpf/matcher/bpf.h"

#include <pcap/pcap.h>

#include <mutex>

#ifdef VPF_HAVE_ASMJIT
#include <asmjit/x86.h>
#endif

namespace vpf::matcher {

#ifndef VPF_HAVE_ASMJIT

namespace {
// The executor of builds without asmjit: the interpreter on the BpfJit kept in ctx.
uint32_t interpret(const void* ctx, const uint8_t* pkt, uint32_t wirelen, uint32_t buflen) {
  const auto* prog = static_cast<const std::vector<bpf_insn>*>(ctx);
  return bpf_interpret(prog->data(), prog->size(), pkt, wirelen, buflen);
}
}  // namespace

std::shared_ptr<const BpfJit> BpfJit::compile(const std::vector<bpf_insn>& prog) {
  if (prog.empty()) throw BpfError("empty BPF program");
  std::shared_ptr<BpfJit> jit(new BpfJit());
  jit->prog_ = prog;
  jit->call_.fn = interpret;
  jit->call_.ctx = &jit->prog_;
  return jit;
}

BpfJit::~BpfJit() = default;

#else

namespace {

using namespace asmjit;

std::mutex& jit_mutex() {
  static std::mutex mu;
  return mu;
}

JitRuntime& runtime() {
  static JitRuntime rt;
  return rt;
}

constexpr int32_t kMemBase = -64;  // M[i] at [rsp - 64 + 4i]

x86::Mem mem_cell(uint32_t i) { return x86::dword_ptr(x86::rsp, kMemBase + int32_t(4 * i)); }
// The backward jumps left (kBpfMaxBackJumps at entry), below M[].
x86::Mem back_jumps() { return x86::dword_ptr(x86::rsp, kMemBase - 4); }

class Emitter {
 public:
  Emitter(const std::vector<bpf_insn>& prog, x86::Assembler& a) : prog_(prog), a_(a) {}

  void emit() {
    const size_t n = prog_.size();
    labels_.reserve(n);
    for (size_t i = 0; i < n; ++i) labels_.push_back(a_.newLabel());
    reject_ = a_.newLabel();

    // (ctx, pkt, wirelen, buflen) arrive in rdi, rsi, edx, ecx.
    a_.mov(x86::r9d, x86::ecx);
    a_.mov(x86::rdi, x86::rsi);
    a_.mov(x86::esi, x86::edx);
    a_.xor_(x86::eax, x86::eax);
    a_.xor_(x86::ecx, x86::ecx);
    for (uint32_t i = 0; i < BPF_MEMWORDS; ++i) a_.mov(mem_cell(i), x86::eax);
    a_.mov(back_jumps(), imm(kBpfMaxBackJumps));

    for (size_t pc = 0; pc < n; ++pc) {
      a_.bind(labels_[pc]);
      insn(uint32_t(pc), prog_[pc]);
    }
    a_.bind(reject_);
    a_.xor_(x86::eax, x86::eax);
    a_.ret();
  }

  bool ok() const { return ok_; }
  const std::string& error() const { return error_; }

 private:
  Label target(uint32_t pc, uint32_t off) {
    const uint32_t t = pc + 1 + off;  // wraps like libpcap's pc arithmetic
    if (t >= prog_.size()) {
      bad("jump out of the program at instruction " + std::to_string(pc));
      return reject_;
    }
    return labels_[t];
  }

  void bad(std::string why) {
    if (ok_) error_ = std::move(why);
    ok_ = false;
  }

  // Bounds check for a load of `size` bytes at constant offset k; jumps to reject.
  bool check_abs(uint32_t k, uint32_t size) {
    if (uint64_t(k) + size > 0x7fffffffu) {
      a_.jmp(reject_);
      return false;
    }
    a_.cmp(x86::r9d, imm(k + size));
    a_.jb(reject_);
    return true;
  }

  void load(const x86::Gp& base, int32_t disp, uint32_t size) {
    switch (size) {
      case 4:
        a_.mov(x86::eax, x86::dword_ptr(base, disp));
        a_.bswap(x86::eax);
        break;
      case 2:
        a_.movzx(x86::eax, x86::word_ptr(base, disp));
        a_.rol(x86::ax, 8);
        break;
      default:
        a_.movzx(x86::eax, x86::byte_ptr(base, disp));
    }
  }

  void alu(uint32_t op, bool src_x, uint32_t k) {
    if (op == BPF_NEG) {
      a_.neg(x86::eax);
      return;
    }
    if (!src_x) a_.mov(x86::r10d, imm(k));
    const x86::Gp src = src_x ? x86::ecx : x86::r10d;
    switch (op) {
      case BPF_ADD: a_.add(x86::eax, src); break;
      case BPF_SUB: a_.sub(x86::eax, src); break;
      case BPF_MUL: a_.imul(x86::eax, src); break;
      case BPF_AND: a_.and_(x86::eax, src); break;
      case BPF_OR: a_.or_(x86::eax, src); break;
      case BPF_XOR: a_.xor_(x86::eax, src); break;
      case BPF_DIV:
      case BPF_MOD:
        if (!src_x && k == 0) {
          a_.jmp(reject_);
          break;
        }
        if (src_x) {
          a_.test(x86::ecx, x86::ecx);
          a_.jz(reject_);
        }
        a_.xor_(x86::edx, x86::edx);
        a_.div(src);
        if (op == BPF_MOD) a_.mov(x86::eax, x86::edx);
        break;
      case BPF_LSH:
      case BPF_RSH: {
        if (!src_x) {
          if (k >= 32) a_.xor_(x86::eax, x86::eax);
          else if (op == BPF_LSH) a_.shl(x86::eax, imm(k));
          else a_.shr(x86::eax, imm(k));
          break;
        }
        Label small = a_.newLabel(), done = a_.newLabel();
        a_.cmp(x86::ecx, imm(32));
        a_.jb(small);
        a_.xor_(x86::eax, x86::eax);
        a_.jmp(done);
        a_.bind(small);
        if (op == BPF_LSH) a_.shl(x86::eax, x86::cl);
        else a_.shr(x86::eax, x86::cl);
        a_.bind(done);
        break;
      }
      default:
        bad("unknown ALU operation " + std::to_string(op));
    }
  }

  void insn(uint32_t pc, const bpf_insn& in) {
    const uint16_t code = in.code;
    const uint32_t size = BPF_SIZE(code) == BPF_W ? 4 : BPF_SIZE(code) == BPF_H ? 2 : 1;
    switch (BPF_CLASS(code)) {
      case BPF_RET:
        if (BPF_RVAL(code) == BPF_K) a_.mov(x86::eax, imm(in.k));
        else if (BPF_RVAL(code) == BPF_X) a_.mov(x86::eax, x86::ecx);
        a_.ret();
        return;
      case BPF_LD:
        switch (BPF_MODE(code)) {
          case BPF_ABS:
            if (check_abs(in.k, size)) load(x86::rdi, int32_t(in.k), size);
            return;
          case BPF_IND:
            // off = X + k (64-bit, cannot wrap); off + size <= buflen
            a_.mov(x86::r10d, x86::ecx);
            a_.add(x86::r10, imm(in.k));
            a_.lea(x86::r11, x86::ptr(x86::r10, int32_t(size)));
            a_.mov(x86::edx, x86::r9d);
            a_.cmp(x86::r11, x86::rdx);
            a_.ja(reject_);
            a_.add(x86::r10, x86::rdi);
            load(x86::r10, 0, size);
            return;
          case BPF_LEN: a_.mov(x86::eax, x86::esi); return;
          case BPF_IMM: a_.mov(x86::eax, imm(in.k)); return;
          case BPF_MEM:
            if (in.k >= BPF_MEMWORDS) return bad("scratch index out of range");
            a_.mov(x86::eax, mem_cell(in.k));
            return;
        }
        return bad("unknown load mode");
      case BPF_LDX:
        switch (BPF_MODE(code)) {
          case BPF_IMM: a_.mov(x86::ecx, imm(in.k)); return;
          case BPF_LEN: a_.mov(x86::ecx, x86::esi); return;
          case BPF_MEM:
            if (in.k >= BPF_MEMWORDS) return bad("scratch index out of range");
            a_.mov(x86::ecx, mem_cell(in.k));
            return;
          case BPF_MSH:
            if (!check_abs(in.k, 1)) return;
            a_.movzx(x86::ecx, x86::byte_ptr(x86::rdi, int32_t(in.k)));
            a_.and_(x86::ecx, imm(0xf));
            a_.shl(x86::ecx, imm(2));
            return;
        }
        return bad("unknown ldx mode");
      case BPF_ST:
        if (in.k >= BPF_MEMWORDS) return bad("scratch index out of range");
        a_.mov(mem_cell(in.k), x86::eax);
        return;
      case BPF_STX:
        if (in.k >= BPF_MEMWORDS) return bad("scratch index out of range");
        a_.mov(mem_cell(in.k), x86::ecx);
        return;
      case BPF_ALU:
        alu(BPF_OP(code), BPF_SRC(code) == BPF_X, in.k);
        return;
      case BPF_JMP: {
        const uint32_t op = BPF_OP(code);
        if (op == BPF_JA) {
          if (pc + 1 + in.k <= pc) {  // backwards (a loop): bounded, as bpf_interpret() bounds it
            a_.sub(back_jumps(), imm(1));
            a_.jb(reject_);
          }
          a_.jmp(target(pc, in.k));
          return;
        }
        Label jt = target(pc, in.jt), jf = target(pc, in.jf);
        const bool x = BPF_SRC(code) == BPF_X;
        if (op == BPF_JSET) {
          if (x) a_.test(x86::eax, x86::ecx);
          else a_.test(x86::eax, imm(in.k));
          a_.jnz(jt);
        } else {
          if (x) a_.cmp(x86::eax, x86::ecx);
          else a_.cmp(x86::eax, imm(in.k));
          if (op == BPF_JEQ) a_.je(jt);
          else if (op == BPF_JGT) a_.ja(jt);
          else if (op == BPF_JGE) a_.jae(jt);
          else return bad("unknown jump");
        }
        a_.jmp(jf);
        return;
      }
      case BPF_MISC:
        if (BPF_MISCOP(code) == BPF_TAX) a_.mov(x86::ecx, x86::eax);
        else a_.mov(x86::eax, x86::ecx);
        return;
    }
    bad("unknown instruction class");
  }

  const std::vector<bpf_insn>& prog_;
  x86::Assembler& a_;
  std::vector<Label> labels_;
  Label reject_;
  bool ok_ = true;
  std::string error_;
};

}  // namespace

std::shared_ptr<const BpfJit> BpfJit::compile(const std::vector<bpf_insn>& prog) {
  if (prog.empty()) throw BpfError("empty BPF program");
  std::lock_guard lock(jit_mutex());
  CodeHolder code;
  code.init(runtime().environment());
  x86::Assembler a(&code);
  Emitter e(prog, a);
  e.emit();
  if (!e.ok()) throw BpfError("BPF JIT: " + e.error());
  Fn fn = nullptr;
  if (Error err = runtime().add(&fn, &code); err != kErrorOk)
    throw BpfError(std::string("BPF JIT: ") + DebugUtils::errorAsString(err));
  std::shared_ptr<BpfJit> jit(new BpfJit());
  jit->call_.fn = fn;
  jit->code_size_ = code.codeSize();
  return jit;
}

BpfJit::~BpfJit() {
  if (call_.fn) {
    std::lock_guard lock(jit_mutex());
    runtime().release(call_.fn);
  }
}

#endif  // VPF_HAVE_ASMJIT

}  // namespace vpf::matcher
