// Backward entry point: picks the atomic or the deterministic strategy.
#include <cuda_runtime.h>

#include "host/cuda_check.hpp"
#include "kernels/backward.hpp"
#include "kernels/launch.hpp"

namespace tokemb::detail::cuda {

std::size_t backward_workspace_size(const BackwardParams& p) {
  return p.mode == BackwardMode::deterministic ? deterministic_workspace_size(p) : 0;
}

void backward(const BackwardParams& p, CUstream_st* stream) {
  int device = 0;
  TOKEMB_CUDA_TRY(cudaGetDevice(&device));
  if (p.mode == BackwardMode::deterministic) {
    launch_backward_deterministic(p, stream, device);
  } else {
    launch_backward_atomic(p, stream, device);
  }
}

}  // namespace tokemb::detail::cuda
