#pragma once
// Private, shared by host/ and kernels/: validated, normalised arguments of one call (built by
// host/validate.cpp only; every field below has been checked there), and what a CUDA launcher
// needs to know about its device (filled in by the host layer).

#include <cstddef>
#include <cstdint>

#include <tokemb/ops.hpp>
#include <tokemb/types.hpp>

#if defined(__CUDACC__)
#define TOKEMB_HOST_DEVICE __host__ __device__
#else
#define TOKEMB_HOST_DEVICE
#endif

namespace tokemb::detail {

struct ErrorRecordData;  // core/error_record.hpp

/// The device a CUDA launch runs on, as the host layer found it (kernels never ask the runtime
/// for it: grid sizes come from here).
struct DeviceInfo {
  int device = 0;           // CUDA device index, current for the call
  int multiprocessors = 1;  // SM count, to size persistent and grid-stride grids
};

/// ceil(a / b) for a >= 0 and b > 0, in 64 bits (no a + b - 1 that could overflow). Launchers
/// compare the block counts it gives with the grid limits and raise InvalidArgument above them:
/// a 32-bit result would wrap for an absurd D and pass such a check.
TOKEMB_HOST_DEVICE constexpr std::int64_t ceil_div(std::int64_t a, std::int64_t b) {
  return a / b + (a % b != 0 ? 1 : 0);
}

/// How a rank's slice of a [B, T, D] activation is laid out under sequence parallelism
/// (kernels/sequence_parallel.cu). slice = false: the whole [B, T, D].
struct SliceLayout {
  std::int64_t B = 0, T = 0, D = 0;
  int rank = 0, world = 1;
  bool slice = false;           // the data is rank's slice, not the whole activation
  bool sequence_first = false;  // [T/w, B, D] (else [B, T/w, D])
};

/// Where the rows of a strided tensor live: row r (row-major over the dimensions it covers) is at
/// element offset offset(r). Used for ids and position ids (every dimension) and for dout (all
/// but the last). Built by host/validate.cpp, which merges neighbouring dimensions whenever
/// their strides allow, so a contiguous tensor has rank 1 (offset(r) = r * stride[0]) and a
/// slice of rows (ids[:, :-1]) rank 2.
struct RowLayout {
  static constexpr int max_rank = 7;  // ids of out's maximum rank (8) less the D dimension
  int rank = 1;
  std::int64_t size[max_rank] = {};    // size[0] (the outermost) is never read
  std::int64_t stride[max_rank] = {1};  // in elements; any sign

  TOKEMB_HOST_DEVICE bool contiguous_rows(std::int64_t row_elems) const {
    return rank == 1 && stride[0] == row_elems;
  }
  TOKEMB_HOST_DEVICE std::int64_t offset(std::int64_t r) const {
    if (rank == 1) return r * stride[0];  // the common case: one multiply
    std::int64_t off = 0;
    // Kept a loop on the device: unrolled, it was copied into every inlined row load (kBatch
    // loads x both id types per kernel) and made a quarter of the kernels' code and build time,
    // for a path that only strided, multi-dimensional ids and dout take.
#if defined(__CUDA_ARCH__)
#pragma unroll 1
#endif
    for (int i = rank - 1; i > 0; --i) {
      const std::int64_t q = r / size[i];
      off += (r - q * size[i]) * stride[i];
      r = q;
    }
    return off + r * stride[0];
  }
};

/// Fused dropout (core/dropout.hpp has the mask rule). Off when threshold == 0.
struct DropoutParams {
  std::uint32_t threshold = 0;  // drop when (word >> 8) < threshold; round(p * 2^24)
  float scale = 1.0f;           // 1 / (1 - p), rounded to f32 once on the host
  bool per_token = false;       // one draw per row (DropoutMode::token)
  std::uint64_t seed = 0, offset = 0;
  const std::uint64_t* seed_offset = nullptr;  // {seed, offset} read when the call runs

  TOKEMB_HOST_DEVICE bool enabled() const { return threshold != 0; }
};

/// What forward and backward have in common: where each row's token and position come from,
/// and the dropout applied to it (to forward's output, and to dout before the scatter).
struct RowParams {
  const void* ids = nullptr;  // [..., T], element ids_layout.offset(r) for row r
  DType id_type = DType::i64;
  RowLayout ids_layout;
  const void* pos_ids = nullptr;  // the ids' shape, or nullptr: position = offset + t
  DType pos_id_type = DType::i64;
  RowLayout pos_layout;
  // Packed sequences: int32 [num_seqs + 1]; row i of sequence s has position
  // offset + i - cu_seqlens[s]. Exclusive with pos_ids. Checked per row (core/rows.hpp).
  const std::int32_t* cu_seqlens = nullptr;
  std::int64_t num_seqs = 0;
  std::int64_t B = 0, T = 0, D = 0;  // B: the product of the ids' leading dimensions
  std::int64_t V = 0;  // token-table rows this call reads and writes (< 2^31): the shard's rows
                       // that hold valid ids (rows of a padded vocabulary past them excluded)
  // Vocabulary-parallel shards: the table's row 0 is global id vocab_start; ids in
  // [0, vocab_valid) are valid, those outside [vocab_start, vocab_start + V) belong to other
  // shards (no token term, no token gradient, no error). Unsharded: 0 and V.
  std::int64_t vocab_start = 0;
  std::int64_t vocab_valid = 0;
  std::int64_t P = 0;             // position rows (< 2^31); 0 when positions are off
  std::int64_t offset = 0;        // with pos_ids == nullptr, offset + T <= P was checked
  std::int64_t padding_idx = -1;  // normalised to [0, V), or -1 for none
  ErrorRecordData* error_record = nullptr;
  DropoutParams dropout;

  TOKEMB_HOST_DEVICE std::int64_t rows() const { return B * T; }
  /// Valid ids are [0, valid_ids()).
  TOKEMB_HOST_DEVICE std::int64_t valid_ids() const {
    return vocab_valid > 0 ? vocab_valid : vocab_start + V;
  }
  TOKEMB_HOST_DEVICE bool positions() const { return P > 0; }
  /// Positions that are not offset + t (position ids or packed sequences): the positional
  /// gradient is then a scatter.
  TOKEMB_HOST_DEVICE bool scattered_positions() const {
    return pos_ids != nullptr || cu_seqlens != nullptr;
  }
};

struct ForwardParams : RowParams {
  const void* token_table = nullptr;  // [V, D]
  const void* pos_table = nullptr;    // [P, D] or nullptr
  void* out = nullptr;                // [B, T, D]
  DType dtype = DType::f32;           // of both tables and out
};

/// The mode a backward call runs in: 16-bit gradient tables must be written once per element
/// with one rounding, which only the sort-based path does (atomics would round at every add).
/// The one place this rule lives.
inline BackwardMode effective_backward_mode(BackwardMode mode, DType grad_type) {
  return grad_type == DType::bf16 || grad_type == DType::f16 ? BackwardMode::deterministic : mode;
}

/// Whether backward takes the sort-based path, which needs a workspace: the deterministic mode
/// (effective_backward_mode), and every overwrite. The one place this rule lives (the CUDA
/// dispatch and the module ask it).
inline bool backward_sorts(BackwardMode mode, bool accumulate) {
  return mode == BackwardMode::deterministic || !accumulate;
}

struct BackwardParams : RowParams {
  const void* dout = nullptr;  // [..., T, D]: row r at dout_layout.offset(r), column c at
                               // + c * dout_col_stride
  DType dout_type = DType::f32;
  RowLayout dout_layout;
  std::int64_t dout_col_stride = 1;
  void* grad_token = nullptr;  // [V, D] of grad_type
  void* grad_pos = nullptr;    // [P, D] of grad_type, or nullptr
  DType grad_type = DType::f32;  // f32, or dout_type (validated)
  BackwardMode mode = BackwardMode::atomic;  // effective_backward_mode's
  bool accumulate = true;  // false: every gradient row is written (zero where nothing lands)
  void* workspace = nullptr;
  std::size_t workspace_bytes = 0;
};

}  // namespace tokemb::detail
