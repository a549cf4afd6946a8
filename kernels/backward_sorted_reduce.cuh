#pragma once
// Private: the dout-dtype-dependent kernels of the sort-based backward (step 3, tile_reduce, and
// the positional reductions), included once per dtype by backward_sorted_<dtype>.cu so that
// the dtypes compile in parallel. See backward_sorted.cu for the algorithm.

#include <algorithm>
#include <type_traits>

#include "core/check.hpp"
#include "core/cuda_check.hpp"
#include "kernels/backward_common.cuh"
#include "kernels/backward_sorted.hpp"

namespace tokemb::detail::cuda::sorted {

namespace {

// kPosAtomic (atomic-mode overwrite): also adds every loaded row to its position's gradient row.
template <class G, int N, bool kStore, bool kPosAtomic>
__global__ void __launch_bounds__(kThreads)
    tile_reduce(const BackwardParams p, void* table, const std::uint32_t* keys,
                const std::uint32_t* rows, acc_t<G>* partial, std::uint32_t max_key,
                std::int64_t cb) {
  using A = acc_t<G>;
  __shared__ std::uint32_t s_key[kSortedTile];
  __shared__ std::uint32_t s_row[kSortedTile];
  __shared__ std::uint32_t s_pos[kPosAtomic ? kSortedTile : 1];  // position of each entry
  __shared__ int s_valid, s_walk;
  const std::int64_t n = p.rows(), D = p.D;
  const std::int64_t tile = blockIdx.x;
  const std::int64_t s = tile * kSortedTile, e = min(s + kSortedTile, n);
  const int count = static_cast<int>(e - s);
  const std::int64_t c0 = static_cast<std::int64_t>(blockIdx.y) * cb;
  const int npk = static_cast<int>(min(cb, D - c0)) / N;
  const std::uint32_t prev_key = s > 0 ? keys[s - 1] : kNoKey;
  const std::uint32_t next_key = e < n ? keys[e] : kNoKey;

  if (threadIdx.x == 0) s_valid = s_walk = count;
  for (int i = threadIdx.x; i < count; i += static_cast<int>(blockDim.x)) {
    const std::uint32_t k = keys[s + i], r = rows[s + i];
    s_key[i] = k;
    s_row[i] = r;
    if constexpr (kPosAtomic) {  // rows with key <= max_key are in range: they have a position
      s_pos[i] = k <= max_key ? static_cast<std::uint32_t>(resolve_row_any(p, r).position) : 0u;
    }
  }
  __syncthreads();
  // Entries [0, valid) have token keys; [valid, walk) are padding rows (positional gradient
  // only, walked with kPosAtomic); the rest are out of range. Each boundary has one writer.
  for (int i = threadIdx.x; i < count; i += static_cast<int>(blockDim.x)) {
    const std::uint32_t prev = i == 0 ? 0u : s_key[i - 1];
    if (s_key[i] >= max_key && (i == 0 || prev < max_key)) s_valid = i;
    if (kPosAtomic && s_key[i] > max_key && (i == 0 || prev <= max_key)) s_walk = i;
  }
  __syncthreads();
  const int valid = s_valid;
  const int walk = kPosAtomic ? s_walk : valid;
  const G* __restrict__ dout = static_cast<const G*>(p.dout);
  std::uint64_t seed = 0, offset = 0;
  dropout_seed_offset(p.dropout, &seed, &offset);

  for (int pk = threadIdx.x; pk < npk; pk += static_cast<int>(blockDim.x)) {
    const std::int64_t col = c0 + static_cast<std::int64_t>(pk) * N;
    A acc[N] = {};
    std::uint32_t cur = kNoKey;
    int start = 0;
    // A run [start, end) of key k: written directly unless it continues into a neighbour tile.
    auto emit = [&](std::uint32_t k, int run_start, int run_end) {
      const bool head_cross = run_start == 0 && prev_key == k;
      const bool tail_cross = run_end == count && next_key == k;
      if (!head_cross && !tail_cross) {
        write_grad<kStore, N>(table, p.grad_type, static_cast<std::int64_t>(k) * D + col, acc);
      } else {
        A* dst = partial + (tile * 2 + (head_cross ? 0 : 1)) * D + col;
#pragma unroll
        for (int j = 0; j < N; ++j) dst[j] = acc[j];
      }
    };
    for (int i = 0; i < walk; i += kBatch) {
      A x[kBatch][N];
      std::uint32_t kb[kBatch];
#pragma unroll
      for (int u = 0; u < kBatch; ++u) {  // issue all loads first: kBatch rows in flight
        kb[u] = kNoKey;
        if (i + u < walk) {
          kb[u] = s_key[i + u];
          load_dout_pack<G, N>(dout, p, seed, offset, s_row[i + u], col, x[u]);
        }
      }
#pragma unroll
      for (int u = 0; u < kBatch; ++u) {
        if (kb[u] == kNoKey) continue;
        if constexpr (kPosAtomic) {
          // Atomic mode only, so the gradients are of type A (16-bit ones are deterministic).
          atomic_add_pack<N>(
              static_cast<A*>(p.grad_pos) + static_cast<std::int64_t>(s_pos[i + u]) * D + col,
              x[u]);
          if (kb[u] == max_key) continue;  // padding row: positional gradient only
        }
        if (kb[u] != cur) {
          if (cur != kNoKey) emit(cur, start, i + u);
          cur = kb[u];
          start = i + u;
#pragma unroll
          for (int j = 0; j < N; ++j) acc[j] = x[u][j];
        } else {
#pragma unroll
          for (int j = 0; j < N; ++j) acc[j] += x[u][j];
        }
      }
    }
    if (cur != kNoKey) emit(cur, start, valid);
  }
}

// Positional gradient for positions offset + t. Without kToPartial, block x covers position row
// q: offset + x when accumulating (the T rows that receive gradient), x itself when overwriting
// (all P rows, so the rows outside offset .. offset + T - 1 are zeroed too), summing all B rows.
// With kToPartial, block x = c * T + t sums the batch rows of chunk c ([c * kPosChunk,
// (c + 1) * kPosChunk) clipped to B) of step t into partial row x; pos_combine finishes.
template <class G, int N, bool kStore, bool kToPartial>
__global__ void __launch_bounds__(kThreads)
    pos_reduce(const BackwardParams p, std::int64_t cb, acc_t<G>* partial) {
  using A = acc_t<G>;
  const std::int64_t D = p.D, T = p.T;
  const std::int64_t blk = blockIdx.x;
  const std::int64_t q = kToPartial ? 0 : blk + (kStore ? 0 : p.offset);
  const std::int64_t t = kToPartial ? blk % T : q - p.offset;
  const std::int64_t b0 = kToPartial ? blk / T * kPosChunk : 0;
  const std::int64_t b1 = kToPartial ? min(b0 + kPosChunk, p.B) : p.B;
  const std::int64_t c0 = static_cast<std::int64_t>(blockIdx.y) * cb;
  const int npk = static_cast<int>(min(cb, D - c0)) / N;
  const G* __restrict__ dout = static_cast<const G*>(p.dout);
  std::uint64_t seed = 0, offset = 0;
  dropout_seed_offset(p.dropout, &seed, &offset);
  if (!kToPartial && kStore && (t < 0 || t >= T)) {
    const A zeros[N] = {};
    for (int pk = threadIdx.x; pk < npk; pk += static_cast<int>(blockDim.x))
      write_grad<true, N>(p.grad_pos, p.grad_type, q * D + c0 + static_cast<std::int64_t>(pk) * N,
                          zeros);
    return;
  }
  for (int pk = threadIdx.x; pk < npk; pk += static_cast<int>(blockDim.x)) {
    const std::int64_t col = c0 + static_cast<std::int64_t>(pk) * N;
    A acc[N] = {};
    for (std::int64_t b = b0; b < b1; b += kBatch) {
      A x[kBatch][N];
      bool ok[kBatch];
#pragma unroll
      for (int u = 0; u < kBatch; ++u) {
        ok[u] = false;
        if (b + u < b1) {
          const std::int64_t r = (b + u) * T + t;
          ok[u] = resolve_row_any(p, r).ok();  // out-of-range rows give no gradient
          if (ok[u]) load_dout_pack<G, N>(dout, p, seed, offset, r, col, x[u]);
        }
      }
#pragma unroll
      for (int u = 0; u < kBatch; ++u)
        if (ok[u]) {
#pragma unroll
          for (int j = 0; j < N; ++j) acc[j] += x[u][j];
        }
    }
    if constexpr (kToPartial) {
      // A plain store (no + 0): the partial keeps its sign bits for the combine.
      A* dst = partial + blk * D + col;
#pragma unroll
      for (int j = 0; j < N; ++j) dst[j] = acc[j];
    } else {
      write_grad<kStore, N>(p.grad_pos, p.grad_type, q * D + col, acc);
    }
  }
}

// The second pass of a chunked pos_reduce: position row q (chosen as in pos_reduce) gets the
// chunk partials of its step added in chunk order, starting from 0 as the one-chunk sum does.
template <int N, bool kStore, class A>
__global__ void __launch_bounds__(kThreads)
    pos_combine(const BackwardParams p, std::int64_t cb, const A* partial, std::int64_t chunks) {
  const std::int64_t D = p.D, T = p.T;
  const std::int64_t q = static_cast<std::int64_t>(blockIdx.x) + (kStore ? 0 : p.offset);
  const std::int64_t t = q - p.offset;
  const std::int64_t c0 = static_cast<std::int64_t>(blockIdx.y) * cb;
  const int npk = static_cast<int>(min(cb, D - c0)) / N;
  const bool outside = t < 0 || t >= T;  // only when storing: zero rows
  for (int pk = threadIdx.x; pk < npk; pk += static_cast<int>(blockDim.x)) {
    const std::int64_t col = c0 + static_cast<std::int64_t>(pk) * N;
    A acc[N] = {};
    if (!outside) {
      for (std::int64_t c = 0; c < chunks; ++c) {
        const A* src = partial + (c * T + t) * D + col;
#pragma unroll
        for (int j = 0; j < N; ++j) acc[j] += src[j];
      }
    }
    write_grad<kStore, N>(p.grad_pos, p.grad_type, q * D + col, acc);
  }
}

template <class G, int N, bool kStore, bool kPosAtomic>
void scatter(const BackwardParams& p, bool by_position, const Layout& l, char* ws,
             cudaStream_t stream, const DeviceInfo& device) {
  auto* keys_out = reinterpret_cast<std::uint32_t*>(ws + l.keys_out);
  auto* rows_out = reinterpret_cast<std::uint32_t*>(ws + l.rows_out);
  auto* partial = reinterpret_cast<acc_t<G>*>(ws + l.partial);
  const std::uint32_t max_key = static_cast<std::uint32_t>(by_position ? p.P : p.V);
  void* table = by_position ? p.grad_pos : p.grad_token;
  sort_rows(p, by_position, l, ws, stream, device);
  const std::int64_t cb = std::min<std::int64_t>(p.D / N, kThreads * 4) * N;
  const dim3 grid(static_cast<unsigned>(l.tiles), ceil_div(p.D, cb));
  tile_reduce<G, N, kStore, kPosAtomic><<<grid, walker_threads(cb / N), 0, stream>>>(
      p, table, keys_out, rows_out, partial, max_key, cb);
  TOKEMB_CHECK_LAUNCH();
  finish_runs(p, by_position, kStore, l, ws, stream);
}

/// Everything after the checks, for dout of type G.
template <class G>
void reduce(const BackwardParams& p, const Layout& l, char* ws, cudaStream_t stream,
            const DeviceInfo& device) {
  constexpr int N = pack_width<G>();
  // As the atomic path (backward_atomic.cu); a 16-bit gradient pack is N * 2 = 16 bytes.
  const bool vector = p.D % N == 0 && aligned16(p.dout) && p.dout_col_stride == 1 &&
                      rows_aligned(p.dout_layout, N) && aligned16(p.grad_token) &&
                      (p.grad_pos == nullptr || aligned16(p.grad_pos));
  // Atomic mode (it only comes here to overwrite): positions by atomics in the token pass.
  auto run_atomic_overwrite = [&](auto n_tag) {
    constexpr int kN = decltype(n_tag)::value;
    if (p.grad_pos == nullptr) {
      scatter<G, kN, true, false>(p, false, l, ws, stream, device);
      return;
    }
    TOKEMB_CUDA_TRY(cudaMemsetAsync(
        p.grad_pos, 0, static_cast<std::size_t>(p.P * p.D) * dtype_size(p.grad_type), stream));
    scatter<G, kN, true, true>(p, false, l, ws, stream, device);
  };
  auto run = [&](auto n_tag, auto store_tag) {
    constexpr int kN = decltype(n_tag)::value;
    constexpr bool kStore = decltype(store_tag)::value;
    scatter<G, kN, kStore, false>(p, false, l, ws, stream, device);
    if (p.grad_pos == nullptr) return;
    if (p.scattered_positions()) {
      scatter<G, kN, kStore, false>(p, true, l, ws, stream, device);
    } else {
      const std::int64_t cb = std::min<std::int64_t>(p.D / kN, kThreads * 4) * kN;
      const std::int64_t pos_rows = kStore ? p.P : p.T;
      const unsigned threads = walker_threads(cb / kN);
      if (l.pos_chunks <= 1) {
        pos_reduce<G, kN, kStore, false>
            <<<dim3(static_cast<unsigned>(pos_rows), ceil_div(p.D, cb)), threads, 0, stream>>>(
                p, cb, nullptr);
        TOKEMB_CHECK_LAUNCH();
      } else {
        // chunks x T <= B x T < 2^31 blocks in x; chunks x T <= pos_partial_rows(p) rows.
        auto* partial = reinterpret_cast<acc_t<G>*>(ws + l.pos_partial);
        pos_reduce<G, kN, false, true>  // partials are stored either way
            <<<dim3(static_cast<unsigned>(l.pos_chunks * p.T), ceil_div(p.D, cb)), threads, 0,
               stream>>>(p, cb, partial);
        TOKEMB_CHECK_LAUNCH();
        pos_combine<kN, kStore, acc_t<G>>
            <<<dim3(static_cast<unsigned>(pos_rows), ceil_div(p.D, cb)), threads, 0, stream>>>(
                p, cb, partial, l.pos_chunks);
        TOKEMB_CHECK_LAUNCH();
      }
    }
  };
  auto with_width = [&](auto n_tag) {
    if (p.mode == BackwardMode::atomic) {
      run_atomic_overwrite(n_tag);
    } else if (p.accumulate) {
      run(n_tag, std::false_type{});
    } else {
      run(n_tag, std::true_type{});
    }
  };
  if (vector) {
    with_width(std::integral_constant<int, N>{});
  } else {
    with_width(std::integral_constant<int, 1>{});
  }
}

}  // namespace

}  // namespace tokemb::detail::cuda::sorted
