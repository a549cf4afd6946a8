// The module's graph-safe dropout state: {seed, offset} in device memory, advanced by a one-thread
// kernel on the stream. Captured in a CUDA graph with the forward and backward that read it, each
// replay then draws the next mask, with no host involvement (as PyTorch's graph-safe RNG does).
#include <cuda_runtime.h>

#include "core/cuda_check.hpp"
#include "kernels/launch.hpp"

namespace tokemb::detail::cuda {

namespace {

__global__ void advance_offset_kernel(std::uint64_t* seed_offset, std::uint64_t by) {
  seed_offset[1] += by;
}

}  // namespace

void advance_dropout_offset(std::uint64_t* seed_offset, std::uint64_t by, CUstream_st* stream) {
  advance_offset_kernel<<<1, 1, 0, stream>>>(seed_offset, by);
  TOKEMB_CHECK_LAUNCH();
}

}  // namespace tokemb::detail::cuda
