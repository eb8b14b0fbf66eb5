# Shared by the scripts: repository root, build directories, parallelism.
set -euo pipefail
VPF_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VPF_BUILD="${VPF_BUILD:-$VPF_ROOT/build}"
VPF_BUILD_ASAN="${VPF_BUILD_ASAN:-$VPF_ROOT/build-asan}"
VPF_BUILD_FUZZ="${VPF_BUILD_FUZZ:-$VPF_ROOT/build-fuzz}"
VPF_JOBS="${VPF_JOBS:-2}"

vpf_log() { printf '\n== %s\n' "$*"; }

# vpf_configure DIR [cmake args...]
vpf_configure() {
  local dir="$1"; shift
  mkdir -p "$dir"
  cmake -S "$VPF_ROOT" -B "$dir" -G Ninja "$@" >"$dir/configure.log" 2>&1 || {
    cat "$dir/configure.log" >&2
    return 1
  }
}
