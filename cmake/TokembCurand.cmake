# cuRAND's host generator gives the CPU backend the same Philox streams as the GPU. In a CUDA
# build it always comes with the toolkit; in a CPU-only build we still use it when the toolkit's
# libraries are installed, and say clearly at run time when they are not.
# TOKEMB_WITH_CURAND_HOST=OFF builds a CPU-only library without it even where it is installed
# (CI's sanitizer build does, so that the "no cuRAND: Unsupported" path is tested).
set(TOKEMB_WITH_CURAND_HOST "AUTO" CACHE STRING "Use cuRAND's host generator in a CPU-only build: AUTO or OFF")
set_property(CACHE TOKEMB_WITH_CURAND_HOST PROPERTY STRINGS AUTO OFF)
set(TOKEMB_HAS_CURAND_HOST OFF)
if(TOKEMB_HAS_CUDA)
  set(TOKEMB_HAS_CURAND_HOST ON)
elseif(NOT TOKEMB_WITH_CURAND_HOST STREQUAL "OFF")
  find_package(CUDAToolkit QUIET)
  if(TARGET CUDA::curand)
    set(TOKEMB_HAS_CURAND_HOST ON)
  endif()
endif()
