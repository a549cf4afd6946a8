#pragma once
// Reference GPU implementations that tokemb's kernels are compared against, and small device
// utilities (table fill, result comparison). Implemented in baselines.cu; compiled only when the
// CUDA backend is on. Every function enqueues on the given stream and checks its launches.

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include <tokemb/types.hpp>

namespace bench {

// Fills n elements of dtype (f32, bf16, f16) with hash_value(seed, i, scale) (cases.hpp).
void fill_device(void* data, tokemb::DType dtype, std::int64_t n, std::uint64_t seed, float scale,
                 cudaStream_t stream);

// Unfused forward, what a framework's eager mode runs: a gather kernel writes
// out[r, :] = tok[ids[r], :], then an add kernel does out[b, t, :] += pos[offset + t, :]
// (so `out` is written, read back and written again). 16-byte vector accesses where rows allow.
void unfused_forward(const void* ids, tokemb::DType id_type, const void* tok, const void* pos,
                     void* out, tokemb::DType dtype, std::int64_t V, std::int64_t B, std::int64_t T,
                     std::int64_t D, std::int64_t offset, cudaStream_t stream);

// Naive backward: one atomicAdd per element of dout into grad_tok[ids[r], d] (no combining of
// duplicate ids), then a separate kernel reducing dout over the batch into
// grad_pos[offset + t, :]. Accumulates; the caller zeroes.
void naive_backward(const void* ids, tokemb::DType id_type, const void* dout,
                    tokemb::DType dout_type, float* grad_tok, float* grad_pos, std::int64_t V,
                    std::int64_t B, std::int64_t T, std::int64_t D, std::int64_t offset,
                    cudaStream_t stream);

// Number of differing bytes between two device buffers (synchronises the stream).
std::uint64_t count_byte_mismatches(const void* a, const void* b, std::size_t bytes,
                                    cudaStream_t stream);

// Compares f32 device arrays: how many elements violate |got - want| <= atol + rtol * |want|
// (NaN counts as a violation) and the largest |got - want| (synchronises the stream).
struct CompareResult {
  std::uint64_t violations = 0;
  double max_abs_diff = 0.0;
};
CompareResult compare_f32(const float* got, const float* want, std::size_t n, float atol,
                          float rtol, cudaStream_t stream);

}  // namespace bench
