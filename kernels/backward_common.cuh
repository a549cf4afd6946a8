#pragma once
// Private: pieces shared by the atomic and the deterministic backward kernels.

#include <cuda_runtime.h>

#include "core/dropout.hpp"
#include "kernels/common.cuh"

namespace tokemb::detail::cuda {

// The backward kernels resolve rows with resolve_row_any (core/rows.hpp): they are not
// templated on the index type, since halving their instantiations costs one uniform branch per
// row.

/// dst[0..N) += v with the widest atomics the hardware has: sm_90 adds a float4 (or float2) in
/// one operation, which quarters the atomic traffic to L2; elsewhere one float at a time.
template <int N>
__device__ __forceinline__ void atomic_add_scalars(float* dst, const float (&v)[N]) {
#pragma unroll
  for (int j = 0; j < N; ++j) atomicAdd(dst + j, v[j]);
}

template <int N>
__device__ __forceinline__ void atomic_add_pack(float* dst, const float (&v)[N]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if constexpr (N % 4 == 0) {
#pragma unroll
    for (int q = 0; q < N / 4; ++q)
      atomicAdd(reinterpret_cast<float4*>(dst) + q,
                make_float4(v[4 * q], v[4 * q + 1], v[4 * q + 2], v[4 * q + 3]));
  } else if constexpr (N == 2) {
    atomicAdd(reinterpret_cast<float2*>(dst), make_float2(v[0], v[1]));
  } else {
    atomic_add_scalars<N>(dst, v);
  }
#else
  atomic_add_scalars<N>(dst, v);
#endif
}

/// dst[0..N) += v for memory this thread owns exclusively (no other writer in this launch).
/// N > 1 only on the vector path, where every pack of gradient floats is 16-byte aligned (the
/// same invariant atomic_add_pack relies on), so it moves 16 bytes per access.
template <int N>
__device__ __forceinline__ void plain_add_pack(float* dst, const float (&v)[N]) {
  if constexpr (N % 4 == 0) {
#pragma unroll
    for (int q = 0; q < N / 4; ++q) {
      float4 w = reinterpret_cast<const float4*>(dst)[q];
      w.x += v[4 * q];
      w.y += v[4 * q + 1];
      w.z += v[4 * q + 2];
      w.w += v[4 * q + 3];
      reinterpret_cast<float4*>(dst)[q] = w;
    }
  } else {
#pragma unroll
    for (int j = 0; j < N; ++j) dst[j] += v[j];
  }
}

/// dst[0..N) = v + 0 (overwriting backward), same ownership and alignment rules as
/// plain_add_pack. Adding +0 turns a -0 sum into +0: exactly what zeroing and then adding gives.
template <int N>
__device__ __forceinline__ void store_pack(float* dst, const float (&v)[N]) {
  if constexpr (N % 4 == 0) {
#pragma unroll
    for (int q = 0; q < N / 4; ++q)
      reinterpret_cast<float4*>(dst)[q] = make_float4(v[4 * q] + 0.0f, v[4 * q + 1] + 0.0f,
                                                      v[4 * q + 2] + 0.0f, v[4 * q + 3] + 0.0f);
  } else {
#pragma unroll
    for (int j = 0; j < N; ++j) dst[j] = v[j] + 0.0f;
  }
}

/// Adds (kStore false) or stores (kStore true) a pack of gradient floats this thread owns.
template <bool kStore, int N>
__device__ __forceinline__ void write_pack(float* dst, const float (&v)[N]) {
  if constexpr (kStore) {
    store_pack<N>(dst, v);
  } else {
    plain_add_pack<N>(dst, v);
  }
}

template <class G, int N>
__device__ __forceinline__ void load_row_pack(const G* src, float (&x)[N]) {
  const Pack<G, N> pk = load_pack<G, N>(src);
#pragma unroll
  for (int j = 0; j < N; ++j) x[j] = to_float(pk.v[j]);
}

/// Row \p row's pack of dout at column \p col, with forward's dropout mask applied when dropout
/// is on (core/dropout.hpp: the factors depend only on (seed, offset, flat index), so they are
/// recomputed here rather than stored). The branch is uniform across the launch.
template <class G, int N>
__device__ __forceinline__ void load_dout_pack(const G* dout, const DropoutParams& d,
                                               std::uint64_t seed, std::uint64_t offset,
                                               std::int64_t row, std::int64_t D, std::int64_t col,
                                               float (&x)[N]) {
  load_row_pack<G, N>(dout + row * D + col, x);
  if (d.enabled()) {
    float f[N];
    dropout_factors<N>(d, seed, offset, row, row * D + col, f);
#pragma unroll
    for (int j = 0; j < N; ++j) x[j] = dropout_apply(x[j], f[j]);
  }
}

/// Number of low key bits a radix sort must look at so that keys 0..max_key sort correctly.
inline int key_bits(std::uint32_t max_key) {
  int bits = 1;
  while (bits < 32 && (max_key >> bits) != 0) ++bits;
  return bits;
}

}  // namespace tokemb::detail::cuda
