# CTest: configure, build and run examples/consumer with find_package(tokemb), either against a
# fresh install of this build tree into a scratch prefix (MODE=install) or against the build
# tree itself (MODE=build, tokemb_DIR=<build>). MODE=install also checks that the install holds
# public headers only (no .in template, nothing from core/, host/ or kernels/).
# Inputs: MODE, TOKEMB_BUILD_DIR, TOKEMB_SOURCE_DIR, WORK_DIR, GENERATOR.
file(REMOVE_RECURSE "${WORK_DIR}")
function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "command failed (${rc}): ${ARGN}\n${out}\n${err}")
  endif()
  message(STATUS "${out}")
endfunction()
if(MODE STREQUAL "install")
  run(${CMAKE_COMMAND} --install "${TOKEMB_BUILD_DIR}" --prefix "${WORK_DIR}/install")
  file(GLOB_RECURSE installed RELATIVE "${WORK_DIR}/install/include" "${WORK_DIR}/install/include/*")
  file(GLOB public RELATIVE "${TOKEMB_SOURCE_DIR}/include" "${TOKEMB_SOURCE_DIR}/include/tokemb/*.hpp")
  list(APPEND public "tokemb/config.hpp")
  list(SORT installed)
  list(SORT public)
  if(NOT installed STREQUAL public)
    message(FATAL_ERROR "installed headers differ from the public headers:\n"
                        "  installed: ${installed}\n  expected:  ${public}")
  endif()
  set(where "-DCMAKE_PREFIX_PATH=${WORK_DIR}/install")
elseif(MODE STREQUAL "build")
  set(where "-Dtokemb_DIR=${TOKEMB_BUILD_DIR}")
else()
  message(FATAL_ERROR "MODE must be install or build, not '${MODE}'")
endif()
run(${CMAKE_COMMAND} -S "${TOKEMB_SOURCE_DIR}/examples/consumer" -B "${WORK_DIR}/build"
    -G "${GENERATOR}" "${where}" -DCMAKE_BUILD_TYPE=Release)
run(${CMAKE_COMMAND} --build "${WORK_DIR}/build")
run("${WORK_DIR}/build/consumer")
