// vportfilter matcher: instruction-set selection for the classifier kernels.
//
// Each kernel lives in its own source file compiled with its own ISA flags.  The best
// kernel that both the build and the CPU support (CPUID, and XGETBV for the OS-enabled
// register state) is chosen once; the VPF_ISA environment variable (scalar, sse42, avx2,
// avx512) or Classifier::set_isa() overrides it for tests, the CLI and benchmarks.  An ISA
// the CPU lacks answers "unsupported" instead of failing.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace vpf::matcher {

enum class Isa : int { Scalar = 0, Sse42 = 1, Avx2 = 2, Avx512 = 3 };
inline constexpr int kIsaCount = 4;

const char* isa_name(Isa isa);
std::optional<Isa> parse_isa(const std::string& name);

// True if this CPU (and its OS) can run the kernel.
bool isa_supported(Isa isa);

// True if the CPU also has AVX-512 VBMI (byte permutes across a register): the BPF vector
// evaluator (bpf_vector.h) needs it on top of the AVX-512 kernel's features.
bool cpu_has_avx512_vbmi();

// Every supported ISA, scalar first.
std::vector<Isa> supported_isas();

// The default: VPF_ISA if set and supported, else the best supported ISA.
Isa default_isa();

}  // namespace vpf::matcher
