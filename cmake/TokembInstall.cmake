# Install rules and the exported package: find_package(tokemb) gives tokemb::tokemb.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

install(TARGETS tokemb EXPORT tokembTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/tokemb DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
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
