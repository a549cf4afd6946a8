// The atomic backward for bf16 dout (kernels/backward_atomic.cuh): one translation unit per dout
// dtype, so that they compile in parallel.
#include "kernels/backward_atomic.cuh"

namespace tokemb::detail::cuda::atomic {

void run_bf16(const BackwardParams& p, cudaStream_t stream, const DeviceInfo& device) {
  run<__nv_bfloat16>(p, stream, device);
}

}  // namespace tokemb::detail::cuda::atomic
