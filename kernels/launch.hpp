#pragma once
// Private: the CUDA backend's entry points, the one kernels/ header the host layer includes.
// Each is implemented next to its kernels in kernels/*.cu, takes validated params
// (host/validate.cpp) and the device it runs on (core/params.hpp: DeviceInfo, filled in by the
// host layer, which has made that device current), enqueues its kernels on the stream, checks
// the launches, and neither synchronises nor allocates.

#include <cstddef>
#include <cstdint>

#include <tokemb/types.hpp>

#include "core/params.hpp"

struct CUstream_st;

namespace tokemb::detail::cuda {

/// kernels/forward.cu
void forward(const ForwardParams& p, const DeviceInfo& device, CUstream_st* stream);

/// kernels/backward.cu (strategies in backward_atomic.cu and backward_sorted.cu)
std::size_t backward_workspace_size(const BackwardParams& p);
void backward(const BackwardParams& p, const DeviceInfo& device, CUstream_st* stream);

/// kernels/init.cu: the device half of seeded init.
/// dst[i] = round_to_dtype(affine ? fmaf(src[i], width, low) : src[i]) for i in [0, n): turns
/// cuRAND's f32 output into the table's dtype (round to nearest even), mapping (0, 1] uniforms
/// onto [low, high] with the same single-rounding fma the CPU uses. src may alias dst when the
/// table is f32.
void init_finish(const float* src, void* dst, DType dtype, std::int64_t n, bool affine, float width,
                 float low, const DeviceInfo& device, CUstream_st* stream);

/// kernels/dropout_state.cu: seed_offset[1] += by, on the stream (capturable).
void advance_dropout_offset(std::uint64_t* seed_offset, std::uint64_t by, CUstream_st* stream);

/// kernels/sequence_parallel.cu: [B, T, D] <-> the chunked buffer of the w ranks' slices
/// (to_chunked: src is [B, T, D]); dtype f32, bf16 or f16.
void permute_rows(const void* src, void* dst, DType dtype, const SliceLayout& s, bool to_chunked,
                  const DeviceInfo& device, CUstream_st* stream);
/// Applies dropout in place to a slice (or the whole [B, T, D] when !s.slice) with the mask of
/// each element's place in the whole activation. No-op when d is off.
void slice_dropout(void* data, DType dtype, const SliceLayout& s, const DropoutParams& d,
                   const DeviceInfo& device, CUstream_st* stream);

}  // namespace tokemb::detail::cuda
