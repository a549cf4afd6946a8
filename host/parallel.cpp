// The NCCL-free half of the tensor-parallel module (see parallel.hpp).
#include "host/parallel.hpp"

#include <algorithm>
#include <limits>

#include "core/check.hpp"
#include "host/validate.hpp"

namespace tokemb {

namespace nccl {

Shard vocab_shard(std::int64_t rows, int rank, int world) {
  TOKEMB_EXPECTS(world >= 1 && rank >= 0 && rank < world, InvalidArgument,
                 "tokemb::nccl::vocab_shard: rank ", rank, " is outside [0, ", world, ")");
  TOKEMB_EXPECTS(rows >= world, InvalidArgument, "tokemb::nccl::vocab_shard: ", rows,
                 " table rows cannot be split over ", world, " ranks");
  const std::int64_t base = rows / world, extra = rows % world;
  Shard s;
  s.start = rank * base + std::min<std::int64_t>(rank, extra);
  s.rows = base + (rank < extra ? 1 : 0);
  return s;
}

}  // namespace nccl

namespace detail {

Options parallel_options(const nccl::ParallelConfig& c, const nccl::Shard& shard,
                         std::int64_t position_offset, ErrorRecord* record) {
  Options o;
  o.position_offset = position_offset;
  o.padding_idx = c.embedding.padding_idx;
  o.backward_mode = c.embedding.backward_mode;
  o.error_record = record;
  o.vocab_start = shard.start;
  o.vocab_size = c.embedding.vocab_size;
  return o;
}

TensorView parallel_forward_positions(int rank, const TensorView& ids,
                                      const TensorView& token_shard, const TensorView& pos_table,
                                      const TensorView& out, const Options& o) {
  (void)validate_forward(ids, token_shard, pos_table, out, o);
  return rank == 0 ? pos_table : TensorView{};
}

TensorView parallel_backward_positions(int rank, const TensorView& ids, const TensorView& dout,
                                       const TensorView& grad_token, const TensorView& grad_pos,
                                       const Options& o) {
  (void)validate_backward(ids, dout, grad_token, grad_pos, o);
  return rank == 0 ? grad_pos : TensorView{};
}

BackwardParams reserve_params(const char* op, std::int64_t max_tokens, std::int64_t dim,
                              std::int64_t rows, std::int64_t positions, BackwardMode mode,
                              std::int64_t vocab_start, std::int64_t vocab_size) {
  constexpr std::int64_t max_rows = std::numeric_limits<std::int32_t>::max();
  TOKEMB_EXPECTS(max_tokens >= 1 && max_tokens <= max_rows, InvalidArgument, op, ": max_tokens is ",
                 max_tokens, ", must be in [1, ", max_rows, "]");
  BackwardParams p;
  p.B = 1;
  p.T = max_tokens;
  p.D = dim;
  // As validate_rows normalises them: the rows below the valid ids.
  const std::int64_t valid = vocab_size > 0 ? vocab_size : vocab_start + rows;
  p.V = std::min(rows, valid - vocab_start);
  p.vocab_start = vocab_start;
  p.vocab_valid = valid;
  p.P = positions;
  p.mode = mode;
  p.accumulate = false;  // the largest need: an overwrite sorts in either mode
  return p;
}

BackwardParams parallel_reserve_params(const nccl::ParallelConfig& c, const nccl::Shard& shard,
                                       int rank, std::int64_t max_tokens) {
  // Backward passes grad_pos on rank 0 only (parallel_backward_positions).
  return reserve_params("tokemb::nccl::TensorParallelEmbedding::reserve", max_tokens,
                        c.embedding.dim, shard.rows, rank == 0 ? c.embedding.context_length : 0,
                        c.embedding.backward_mode, shard.start, c.embedding.vocab_size);
}

}  // namespace detail
}  // namespace tokemb
