// Sort-based backward. Used by the deterministic mode (accumulate and overwrite) and by the
// atomic mode when it overwrites (Options::accumulate == false); the atomic mode's accumulating
// pass is kernels/backward_atomic.cu.
//
// Token gradient (and, in deterministic mode, the positional gradient when explicit position ids
// make it a scatter):
//  1. prepare_keys: key = id (or position) per row, value = row number. padding_idx rows get the
//     key max_key (no token gradient, but a position), out-of-range rows max_key + 1 (nothing);
//     both sort after every real key.
//  2. cub::DeviceRadixSort::SortPairs on the key bits actually used. The sort is stable, so the
//     rows of each id are in increasing row order: the summation order is fixed by the input.
//  3. tile_reduce: fixed tiles of 128 sorted entries; threads own column packs and walk the
//     tile in order, summing each run of equal keys in f32 registers. A run inside one tile is
//     added to its gradient row directly (no other block touches that row). A run that crosses a
//     tile boundary leaves a partial sum per tile in the workspace instead.
//  4. fixup: the tile where a crossing run starts finds where the run ends (a 32-way search in
//     the sorted keys) and adds its partial and those of the following tiles to the gradient
//     row in an order fixed by the run's length. No atomics anywhere, so no order to vary.
// All-identical ids become one run spanning every tile: the work stays parallel (each tile sums
// its 128 rows) and the fixup's partials are split across warps and narrow column blocks.
// Deterministic positional gradient with positions offset + t: pos_reduce sums dout[b, t] over b
// in order (a second pass over dout). One block walking all B rows of a step would serialise a
// decode-like call (T = 1, B = 4096: ~1,000 dependent load rounds in one block), so B is cut
// into fixed chunks of kPosChunk rows: one block per (chunk, step) sums its chunk in order into
// a workspace partial, then pos_combine adds the partials in chunk order. The chunking is a
// constant, not a function of the launch geometry or the device, so the bits are the same run
// after run and machine after machine; with B <= kPosChunk there is one chunk and no workspace.
//
// Overwrite (accumulate == false) is where sorting pays twice: every gradient row has exactly one
// writer, so steps 3 and 4 store the run sums instead of adding them, and zero_absent writes
// zeros to the rows no key reaches (a binary search in the sorted keys says which). Each gradient
// row is written once and never read: the zeroing memset and the read-modify-write of an
// accumulating backward are both gone. pos_reduce likewise stores its sums and zeroes the
// position rows outside offset .. offset + T - 1.
//
// Atomic-mode overwrite: the same token path, and the positional gradient in the same pass over
// dout: tile_reduce adds each row it loads (padding rows included) to its position's row with a
// vector atomic. grad_pos (P x D floats, 3 MB for GPT-2) is zeroed first and stays in L2, so
// those atomics never touch DRAM, and dout is read exactly once. Versus zeroing and then running
// the accumulating kernel, this saves the read-modify-write of every touched token row.

#include <cub/device/device_radix_sort.cuh>

#include <algorithm>
#include <type_traits>

#include "core/check.hpp"
#include "core/cuda_check.hpp"
#include "kernels/backward.hpp"
#include "kernels/backward_common.cuh"
#include "kernels/backward_sorted.hpp"

namespace tokemb::detail::cuda {

namespace sorted {

namespace {

constexpr std::size_t align_up(std::size_t x) { return (x + 255) & ~std::size_t{255}; }

// pos_reduce chunks of this call: more than one only for the deterministic positional gradient
// from the offset (no position ids) with B > kPosChunk; 0 when pos_reduce does not run.
std::int64_t pos_chunks(const BackwardParams& p) {
  if (p.mode != BackwardMode::deterministic || p.grad_pos == nullptr || p.scattered_positions())
    return 0;
  return (p.B + kPosChunk - 1) / kPosChunk;
}

// Workspace rows (of D floats) for the chunk partials: chunks x T of them. With chunks =
// ceil(B / kPosChunk) >= 2, B > kPosChunk, so T < B T / kPosChunk and chunks x T < B T /
// kPosChunk + T < 2 B T / kPosChunk. The layout reserves that bound, which depends on B x T
// only: Embedding::reserve(max_tokens) knows the number of rows but not B, and must cover every
// split of them (no allocation may happen while a graph is captured).
std::int64_t pos_partial_rows(const BackwardParams& p) {
  if (p.mode != BackwardMode::deterministic || p.P == 0 || p.scattered_positions() ||
      p.rows() <= kPosChunk)
    return 0;
  return (2 * p.rows() + kPosChunk - 1) / kPosChunk;
}

}  // namespace

Layout make_layout(const BackwardParams& p) {
  const std::int64_t rows = p.rows(), D = p.D;
  Layout l;
  l.pos_chunks = pos_chunks(p);
  l.tiles = (rows + kSortedTile - 1) / kSortedTile;
  const std::size_t index_bytes = align_up(static_cast<std::size_t>(rows) * sizeof(std::uint32_t));
  std::size_t temp_bytes = 0;
  TOKEMB_CUDA_TRY(cub::DeviceRadixSort::SortPairs(
      nullptr, temp_bytes, static_cast<const std::uint32_t*>(nullptr),
      static_cast<std::uint32_t*>(nullptr), static_cast<const std::uint32_t*>(nullptr),
      static_cast<std::uint32_t*>(nullptr), static_cast<int>(rows), 0, 32));
  std::size_t off = 0;
  l.keys_in = off;
  off += index_bytes;
  l.keys_out = off;
  off += index_bytes;
  l.rows_in = off;
  off += index_bytes;
  l.rows_out = off;
  off += index_bytes;
  l.partial = off;
  const std::size_t acc_size = p.dout_type == DType::f64 ? sizeof(double) : sizeof(float);
  off += align_up(static_cast<std::size_t>(l.tiles) * 2 * static_cast<std::size_t>(D) * acc_size);
  l.temp = off;
  l.temp_bytes = align_up(temp_bytes);
  off += l.temp_bytes;
  l.pos_partial = off;
  off += align_up(static_cast<std::size_t>(pos_partial_rows(p)) * static_cast<std::size_t>(D) *
                  acc_size);
  l.total = off + 256;  // slack: any caller pointer is rounded up to a 256-byte boundary
  return l;
}

// Threads of a tile_reduce or pos_reduce block: one per column pack, up to kThreads (then each
// thread takes several packs). Fewer packs than kThreads (bf16 at D = 768: 96) make a smaller
// block instead of idle threads, so more blocks fit per SM and more dout loads are in flight.
unsigned walker_threads(std::int64_t packs) {
  return static_cast<unsigned>(std::min<std::int64_t>(kThreads, (packs + 31) / 32 * 32));
}

char* align_workspace(void* p) {
  const auto u = reinterpret_cast<std::uintptr_t>(p);
  return reinterpret_cast<char*>((u + 255) & ~std::uintptr_t{255});
}

namespace {

template <bool kByPosition>
__global__ void __launch_bounds__(kThreads)
    prepare_keys(const BackwardParams p, std::uint32_t* keys, std::uint32_t* rows,
                 std::uint32_t max_key) {
  const std::int64_t n = p.rows();
  for (std::int64_t r = static_cast<std::int64_t>(blockIdx.x) * kThreads + threadIdx.x; r < n;
       r += static_cast<std::int64_t>(gridDim.x) * kThreads) {
    const Row row = resolve_row_any(p, r);
    // padding_idx and other shards' ids: no token gradient, still a position
    std::uint32_t key = max_key;
    if (!row.ok()) {
      key = max_key + 1u;  // out of range: no gradient at all
      if (!kByPosition) record_bad_row(p.error_record, p, r, row);  // once per row: token pass
    } else if (kByPosition) {
      key = static_cast<std::uint32_t>(row.position);
    } else if (row.has_token() && row.token != p.padding_idx) {
      key = static_cast<std::uint32_t>(row.token);
    }
    keys[r] = key;
    rows[r] = static_cast<std::uint32_t>(r);
  }
}

// The fixup of a run that starts in this tile and crosses into later ones. A run across many
// tiles (all-identical ids: one run over every tile) must not become one block's serial loop, so
//  * its end is found by a 32-way search (the warp probes 32 evenly spaced keys per round and
//    keeps the gap where they change: 4 dependent rounds for 65536 rows);
//  * blocks cover only kFixCols columns (the grid has ceil(D / kFixCols) blocks per tile, most
//    of which return after reading two keys), and a long run's partials are split into one
//    contiguous segment per warp, summed in order, then the segment sums in warp order.
// The split depends only on the run's length, so the result is the same bits every run.
constexpr int kWarps = kThreads / 32;
constexpr std::int64_t kFixCols = 64;
constexpr std::int64_t kShortRun = 8;  // partials summed by one thread per column up to this

template <bool kStore, class A>
__global__ void __launch_bounds__(kThreads)
    fixup(const std::int64_t n, const std::int64_t D, void* table, DType grad_type,
          const std::uint32_t* keys, const A* partial, std::uint32_t max_key, std::int64_t cb) {
  __shared__ std::int64_t s_last;
  __shared__ A s_seg[kWarps][32];
  const std::int64_t tile = blockIdx.x;
  const std::int64_t s = tile * kSortedTile, e = min(s + kSortedTile, n);
  const std::uint32_t k = keys[e - 1];
  if (k >= max_key || e >= n || keys[e] != k) return;     // the tile's last run ends inside it
  if (keys[s] == k && s > 0 && keys[s - 1] == k) return;  // that run began in an earlier tile
  const int lane = static_cast<int>(threadIdx.x % 32), warp = static_cast<int>(threadIdx.x / 32);
  if (warp == 0) {
    // The run ends at the first index >= e whose key is not k (keys are sorted). Invariant: the
    // end is in [lo, hi]. Probe i looks at lo + i * step; "beyond" (at or past hi, or a key other
    // than k) holds from the first such probe on.
    std::int64_t lo = e, hi = n;
    while (lo < hi) {
      const std::int64_t step = (hi - lo + 31) / 32;
      const std::int64_t probe = lo + lane * step;
      const bool beyond = probe >= hi || keys[probe] != k;
      const unsigned mask = __ballot_sync(0xffffffffu, beyond);
      const int f = mask == 0 ? 32 : __ffs(static_cast<int>(mask)) - 1;  // first beyond probe
      if (f == 0) {
        hi = lo;
      } else {
        const std::int64_t before = lo + (f - 1) * step;  // the last probe still inside the run
        if (f < 32) hi = min(lo + f * step, hi);
        lo = before + 1;
      }
    }
    if (lane == 0) s_last = (lo - 1) / kSortedTile;  // the last tile the run reaches
  }
  __syncthreads();
  const std::int64_t last = s_last;
  const std::int64_t count = last - tile + 1;  // partials: this tile's tail, then later heads
  auto slot = [&](std::int64_t j) { return j == 0 ? tile * 2 + 1 : (tile + j) * 2; };
  const std::int64_t c0 = static_cast<std::int64_t>(blockIdx.y) * cb;
  const std::int64_t c1 = min(c0 + cb, D);
  const std::int64_t row = static_cast<std::int64_t>(k) * D;
  if (count <= kShortRun) {  // the common case: one thread per column, partials in tile order
    for (std::int64_t c = c0 + threadIdx.x; c < c1; c += kThreads) {
      A acc[1] = {partial[slot(0) * D + c]};
      for (std::int64_t j = 1; j < count; ++j) acc[0] += partial[slot(j) * D + c];
      write_grad<kStore, 1>(table, grad_type, row + c, acc);  // stored + 0: -0 becomes +0
    }
    return;
  }
  const std::int64_t per = (count + kWarps - 1) / kWarps;
  const std::int64_t j0 = min(warp * per, count), j1 = min(j0 + per, count);
  for (std::int64_t base = c0; base < c1; base += 32) {
    const std::int64_t c = base + lane;
    A acc = -A(0);  // the additive identity: an empty segment changes no bit of the sum
    if (c < c1) {
#pragma unroll 8
      for (std::int64_t j = j0; j < j1; ++j) acc += partial[slot(j) * D + c];
    }
    s_seg[warp][lane] = acc;
    __syncthreads();
    if (warp == 0 && c < c1) {
      A total[1] = {s_seg[0][lane]};
#pragma unroll
      for (int w = 1; w < kWarps; ++w) total[0] += s_seg[w][lane];
      write_grad<kStore, 1>(table, grad_type, row + c, total);
    }
    __syncthreads();  // s_seg is reused by the next columns
  }
}

// Overwrite only: zeroes the gradient rows 0 .. max_key - 1 that no sorted key reaches, the rows
// the reduction above never writes. One warp decides for 32 consecutive rows at once (one binary
// search per lane in the sorted keys, which stay in L2); the whole block then streams zeros over
// the absent rows with 16-byte stores when kVec4 (else 2-byte ones: every gradient dtype's row
// is a whole number of those). It works on bytes: zero bits are +0 in every float dtype.
constexpr int kZeroRows = 32;

template <bool kVec4>
__global__ void __launch_bounds__(kThreads)
    zero_absent(const std::int64_t n, const std::int64_t row_bytes, void* table,
                const std::uint32_t* keys, std::uint32_t max_key) {
  __shared__ std::uint32_t s_rows[kZeroRows];
  __shared__ int s_count;
  const std::int64_t v0 = static_cast<std::int64_t>(blockIdx.x) * kZeroRows;
  if (threadIdx.x < 32) {
    const std::int64_t v = v0 + threadIdx.x;
    bool absent = false;
    if (v < max_key) {
      std::int64_t lo = 0, hi = n;  // lower bound of v in keys[0, n)
      while (lo < hi) {
        const std::int64_t mid = lo + (hi - lo) / 2;
        if (keys[mid] < v) {
          lo = mid + 1;
        } else {
          hi = mid;
        }
      }
      absent = lo == n || keys[lo] != v;
    }
    const unsigned mask = __ballot_sync(0xffffffffu, absent);
    if (absent) s_rows[__popc(mask & ((1u << threadIdx.x) - 1u))] = static_cast<std::uint32_t>(v);
    if (threadIdx.x == 0) s_count = __popc(mask);
  }
  __syncthreads();
  const std::int64_t packs = kVec4 ? row_bytes / 16 : row_bytes / 2;
  const std::int64_t total = s_count * packs;
  char* base = static_cast<char*>(table);
  for (std::int64_t i = threadIdx.x; i < total; i += kThreads) {
    const std::int64_t row = s_rows[i / packs], pk = i % packs;
    if constexpr (kVec4) {
      reinterpret_cast<int4*>(base + row * row_bytes)[pk] = make_int4(0, 0, 0, 0);
    } else {
      reinterpret_cast<std::uint16_t*>(base + row * row_bytes)[pk] = 0;
    }
  }
}

}  // namespace

void sort_rows(const BackwardParams& p, bool by_position, const Layout& l, char* ws,
               cudaStream_t stream, const DeviceInfo& device) {
  const std::int64_t n = p.rows();
  auto* keys_in = reinterpret_cast<std::uint32_t*>(ws + l.keys_in);
  auto* keys_out = reinterpret_cast<std::uint32_t*>(ws + l.keys_out);
  auto* rows_in = reinterpret_cast<std::uint32_t*>(ws + l.rows_in);
  auto* rows_out = reinterpret_cast<std::uint32_t*>(ws + l.rows_out);
  const std::uint32_t max_key = static_cast<std::uint32_t>(by_position ? p.P : p.V);
  const unsigned prep_blocks = static_cast<unsigned>(
      std::min<std::int64_t>((n + kThreads - 1) / kThreads, 32LL * device.multiprocessors));
  if (by_position) {
    prepare_keys<true><<<prep_blocks, kThreads, 0, stream>>>(p, keys_in, rows_in, max_key);
  } else {
    prepare_keys<false><<<prep_blocks, kThreads, 0, stream>>>(p, keys_in, rows_in, max_key);
  }
  TOKEMB_CHECK_LAUNCH();
  std::size_t temp_bytes = l.temp_bytes;
  TOKEMB_CUDA_TRY(cub::DeviceRadixSort::SortPairs(ws + l.temp, temp_bytes, keys_in, keys_out,
                                                  rows_in, rows_out, static_cast<int>(n), 0,
                                                  key_bits(max_key + 1u), stream));
}

void finish_runs(const BackwardParams& p, bool by_position, bool store, const Layout& l, char* ws,
                 cudaStream_t stream) {
  const std::int64_t n = p.rows();
  const auto* keys_out = reinterpret_cast<const std::uint32_t*>(ws + l.keys_out);
  const std::uint32_t max_key = static_cast<std::uint32_t>(by_position ? p.P : p.V);
  void* table = by_position ? p.grad_pos : p.grad_token;
  // kFixCols columns per block, widened only if D would need more than 65535 blocks in y.
  const std::int64_t fix_cb =
      kFixCols * std::max<std::int64_t>(1, ceil_div(ceil_div(p.D, kFixCols), 65535));
  const dim3 fix_grid(static_cast<unsigned>(l.tiles), ceil_div(p.D, fix_cb));
  auto fix = [&](auto store_tag, auto acc_tag) {
    constexpr bool kStore = decltype(store_tag)::value;
    using A = typename decltype(acc_tag)::type;
    fixup<kStore, A><<<fix_grid, kThreads, 0, stream>>>(n, p.D, table, p.grad_type, keys_out,
                                                        reinterpret_cast<const A*>(ws + l.partial),
                                                        max_key, fix_cb);
  };
  auto with_acc = [&](auto store_tag) {  // the partials' type: acc_t of dout's dtype
    if (p.dout_type == DType::f64) {
      fix(store_tag, type_tag<double>{});
    } else {
      fix(store_tag, type_tag<float>{});
    }
  };
  if (store) {
    with_acc(std::true_type{});
  } else {
    with_acc(std::false_type{});
  }
  TOKEMB_CHECK_LAUNCH();
  if (store) {
    const unsigned zero_blocks = ceil_div(max_key, kZeroRows);
    const std::int64_t row_bytes = p.D * static_cast<std::int64_t>(dtype_size(p.grad_type));
    if (row_bytes % 16 == 0 && aligned16(table)) {
      zero_absent<true>
          <<<zero_blocks, kThreads, 0, stream>>>(n, row_bytes, table, keys_out, max_key);
    } else {
      zero_absent<false>
          <<<zero_blocks, kThreads, 0, stream>>>(n, row_bytes, table, keys_out, max_key);
    }
    TOKEMB_CHECK_LAUNCH();
  }
}

}  // namespace sorted

std::size_t sorted_workspace_size(const BackwardParams& p) { return sorted::make_layout(p).total; }

void launch_backward_sorted(const BackwardParams& p, cudaStream_t stream,
                            const DeviceInfo& device) {
  using namespace sorted;
  const Layout l = make_layout(p);
  TOKEMB_EXPECTS(p.workspace != nullptr && p.workspace_bytes >= l.total, InvalidArgument,
                 "tokemb::backward: this call needs ", l.total, " bytes of workspace, got ",
                 p.workspace_bytes, " (ask backward_workspace_size)");
  TOKEMB_EXPECTS(ceil_div(p.D, kThreads * 4) <= 65535u, InvalidArgument,
                 "tokemb::backward: D = ", p.D, " is too wide for one launch; the maximum is ",
                 65535LL * kThreads * 4);
  char* ws = align_workspace(p.workspace);
  switch (p.dout_type) {  // one translation unit per dtype (backward_sorted_<dtype>.cu)
    case DType::f32:
      reduce_f32(p, l, ws, stream, device);
      return;
    case DType::bf16:
      reduce_bf16(p, l, ws, stream, device);
      return;
    case DType::f16:
      reduce_f16(p, l, ws, stream, device);
      return;
    case DType::f64:
      reduce_f64(p, l, ws, stream, device);
      return;
    default:
      break;
  }
  TOKEMB_FAIL(InvalidArgument, "tokemb::backward: dout has dtype ", dtype_name(p.dout_type),
              ", expected f32, bf16, f16 or f64");
}

}  // namespace tokemb::detail::cuda
