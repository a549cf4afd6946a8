// Seeded init on the GPU: cuRAND's Philox output (f32) to the table's dtype, with the affine
// map of uniform(low, high). Runs at memory speed: one read of f32, one write of the table.
#include <cuda_runtime_api.h>

#include <algorithm>

#include "core/cuda_check.hpp"
#include "core/dispatch.hpp"
#include "kernels/common.cuh"
#include "kernels/launch.hpp"

namespace tokemb::detail::cuda {

namespace {

// src is not __restrict__: host/init.cpp's direct f32 path passes src == dst (cuRAND writes the
// table, this kernel applies the affine map in place), and __restrict__ would let the compiler
// read src through the non-coherent (read-only) cache, which is undefined for memory the kernel
// itself writes.
template <class T>
__global__ void init_finish_kernel(const float* src, T* dst, std::int64_t n, bool affine,
                                   float width, float low) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    const float u = src[i];
    // fmaf, not u * width + low: one rounding, exactly what std::fma gives on the CPU.
    dst[i] = from_float<T>(affine ? fmaf(u, width, low) : u);
  }
}

}  // namespace

void init_finish(const float* src, void* dst, DType dtype, std::int64_t n, bool affine, float width,
                 float low, const DeviceInfo& device, CUstream_st* stream) {
  if (n <= 0) return;
  constexpr int threads = 256;
  const std::int64_t wanted = (n + threads - 1) / threads;
  const std::int64_t cap = static_cast<std::int64_t>(device.multiprocessors) * 16;
  const unsigned blocks = static_cast<unsigned>(std::max<std::int64_t>(1, std::min(wanted, cap)));
  dispatch_float<DeviceTypes>(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    init_finish_kernel<T>
        <<<blocks, threads, 0, stream>>>(src, static_cast<T*>(dst), n, affine, width, low);
  });
  TOKEMB_CHECK_LAUNCH();
}

}  // namespace tokemb::detail::cuda
