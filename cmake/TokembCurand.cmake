# cuRAND's host generator gives the CPU backend the same Philox streams as the GPU. In a CUDA
# build it always comes with the toolkit; in a CPU-only build we still use it when the toolkit's
# libraries are installed, and say clearly at run time when they are not.
set(TOKEMB_HAS_CURAND_HOST OFF)
if(TOKEMB_HAS_CUDA)
  set(TOKEMB_HAS_CURAND_HOST ON)
else()
  find_package(CUDAToolkit QUIET)
  if(TARGET CUDA::curand)
    set(TOKEMB_HAS_CURAND_HOST ON)
  endif()
endif()
