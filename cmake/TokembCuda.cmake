# Decide whether the CUDA backend is built (TOKEMB_WITH_CUDA = AUTO | ON | OFF).
include(CheckLanguage)
# A build machine of at most 4 logical cores: ninja's jobs alone fill it, so nvcc gets no
# --threads by default and the per-dtype backward files compile merged (host/CMakeLists.txt,
# TOKEMB_KERNEL_UNITS; README "Build time").
cmake_host_system_information(RESULT TOKEMB_HOST_CORES QUERY NUMBER_OF_LOGICAL_CORES)
set(TOKEMB_SMALL_BUILD_HOST OFF)
if(TOKEMB_HOST_CORES LESS_EQUAL 4)
  set(TOKEMB_SMALL_BUILD_HOST ON)
endif()
set(TOKEMB_HAS_CUDA OFF)
string(TOUPPER "${TOKEMB_WITH_CUDA}" _tokemb_with_cuda)
if(NOT _tokemb_with_cuda STREQUAL "OFF")
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    enable_language(CUDA)
    find_package(CUDAToolkit REQUIRED)
    set(TOKEMB_HAS_CUDA ON)
    # nvcc compiles one .cu once per architecture (80-real;90 by default: sm_80 and sm_90 code
    # plus PTX), one after the other unless told to use threads. --threads=N runs them in
    # parallel (0: up to one thread per CPU, never more than the architectures); an empty
    # TOKEMB_CUDA_THREADS, or a --threads/-t already in CMAKE_CUDA_FLAGS, leaves nvcc as it is.
    # The default is 0 on machines with more than 4 logical cores and empty on smaller ones,
    # where ninja's parallel jobs already fill the cores (README "Build time": on 2 cores the
    # library builds in 74 s without --threads, 86 s with it).
    set(_tokemb_threads_default "0")
    if(TOKEMB_SMALL_BUILD_HOST)
      set(_tokemb_threads_default "")
    endif()
    set(TOKEMB_CUDA_THREADS "${_tokemb_threads_default}" CACHE STRING
        "nvcc --threads for tokemb's CUDA sources (0: one per CPU; empty: nvcc's default; default 0 above 4 cores)")
    if(NOT TOKEMB_CUDA_THREADS STREQUAL "" AND CMAKE_CUDA_COMPILER_ID STREQUAL "NVIDIA"
       AND NOT CMAKE_CUDA_FLAGS MATCHES "(^| )(--threads|-t)([= ]|$)")
      add_compile_options("$<$<COMPILE_LANGUAGE:CUDA>:--threads=${TOKEMB_CUDA_THREADS}>")
    endif()
  elseif(_tokemb_with_cuda STREQUAL "ON")
    message(FATAL_ERROR "TOKEMB_WITH_CUDA=ON but no CUDA compiler was found")
  else()
    message(STATUS "tokemb: no CUDA compiler found, building the CPU backend only")
  endif()
endif()
