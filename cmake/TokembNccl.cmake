# NCCL for the optional component tokemb::tokemb_nccl (include/tokemb/nccl.hpp). Looked for in
# TOKEMB_NCCL_ROOT, $NCCL_ROOT, the system, and the nvidia-nccl-cu13 wheel's nvidia/nccl folder
# (installed for python3, or unpacked by scripts/install-deps.sh into
# /usr/local/lib/tokemb-nccl). Sets TOKEMB_HAS_NCCL and, when found, the imported target
# tokemb_nccl_lib. The core library never depends on it.
set(TOKEMB_WITH_NCCL "AUTO" CACHE STRING "Build tokemb::tokemb_nccl: AUTO, ON or OFF")
set_property(CACHE TOKEMB_WITH_NCCL PROPERTY STRINGS AUTO ON OFF)
set(TOKEMB_NCCL_ROOT "" CACHE PATH "NCCL install prefix (include/nccl.h, lib/libnccl.so*)")
set(TOKEMB_HAS_NCCL OFF)

if(TOKEMB_HAS_CUDA AND NOT TOKEMB_WITH_NCCL STREQUAL "OFF")
  set(_nccl_hints ${TOKEMB_NCCL_ROOT} $ENV{NCCL_ROOT} /usr/local/lib/tokemb-nccl/nvidia/nccl)
  find_program(_tokemb_python3 NAMES python3)
  if(_tokemb_python3)
    execute_process(
      COMMAND ${_tokemb_python3} -c "import nvidia.nccl as m; print(list(m.__path__)[0])"
      OUTPUT_VARIABLE _nccl_wheel OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE _rc)
    if(_rc EQUAL 0 AND _nccl_wheel)
      list(APPEND _nccl_hints ${_nccl_wheel})
    endif()
  endif()
  # Header and library from one place: the hints first, only then the system.
  find_path(TOKEMB_NCCL_INCLUDE_DIR nccl.h HINTS ${_nccl_hints} PATH_SUFFIXES include
            NO_DEFAULT_PATH)
  find_library(TOKEMB_NCCL_LIBRARY NAMES nccl libnccl.so.2 HINTS ${_nccl_hints}
               PATH_SUFFIXES lib lib64 NO_DEFAULT_PATH)
  if(NOT TOKEMB_NCCL_INCLUDE_DIR OR NOT TOKEMB_NCCL_LIBRARY)
    unset(TOKEMB_NCCL_INCLUDE_DIR CACHE)
    unset(TOKEMB_NCCL_LIBRARY CACHE)
    find_path(TOKEMB_NCCL_INCLUDE_DIR nccl.h PATHS ${CUDAToolkit_INCLUDE_DIRS})
    find_library(TOKEMB_NCCL_LIBRARY NAMES nccl libnccl.so.2 PATHS ${CUDAToolkit_LIBRARY_DIR})
  endif()
  if(TOKEMB_NCCL_INCLUDE_DIR AND TOKEMB_NCCL_LIBRARY)
    set(TOKEMB_HAS_NCCL ON)
    add_library(tokemb_nccl_lib SHARED IMPORTED GLOBAL)
    set_target_properties(tokemb_nccl_lib PROPERTIES
      IMPORTED_LOCATION "${TOKEMB_NCCL_LIBRARY}"
      INTERFACE_INCLUDE_DIRECTORIES "${TOKEMB_NCCL_INCLUDE_DIR}")
    message(STATUS "tokemb: NCCL found (${TOKEMB_NCCL_LIBRARY}); building tokemb::tokemb_nccl")
  elseif(TOKEMB_WITH_NCCL STREQUAL "ON")
    message(FATAL_ERROR "TOKEMB_WITH_NCCL=ON but NCCL was not found (set TOKEMB_NCCL_ROOT)")
  else()
    message(STATUS "tokemb: NCCL not found; tokemb::tokemb_nccl is not built")
  endif()
elseif(TOKEMB_WITH_NCCL STREQUAL "ON")
  message(FATAL_ERROR "TOKEMB_WITH_NCCL=ON needs the CUDA backend")
endif()
