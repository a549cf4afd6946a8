// The atomic backward for f64 dout (kernels/backward_atomic.cuh): one translation unit per dout
// dtype, so that they compile in parallel.
#include "kernels/backward_atomic.cuh"

namespace tokemb::detail::cuda::atomic {

void run_f64(const BackwardParams& p, cudaStream_t stream, const DeviceInfo& device) {
  run<double>(p, stream, device);
}

}  // namespace tokemb::detail::cuda::atomic
