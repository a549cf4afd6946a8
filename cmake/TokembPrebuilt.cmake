# TOKEMB_PYTHON_PREBUILT: link the Python extension against an installed tokemb instead of
# compiling the library again. Reusing a stale or mismatched build silently would be worse than
# rebuilding, so the prefix must hold
#   - tokemb of exactly this version (find_package ... EXACT);
#   - the library of these sources: the fingerprint `cmake --install` recorded
#     (lib/cmake/tokemb/tokembSourceHash.txt, cmake/TokembSourceHash.cmake) equals this tree's;
#   - the CUDA choice asked for: TOKEMB_WITH_CUDA=ON or OFF (-D or the environment) must be what
#     the prefix was built with; AUTO takes the prefix's, with a warning where nvcc is here but
#     the prefix is CPU-only.
# Any mismatch stops the configure with a message saying how to fix it; what is reused is
# printed (`pip install -v .` shows it).
unset(tokemb_DIR CACHE)   # always the prefix given now, never one an earlier configure found
find_package(tokemb ${PROJECT_VERSION} EXACT CONFIG QUIET
             PATHS "${TOKEMB_PYTHON_PREBUILT}" NO_DEFAULT_PATH)
if(NOT tokemb_FOUND)
  message(FATAL_ERROR "tokemb: TOKEMB_PYTHON_PREBUILT=${TOKEMB_PYTHON_PREBUILT} holds no installed "
                      "tokemb ${PROJECT_VERSION} (lib/cmake/tokemb/tokembConfig.cmake of that exact "
                      "version): run `cmake --install <build> --prefix ${TOKEMB_PYTHON_PREBUILT}` "
                      "from a build of these sources, or unset TOKEMB_PYTHON_PREBUILT to build the "
                      "library here")
endif()

include(TokembSourceHash)
tokemb_source_hash(_tokemb_here "${PROJECT_SOURCE_DIR}")
set(_tokemb_hash_file "${tokemb_DIR}/tokembSourceHash.txt")
if(NOT EXISTS "${_tokemb_hash_file}")
  message(FATAL_ERROR "tokemb: ${TOKEMB_PYTHON_PREBUILT} records no source fingerprint "
                      "(${_tokemb_hash_file}), so it cannot be checked against these sources: "
                      "reinstall it from a build of these sources, or unset TOKEMB_PYTHON_PREBUILT")
endif()
file(STRINGS "${_tokemb_hash_file}" _tokemb_there LIMIT_COUNT 1)
if(NOT _tokemb_there STREQUAL _tokemb_here)
  message(FATAL_ERROR "tokemb: ${TOKEMB_PYTHON_PREBUILT} was installed from other sources than "
                      "${PROJECT_SOURCE_DIR} (source fingerprint ${_tokemb_there}, here "
                      "${_tokemb_here}): rebuild and reinstall it (`cmake --build <build> && "
                      "cmake --install <build> --prefix ${TOKEMB_PYTHON_PREBUILT}`), or unset "
                      "TOKEMB_PYTHON_PREBUILT to build the library here")
endif()

string(TOUPPER "${TOKEMB_WITH_CUDA}" _tokemb_want_cuda)
if(_tokemb_want_cuda STREQUAL "ON" AND NOT TOKEMB_HAS_CUDA)
  message(FATAL_ERROR "tokemb: TOKEMB_WITH_CUDA=ON, but ${TOKEMB_PYTHON_PREBUILT} was built "
                      "without the CUDA backend: reuse a CUDA build, or unset TOKEMB_PYTHON_PREBUILT")
elseif(_tokemb_want_cuda STREQUAL "OFF" AND TOKEMB_HAS_CUDA)
  message(FATAL_ERROR "tokemb: TOKEMB_WITH_CUDA=OFF, but ${TOKEMB_PYTHON_PREBUILT} was built "
                      "with the CUDA backend: reuse a CPU-only build, or unset TOKEMB_PYTHON_PREBUILT")
elseif(NOT TOKEMB_HAS_CUDA AND NOT _tokemb_want_cuda STREQUAL "OFF")
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    message(WARNING "tokemb: ${TOKEMB_PYTHON_PREBUILT} was built without the CUDA backend, so the "
                    "extension is CPU-only although ${CMAKE_CUDA_COMPILER} is here (set "
                    "TOKEMB_WITH_CUDA=OFF to say that is meant, or reuse a CUDA build)")
  endif()
endif()
message(STATUS "tokemb: reusing the tokemb ${tokemb_VERSION} installed in ${TOKEMB_PYTHON_PREBUILT} "
               "(CUDA backend ${TOKEMB_HAS_CUDA}, cuRAND host ${TOKEMB_HAS_CURAND_HOST}, source "
               "fingerprint matches); the library is not compiled again")
