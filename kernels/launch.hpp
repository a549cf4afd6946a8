#pragma once
// Private: entry points of the CUDA backend, implemented next to their kernels in kernels/*.cu.
// Each takes validated params (host/validate.cpp), enqueues its kernels on the stream, checks the
// launches, and neither synchronises nor allocates.

#include <cstddef>

#include "kernels/params.hpp"

struct CUstream_st;

namespace tokemb::detail::cuda {

/// kernels/forward.cu
void forward(const ForwardParams& p, CUstream_st* stream);

/// kernels/backward.cu (strategies in backward_atomic.cu and backward_sorted.cu)
std::size_t backward_workspace_size(const BackwardParams& p);
void backward(const BackwardParams& p, CUstream_st* stream);

}  // namespace tokemb::detail::cuda
