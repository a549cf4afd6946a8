#pragma once
// Private: the half of the tensor-parallel module (host/nccl/tensor_parallel.cpp) that needs
// neither NCCL nor a GPU. It lives in the core library so that CPU tests check it: the Options
// of each rank's core call, the validation every rank runs alike before any collective, and
// the workspace its backward needs (what reserve() grows).

#include <cstdint>

#include <tokemb/nccl.hpp>
#include <tokemb/ops.hpp>

#include "core/params.hpp"

namespace tokemb::detail {

/// The Options of every rank's core call: this rank's shard of the vocabulary, padding_idx as a
/// global id, the backward mode and the module's error record.
Options parallel_options(const nccl::ParallelConfig& c, const nccl::Shard& shard,
                         std::int64_t position_offset, ErrorRecord* record);

/// Validates a forward exactly as every other rank does: with the (replicated) position table
/// on every rank, although only rank 0 adds it, so that a bad argument (a position_offset past
/// the table, a wrong shape) throws on every rank before any rank enters a collective. Returns
/// the position table \p rank passes to tokemb::forward: \p pos_table on rank 0, none elsewhere.
TensorView parallel_forward_positions(int rank, const TensorView& ids,
                                      const TensorView& token_shard, const TensorView& pos_table,
                                      const TensorView& out, const Options& o);

/// The same for backward: validated with the position gradient on every rank; returns the
/// grad_pos \p rank passes to tokemb::backward (rank 0 only).
TensorView parallel_backward_positions(int rank, const TensorView& ids, const TensorView& dout,
                                       const TensorView& grad_token, const TensorView& grad_pos,
                                       const Options& o);

/// What a module's reserve(max_tokens) sizes its backward workspace for: the largest need of a
/// call of up to max_tokens rows, an overwriting one (it sorts in either mode) with offset
/// positions. \p rows: token-gradient rows the call writes (vocab_start, vocab_size as in
/// Options); \p positions: rows of the position gradient it passes (0: none).
BackwardParams reserve_params(const char* op, std::int64_t max_tokens, std::int64_t dim,
                              std::int64_t rows, std::int64_t positions, BackwardMode mode,
                              std::int64_t vocab_start = 0, std::int64_t vocab_size = 0);

/// reserve_params for the backward call rank \p rank of the tensor-parallel module makes.
BackwardParams parallel_reserve_params(const nccl::ParallelConfig& c, const nccl::Shard& shard,
                                       int rank, std::int64_t max_tokens);

}  // namespace tokemb::detail
