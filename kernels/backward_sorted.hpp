#pragma once
// Private: what the sort-based backward's translation units share. The work is split so that
// the parts compile in parallel: backward_sorted.cu holds everything that does not depend on
// dout's dtype (the layout of the workspace, the key preparation and CUB's radix sort, the fixup
// of runs that cross tiles, the zeroing of absent rows, and the dispatch); each
// backward_sorted_<dtype>.cu instantiates the dtype-dependent reductions
// (backward_sorted_reduce.cuh) for one dout dtype. The algorithm is described at the top of
// backward_sorted.cu.

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "core/params.hpp"

namespace tokemb::detail::cuda::sorted {

inline constexpr int kThreads = 256;
// Sorted entries per tile. Threads own column packs and walk a tile serially, so the parallelism
// is tiles x packs: 128-entry tiles keep tens of thousands of threads busy at GPT-2 sizes.
inline constexpr int kSortedTile = 128;
inline constexpr int kBatch = 4;
inline constexpr std::uint32_t kNoKey = 0xffffffffu;  // beyond either end of the sorted keys
// Batch rows per pos_reduce chunk (see backward_sorted.cu). 64 rows are 16 rounds of kBatch
// loads per block; GPT-2 training shapes (B <= 64) stay one chunk.
inline constexpr std::int64_t kPosChunk = 64;

/// Offsets into the (256-byte aligned) workspace.
struct Layout {
  std::size_t keys_in = 0, keys_out = 0, rows_in = 0, rows_out = 0, partial = 0, temp = 0;
  std::size_t pos_partial = 0;  // pos_reduce's chunk partials, when chunks > 1
  std::size_t temp_bytes = 0, total = 0;
  std::int64_t tiles = 0, pos_chunks = 0;
};

/// backward_sorted.cu
Layout make_layout(const BackwardParams& p);
char* align_workspace(void* p);
/// Threads of a tile_reduce or pos_reduce block for \p packs column packs.
unsigned walker_threads(std::int64_t packs);
/// Steps 1 and 2: keys (token or position) and row numbers, sorted by key into keys_out/rows_out.
void sort_rows(const BackwardParams& p, bool by_position, const Layout& l, char* ws,
               cudaStream_t stream, const DeviceInfo& device);
/// Step 4, and with \p store the zeroing of the rows no key reaches (after tile_reduce).
void finish_runs(const BackwardParams& p, bool by_position, bool store, const Layout& l, char* ws,
                 cudaStream_t stream);

/// backward_sorted_<dtype>.cu: everything after the checks, for dout of that dtype.
void reduce_f32(const BackwardParams& p, const Layout& l, char* ws, cudaStream_t stream,
                const DeviceInfo& device);
void reduce_bf16(const BackwardParams& p, const Layout& l, char* ws, cudaStream_t stream,
                 const DeviceInfo& device);
void reduce_f16(const BackwardParams& p, const Layout& l, char* ws, cudaStream_t stream,
                const DeviceInfo& device);
void reduce_f64(const BackwardParams& p, const Layout& l, char* ws, cudaStream_t stream,
                const DeviceInfo& device);

}  // namespace tokemb::detail::cuda::sorted
