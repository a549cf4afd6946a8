# GoogleTest, Google Benchmark and CLI11 (the tokemb CLI's parser, tools/ only): the system's
# packages first (Debian: libgtest-dev, libbenchmark-dev, libcli11-dev, which
# scripts/install-deps.sh installs). A pinned FetchContent download only when asked
# (TOKEMB_FETCH_DEPS=ON): distribution, conda and other offline builds must configure without a
# network. A dependency that is neither installed nor fetched leaves out what needs it (the
# GoogleTest suites, the benchmarks, the CLI) with one configure message saying so; the library
# never needs any of them.
# Each macro sets TOKEMB_HAS_GTEST / TOKEMB_HAS_BENCHMARK / TOKEMB_HAS_CLI11 to ON or OFF.
include_guard(GLOBAL)
include(FetchContent)

# The one message for a dependency that is missing: what is left out, and the three ways to get it.
function(_tokemb_dependency_missing what package debian)
  message(NOTICE "tokemb: ${package} not found: ${what} not built. Install it (Debian/Ubuntu: "
                 "${debian}; or set CMAKE_PREFIX_PATH to where it is installed), or configure with "
                 "-DTOKEMB_FETCH_DEPS=ON to download it.")
endfunction()

macro(tokemb_find_gtest)
  set(TOKEMB_HAS_GTEST ON)
  if(NOT TARGET GTest::gtest_main)
    find_package(GTest 1.10 QUIET)
    if(NOT GTest_FOUND AND TOKEMB_FETCH_DEPS)
      message(STATUS "tokemb: GoogleTest not found on the system, fetching v1.14.0 (TOKEMB_FETCH_DEPS)")
      set(INSTALL_GTEST OFF CACHE BOOL "" FORCE)
      set(BUILD_GMOCK OFF CACHE BOOL "" FORCE)
      FetchContent_Declare(googletest
        URL https://github.com/google/googletest/archive/refs/tags/v1.14.0.tar.gz
        URL_HASH SHA256=8ad598c73ad796e0d8280b082cebd82a630d73e73cd3c70057938a6501bba5d7)
      FetchContent_MakeAvailable(googletest)
    elseif(NOT GTest_FOUND)
      set(TOKEMB_HAS_GTEST OFF)
      _tokemb_dependency_missing("the GoogleTest suites (tokemb_tests) are" GoogleTest libgtest-dev)
    endif()
  endif()
  if(TOKEMB_HAS_GTEST)
    include(GoogleTest)
  endif()
endmacro()

macro(tokemb_find_benchmark)
  set(TOKEMB_HAS_BENCHMARK ON)
  if(NOT TARGET benchmark::benchmark)
    find_package(benchmark 1.6 QUIET)
    if(NOT benchmark_FOUND AND TOKEMB_FETCH_DEPS)
      message(STATUS "tokemb: Google Benchmark not found on the system, fetching v1.8.3 (TOKEMB_FETCH_DEPS)")
      set(BENCHMARK_ENABLE_TESTING OFF CACHE BOOL "" FORCE)
      set(BENCHMARK_ENABLE_INSTALL OFF CACHE BOOL "" FORCE)
      FetchContent_Declare(googlebenchmark
        URL https://github.com/google/benchmark/archive/refs/tags/v1.8.3.tar.gz
        URL_HASH SHA256=6bc180a57d23d4d9515519f92b0c83d61b05b5bab188961f36ac7b06b0d9e9ce)
      FetchContent_MakeAvailable(googlebenchmark)
    elseif(NOT benchmark_FOUND)
      set(TOKEMB_HAS_BENCHMARK OFF)
      _tokemb_dependency_missing("the benchmarks (tokemb_bench) are" "Google Benchmark" libbenchmark-dev)
    endif()
  endif()
endmacro()

# Defines CLI11::CLI11 (header-only) for tools/. Debian's libcli11-dev installs a CMake config
# (bookworm: 2.1.2); a system with the header but no config gets a target on the header; else,
# with TOKEMB_FETCH_DEPS, v2.1.2 is fetched: the version the CLI is tested with on Debian
# bookworm, since its error messages are translated from CLI11's (tools/cli/command_line.cpp).
# The hash is that of GitHub's archive, reproduced as
# `git archive --prefix=CLI11-2.1.2/ v2.1.2 | gzip -n`. Only the headers are used (SOURCE_SUBDIR
# names no CMakeLists.txt): CLI11's own CMake code is never run.
macro(tokemb_find_cli11)
  set(TOKEMB_HAS_CLI11 ON)
  if(NOT TARGET CLI11::CLI11)
    find_package(CLI11 2.1 CONFIG QUIET)
    if(NOT CLI11_FOUND)
      find_path(TOKEMB_CLI11_INCLUDE_DIR CLI/CLI.hpp)
      if(TOKEMB_CLI11_INCLUDE_DIR)
        message(STATUS "tokemb: CLI11 from ${TOKEMB_CLI11_INCLUDE_DIR} (no CMake config found)")
      elseif(TOKEMB_FETCH_DEPS)
        message(STATUS "tokemb: CLI11 not found on the system, fetching v2.1.2 (TOKEMB_FETCH_DEPS)")
        FetchContent_Declare(cli11
          URL https://github.com/CLIUtils/CLI11/archive/refs/tags/v2.1.2.tar.gz
          URL_HASH SHA256=26291377e892ba0e5b4972cdfd4a2ab3bf53af8dac1f4ea8fe0d1376b625c8cb
          SOURCE_SUBDIR headers-only-no-cmake)
        FetchContent_MakeAvailable(cli11)
        set(TOKEMB_CLI11_INCLUDE_DIR "${cli11_SOURCE_DIR}/include")
      else()
        set(TOKEMB_HAS_CLI11 OFF)
        _tokemb_dependency_missing("the tokemb CLI (tools/) is" CLI11 libcli11-dev)
      endif()
      if(TOKEMB_HAS_CLI11)
        add_library(CLI11::CLI11 INTERFACE IMPORTED)
        set_target_properties(CLI11::CLI11 PROPERTIES
          INTERFACE_INCLUDE_DIRECTORIES "${TOKEMB_CLI11_INCLUDE_DIR}")
      endif()
    endif()
  endif()
endmacro()
