#pragma once
/// \file nccl.hpp
/// Optional component tokemb::tokemb_nccl (built when NCCL is found; the core library does not
/// depend on it): the embedding split across GPUs by vocabulary rows, as Megatron's
/// VocabParallelEmbedding, over the caller's NCCL communicator and stream. tokemb adds no
/// communication layer of its own: the collectives are NCCL's.
///
///  * Tensor parallel: each rank holds rows [start, start + rows) of the token table
///    (vocab_shard) and looks up the ids in its shard (tokemb::Options::vocab_start); only rank 0
///    adds the positional term, so one ncclAllReduce (sum) of the ranks' outputs is the
///    unsharded forward. Dropout, if any, follows the sum, with the same mask as the fused
///    one-GPU forward (it depends on the element's place in [B, T, D] only).
///  * Sequence parallel: the sum is an ncclReduceScatter over the sequence instead, so rank r
///    ends with tokens [r*T/w, (r+1)*T/w) of every sequence: [B, T/w, D] (batch_first) or
///    [T/w, B, D] (sequence_first, Megatron's layout); dropout then runs on that slice with the
///    same global mask, so masks do not depend on the number of ranks.
///  * Backward: (sequence parallel: ncclAllGather of the dout slices), the sharded scatter into
///    this rank's token-gradient rows, and an ncclAllReduce of the position gradient (computed
///    on rank 0), so every rank's replicated position gradient is the same bits.
///
/// Every call is stream-ordered on the module's stream and needs every rank of the communicator
/// to make the same call (NCCL's rule). Out-of-range ids are recorded on every rank and raised at
/// synchronize(), as in Embedding. Only CUDA devices.

#include <cstddef>
#include <cstdint>
#include <deque>

#include <tokemb/embedding.hpp>
#include <tokemb/ops.hpp>
#include <tokemb/stream.hpp>
#include <tokemb/tensor.hpp>

struct ncclComm;  // nccl.h: typedef struct ncclComm* ncclComm_t

namespace tokemb::detail {
struct SliceLayout;  // core/params.hpp
}

namespace tokemb::nccl {

/// The rows of the token table that rank \p rank of \p world holds: an even split of
/// \p table_rows rows (the first table_rows % world ranks get one more).
struct Shard {
  std::int64_t start = 0, rows = 0;
};
Shard vocab_shard(std::int64_t table_rows, int rank, int world);

/// Where a sequence-parallel slice's tokens sit.
enum class SequenceLayout : std::uint8_t { batch_first, sequence_first };

struct ParallelConfig {
  /// Global sizes and options: vocab_size is the number of valid ids, context_length the
  /// position table, device the rank's GPU; padding_idx, backward_mode, dropout, dropout_mode
  /// and dropout_seed as in Embedding (dropout_seed must be the same on every rank).
  EmbeddingConfig embedding;
  /// Rows of the global token table, >= vocab_size (llm.c pads 50257 to 50304); 0: vocab_size.
  std::int64_t padded_vocab = 0;
  bool sequence_parallel = false;
  SequenceLayout layout = SequenceLayout::batch_first;
};

/// One rank's part of the tensor-parallel embedding.
class TensorParallelEmbedding {
 public:
  /// \p comm: an initialised communicator whose rank uses config.embedding.device; its rank and
  /// size are asked from NCCL. Tables start at zero (load them with load_token_shard and
  /// load_position_table, or init).
  TensorParallelEmbedding(const ParallelConfig& config, ncclComm* comm, StreamView stream);

  int rank() const noexcept { return rank_; }
  int world() const noexcept { return world_; }
  Shard shard() const noexcept { return shard_; }
  /// The local module: its token table is this rank's shard, its position table the
  /// replicated one.
  Embedding& local() noexcept { return local_; }

  /// ids [B, T] on this rank's device, the same on every rank. out: [B, T, D]; sequence
  /// parallel: this rank's slice ([B, T/w, D] or [T/w, B, D]; T must be a multiple of w).
  /// Training mode with dropout draws the next mask, as Embedding does.
  void forward(const TensorView& ids, const TensorView& out, std::int64_t position_offset = 0);
  /// dout: the shape of forward's out. Sets both gradients (zero_grad + backward, fused); the
  /// token gradient holds this shard's rows, the position gradient is the same on every rank.
  void zero_grad_and_backward(const TensorView& ids, const TensorView& dout,
                              std::int64_t position_offset = 0);
  /// Grows the scratch buffers and the backward workspace for up to \p max_tokens = B * T
  /// (in [1, 2^31 - 1]), so that later calls do not allocate (needed before CUDA-graph capture).
  void reserve(std::int64_t max_tokens);
  /// Blocks until this rank's work is done; raises IndexOutOfRange for bad ids.
  void synchronize();

 private:
  Options options(std::int64_t position_offset) const;
  detail::SliceLayout layout(const char* op, const TensorView& ids) const;
  static Shape slice_shape(const detail::SliceLayout& s);
  void ensure_scratch(std::int64_t bytes);
  void grow_workspace(std::size_t bytes);

  ParallelConfig config_;
  ncclComm* comm_;
  int rank_ = 0, world_ = 1;
  Shard shard_;
  Embedding local_;
  Buffer full_, chunked_;  // [B, T, D] partial output / gathered dout, and its chunked copy
  Buffer workspace_;
  ErrorMonitor errors_;
  std::uint64_t next_offset_ = 0;
  std::deque<std::uint64_t> pending_;  // dropout offsets of forwards waiting for backward
};

}  // namespace tokemb::nccl
