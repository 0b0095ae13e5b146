# Install rules: what `cmake --install build [--prefix DIR]` puts on a host
# that runs jitbroker (contrib/systemd/README.md). Included at the end of the
# top-level CMakeLists.txt.
#
#   PREFIX/bin/jitbroker, PREFIX/bin/jitctl
#   PREFIX/lib/systemd/system/jitbroker.service   (contrib/systemd/)
#   PREFIX/share/doc/jitbroker/                   README.md, SECURITY.md, docs/*.md,
#                                                  systemd.md (contrib/systemd/README.md)
#   PREFIX/share/doc/jitbroker/examples/          conf/*.yaml
#
# Only the two executables are installed from the build tree: a tree that
# builds just `jitbroker jitctl` and the test drivers (the sanitizer build)
# installs too. Tests, benchmarks, libraries and headers are not installed.
include(GNUInstallDirs)

install(TARGETS jitbroker jitctl RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})

# The unit runs /usr/local/bin/jitbroker: the default prefix and BINDIR above
# (tests/packaging/install_test.sh checks that they agree). systemd reads
# units from /usr/local/lib/systemd/system as well as /lib/systemd/system.
install(FILES ${PROJECT_SOURCE_DIR}/contrib/systemd/jitbroker.service
  DESTINATION lib/systemd/system)

# Documentation and example configs are listed when `cmake --install` runs
# (install(DIRECTORY)), so a page added since configuring is installed too.
install(FILES ${PROJECT_SOURCE_DIR}/README.md DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(FILES ${PROJECT_SOURCE_DIR}/SECURITY.md DESTINATION ${CMAKE_INSTALL_DOCDIR} OPTIONAL)
install(DIRECTORY ${PROJECT_SOURCE_DIR}/docs/ DESTINATION ${CMAKE_INSTALL_DOCDIR}
  FILES_MATCHING PATTERN "*.md")
install(FILES ${PROJECT_SOURCE_DIR}/contrib/systemd/README.md
  DESTINATION ${CMAKE_INSTALL_DOCDIR} RENAME systemd.md)
# conf/data/ holds the keys a dev daemon generated there (.gitignore): never.
install(DIRECTORY ${PROJECT_SOURCE_DIR}/conf/ DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples
  FILES_MATCHING PATTERN "*.yaml" PATTERN "*.yml" PATTERN "data" EXCLUDE)

if(BUILD_TESTING)
  # Exit 77: systemd-analyze is not installed (scripts/deps.sh installs it).
  add_test(NAME packaging_systemd_verify
    COMMAND bash ${PROJECT_SOURCE_DIR}/tests/packaging/systemd_verify.sh $<TARGET_FILE:jitbroker>)
  set_tests_properties(packaging_systemd_verify PROPERTIES LABELS packaging SKIP_RETURN_CODE 77)
  add_test(NAME packaging_install
    COMMAND bash ${PROJECT_SOURCE_DIR}/tests/packaging/install_test.sh ${CMAKE_BINARY_DIR} ${CMAKE_COMMAND})
  set_tests_properties(packaging_install PROPERTIES LABELS packaging)
  add_test(NAME packaging_completion
    COMMAND bash ${PROJECT_SOURCE_DIR}/tests/packaging/completion_test.sh $<TARGET_FILE:jitctl>)
  set_tests_properties(packaging_completion PROPERTIES LABELS packaging)
  if(NOT JITBROKER_SANITIZE)
    # The image's runtime libraries are checked against the shipped build's
    # binaries, not the sanitizer build's.
    add_test(NAME packaging_containerfile
      COMMAND bash ${PROJECT_SOURCE_DIR}/tests/packaging/containerfile_test.sh
        $<TARGET_FILE:jitbroker> $<TARGET_FILE:jitctl>)
    set_tests_properties(packaging_containerfile PROPERTIES LABELS packaging)
  endif()
endif()
