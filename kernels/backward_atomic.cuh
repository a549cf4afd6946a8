#pragma once
// Private: the atomic backward's kernels and launchers, included once per dout dtype by
// backward_atomic_<dtype>.cu so that the dtypes compile in parallel. The algorithm is described
// at the top of backward_atomic.cu.

#include <cub/block/block_radix_sort.cuh>

#include <algorithm>
#include <array>
#include <atomic>
#include <type_traits>

#include "core/check.hpp"
#include "core/cuda_check.hpp"
#include "kernels/backward.hpp"
#include "kernels/backward_common.cuh"

namespace tokemb::detail::cuda::atomic {

namespace {

constexpr int kThreads = 256;
constexpr int kItems = 2;
constexpr int kTile = kThreads * kItems;  // rows sorted together
constexpr int kPosBytes = 16384;  // positional accumulators per block (4096 f32 or 2048 f64)
constexpr int kBatch = 4;         // dout rows loaded before the first is consumed

enum class Keys { token_and_offset_positions, token, position };

struct Geometry {
  // The rows of a call seen as a Bl x Tl grid (r = b * Tl + t): (B, T) when positions are fused,
  // (1, B * T) otherwise. A block covers tt consecutive t, chunks of nb consecutive b (looping
  // over chunks blockIdx.z, blockIdx.z + gridDim.z, ...) and cb columns.
  std::int64_t Tl, Bl, tt, nb, cb, b_chunks;
  int end_bit;
  bool pos_atomic;
};

template <class G, int N, Keys K>
__global__ void __launch_bounds__(kThreads)
    backward_atomic_kernel(const BackwardParams p, const Geometry g) {
  using Sort = cub::BlockRadixSort<std::uint32_t, kThreads, kItems, std::uint32_t>;
  constexpr bool kFused = K == Keys::token_and_offset_positions;
  __shared__ typename Sort::TempStorage sort_storage;
  __shared__ std::uint32_t s_key[kTile];
  __shared__ std::uint32_t s_row[kTile];  // dout row of each sorted entry
  __shared__ std::uint16_t s_tl[kTile];   // its position within the block's tile of t
  __shared__ int s_count;
  using A = acc_t<G>;  // f32, or f64 (f64 dout and gradients)
  constexpr int kPosElems = kPosBytes / static_cast<int>(sizeof(A));
  __shared__ alignas(16) A s_pos[kFused ? kPosElems : 4];

  const std::int64_t D = p.D;
  const std::int64_t t0 = static_cast<std::int64_t>(blockIdx.x) * g.tt;
  const std::int64_t c0 = static_cast<std::int64_t>(blockIdx.y) * g.cb;
  const std::int64_t nt = min(g.tt, g.Tl - t0);
  const int ncols = static_cast<int>(min(g.cb, D - c0));
  const int npk = ncols / N;
  // Keys below max_key are rows of the gradient table being scattered into.
  const std::uint32_t max_key = static_cast<std::uint32_t>(K == Keys::position ? p.P : p.V);
  const std::uint32_t key_pos_only = max_key;   // padding_idx: positional gradient only
  const std::uint32_t key_skip = max_key + 1u;  // out of range, or past the block's rows
  const G* __restrict__ dout = static_cast<const G*>(p.dout);
  A* table = static_cast<A*>(K == Keys::position ? p.grad_pos : p.grad_token);
  const bool record = K != Keys::position && blockIdx.y == 0;
  std::uint64_t seed = 0, offset = 0;
  dropout_seed_offset(p.dropout, &seed, &offset);

  if constexpr (kFused) {
    for (int i = threadIdx.x; i < nt * ncols; i += kThreads) s_pos[i] = A(0);
  }

  for (std::int64_t chunk = blockIdx.z; chunk < g.b_chunks; chunk += gridDim.z) {
    const std::int64_t b0 = chunk * g.nb;
    const std::int64_t nb = min(g.nb, g.Bl - b0);
    const std::int64_t R = nt * nb;  // rows of this block in this chunk: local li -> (b, t)
    for (std::int64_t base = 0; base < R; base += kTile) {
      std::uint32_t keys[kItems], locs[kItems];
#pragma unroll
      for (int k = 0; k < kItems; ++k) {
        const std::int64_t li = base + threadIdx.x * kItems + k;
        locs[k] = static_cast<std::uint32_t>(li - base);
        keys[k] = key_skip;
        if (li < R) {
          const std::int64_t r = (b0 + li / nt) * g.Tl + t0 + li % nt;
          const Row row = resolve_row_any(p, r);
          if (!row.ok()) {
            if (record) record_bad_row(p.error_record, p, r, row);
          } else if (K == Keys::position) {
            keys[k] = static_cast<std::uint32_t>(row.position);
          } else {
            // padding_idx and other shards' ids: no token gradient, still a position
            keys[k] = row.has_token() && row.token != p.padding_idx
                          ? static_cast<std::uint32_t>(row.token)
                      : kFused ? key_pos_only  // still feeds the positional gradient
                               : key_skip;     // nothing to add: do not even load its dout
          }
        }
      }
      __syncthreads();  // the previous tile's readers of sort_storage, s_key, s_row are done
      Sort(sort_storage).Sort(keys, locs, 0, g.end_bit);
#pragma unroll
      for (int k = 0; k < kItems; ++k) {  // 64-bit divisions once per row, not once per column pack
        const int idx = threadIdx.x * kItems + k;
        const std::int64_t li = base + locs[k];
        s_key[idx] = keys[k];
        s_row[idx] = static_cast<std::uint32_t>((b0 + li / nt) * g.Tl + t0 + li % nt);
        s_tl[idx] = static_cast<std::uint16_t>(li % nt);
      }
      if (threadIdx.x == 0) s_count = kTile;
      __syncthreads();
#pragma unroll
      for (int k = 0; k < kItems; ++k) {  // skipped rows sort last: find where they start
        const int idx = threadIdx.x * kItems + k;
        if (s_key[idx] == key_skip && (idx == 0 || s_key[idx - 1] != key_skip)) s_count = idx;
      }
      __syncthreads();
      const int count = s_count;

      for (int pk = threadIdx.x; pk < npk; pk += kThreads) {
        const std::int64_t col = c0 + static_cast<std::int64_t>(pk) * N;
        A acc[N] = {};
        std::uint32_t cur = key_skip;
        for (int i = 0; i < count; i += kBatch) {
          A x[kBatch][N];
          std::uint32_t kb[kBatch];
          int tl[kBatch];
#pragma unroll
          for (int u = 0; u < kBatch; ++u) {  // issue all loads first: kBatch rows in flight
            kb[u] = key_skip;
            tl[u] = 0;
            if (i + u < count) {
              kb[u] = s_key[i + u];
              tl[u] = s_tl[i + u];
              load_dout_pack<G, N>(dout, p, seed, offset, s_row[i + u], col, x[u]);
            }
          }
#pragma unroll
          for (int u = 0; u < kBatch; ++u) {
            if (kb[u] == key_skip) continue;
            if constexpr (kFused) {
              // This thread owns these columns of s_pos: no shared atomics needed.
              A* sp = s_pos + tl[u] * ncols + pk * N;
              if constexpr (std::is_same_v<A, float> &&
                            N % 4 == 0) {  // 16-byte shared accesses: at most 2-way bank conflicts
#pragma unroll
                for (int q = 0; q < N / 4; ++q) {
                  float4 v = reinterpret_cast<float4*>(sp)[q];
                  v.x += x[u][4 * q];
                  v.y += x[u][4 * q + 1];
                  v.z += x[u][4 * q + 2];
                  v.w += x[u][4 * q + 3];
                  reinterpret_cast<float4*>(sp)[q] = v;
                }
              } else {
#pragma unroll
                for (int j = 0; j < N; ++j) sp[j] += x[u][j];
              }
            }
            if (kb[u] == key_pos_only) continue;
            if (kb[u] != cur) {  // a run of equal ids ended: one atomic per column for the run
              if (cur != key_skip)
                atomic_add_pack<N>(table + static_cast<std::int64_t>(cur) * D + col, acc);
              cur = kb[u];
#pragma unroll
              for (int j = 0; j < N; ++j) acc[j] = x[u][j];
            } else {
#pragma unroll
              for (int j = 0; j < N; ++j) acc[j] += x[u][j];
            }
          }
        }
        if (cur != key_skip)
          atomic_add_pack<N>(table + static_cast<std::int64_t>(cur) * D + col, acc);
      }
    }
  }

  if constexpr (kFused) {
    __syncthreads();
    for (int idx = threadIdx.x; idx < nt * npk; idx += kThreads) {
      const int tl = idx / npk, pk = idx % npk;
      A v[N];
      const A* sp = s_pos + tl * ncols + pk * N;
      if constexpr (std::is_same_v<A, float> && N % 4 == 0) {
#pragma unroll
        for (int q = 0; q < N / 4; ++q) {
          const float4 w = reinterpret_cast<const float4*>(sp)[q];
          v[4 * q] = w.x;
          v[4 * q + 1] = w.y;
          v[4 * q + 2] = w.z;
          v[4 * q + 3] = w.w;
        }
      } else {
#pragma unroll
        for (int j = 0; j < N; ++j) v[j] = sp[j];
      }
      A* dst = static_cast<A*>(p.grad_pos) + (p.offset + t0 + tl) * D + c0 +
               static_cast<std::int64_t>(pk) * N;
      if (g.pos_atomic) {
        atomic_add_pack<N>(dst, v);
      } else {
        plain_add_pack<N>(dst, v);  // this block is the only one covering these positions
      }
    }
  }
}

// Blocks of backward_atomic_kernel<G, N, K> resident per SM (asked once per device).
template <class G, int N, Keys K>
int resident_blocks(int device) {
  static std::array<std::atomic<int>, 64> cache{};
  if (device >= 0 && device < 64) {
    const int v = cache[static_cast<std::size_t>(device)].load(std::memory_order_relaxed);
    if (v > 0) return v;
  }
  int blocks = 0;
  TOKEMB_CUDA_TRY(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
      &blocks, backward_atomic_kernel<G, N, K>, kThreads, 0));
  blocks = std::max(blocks, 1);
  if (device >= 0 && device < 64) cache[static_cast<std::size_t>(device)].store(blocks);
  return blocks;
}

template <class G, int N, Keys K>
void launch(const BackwardParams& p, cudaStream_t stream, const DeviceInfo& device) {
  constexpr bool fused = K == Keys::token_and_offset_positions;
  Geometry g{};
  const std::int64_t packs = p.D / N;
  // Columns per block: up to 4 packs per thread; in the fused case bounded by the shared
  // positional accumulators (at least one position's worth of columns must fit).
  const std::int64_t pos_elems = kPosBytes / static_cast<std::int64_t>(sizeof(acc_t<G>));
  const std::int64_t max_packs = fused ? pos_elems / N : kThreads * 4;
  g.cb = std::min(packs, max_packs) * N;
  const std::int64_t col_blocks = (p.D + g.cb - 1) / g.cb;
  TOKEMB_EXPECTS(col_blocks <= 65535, InvalidArgument, "tokemb::backward: D = ", p.D,
                 " is too wide for one launch; the maximum is ", 65535 * g.cb);
  const std::int64_t rows = p.rows();
  // Two full waves of resident blocks (registers and shared memory decide how many fit: 3 to 6 per
  // SM), each block between 32 rows and 4 tiles of rows.
  const std::int64_t target_blocks =
      2 * static_cast<std::int64_t>(resident_blocks<G, N, K>(device.device)) *
      device.multiprocessors;
  const std::int64_t rows_per_block = std::clamp<std::int64_t>(
      (rows * col_blocks + target_blocks - 1) / target_blocks, 32, 4 * kTile);
  if (fused) {
    g.Tl = p.T;
    g.Bl = p.B;
    g.tt = std::max<std::int64_t>(1, std::min<std::int64_t>(p.T, pos_elems / g.cb));
    g.nb = std::clamp<std::int64_t>((rows_per_block + g.tt - 1) / g.tt, 1, p.B);
  } else {
    g.Tl = rows;
    g.Bl = 1;
    g.tt = rows_per_block;
    g.nb = 1;
  }
  g.b_chunks = (g.Bl + g.nb - 1) / g.nb;
  g.pos_atomic = g.b_chunks > 1;
  const std::uint32_t max_key = static_cast<std::uint32_t>(K == Keys::position ? p.P : p.V);
  g.end_bit = key_bits(max_key + 1u);
  const dim3 grid(ceil_div(g.Tl, g.tt), static_cast<unsigned>(col_blocks),
                  static_cast<unsigned>(std::min<std::int64_t>(g.b_chunks, 65535)));
  backward_atomic_kernel<G, N, K><<<grid, kThreads, 0, stream>>>(p, g);
  TOKEMB_CHECK_LAUNCH();
}

template <class G, Keys K>
void launch_keys(const BackwardParams& p, cudaStream_t stream, const DeviceInfo& device) {
  constexpr int N = pack_width<G>();
  // The vector path needs 16-byte dout packs (unit column stride, every row 16-byte aligned)
  // and 16-byte-aligned gradient rows (N * sizeof(grad element) >= 16, so D % N == 0 also
  // aligns every gradient row to 16 bytes).
  const bool vector = p.D % N == 0 && aligned16(p.dout) && p.dout_col_stride == 1 &&
                      rows_aligned(p.dout_layout, N) && aligned16(p.grad_token) &&
                      (p.grad_pos == nullptr || aligned16(p.grad_pos));
  if (vector) {
    launch<G, N, K>(p, stream, device);
  } else {
    launch<G, 1, K>(p, stream, device);
  }
}

/// The whole atomic backward for dout of type G.
template <class G>
void run(const BackwardParams& p, cudaStream_t stream, const DeviceInfo& device) {
  if (p.grad_pos != nullptr && !p.scattered_positions()) {
    launch_keys<G, Keys::token_and_offset_positions>(p, stream, device);
    return;
  }
  launch_keys<G, Keys::token>(p, stream, device);
  if (p.grad_pos != nullptr) launch_keys<G, Keys::position>(p, stream, device);
}

}  // namespace

}  // namespace tokemb::detail::cuda::atomic
