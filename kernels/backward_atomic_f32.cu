// The atomic backward for f32 dout (kernels/backward_atomic.cuh): one translation unit per dout
// dtype, so that they compile in parallel.
#include "kernels/backward_atomic.cuh"

namespace tokemb::detail::cuda::atomic {

void run_f32(const BackwardParams& p, cudaStream_t stream, const DeviceInfo& device) {
  run<float>(p, stream, device);
}

}  // namespace tokemb::detail::cuda::atomic
