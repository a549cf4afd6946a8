# Install rules and the exported package: find_package(tokemb) gives tokemb::tokemb, from an
# install prefix or straight from this build tree (tokemb_DIR=<build>).
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

install(TARGETS tokemb EXPORT tokembTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
# The public headers only: include/tokemb/*.hpp and the generated config.hpp (never its .in).
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/tokemb DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
        FILES_MATCHING PATTERN "*.hpp")
install(FILES ${PROJECT_BINARY_DIR}/include/tokemb/config.hpp
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/tokemb)
install(EXPORT tokembTargets NAMESPACE tokemb::
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/tokemb)

configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/tokembConfig.cmake.in
  ${PROJECT_BINARY_DIR}/tokembConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/tokemb)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/tokembConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/tokembConfig.cmake ${PROJECT_BINARY_DIR}/tokembConfigVersion.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/tokemb)

# The build tree as a package too: tokembConfig.cmake (above) sits in the build directory and
# includes tokembTargets.cmake next to it, which points at this build's library and headers.
export(EXPORT tokembTargets NAMESPACE tokemb::
       FILE ${PROJECT_BINARY_DIR}/tokembTargets.cmake)

# The fingerprint of the sources this prefix is installed from (cmake/TokembSourceHash.cmake),
# computed when `cmake --install` runs: TOKEMB_PYTHON_PREBUILT checks it before linking.
install(CODE "
  include(\"${PROJECT_SOURCE_DIR}/cmake/TokembSourceHash.cmake\")
  tokemb_source_hash(_tokemb_hash \"${PROJECT_SOURCE_DIR}\")
  set(_tokemb_hash_file \"\$ENV{DESTDIR}\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_LIBDIR}/cmake/tokemb/tokembSourceHash.txt\")
  message(STATUS \"Installing: \${_tokemb_hash_file}\")
  file(WRITE \"\${_tokemb_hash_file}\" \"\${_tokemb_hash}\\n\")
")
