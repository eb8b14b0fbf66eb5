# The installed layout (`cmake --install build [--prefix DIR]`), in one place:
#   bin/                      vpf-agent, vpfctl, vpf-console, vpf-gen
#   lib/                      libvportfilter.so.0 (the vpf::NetFilter library)
#   lib/vportfilter/          vportfilter_ovs.so, the module ovs-vswitchd loads
#                             (other_config:packet-hook-plugin)
#   include/vpf/              the library's headers
#   share/vportfilter/        the OVSDB schema of the vportfilter database
#   share/bash-completion/completions/vpfctl
#   share/man/man1/           vpf-agent.1, vpfctl.1, vpf-gen.1 (from their --help)
#   share/doc/vportfilter/    docs/*.md, README.md, LICENSE
include(GNUInstallDirs)

set(_bins vpf-agent vpfctl vpf-gen)
if(TARGET vpf-console)
  list(APPEND _bins vpf-console)
endif()
install(TARGETS ${_bins} RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(TARGETS vportfilter LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} NAMELINK_COMPONENT dev)
install(DIRECTORY agent/include/vpf common/include/vpf DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT dev
        FILES_MATCHING PATTERN "*.h")
if(TARGET vportfilter_ovs)
  install(TARGETS vportfilter_ovs LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}/vportfilter)
endif()
install(FILES agent/schema/vportfilter.ovsschema DESTINATION ${CMAKE_INSTALL_DATADIR}/vportfilter)
install(FILES agent/completion/vpfctl.bash DESTINATION ${CMAKE_INSTALL_DATADIR}/bash-completion/completions
        RENAME vpfctl)
file(GLOB _docs CONFIGURE_DEPENDS docs/*.md)
install(FILES ${_docs} README.md LICENSE DESTINATION ${CMAKE_INSTALL_DOCDIR})

# Manual pages, written from each program's --help when it is built.
set(_pages "")
foreach(entry "vpf-agent|the vportfilter daemon: Open vSwitch ports to adapters, rules to the plugin, events to clients"
              "vpfctl|vportfilter's command line: adapters, rules, statistics, events, injection"
              "vpf-gen|rule sets and traces in the ClassBench style, and ClassBench filter files as rules")
  string(REPLACE "|" ";" entry "${entry}")
  list(GET entry 0 name)
  list(GET entry 1 summary)
  set(page ${CMAKE_BINARY_DIR}/man/${name}.1)
  add_custom_command(OUTPUT ${page}
    COMMAND ${CMAKE_COMMAND} -DPROGRAM=$<TARGET_FILE:${name}> -DNAME=${name} "-DSUMMARY=${summary}" -DOUT=${page}
            -P ${PROJECT_SOURCE_DIR}/cmake/HelpToMan.cmake
    DEPENDS ${name} ${PROJECT_SOURCE_DIR}/cmake/HelpToMan.cmake
    COMMENT "Manual page ${name}.1 from ${name} --help"
    VERBATIM)
  list(APPEND _pages ${page})
endforeach()
add_custom_target(man_pages ALL DEPENDS ${_pages})
install(FILES ${_pages} DESTINATION ${CMAKE_INSTALL_MANDIR}/man1)

add_test(NAME install_layout COMMAND bash ${PROJECT_SOURCE_DIR}/cmake/install_test.sh ${CMAKE_BINARY_DIR})
set_tests_properties(install_layout PROPERTIES LABELS "build" TIMEOUT 120)
