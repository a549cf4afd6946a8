// Row permutations and stand-alone dropout for the tensor-parallel module (host/nccl/): the
// sequence-parallel reduce-scatter needs each rank's rows contiguous, and dropout after the
// collective must draw the same mask as the fused kernels (element e = (b*T + t)*D + d of the
// whole [B, T, D] output, core/dropout.hpp), whatever the number of ranks.
//
// Layouts of a rank's slice of w ranks (Tl = T / w rows of every sequence, t in [r*Tl, (r+1)*Tl)):
//   batch_first:    [B, Tl, D]; the w slices one after another form the "chunked" buffer
//                   [w, B, Tl, D] that ncclReduceScatter / ncclAllGather exchange;
//   sequence_first: [Tl, B, D] (Megatron's); chunked buffer [w, Tl, B, D] = [T, B, D].
// One thread group per row; rows are moved with 16-byte packs when D and the pointers allow.
#include <cuda_runtime.h>

#include <algorithm>

#include "core/check.hpp"
#include "core/cuda_check.hpp"
#include "core/dispatch.hpp"
#include "core/dropout.hpp"
#include "kernels/common.cuh"
#include "kernels/launch.hpp"

namespace tokemb::detail::cuda {

namespace {

constexpr int kThreads = 256;

// Row (b, t) of [B, T, D] -> its row in the chunked buffer.
__device__ __forceinline__ std::int64_t chunked_row(std::int64_t b, std::int64_t t,
                                                    const SliceLayout& s) {
  const std::int64_t Tl = s.T / s.world, r = t / Tl, tl = t % Tl;
  return s.sequence_first ? (r * Tl + tl) * s.B + b : (r * s.B + b) * Tl + tl;
}

template <class T, int N>
__global__ void __launch_bounds__(kThreads)
    permute_kernel(const T* __restrict__ src, T* __restrict__ dst, SliceLayout s, bool to_chunked) {
  const std::int64_t packs = s.D / N, rows = s.B * s.T;
  const std::int64_t n = rows * packs;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * kThreads) {
    const std::int64_t row = i / packs, c = i % packs;  // row = b * T + t of [B, T, D]
    const std::int64_t other = chunked_row(row / s.T, row % s.T, s);
    const std::int64_t from = to_chunked ? row : other, to = to_chunked ? other : row;
    *reinterpret_cast<Pack<T, N>*>(dst + to * s.D + c * N) =
        load_pack<T, N>(src + from * s.D + c * N);
  }
}

// Rows [0, local_rows) of this rank's slice: x = dropout(x) with the mask of the element's place
// in the whole [B, T, D] output.
template <class T>
__global__ void __launch_bounds__(kThreads)
    slice_dropout_kernel(T* data, SliceLayout s, const DropoutParams d) {
  std::uint64_t seed = 0, offset = 0;
  dropout_seed_offset(d, &seed, &offset);
  const std::int64_t Tl = s.T / s.world;
  const std::int64_t local_rows = s.slice ? s.B * Tl : s.B * s.T;
  const std::int64_t n = local_rows * s.D;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * kThreads) {
    const std::int64_t lr = i / s.D, dd = i % s.D;
    std::int64_t b, t;
    if (!s.slice) {
      b = lr / s.T;
      t = lr % s.T;
    } else if (s.sequence_first) {
      b = lr % s.B;
      t = s.rank * Tl + lr / s.B;
    } else {
      b = lr / Tl;
      t = s.rank * Tl + lr % Tl;
    }
    const std::int64_t row = b * s.T + t;
    const float f = dropout_factor_at(
        d, seed, offset, static_cast<std::uint64_t>(d.per_token ? row : row * s.D + dd));
    data[i] = from_acc<T>(dropout_apply(to_acc(data[i]), f));
  }
}

unsigned grid_for(std::int64_t n, const DeviceInfo& device) {
  return static_cast<unsigned>(std::max<std::int64_t>(
      1, std::min<std::int64_t>((n + kThreads - 1) / kThreads, 32LL * device.multiprocessors)));
}

}  // namespace

void permute_rows(const void* src, void* dst, DType dtype, const SliceLayout& s, bool to_chunked,
                  const DeviceInfo& device, CUstream_st* stream) {
  TOKEMB_EXPECTS(s.world >= 1 && s.T % s.world == 0, InvalidArgument,
                 "tokemb::nccl: T = ", s.T, " is not a multiple of the ", s.world, " ranks");
  dispatch_float<DeviceTypes>(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    constexpr int N = pack_width<T>();
    if (s.D % N == 0 && aligned16(src) && aligned16(dst)) {
      permute_kernel<T, N><<<grid_for(s.B * s.T * (s.D / N), device), kThreads, 0, stream>>>(
          static_cast<const T*>(src), static_cast<T*>(dst), s, to_chunked);
    } else {
      permute_kernel<T, 1><<<grid_for(s.B * s.T * s.D, device), kThreads, 0, stream>>>(
          static_cast<const T*>(src), static_cast<T*>(dst), s, to_chunked);
    }
  });
  TOKEMB_CHECK_LAUNCH();
}

void slice_dropout(void* data, DType dtype, const SliceLayout& s, const DropoutParams& d,
                   const DeviceInfo& device, CUstream_st* stream) {
  if (!d.enabled()) return;
  const std::int64_t rows = s.slice ? s.B * (s.T / s.world) : s.B * s.T;
  dispatch_float<DeviceTypes>(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    slice_dropout_kernel<T>
        <<<grid_for(rows * s.D, device), kThreads, 0, stream>>>(static_cast<T*>(data), s, d);
  });
  TOKEMB_CHECK_LAUNCH();
}

}  // namespace tokemb::detail::cuda
