# All build options of vportfilter, in one place.
include(GNUInstallDirs)

option(VPF_SANITIZE "Build with AddressSanitizer and UndefinedBehaviorSanitizer" OFF)
option(VPF_BUILD_BENCH "Build the Google Benchmark programs" ON)
option(VPF_WERROR "Treat compiler warnings as errors" OFF)
option(VPF_FUZZ "Build only the matcher and its libFuzzer harnesses, with clang, ASan and UBSan" OFF)
set(VPF_OVS_TARBALL "/usr/src/openvswitch/openvswitch.tar.gz" CACHE FILEPATH
    "Debian's openvswitch-source tarball, from which the patched switch is built (without it: no switch, plugin or tests on it)")
set(VPF_FUZZ_SECONDS 12 CACHE STRING "seconds each libFuzzer harness runs under CTest (VPF_FUZZ builds)")
set(VPF_TEST_PLUGIN "" CACHE FILEPATH
    "vportfilter_ovs.so for the agent's tests on the real switch in a sanitizer build (which builds no module)")

set(CMAKE_CXX_STANDARD 20)
set(CMAKE_CXX_STANDARD_REQUIRED ON)
set(CMAKE_CXX_EXTENSIONS OFF)
set(CMAKE_C_STANDARD 11)
set(CMAKE_EXPORT_COMPILE_COMMANDS ON)
set(CMAKE_POSITION_INDEPENDENT_CODE ON)
# Installed programs find libvportfilter beside them (PREFIX/bin → PREFIX/lib).
set(CMAKE_INSTALL_RPATH "$ORIGIN/../${CMAKE_INSTALL_LIBDIR}")

if(NOT CMAKE_BUILD_TYPE AND NOT CMAKE_CONFIGURATION_TYPES)
  set(CMAKE_BUILD_TYPE RelWithDebInfo CACHE STRING "Build type" FORCE)
endif()

add_compile_options(-Wall -Wextra)
if(VPF_WERROR)
  add_compile_options(-Werror)
endif()

if(VPF_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "VPF_FUZZ needs clang (libFuzzer): -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_C_COMPILER=clang")
  endif()
  add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
endif()

if(VPF_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
endif()

# ISA flags for the classifier kernels. Each kernel source file gets exactly one of
# these; shared headers and every other file are compiled for the baseline x86-64.
set(VPF_ISA_FLAGS_SSE42  -msse4.2 -mpopcnt)
set(VPF_ISA_FLAGS_AVX2   -mavx2 -mbmi -mbmi2 -mpopcnt -mfma)
set(VPF_ISA_FLAGS_AVX512 -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx2 -mbmi -mbmi2 -mpopcnt)
