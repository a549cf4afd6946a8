#pragma once
// Private: the two backward strategies behind detail::cuda::backward (kernels/backward.cu).

#include <cuda_runtime.h>

#include <cstddef>

#include "core/params.hpp"

namespace tokemb::detail::cuda {

/// kernels/backward_atomic.cu: the atomic mode's accumulating pass; needs no workspace.
void launch_backward_atomic(const BackwardParams& p, cudaStream_t stream, const DeviceInfo& device);

/// kernels/backward_sorted.cu: the deterministic mode, and the atomic mode's overwrite.
std::size_t sorted_workspace_size(const BackwardParams& p);
void launch_backward_sorted(const BackwardParams& p, cudaStream_t stream, const DeviceInfo& device);

}  // namespace tokemb::detail::cuda
