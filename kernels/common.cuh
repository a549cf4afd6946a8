#pragma once
// Private device-side helpers shared by the kernels: the type map for dispatch, f32 conversion,
// 16-byte packs and the device side of the error record. The row rule itself (token, position,
// validity) is core/rows.hpp, shared with the CPU backend.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "core/dispatch.hpp"
#include "core/error_record.hpp"
#include "core/params.hpp"
#include "core/rows.hpp"

namespace tokemb::detail {

/// Device storage types of the floating dtypes (same bits as HostTypes).
struct DeviceTypes {
  using f32 = float;
  using bf16 = __nv_bfloat16;
  using f16 = __half;
  using f64 = double;
};

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }

/// An element in the type arithmetic is done in (acc_t, core/dispatch.hpp): f32, or f64 for f64.
template <class T>
__device__ __forceinline__ acc_t<T> to_acc(T x) {
  if constexpr (std::is_same_v<T, double>) {
    return x;
  } else {
    return to_float(x);
  }
}

template <class T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}
template <>
__device__ __forceinline__ __half from_float<__half>(float x) {
  return __float2half_rn(x);
}
template <>
__device__ __forceinline__ double from_float<double>(float x) {
  return x;  // exact (seeded init of an f64 table from f32 draws)
}

/// \p x (of acc_t<T>) rounded once to T.
template <class T>
__device__ __forceinline__ T from_acc(acc_t<T> x) {
  if constexpr (std::is_same_v<T, double>) {
    return x;
  } else {
    return from_float<T>(x);
  }
}

/// N elements of T moved as one unit: 16 bytes when N * sizeof(T) == 16, which compiles to a
/// single 128-bit load/store (the widest per-thread access; fewer instructions in flight per
/// byte than 32- or 64-bit accesses).
template <class T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

template <class T, int N>
__device__ __forceinline__ Pack<T, N> load_pack(const T* p) {
  return *reinterpret_cast<const Pack<T, N>*>(p);
}

/// Streaming store: the output of forward is written once and read by the next layer later,
/// so keep it from evicting the tables from L2.
template <class T, int N>
__device__ __forceinline__ void store_pack_streaming(T* p, const Pack<T, N>& v) {
  if constexpr (sizeof(Pack<T, N>) == 16) {
    __stcs(reinterpret_cast<int4*>(p), *reinterpret_cast<const int4*>(&v));
  } else if constexpr (sizeof(Pack<T, N>) == 8) {
    __stcs(reinterpret_cast<int2*>(p), *reinterpret_cast<const int2*>(&v));
  } else {
    *reinterpret_cast<Pack<T, N>*>(p) = v;
  }
}

/// Records a bad row. Rare by construction, so it may be slow: the count is one atomic per warp;
/// the "first" row (smallest flat index) is kept under a spin lock so that its index, value and
/// kind stay consistent with each other. A relaxed pre-check keeps most writers off the lock.
/// Never traps: a device assert would kill the caller's CUDA context.
///
/// The lanes of a warp that arrive here together first reduce among themselves (the smallest row
/// wins) and only that lane goes for the lock: lanes of one warp spinning on a lock one of them
/// holds make progress only under independent thread scheduling (sm_70+), and if that ever failed
/// the kernel would hang instead of failing. Every caller gives each lane a distinct row
/// (r < 2^31, checked on the host), so the 32-bit minimum names one lane.
__device__ inline void record_bad_row(ErrorRecordData* rec, const RowParams& p, std::int64_t r,
                                      const Row& row) {
  if (rec == nullptr) return;
  // Lanes converged here see the same mask; lanes that arrive separately form their own group.
  const unsigned mask = __activemask();
  unsigned lane;
  asm volatile("mov.u32 %0, %%laneid;" : "=r"(lane));
  const auto key32 = static_cast<unsigned>(r);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned min_key = __reduce_min_sync(mask, key32);
#else
  unsigned min_key = key32;
  for (unsigned m = mask; m != 0; m &= m - 1)
    min_key = min(min_key, __shfl_sync(mask, key32, __ffs(static_cast<int>(m)) - 1));
#endif
  if (lane == static_cast<unsigned>(__ffs(static_cast<int>(mask)) - 1))
    atomicAdd(&rec->count, static_cast<unsigned long long>(__popc(mask)));
  if (key32 != min_key) return;
  const unsigned long long key = static_cast<unsigned long long>(r);
  if (key >= *reinterpret_cast<volatile unsigned long long*>(&rec->first_key)) return;
  while (atomicCAS(&rec->lock, 0, 1) != 0) __nanosleep(64);
  __threadfence();
  volatile ErrorRecordData* v = rec;
  if (key < v->first_key) {
    v->first_key = key;
    v->value = row.bad_value();
    v->batch = r / p.T;
    v->time = r % p.T;
    v->limit = row.limit(p);
    v->kind = static_cast<std::int32_t>(row.status);
  }
  __threadfence();
  atomicExch(&rec->lock, 0);
}

/// Elements per 16-byte pack.
template <class T>
constexpr int pack_width() {
  return static_cast<int>(16 / sizeof(T));
}

inline bool aligned16(const void* p) { return (reinterpret_cast<std::uintptr_t>(p) & 15u) == 0; }

/// Whether every row of a strided tensor (core/params.hpp: RowLayout) starts a multiple of N
/// elements from the first: with a 16-byte-aligned base and unit column stride, every pack of
/// N elements of every row is then 16-byte aligned (the vector path).
inline bool rows_aligned(const RowLayout& l, std::int64_t N) {
  for (int i = 0; i < l.rank; ++i)
    if (l.stride[i] % N != 0) return false;
  return true;
}

// ceil_div: core/params.hpp (64-bit: a grid size compared with its limit never wraps).

}  // namespace tokemb::detail
