// The tensor-parallel embedding over NCCL (include/tokemb/nccl.hpp): the sharded lookup of the
// core library, NCCL's collectives, and the row permutation / slice dropout kernels of
// kernels/sequence_parallel.cu.
#include <tokemb/nccl.hpp>

#include <nccl.h>

#include <cuda_runtime_api.h>

#include <algorithm>

#include "core/check.hpp"
#include "core/cuda_check.hpp"
#include "core/dropout.hpp"
#include "core/params.hpp"
#include "host/backend.hpp"
#include "host/cuda_device.hpp"
#include "host/module_dropout.hpp"
#include "host/parallel.hpp"
#include "kernels/launch.hpp"

#define TOKEMB_NCCL_TRY(call)                                                                   \
  do {                                                                                          \
    const ncclResult_t tokemb_nccl_ = (call);                                                   \
    if (tokemb_nccl_ != ncclSuccess)                                                            \
      TOKEMB_THROW(::tokemb::CudaError(                                                         \
          ::tokemb::detail::format_message("NCCL call ", #call,                                 \
                                           " failed: ", ncclGetErrorString(tokemb_nccl_), " (", \
                                           static_cast<int>(tokemb_nccl_), ")"),                \
          static_cast<int>(tokemb_nccl_)));                                                     \
  } while (0)

namespace tokemb::nccl {

namespace {

ncclDataType_t nccl_type(DType t) {
  switch (t) {
    case DType::f32:
      return ncclFloat32;
    case DType::bf16:
      return ncclBfloat16;
    case DType::f16:
      return ncclFloat16;
    default:
      break;
  }
  TOKEMB_FAIL(InvalidArgument, "tokemb::nccl: dtype ", dtype_name(t), " is not f32, bf16 or f16");
}

EmbeddingConfig local_config(const ParallelConfig& c, const Shard& s) {
  EmbeddingConfig l = c.embedding;
  l.vocab_size = s.rows;  // this rank's rows of the (padded) table
  l.padding_idx.reset();  // a global id: handled through Options
  l.dropout = 0.0;        // applied after the collective, not by the local module
  return l;
}

std::int64_t table_rows(const ParallelConfig& c) {
  return c.padded_vocab > 0 ? c.padded_vocab : c.embedding.vocab_size;
}

int comm_rank(ncclComm* comm) {
  int r = 0;
  TOKEMB_EXPECTS(comm != nullptr, InvalidArgument, "tokemb::nccl: comm is a null communicator");
  TOKEMB_NCCL_TRY(ncclCommUserRank(comm, &r));
  return r;
}
int comm_size(ncclComm* comm) {
  int n = 0;
  TOKEMB_NCCL_TRY(ncclCommCount(comm, &n));
  return n;
}

}  // namespace

// vocab_shard: host/parallel.cpp (the core library, so that CPU tests reach it).

TensorParallelEmbedding::TensorParallelEmbedding(const ParallelConfig& config, ncclComm* comm,
                                                 StreamView stream)
    : config_(config),
      comm_(comm),
      rank_(comm_rank(comm)),
      world_(comm_size(comm)),
      shard_(vocab_shard(table_rows(config), rank_, world_)),
      local_(local_config(config, shard_), stream),
      errors_(config.embedding.device, stream) {
  TOKEMB_EXPECTS(config.embedding.dropout >= 0.0 && config.embedding.dropout <= 1.0,
                 InvalidArgument, "tokemb::nccl::TensorParallelEmbedding: dropout is ",
                 detail::format_double(config.embedding.dropout), ", must be in [0, 1]");
  TOKEMB_EXPECTS(config.embedding.device.is_cuda(), InvalidArgument,
                 "tokemb::nccl::TensorParallelEmbedding: the device must be a CUDA device, not ",
                 config.embedding.device.str());
  TOKEMB_EXPECTS(config.padded_vocab == 0 || config.padded_vocab >= config.embedding.vocab_size,
                 InvalidArgument, "tokemb::nccl::TensorParallelEmbedding: padded_vocab ",
                 config.padded_vocab, " is below vocab_size ", config.embedding.vocab_size);
  TOKEMB_EXPECTS(shard_.start < config.embedding.vocab_size, InvalidArgument,
                 "tokemb::nccl::TensorParallelEmbedding: rank ", rank_, "'s shard starts at row ",
                 shard_.start, ", past the ", config.embedding.vocab_size,
                 " valid ids; use fewer ranks or less padding");
}

detail::SliceLayout TensorParallelEmbedding::layout(const char* op, const TensorView& ids) const {
  TOKEMB_EXPECTS(ids.shape.rank() == 2, InvalidArgument, op, ": ids has shape ", ids.shape.str(),
                 ", expected [B, T]");
  const detail::SliceLayout s{ids.shape[0],
                              ids.shape[1],
                              config_.embedding.dim,
                              rank_,
                              world_,
                              config_.sequence_parallel,
                              config_.layout == SequenceLayout::sequence_first};
  TOKEMB_EXPECTS(!s.slice || s.T % world_ == 0, InvalidArgument, op, ": T = ", s.T,
                 " is not a multiple of the ", world_, " ranks (sequence parallelism)");
  return s;
}

Shape TensorParallelEmbedding::slice_shape(const detail::SliceLayout& s) {
  return s.sequence_first ? Shape{s.T / s.world, s.B, s.D} : Shape{s.B, s.T / s.world, s.D};
}

Options TensorParallelEmbedding::options(std::int64_t position_offset) const {
  return detail::parallel_options(config_, shard_, position_offset, errors_.get());
}

void TensorParallelEmbedding::ensure_scratch(std::int64_t bytes) {
  const std::int64_t words = (bytes + 7) / 8;
  for (Buffer* b : {&full_, &chunked_})
    if (b->bytes() < static_cast<std::size_t>(words) * 8) {
      *b = Buffer();
      *b = Buffer(DType::i64, Shape{words}, config_.embedding.device);
    }
}

void TensorParallelEmbedding::reserve(std::int64_t max_tokens) {
  // The workspace backward uses (workspace_, sized for this rank's call: its shard, grad_pos on
  // rank 0 only), not the local module's, which backward never touches.
  const detail::BackwardParams p =
      detail::parallel_reserve_params(config_, shard_, rank_, max_tokens);
  ensure_scratch(max_tokens * config_.embedding.dim * 4);     // [B, T, D] of at most 4-byte floats
  detail::DeviceGuard guard(config_.embedding.device.index);  // CUB's size depends on the arch
  grow_workspace(detail::cuda::backward_workspace_size(p));
}

void TensorParallelEmbedding::grow_workspace(std::size_t need) {
  if (need <= workspace_.bytes()) return;
  workspace_ = Buffer();
  workspace_ = Buffer(DType::i64, Shape{static_cast<std::int64_t>((need + 7) / 8)},
                      config_.embedding.device);
}

void TensorParallelEmbedding::forward(const TensorView& ids, const TensorView& out,
                                      std::int64_t position_offset) {
  const char* op = "tokemb::nccl::TensorParallelEmbedding::forward";
  const detail::SliceLayout s = layout(op, ids);
  const std::int64_t B = s.B, T = s.T, D = s.D;
  const DType dt = config_.embedding.dtype;
  const Options o = options(position_offset);
  const StreamView st = local_.stream();
  detail::DeviceGuard guard(config_.embedding.device.index);
  const detail::DeviceInfo dev = detail::device_info(config_.embedding.device.index);
  if (config_.sequence_parallel) {
    const Shape slice = slice_shape(s);
    TOKEMB_EXPECTS(out.shape == slice && out.dtype == dt, InvalidArgument, op, ": out is ",
                   out.shape.str(), " of ", dtype_name(out.dtype), ", expected this rank's slice ",
                   slice.str(), " of ", dtype_name(dt));
    ensure_scratch(B * T * D * static_cast<std::int64_t>(dtype_size(dt)));
    const TensorView full(full_.data(), dt, Shape{B, T, D}, config_.embedding.device);
    // Every rank validates the same arguments before the collective (rank 0 alone adds the
    // positions, but all check them): none is left waiting in ncclReduceScatter.
    const TensorView pos = detail::parallel_forward_positions(rank_, ids, local_.token_table(),
                                                              local_.position_table(), full, o);
    tokemb::forward(ids, local_.token_table(), pos, full, o, st);
    detail::cuda::permute_rows(full_.data(), chunked_.data(), dt, s, /*to_chunked=*/true, dev,
                               st.value());
    TOKEMB_NCCL_TRY(ncclReduceScatter(chunked_.data(), out.data,
                                      static_cast<std::size_t>(B * (T / world_) * D), nccl_type(dt),
                                      ncclSum, comm_, st.value()));
  } else {
    const TensorView pos = detail::parallel_forward_positions(rank_, ids, local_.token_table(),
                                                              local_.position_table(), out, o);
    tokemb::forward(ids, local_.token_table(), pos, out, o, st);
    TOKEMB_NCCL_TRY(ncclAllReduce(out.data, out.data, static_cast<std::size_t>(B * T * D),
                                  nccl_type(dt), ncclSum, comm_, st.value()));
  }
  if (local_.training() && config_.embedding.dropout > 0.0) {
    // The config's dropout was validated by the constructor.
    detail::cuda::slice_dropout(
        out.data, dt, s,
        detail::dropout_params(detail::module_dropout(config_.embedding, next_offset_)), dev,
        st.value());
    pending_.push_back(next_offset_++);
  }
}

void TensorParallelEmbedding::zero_grad_and_backward(const TensorView& ids, const TensorView& dout,
                                                     std::int64_t position_offset) {
  const char* op = "tokemb::nccl::TensorParallelEmbedding::zero_grad_and_backward";
  const detail::SliceLayout s = layout(op, ids);
  const std::int64_t B = s.B, T = s.T, D = s.D;
  Options o = options(position_offset);
  o.accumulate = false;
  const bool masked = !pending_.empty();
  // The oldest training forward's mask, as Embedding pairs them.
  if (masked) o.dropout = detail::module_dropout(config_.embedding, pending_.front());
  const StreamView st = local_.stream();
  detail::DeviceGuard guard(config_.embedding.device.index);
  const detail::DeviceInfo dev = detail::device_info(config_.embedding.device.index);
  TensorView full = dout;
  if (config_.sequence_parallel) {
    const Shape slice = slice_shape(s);
    TOKEMB_EXPECTS(dout.shape == slice && is_floating(dout.dtype), InvalidArgument, op,
                   ": dout is ", dout.shape.str(), " of ", dtype_name(dout.dtype),
                   ", expected this rank's slice ", slice.str(), " of a float dtype");
    ensure_scratch(B * T * D * static_cast<std::int64_t>(dtype_size(dout.dtype)));
    full = TensorView(full_.data(), dout.dtype, Shape{B, T, D}, config_.embedding.device);
  }
  // Every rank validates the same arguments (the position gradient included, which only rank 0
  // computes) before the first collective.
  const TensorView grad_pos = detail::parallel_backward_positions(
      rank_, ids, full, local_.token_grad(), local_.position_grad(), o);
  if (config_.sequence_parallel) {
    TOKEMB_NCCL_TRY(ncclAllGather(dout.data, chunked_.data(),
                                  static_cast<std::size_t>(B * (T / world_) * D),
                                  nccl_type(dout.dtype), comm_, st.value()));
    detail::cuda::permute_rows(chunked_.data(), full_.data(), dout.dtype, s,
                               /*to_chunked=*/false, dev, st.value());
  }
  // Grows only; reserve() sizes it up front (before a CUDA-graph capture).
  grow_workspace(backward_workspace_size(ids, full, local_.token_grad(), grad_pos, o));
  tokemb::backward(ids, full, local_.token_grad(), grad_pos, o,
                   Workspace{workspace_.data(), workspace_.bytes()}, st);
  if (masked) pending_.pop_front();
  const TensorView pg = local_.position_grad();
  if (!pg.empty()) {
    if (rank_ != 0) fill_zero(pg, st);  // rank 0 computed it; the sum is rank 0's bits
    TOKEMB_NCCL_TRY(ncclAllReduce(pg.data, pg.data, static_cast<std::size_t>(pg.numel()),
                                  ncclFloat32, ncclSum, comm_, st.value()));
  }
}

void TensorParallelEmbedding::synchronize() {
  tokemb::synchronize(local_.stream());
  errors_.check(local_.stream());
}

}  // namespace tokemb::nccl
