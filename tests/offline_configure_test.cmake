# CTest: an offline machine without GoogleTest, Google Benchmark and CLI11 configures tokemb (the
# library) without downloading anything. The three are hidden (CMAKE_DISABLE_FIND_PACKAGE_* for
# their packages, CMAKE_IGNORE_PATH for the header-only CLI11's include directory) and FetchContent
# is disconnected, so an attempt to fetch would fail the configure. Checks: configure succeeds,
# each missing dependency gets its one message naming what is left out, and the build files hold
# the library but neither the test binary, the benchmarks nor the CLI.
# Inputs: TOKEMB_SOURCE_DIR, WORK_DIR, GENERATOR, CXX_COMPILER.
file(REMOVE_RECURSE "${WORK_DIR}")
execute_process(
  COMMAND ${CMAKE_COMMAND} -S "${TOKEMB_SOURCE_DIR}" -B "${WORK_DIR}" -G "${GENERATOR}"
          -DCMAKE_BUILD_TYPE=Release "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}"
          -DTOKEMB_WITH_CUDA=OFF -DTOKEMB_WITH_CURAND_HOST=OFF -DTOKEMB_WITH_NCCL=OFF
          -DCMAKE_DISABLE_FIND_PACKAGE_CLI11=ON -DCMAKE_DISABLE_FIND_PACKAGE_GTest=ON
          -DCMAKE_DISABLE_FIND_PACKAGE_benchmark=ON "-DCMAKE_IGNORE_PATH=/usr/include;/usr/local/include"
          -DFETCHCONTENT_FULLY_DISCONNECTED=ON
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
set(all "${out}\n${err}")
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "offline configure failed (${rc}):\n${all}")
endif()
# CMake wraps NOTICE messages at no fixed column; compare with the whitespace collapsed.
string(REGEX REPLACE "[ \t\r\n]+" " " flat "${all}")
foreach(expected IN ITEMS
    "tokemb: GoogleTest not found: the GoogleTest suites (tokemb_tests) are not built."
    "tokemb: Google Benchmark not found: the benchmarks (tokemb_bench) are not built."
    "tokemb: CLI11 not found: the tokemb CLI (tools/) is not built."
    "-DTOKEMB_FETCH_DEPS=ON to download it.")
  string(FIND "${flat}" "${expected}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "offline configure did not print \"${expected}\":\n${all}")
  endif()
endforeach()
foreach(quiet IN ITEMS "fetching" "FetchContent")
  string(FIND "${flat}" "${quiet}" at)
  if(NOT at EQUAL -1)
    message(FATAL_ERROR "offline configure mentions \"${quiet}\":\n${all}")
  endif()
endforeach()
file(READ "${WORK_DIR}/CMakeCache.txt" cache)
file(GLOB_RECURSE build_files "${WORK_DIR}/*.ninja" "${WORK_DIR}/Makefile")
set(rules "")
foreach(f IN LISTS build_files)
  file(READ "${f}" text)
  string(APPEND rules "${text}")
endforeach()
if(NOT rules MATCHES "libtokemb\\.a")
  message(FATAL_ERROR "offline configure: the library tokemb is missing from the build files")
endif()
foreach(target IN ITEMS tokemb_tests tokemb_bench tokemb_cli)
  if(rules MATCHES "[/ ]${target}[ :\n]")
    message(FATAL_ERROR "offline configure: ${target} is in the build files although its "
                        "dependency is missing")
  endif()
endforeach()
message(STATUS "offline configure: library only, one message per missing dependency, nothing fetched")
file(REMOVE_RECURSE "${WORK_DIR}")
