#pragma once
// Private, CUDA builds only: the device half of seeded init (kernels/init.cu).

#include <cstdint>

#include <tokemb/types.hpp>

struct CUstream_st;

namespace tokemb::detail::cuda {

/// dst[i] = round_to_dtype(affine ? fmaf(src[i], width, low) : src[i]) for i in [0, n): turns
/// cuRAND's f32 output into the table's dtype (round to nearest even), mapping (0, 1] uniforms
/// onto [low, high] with the same single-rounding fma the CPU uses. src may alias dst when the
/// table is f32. Enqueued on \p stream; checks the launch.
void init_finish(const float* src, void* dst, DType dtype, std::int64_t n, bool affine, float width,
                 float low, int device, CUstream_st* stream);

}  // namespace tokemb::detail::cuda
