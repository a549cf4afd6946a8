#pragma once
// Private: pieces shared by the atomic and the deterministic backward kernels.

#include <cuda_runtime.h>

#include "core/dropout.hpp"
#include "kernels/common.cuh"

#include <type_traits>

namespace tokemb::detail::cuda {

// The backward kernels resolve rows with resolve_row_any (core/rows.hpp): they are not
// templated on the index type, since halving their instantiations costs one uniform branch per
// row.

// Gradient arithmetic is in A = acc_t<G> (core/dispatch.hpp): f32, or f64 for f64 dout and
// gradients. The atomic path writes gradient tables of type A; the sort-based path may also
// write 16-bit ones (store_grad below).

/// dst[0..N) += v with the widest atomics the hardware has: sm_90 adds a float4 (or float2) in
/// one operation, which quarters the atomic traffic to L2; elsewhere one element at a time.
template <int N, class A>
__device__ __forceinline__ void atomic_add_scalars(A* dst, const A (&v)[N]) {
#pragma unroll
  for (int j = 0; j < N; ++j) atomicAdd(dst + j, v[j]);
}

template <int N, class A>
__device__ __forceinline__ void atomic_add_pack(A* dst, const A (&v)[N]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if constexpr (std::is_same_v<A, float> && N % 4 == 0) {
#pragma unroll
    for (int q = 0; q < N / 4; ++q)
      atomicAdd(reinterpret_cast<float4*>(dst) + q,
                make_float4(v[4 * q], v[4 * q + 1], v[4 * q + 2], v[4 * q + 3]));
  } else if constexpr (std::is_same_v<A, float> && N == 2) {
    atomicAdd(reinterpret_cast<float2*>(dst), make_float2(v[0], v[1]));
  } else {
    atomic_add_scalars<N>(dst, v);
  }
#else
  atomic_add_scalars<N>(dst, v);
#endif
}

/// dst[0..N) += v for memory this thread owns exclusively (no other writer in this launch).
/// N > 1 only on the vector path, where every pack of gradient elements is 16-byte aligned when
/// N * sizeof(A) >= 16 (the same invariant atomic_add_pack relies on), so f32 moves 16 bytes
/// per access.
template <int N, class A>
__device__ __forceinline__ void plain_add_pack(A* dst, const A (&v)[N]) {
  if constexpr (std::is_same_v<A, float> && N % 4 == 0) {
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
template <int N, class A>
__device__ __forceinline__ void store_pack(A* dst, const A (&v)[N]) {
  if constexpr (std::is_same_v<A, float> && N % 4 == 0) {
#pragma unroll
    for (int q = 0; q < N / 4; ++q)
      reinterpret_cast<float4*>(dst)[q] = make_float4(v[4 * q] + 0.0f, v[4 * q + 1] + 0.0f,
                                                      v[4 * q + 2] + 0.0f, v[4 * q + 3] + 0.0f);
  } else {
#pragma unroll
    for (int j = 0; j < N; ++j) dst[j] = v[j] + A(0);
  }
}

/// Adds (kStore false) or stores (kStore true) a pack of gradient elements this thread owns, in
/// a gradient table of type A.
template <bool kStore, int N, class A>
__device__ __forceinline__ void write_pack(A* dst, const A (&v)[N]) {
  if constexpr (kStore) {
    store_pack<N>(dst, v);
  } else {
    plain_add_pack<N>(dst, v);
  }
}

/// The same for a gradient table of T = bf16 or f16 (A = f32): each element is written once,
/// rounded once from its f32 value (stored: v + 0; added: old + v, both in f32). The pack is
/// N * 2 bytes, aligned to that on the vector path.
template <bool kStore, int N, class T>
__device__ __forceinline__ void write_pack_rounded(T* dst, const float (&v)[N]) {
  Pack<T, N> w;
  if constexpr (!kStore) w = load_pack<T, N>(dst);
#pragma unroll
  for (int j = 0; j < N; ++j)
    w.v[j] = from_float<T>(kStore ? v[j] + 0.0f : to_float(w.v[j]) + v[j]);
  *reinterpret_cast<Pack<T, N>*>(dst) = w;
}

/// Writes a pack of the sort-based path's sums to a gradient table whose dtype is only known at
/// run time: A itself (f32 or f64), or, when A is f32, bf16 or f16. The branch is uniform across
/// the launch, and the path writes each element once, so 16-bit tables get one rounding.
template <bool kStore, int N, class A>
__device__ __forceinline__ void write_grad(void* table, DType type, std::int64_t at,
                                           const A (&v)[N]) {
  if constexpr (std::is_same_v<A, float>) {
    if (type == DType::bf16) {
      write_pack_rounded<kStore, N>(static_cast<__nv_bfloat16*>(table) + at, v);
      return;
    }
    if (type == DType::f16) {
      write_pack_rounded<kStore, N>(static_cast<__half*>(table) + at, v);
      return;
    }
  }
  write_pack<kStore, N>(static_cast<A*>(table) + at, v);
}

template <class G, int N>
__device__ __forceinline__ void load_row_pack(const G* src, std::int64_t col_stride,
                                              acc_t<G> (&x)[N]) {
  if constexpr (N == 1) {
    x[0] = to_acc(src[0]);
  } else {  // the vector path: unit column stride
    (void)col_stride;
    const Pack<G, N> pk = load_pack<G, N>(src);
#pragma unroll
    for (int j = 0; j < N; ++j) x[j] = to_acc(pk.v[j]);
  }
}

/// Row \p row's pack of dout at column \p col, wherever dout's strides put it (BackwardParams:
/// dout_layout, dout_col_stride; the vector path has unit column stride and aligned rows), with
/// forward's dropout mask applied when dropout is on (core/dropout.hpp: the factors depend only
/// on (seed, offset, logical flat index row * D + col), so they are recomputed here rather than
/// stored). The branch is uniform across the launch.
template <class G, int N>
__device__ __forceinline__ void load_dout_pack(const G* dout, const BackwardParams& p,
                                               std::uint64_t seed, std::uint64_t offset,
                                               std::int64_t row, std::int64_t col,
                                               acc_t<G> (&x)[N]) {
  load_row_pack<G, N>(dout + p.dout_layout.offset(row) + col * p.dout_col_stride,
                      p.dout_col_stride, x);
  if (p.dropout.enabled()) {
    float f[N];
    dropout_factors<N>(p.dropout, seed, offset, row, row * p.D + col, f);
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
