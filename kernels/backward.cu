// Backward entry point: the atomic mode's accumulating pass (kernels/backward_atomic.cu) or the
// sort-based path (kernels/backward_sorted.cu: the deterministic mode, and every overwrite).
#include <cuda_runtime.h>

#include "core/cuda_check.hpp"
#include "kernels/backward.hpp"
#include "kernels/launch.hpp"

namespace tokemb::detail::cuda {

std::size_t backward_workspace_size(const BackwardParams& p) {
  return backward_sorts(p.mode, p.accumulate) ? sorted_workspace_size(p) : 0;
}

void backward(const BackwardParams& p, const DeviceInfo& device, CUstream_st* stream) {
  if (backward_sorts(p.mode, p.accumulate)) {
    launch_backward_sorted(p, stream, device);
  } else {
    launch_backward_atomic(p, stream, device);
  }
}

}  // namespace tokemb::detail::cuda
