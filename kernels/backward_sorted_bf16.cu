// The sort-based backward's reductions for bf16 dout (kernels/backward_sorted_reduce.cuh): one
// translation unit per dout dtype, so that they compile in parallel.
#include "kernels/backward_sorted_reduce.cuh"

namespace tokemb::detail::cuda::sorted {

void reduce_bf16(const BackwardParams& p, const Layout& l, char* ws, cudaStream_t stream,
                 const DeviceInfo& device) {
  reduce<__nv_bfloat16>(p, l, ws, stream, device);
}

}  // namespace tokemb::detail::cuda::sorted
