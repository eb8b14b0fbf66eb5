# Third-party dependencies: Debian's packages only (scripts/install-deps.sh installs them).

find_package(PkgConfig REQUIRED)
find_package(Threads REQUIRED)
find_package(GTest REQUIRED)

pkg_check_modules(PCAP REQUIRED IMPORTED_TARGET libpcap)
pkg_check_modules(DPDK IMPORTED_TARGET libdpdk)

find_path(ASMJIT_INCLUDE_DIR asmjit/asmjit.h REQUIRED)
find_library(ASMJIT_LIBRARY asmjit REQUIRED)
add_library(asmjit::asmjit UNKNOWN IMPORTED)
set_target_properties(asmjit::asmjit PROPERTIES
  IMPORTED_LOCATION "${ASMJIT_LIBRARY}"
  INTERFACE_INCLUDE_DIRECTORIES "${ASMJIT_INCLUDE_DIR}")

find_package(nlohmann_json 3.10 REQUIRED)
find_package(Boost 1.74 REQUIRED COMPONENTS program_options)

if(VPF_BUILD_BENCH)
  find_package(benchmark REQUIRED)
endif()
