# GoogleTest and Google Benchmark: the system's packages first, a pinned FetchContent fallback.
# CLI11 (the tokemb CLI's parser, tools/ only): likewise, Debian's libcli11-dev first.
include_guard(GLOBAL)
include(FetchContent)

macro(tokemb_find_gtest)
  if(NOT TARGET GTest::gtest_main)
    find_package(GTest 1.10 QUIET)
    if(NOT GTest_FOUND)
      message(STATUS "tokemb: GoogleTest not found on the system, fetching v1.14.0")
      set(INSTALL_GTEST OFF CACHE BOOL "" FORCE)
      set(BUILD_GMOCK OFF CACHE BOOL "" FORCE)
      FetchContent_Declare(googletest
        URL https://github.com/google/googletest/archive/refs/tags/v1.14.0.tar.gz
        URL_HASH SHA256=8ad598c73ad796e0d8280b082cebd82a630d73e73cd3c70057938a6501bba5d7)
      FetchContent_MakeAvailable(googletest)
    endif()
  endif()
  include(GoogleTest)
endmacro()

macro(tokemb_find_benchmark)
  if(NOT TARGET benchmark::benchmark)
    find_package(benchmark 1.6 QUIET)
    if(NOT benchmark_FOUND)
      message(STATUS "tokemb: Google Benchmark not found on the system, fetching v1.8.3")
      set(BENCHMARK_ENABLE_TESTING OFF CACHE BOOL "" FORCE)
      set(BENCHMARK_ENABLE_INSTALL OFF CACHE BOOL "" FORCE)
      FetchContent_Declare(googlebenchmark
        URL https://github.com/google/benchmark/archive/refs/tags/v1.8.3.tar.gz
        URL_HASH SHA256=6bc180a57d23d4d9515519f92b0c83d61b05b5bab188961f36ac7b06b0d9e9ce)
      FetchContent_MakeAvailable(googlebenchmark)
    endif()
  endif()
endmacro()

# Defines CLI11::CLI11 (header-only) for tools/. Debian's libcli11-dev installs a CMake config
# (bookworm: 2.1.2); a system with the header but no config gets a target on the header; else
# v2.1.2 is fetched: the version the CLI is tested with on Debian bookworm, since its error
# messages are translated from CLI11's (tools/cli/command_line.cpp). The hash is that of GitHub's
# archive, reproduced as `git archive --prefix=CLI11-2.1.2/ v2.1.2 | gzip -n`. Only the headers
# are used (SOURCE_SUBDIR names no CMakeLists.txt): CLI11's own CMake code is never run.
macro(tokemb_find_cli11)
  if(NOT TARGET CLI11::CLI11)
    find_package(CLI11 2.1 CONFIG QUIET)
    if(NOT CLI11_FOUND)
      find_path(TOKEMB_CLI11_INCLUDE_DIR CLI/CLI.hpp)
      if(TOKEMB_CLI11_INCLUDE_DIR)
        message(STATUS "tokemb: CLI11 from ${TOKEMB_CLI11_INCLUDE_DIR} (no CMake config found)")
      else()
        message(STATUS "tokemb: CLI11 not found on the system, fetching v2.1.2")
        FetchContent_Declare(cli11
          URL https://github.com/CLIUtils/CLI11/archive/refs/tags/v2.1.2.tar.gz
          URL_HASH SHA256=26291377e892ba0e5b4972cdfd4a2ab3bf53af8dac1f4ea8fe0d1376b625c8cb
          SOURCE_SUBDIR headers-only-no-cmake)
        FetchContent_MakeAvailable(cli11)
        set(TOKEMB_CLI11_INCLUDE_DIR "${cli11_SOURCE_DIR}/include")
      endif()
      add_library(CLI11::CLI11 INTERFACE IMPORTED)
      set_target_properties(CLI11::CLI11 PROPERTIES
        INTERFACE_INCLUDE_DIRECTORIES "${TOKEMB_CLI11_INCLUDE_DIR}")
    endif()
  endif()
endmacro()
