# CTest: the one "no GPU here, skip the kernels" switch. The environment variable TOKEMB_WITH_CUDA
# is the default of the cache variable of the same name (scripts/test.sh, scripts/demo.sh and
# `pip install .` all reach CMake with it): OFF configures the CPU backend only; a value other
# than AUTO/ON/OFF fails with a message; a build directory's cached choice stays, with a warning
# naming both. TOKEMB_KERNEL_UNITS refuses a bad value. Where this build has the CUDA backend
# (BUILD_HAS_CUDA), its compile_commands.json matches the machine: above 4 cores every nvcc
# command carries --threads and the backward dtypes compile apart, up to 4 neither.
# Inputs: TOKEMB_SOURCE_DIR, WORK_DIR, GENERATOR, CXX_COMPILER, BUILD_DIR, BUILD_HAS_CUDA.
file(REMOVE_RECURSE "${WORK_DIR}")
function(configure env_value)
  execute_process(
    COMMAND ${CMAKE_COMMAND} -E env "TOKEMB_WITH_CUDA=${env_value}"
            ${CMAKE_COMMAND} -S "${TOKEMB_SOURCE_DIR}" -B "${WORK_DIR}" -G "${GENERATOR}"
            "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}" -DTOKEMB_BUILD_TESTS=OFF
            -DTOKEMB_BUILD_BENCHMARKS=OFF -DTOKEMB_BUILD_TOOLS=OFF -DTOKEMB_WITH_CURAND_HOST=OFF
    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  string(REGEX REPLACE "[ \t\r\n]+" " " flat "${out}\n${err}")
  set(rc "${rc}" PARENT_SCOPE)
  set(flat "${flat}" PARENT_SCOPE)
endfunction()
function(expect text)
  string(FIND "${flat}" "${text}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "expected \"${text}\" in the configure output:\n${flat}")
  endif()
endfunction()

configure(maybe)
if(rc EQUAL 0)
  message(FATAL_ERROR "TOKEMB_WITH_CUDA=maybe configured:\n${flat}")
endif()
expect("the environment variable TOKEMB_WITH_CUDA is 'maybe': use AUTO, ON or OFF")
file(REMOVE_RECURSE "${WORK_DIR}")

configure(off)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "TOKEMB_WITH_CUDA=off failed to configure:\n${flat}")
endif()
expect("CUDA backend OFF")
file(STRINGS "${WORK_DIR}/CMakeCache.txt" cached REGEX "^TOKEMB_WITH_CUDA:")
if(NOT cached STREQUAL "TOKEMB_WITH_CUDA:STRING=OFF")
  message(FATAL_ERROR "the cache holds '${cached}', not TOKEMB_WITH_CUDA:STRING=OFF")
endif()

configure(AUTO)
expect("the environment says TOKEMB_WITH_CUDA=AUTO, but this build directory is configured with TOKEMB_WITH_CUDA=OFF, which stays")
expect("CUDA backend OFF")
file(REMOVE_RECURSE "${WORK_DIR}")

# The same words given with -D (the environment unset): TOKEMB_WITH_CUDA is AUTO, ON or OFF (the
# README's build options). A CMake boolean spelling of "off" (0, FALSE, NO) must not build the
# CUDA backend, and a value that is none of them must be refused as from the environment: they
# used to fall through to AUTO, so -DTOKEMB_WITH_CUDA=0 built the kernels wherever nvcc was.
function(configure_d value)
  execute_process(
    COMMAND ${CMAKE_COMMAND} -E env --unset=TOKEMB_WITH_CUDA
            ${CMAKE_COMMAND} -S "${TOKEMB_SOURCE_DIR}" -B "${WORK_DIR}" -G "${GENERATOR}"
            "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}" "-DTOKEMB_WITH_CUDA=${value}"
            -DTOKEMB_BUILD_TESTS=OFF -DTOKEMB_BUILD_BENCHMARKS=OFF -DTOKEMB_BUILD_TOOLS=OFF
            -DTOKEMB_WITH_CURAND_HOST=OFF
    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  string(REGEX REPLACE "[ \t\r\n]+" " " flat "${out}\n${err}")
  set(rc "${rc}" PARENT_SCOPE)
  set(flat "${flat}" PARENT_SCOPE)
endfunction()
configure_d(maybe)
if(rc EQUAL 0)
  message(FATAL_ERROR "-DTOKEMB_WITH_CUDA=maybe configured (expected AUTO, ON or OFF):\n${flat}")
endif()
file(REMOVE_RECURSE "${WORK_DIR}")
foreach(off_value 0 FALSE NO)
  configure_d(${off_value})
  string(FIND "${flat}" "CUDA backend ON" built_cuda)
  if(rc EQUAL 0 AND NOT built_cuda EQUAL -1)
    message(FATAL_ERROR "-DTOKEMB_WITH_CUDA=${off_value} built the CUDA backend:\n${flat}")
  endif()
  file(REMOVE_RECURSE "${WORK_DIR}")
endforeach()

# TOKEMB_KERNEL_UNITS: a bad value is refused by name.
execute_process(
  COMMAND ${CMAKE_COMMAND} -S "${TOKEMB_SOURCE_DIR}" -B "${WORK_DIR}" -G "${GENERATOR}"
          "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}" -DTOKEMB_BUILD_TESTS=OFF -DTOKEMB_BUILD_BENCHMARKS=OFF
          -DTOKEMB_BUILD_TOOLS=OFF -DTOKEMB_WITH_CURAND_HOST=OFF -DTOKEMB_KERNEL_UNITS=bogus
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(rc EQUAL 0 OR NOT "${out}${err}" MATCHES "TOKEMB_KERNEL_UNITS is 'bogus'; valid values: AUTO, split, merged")
  message(FATAL_ERROR "TOKEMB_KERNEL_UNITS=bogus was not refused by name:\n${out}${err}")
endif()
file(REMOVE_RECURSE "${WORK_DIR}")

# The default build of this machine: above 4 logical cores every nvcc command carries --threads
# and each backward dtype is its own translation unit; up to 4 none does and the dtypes of a
# strategy are one generated unit (README "Build time").
if(BUILD_HAS_CUDA)
  cmake_host_system_information(RESULT cores QUERY NUMBER_OF_LOGICAL_CORES)
  # A fresh configure (an existing build directory keeps the values it cached).
  execute_process(
    COMMAND ${CMAKE_COMMAND} -E env --unset=TOKEMB_WITH_CUDA --unset=CUDAARCHS
            ${CMAKE_COMMAND} -S "${TOKEMB_SOURCE_DIR}" -B "${WORK_DIR}" -G "${GENERATOR}"
            "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}" -DTOKEMB_BUILD_TESTS=OFF
            -DTOKEMB_BUILD_BENCHMARKS=OFF -DTOKEMB_BUILD_TOOLS=OFF -DTOKEMB_WITH_CURAND_HOST=OFF
            -DTOKEMB_WITH_CUDA=ON -DCMAKE_EXPORT_COMPILE_COMMANDS=ON
    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "a default CUDA configure failed:\n${out}${err}")
  endif()
  file(STRINGS "${WORK_DIR}/compile_commands.json" nvcc_commands REGEX "\"command\": \"[^ ]*nvcc ")
  list(LENGTH nvcc_commands n)
  if(n EQUAL 0)
    message(FATAL_ERROR "a CUDA build with no nvcc command in ${WORK_DIR}/compile_commands.json")
  endif()
  set(merged OFF)
  foreach(c IN LISTS nvcc_commands)
    if(c MATCHES "backward_atomic_all_dtypes\\.cu")
      set(merged ON)
    endif()
    if(cores GREATER 4 AND NOT c MATCHES "--threads=")
      message(FATAL_ERROR "${cores} cores and an nvcc command without --threads: ${c}")
    elseif(cores LESS_EQUAL 4 AND c MATCHES "--threads=")
      message(FATAL_ERROR "${cores} cores and an nvcc command with --threads: ${c}")
    endif()
  endforeach()
  if(cores GREATER 4 AND merged)
    message(FATAL_ERROR "${cores} cores and the backward dtypes merged into one unit")
  elseif(cores LESS_EQUAL 4 AND NOT merged)
    message(FATAL_ERROR "${cores} cores and the backward dtypes not merged into one unit")
  endif()
  message(STATUS "${n} nvcc commands on ${cores} cores; --threads and the unit grouping as expected")
  file(REMOVE_RECURSE "${WORK_DIR}")
endif()
message(STATUS "TOKEMB_WITH_CUDA from the environment: OFF honoured, bad value refused, cache kept with a warning")
