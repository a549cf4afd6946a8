// Fused forward: out[b, t, :] = token_table[ids[b, t], :] + pos_table[pos(b, t), :].
//
// One launch. A group of G threads (G a power of two, at most a warp) owns one output row and
// walks it in packs of N elements: N * sizeof(T) = 16 bytes on the vector path (one 128-bit
// load from each table and one 128-bit streaming store per pack), N = 1 on the scalar path,
// used when D * sizeof(T) is not a multiple of 16 or a pointer is not 16-byte aligned. G is the
// smallest power of two covering the row's packs (capped at 32), so small D does not leave most
// of a warp idle. Arithmetic is f32 (f64 for f64 tables: acc_t); the sum is rounded once to T,
// exactly like the CPU reference. Rows with an out-of-range id or position are written as zeros and recorded.
// Element offsets are 64-bit (row * D may exceed 2^31 for large tables).

#include <cuda_runtime.h>

#include "core/cuda_check.hpp"
#include "core/dropout.hpp"
#include "kernels/common.cuh"
#include "kernels/launch.hpp"

namespace tokemb::detail::cuda {

namespace {

constexpr int kForwardThreads = 256;

template <class T, class I, int N>
__global__ void __launch_bounds__(kForwardThreads)
    forward_kernel(const ForwardParams p, const int group_shift) {
  using A = acc_t<T>;
  const std::int64_t D = p.D;
  const std::int64_t packs = D / N;  // N divides D on the vector path
  const int lane = static_cast<int>(threadIdx.x) & ((1 << group_shift) - 1);
  const std::int64_t group_size = std::int64_t{1} << group_shift;
  const std::int64_t first =
      (static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> group_shift;
  const std::int64_t stride = (static_cast<std::int64_t>(gridDim.x) * blockDim.x) >> group_shift;
  const T* __restrict__ tok = static_cast<const T*>(p.token_table);
  const T* __restrict__ pos = static_cast<const T*>(p.pos_table);
  T* __restrict__ out = static_cast<T*>(p.out);
  const std::int64_t rows = p.rows();
  std::uint64_t seed = 0, offset = 0;
  dropout_seed_offset(p.dropout, &seed, &offset);

  for (std::int64_t r = first; r < rows; r += stride) {
    const Row row = resolve_row<I>(p, r);
    T* o = out + r * D;
    if (!row.ok()) {
      if (lane == 0) record_bad_row(p.error_record, p, r, row);
      Pack<T, N> zero;
#pragma unroll
      for (int j = 0; j < N; ++j) zero.v[j] = from_acc<T>(A(0));
      for (std::int64_t c = lane; c < packs; c += group_size)
        store_pack_streaming<T, N>(o + c * N, zero);
      continue;
    }
    const T* t_row = row.has_token() ? tok + row.token * D : nullptr;  // null: another shard's id
    const T* p_row = row.position >= 0 ? pos + row.position * D : nullptr;
    if (p.dropout.enabled() || t_row == nullptr) {
      // The general path (uniform per launch for dropout; per row for shards): the f32 sum of
      // the terms present (no token term for another shard's id, which leaves the positional
      // term alone, or zeros), the mask, one rounding. The fast paths below skip the mask.
      for (std::int64_t c = lane; c < packs; c += group_size) {
        A x[N] = {};
        if (t_row != nullptr) {
          const Pack<T, N> a = load_pack<T, N>(t_row + c * N);
#pragma unroll
          for (int j = 0; j < N; ++j) x[j] = to_acc(a.v[j]);
        }
        if (p_row != nullptr) {
          const Pack<T, N> b = load_pack<T, N>(p_row + c * N);
#pragma unroll
          for (int j = 0; j < N; ++j)
            x[j] = t_row != nullptr ? x[j] + to_acc(b.v[j]) : to_acc(b.v[j]);
        }
        if (p.dropout.enabled()) {
          float f[N];
          dropout_factors<N>(p.dropout, seed, offset, r, r * D + c * N, f);
#pragma unroll
          for (int j = 0; j < N; ++j) x[j] = dropout_apply(x[j], f[j]);
        }
        Pack<T, N> a;
#pragma unroll
        for (int j = 0; j < N; ++j) a.v[j] = from_acc<T>(x[j]);
        store_pack_streaming<T, N>(o + c * N, a);
      }
    } else if (p_row != nullptr) {
#pragma unroll 4
      for (std::int64_t c = lane; c < packs; c += group_size) {
        Pack<T, N> a = load_pack<T, N>(t_row + c * N);
        const Pack<T, N> b = load_pack<T, N>(p_row + c * N);
#pragma unroll
        for (int j = 0; j < N; ++j) a.v[j] = from_acc<T>(to_acc(a.v[j]) + to_acc(b.v[j]));
        store_pack_streaming<T, N>(o + c * N, a);
      }
    } else {
#pragma unroll 4
      for (std::int64_t c = lane; c < packs; c += group_size)
        store_pack_streaming<T, N>(o + c * N, load_pack<T, N>(t_row + c * N));
    }
  }
}

template <class T, class I, int N>
void launch(const ForwardParams& p, cudaStream_t stream, const DeviceInfo& device) {
  const std::int64_t packs = p.D / N;
  int group_shift = 0;
  while ((std::int64_t{1} << group_shift) < packs && group_shift < 5) ++group_shift;
  const std::int64_t rows_per_block = kForwardThreads >> group_shift;
  // Enough blocks to cover every row once, capped so that very large batches loop instead
  // (the grid-stride loop keeps any size correct).
  const std::int64_t cap = static_cast<std::int64_t>(device.multiprocessors) * 64;
  const std::int64_t blocks =
      std::min<std::int64_t>((p.rows() + rows_per_block - 1) / rows_per_block, cap);
  forward_kernel<T, I, N>
      <<<static_cast<unsigned>(blocks), kForwardThreads, 0, stream>>>(p, group_shift);
  TOKEMB_CHECK_LAUNCH();
}

}  // namespace

void forward(const ForwardParams& p, const DeviceInfo& device, CUstream_st* stream) {
  dispatch_float<DeviceTypes>(p.dtype, [&](auto t_tag) {
    using T = typename decltype(t_tag)::type;
    dispatch_index(p.id_type, [&](auto i_tag) {
      using I = typename decltype(i_tag)::type;
      constexpr int N = pack_width<T>();
      const bool vector = p.D % N == 0 && aligned16(p.token_table) && aligned16(p.out) &&
                          (p.pos_table == nullptr || aligned16(p.pos_table));
      if (vector) {
        launch<T, I, N>(p, stream, device);
      } else {
        launch<T, I, 1>(p, stream, device);
      }
    });
  });
}

}  // namespace tokemb::detail::cuda
