// The sort-based backward's reductions for f32 dout (kernels/backward_sorted_reduce.cuh): one
// translation unit per dout dtype, so that they compile in parallel.
#include "kernels/backward_sorted_reduce.cuh"

namespace tokemb::detail::cuda::sorted {

void reduce_f32(const BackwardParams& p, const Layout& l, char* ws, cudaStream_t stream,
                const DeviceInfo& device) {
  reduce<float>(p, l, ws, stream, device);
}

}  // namespace tokemb::detail::cuda::sorted
