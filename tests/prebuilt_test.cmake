# CTest: TOKEMB_PYTHON_PREBUILT reuses an installed build only when it matches. This build is
# installed into a scratch prefix; then the project is configured against it (the Python extension
# itself off: the check is the configure's, and nanobind need not be here):
#   - matching prefix: configures and says what it reuses;
#   - the environment variable is the default only under scikit-build-core (SKBUILD): a plain
#     configure ignores it;
#   - the CUDA choice asked for differs from the prefix's: fails, naming both;
#   - the prefix's source fingerprint differs (a stale install): fails;
#   - no fingerprint, or no tokemb in the prefix: fails.
# Inputs: TOKEMB_BUILD_DIR, TOKEMB_SOURCE_DIR, WORK_DIR, GENERATOR, CXX_COMPILER, HAS_CUDA.
file(REMOVE_RECURSE "${WORK_DIR}")
set(prefix "${WORK_DIR}/prefix")
execute_process(COMMAND ${CMAKE_COMMAND} --install "${TOKEMB_BUILD_DIR}" --prefix "${prefix}"
                RESULT_VARIABLE rc OUTPUT_QUIET)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "cmake --install into ${prefix} failed (${rc})")
endif()
file(GLOB hash_file "${prefix}/lib*/cmake/tokemb/tokembSourceHash.txt")
if(NOT hash_file)
  message(FATAL_ERROR "the install wrote no lib*/cmake/tokemb/tokembSourceHash.txt")
endif()

# configure(NAME [ENV VAR=VALUE...] [ARGS -D...]): a fresh configure; sets rc and flat (the output,
# whitespace collapsed).
function(configure name)
  cmake_parse_arguments(C "" "" "ENV;ARGS" ${ARGN})
  set(dir "${WORK_DIR}/${name}")
  file(REMOVE_RECURSE "${dir}")
  execute_process(
    COMMAND ${CMAKE_COMMAND} -E env ${C_ENV} --
            ${CMAKE_COMMAND} -S "${TOKEMB_SOURCE_DIR}" -B "${dir}" -G "${GENERATOR}"
            "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}" -DTOKEMB_BUILD_PYTHON=OFF
            -DTOKEMB_BUILD_TESTS=OFF -DTOKEMB_BUILD_BENCHMARKS=OFF -DTOKEMB_BUILD_TOOLS=OFF
            -DTOKEMB_INSTALL=OFF ${C_ARGS}
    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  string(REGEX REPLACE "[ \t\r\n]+" " " flat "${out}\n${err}")
  set(rc "${rc}" PARENT_SCOPE)
  set(flat "${flat}" PARENT_SCOPE)
endfunction()
function(expect name want_ok text)
  if(want_ok AND NOT rc EQUAL 0)
    message(FATAL_ERROR "${name}: configure failed:\n${flat}")
  elseif(NOT want_ok AND rc EQUAL 0)
    message(FATAL_ERROR "${name}: configure succeeded, expected a failure:\n${flat}")
  endif()
  string(FIND "${flat}" "${text}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "${name}: expected \"${text}\" in:\n${flat}")
  endif()
endfunction()

if(HAS_CUDA)
  set(same ON)
  set(other OFF)
else()
  set(same OFF)
  set(other ON)
endif()
set(reuse "tokemb: reusing the tokemb")

configure(match ENV "TOKEMB_WITH_CUDA=${same}" ARGS "-DTOKEMB_PYTHON_PREBUILT=${prefix}")
expect(match ON "${reuse}")
expect(match ON "installed in ${prefix} (CUDA backend ${same},")
if(NOT HAS_CUDA)
  string(FIND "${flat}" "was built without the CUDA backend" at)
  if(NOT at EQUAL -1)
    message(FATAL_ERROR "match: TOKEMB_WITH_CUDA=OFF asked for a CPU-only prefix, yet a warning:\n${flat}")
  endif()
endif()

configure(env-under-pip ENV "TOKEMB_PYTHON_PREBUILT=${prefix}" "TOKEMB_WITH_CUDA=${same}" ARGS -DSKBUILD=ON)
expect(env-under-pip ON "${reuse}")

configure(env-without-pip ENV "TOKEMB_PYTHON_PREBUILT=${prefix}" ARGS -DTOKEMB_WITH_CUDA=OFF)
string(FIND "${flat}" "${reuse}" at)
if(NOT rc EQUAL 0 OR NOT at EQUAL -1)
  message(FATAL_ERROR "env-without-pip: the environment's TOKEMB_PYTHON_PREBUILT was used outside pip:\n${flat}")
endif()

configure(cuda-mismatch ARGS "-DTOKEMB_PYTHON_PREBUILT=${prefix}" "-DTOKEMB_WITH_CUDA=${other}")
expect(cuda-mismatch OFF "TOKEMB_WITH_CUDA=${other}, but ${prefix} was built")

file(READ "${hash_file}" hash)
file(WRITE "${hash_file}" "0000${hash}")
configure(stale ARGS "-DTOKEMB_PYTHON_PREBUILT=${prefix}" "-DTOKEMB_WITH_CUDA=${same}")
expect(stale OFF "was installed from other sources than")

file(REMOVE "${hash_file}")
configure(no-fingerprint ARGS "-DTOKEMB_PYTHON_PREBUILT=${prefix}" "-DTOKEMB_WITH_CUDA=${same}")
expect(no-fingerprint OFF "records no source fingerprint")

configure(no-tokemb ARGS "-DTOKEMB_PYTHON_PREBUILT=${WORK_DIR}/empty")
expect(no-tokemb OFF "holds no installed tokemb")

message(STATUS "TOKEMB_PYTHON_PREBUILT: reused when it matches; mismatched CUDA, stale or unchecked prefixes refused")
file(REMOVE_RECURSE "${WORK_DIR}")
