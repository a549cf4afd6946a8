// The Embedding module: owns the tables, their gradients, an error record and the
// deterministic-backward workspace on one device.
#include <tokemb/config.hpp>
#include <tokemb/embedding.hpp>

#include <type_traits>

#include "core/check.hpp"
#include "core/dispatch.hpp"
#include "core/params.hpp"
#include "host/backend.hpp"
#include "host/module_dropout.hpp"
#include "host/parallel.hpp"

#if TOKEMB_WITH_CUDA
#include "host/cuda_device.hpp"
#include "kernels/launch.hpp"
#endif

namespace tokemb {

namespace {

const EmbeddingConfig& validated(const EmbeddingConfig& c) {
  const char* op = "tokemb::Embedding";
  TOKEMB_EXPECTS(c.vocab_size >= 1, InvalidArgument, op, ": vocab_size is ", c.vocab_size,
                 ", must be >= 1");
  TOKEMB_EXPECTS(c.dim >= 1, InvalidArgument, op, ": dim is ", c.dim, ", must be >= 1");
  TOKEMB_EXPECTS(c.context_length >= 0, InvalidArgument, op, ": context_length is ",
                 c.context_length, ", must be >= 0 (0: no position table)");
  TOKEMB_EXPECTS(is_floating(c.dtype), InvalidArgument, op, ": dtype is ", dtype_name(c.dtype),
                 ", expected f32, bf16, f16 or f64");
  if (c.padding_idx)
    TOKEMB_EXPECTS(*c.padding_idx >= -c.vocab_size && *c.padding_idx < c.vocab_size,
                   InvalidArgument, op, ": padding_idx ", *c.padding_idx,
                   " is outside the valid range [", -c.vocab_size, ", ", c.vocab_size, ")");
  TOKEMB_EXPECTS(c.dropout >= 0.0 && c.dropout <= 1.0, InvalidArgument, op, ": dropout is ",
                 detail::format_double(c.dropout), ", must be in [0, 1]");
  TOKEMB_EXPECTS(c.dropout_mode == DropoutMode::element || c.dropout_mode == DropoutMode::token,
                 InvalidArgument, op, ": dropout_mode is ", static_cast<int>(c.dropout_mode),
                 ", expected DropoutMode::element or DropoutMode::token");
  if (c.device.is_cuda()) detail::require_cuda(c.device, op);
  return c;
}

// The module's gradients: f32 (summed in f32, as optimizers keep master weights), or f64 for an
// f64 module (backward() needs f64 gradients for f64 sums).
DType grad_dtype(DType table) { return table == DType::f64 ? DType::f64 : DType::f32; }

Buffer make_table(DType dtype, std::int64_t rows, std::int64_t dim, Device device) {
  if (rows == 0) return Buffer();
  return Buffer(dtype, Shape{rows, dim}, device);
}

}  // namespace

Embedding::Embedding(const EmbeddingConfig& config, StreamView stream)
    : config_(validated(config)),
      stream_(stream),
      token_table_(make_table(config.dtype, config.vocab_size, config.dim, config.device)),
      pos_table_(make_table(config.dtype, config.context_length, config.dim, config.device)),
      token_grad_(make_table(grad_dtype(config.dtype), config.vocab_size, config.dim, config.device)),
      pos_grad_(make_table(grad_dtype(config.dtype), config.context_length, config.dim,
                           config.device)),
      errors_(config.device, stream) {
  fill_zero(token_table_, stream_);
  fill_zero(pos_table_, stream_);
  zero_grad();
}

Options Embedding::options(const Positions& positions) const {
  Options o;
  o.position_offset = positions.offset;
  o.position_ids = positions.ids;
  o.cu_seqlens = positions.cu_seqlens;
  o.padding_idx = config_.padding_idx;
  o.backward_mode = config_.backward_mode;
  o.error_record = errors_.get();
  return o;
}

void Embedding::forward(const TensorView& ids, const TensorView& out, std::int64_t position_offset,
                        const TensorView& position_ids) {
  forward(ids, out, Positions{position_offset, position_ids, TensorView{}});
}

void Embedding::forward(const TensorView& ids, const TensorView& out, const Positions& positions) {
  Options o = options(positions);
  const bool drop = training_ && config_.dropout > 0.0;
  if (drop) o.dropout = detail::module_dropout(config_, next_offset_, dropout_state());
  tokemb::forward(ids, token_table_, pos_table_, out, o, stream_);
  // Queued only once the call was accepted; the graph-safe mode reads its state instead.
  if (drop && !graph_safe_dropout()) pending_.push_back(next_offset_++);
}

void Embedding::set_graph_safe_dropout(bool on) {
  pending_.clear();
  if (!on) {
    dropout_state_ = Buffer();
    return;
  }
  const std::uint64_t state[2] = {config_.dropout_seed, next_offset_};
  Buffer b(DType::i64, Shape{2}, config_.device);
  copy(b, TensorView(const_cast<std::uint64_t*>(state), DType::i64, Shape{2}, Device::cpu()),
       stream_);
  tokemb::synchronize(stream_);  // `state` lives on this stack frame
  dropout_state_ = std::move(b);
}

void Embedding::advance_dropout_state(std::uint64_t by) {
  TOKEMB_EXPECTS(graph_safe_dropout(), InvalidArgument,
                 "tokemb::Embedding::advance_dropout_state: graph-safe dropout is off "
                 "(set_graph_safe_dropout(true) first)");
  auto* state = static_cast<std::uint64_t*>(dropout_state_.data());
  if (config_.device.is_cpu()) {
    state[1] += by;
    return;
  }
#if TOKEMB_WITH_CUDA
  detail::DeviceGuard guard(config_.device.index);
  detail::cuda::advance_dropout_offset(state, by, stream_.value());
#endif
}

void Embedding::backward(const TensorView& ids, const TensorView& dout,
                         std::int64_t position_offset, const TensorView& position_ids) {
  run_backward(ids, dout, options(Positions{position_offset, position_ids, TensorView{}}));
}

void Embedding::backward(const TensorView& ids, const TensorView& dout,
                         const Positions& positions) {
  run_backward(ids, dout, options(positions));
}

void Embedding::zero_grad_and_backward(const TensorView& ids, const TensorView& dout,
                                       std::int64_t position_offset,
                                       const TensorView& position_ids) {
  zero_grad_and_backward(ids, dout, Positions{position_offset, position_ids, TensorView{}});
}

void Embedding::zero_grad_and_backward(const TensorView& ids, const TensorView& dout,
                                       const Positions& positions) {
  Options o = options(positions);
  o.accumulate = false;
  run_backward(ids, dout, o);
}

void Embedding::set_dropout_state(std::uint64_t seed, std::uint64_t next_offset) {
  config_.dropout_seed = seed;
  next_offset_ = next_offset;
  pending_.clear();
  if (graph_safe_dropout()) set_graph_safe_dropout(true);  // the device copy starts there too
}

void Embedding::run_backward(const TensorView& ids, const TensorView& dout, Options o) {
  // f64 gradients are summed in f64 from an f64 dout; the op would refuse a narrower one with a
  // message about gradient dtypes the module's caller never chose.
  TOKEMB_EXPECTS(config_.dtype != DType::f64 || dout.dtype == DType::f64, InvalidArgument,
                 "tokemb::Embedding::backward: dout has dtype ", dtype_name(dout.dtype),
                 "; an f64 module takes an f64 dout (its gradients are f64, summed in f64)");
  // The oldest training forward still waiting pairs with this backward: the same mask. In the
  // graph-safe mode the state in memory says which mask (that of this step's forward).
  const bool masked = !pending_.empty();
  if (masked) {
    o.dropout = detail::module_dropout(config_, pending_.front());
  } else if (graph_safe_dropout() && training_ && config_.dropout > 0.0) {
    o.dropout = detail::module_dropout(config_, 0, dropout_state());
  }
  // Only the sort-based paths need scratch; the accumulating atomic mode skips the size query
  // (and the second validation it would cost).
  const std::size_t need = detail::backward_sorts(o.backward_mode, o.accumulate)
                               ? backward_workspace_size(ids, dout, token_grad_, pos_grad_, o)
                               : 0;
  if (need > workspace_.bytes()) {
    // Grows only; call reserve() up front to keep allocation out of the training loop.
    workspace_ = Buffer();
    workspace_ =
        Buffer(DType::i64, Shape{static_cast<std::int64_t>((need + 7) / 8)}, config_.device);
  }
  tokemb::backward(ids, dout, token_grad_, pos_grad_, o,
                   Workspace{workspace_.data(), workspace_.bytes()}, stream_);
  if (masked) pending_.pop_front();  // only once the call was accepted
}

void Embedding::reserve(std::int64_t max_tokens) {
  const detail::BackwardParams p =
      detail::reserve_params("tokemb::Embedding::reserve", max_tokens, config_.dim,
                             config_.vocab_size, config_.context_length, config_.backward_mode);
  if (config_.device.is_cpu()) return;
#if TOKEMB_WITH_CUDA
  // CUB's temporary storage depends on the device's architecture: ask on the module's device.
  detail::DeviceGuard guard(config_.device.index);
  const std::size_t need = detail::cuda::backward_workspace_size(p);
  if (need > workspace_.bytes()) {
    workspace_ = Buffer();
    workspace_ =
        Buffer(DType::i64, Shape{static_cast<std::int64_t>((need + 7) / 8)}, config_.device);
  }
#else
  (void)p;
#endif
}

void Embedding::zero_grad() {
  fill_zero(token_grad_, stream_);
  fill_zero(pos_grad_, stream_);
}

void Embedding::load(const TensorView& dst, const void* host_data, std::size_t bytes,
                     const char* what) {
  TOKEMB_EXPECTS(!dst.empty(), InvalidArgument, "tokemb::Embedding::", what,
                 ": this module has no such table (context_length is 0)");
  TOKEMB_EXPECTS(host_data != nullptr, InvalidArgument, "tokemb::Embedding::", what,
                 ": host_data is a null pointer");
  TOKEMB_EXPECTS(bytes == dst.bytes(), InvalidArgument, "tokemb::Embedding::", what, ": got ",
                 bytes, " bytes, the table ", dst.shape.str(), " of ", dtype_name(dst.dtype),
                 " needs exactly ", dst.bytes());
  copy(dst, TensorView(host_data, dst.dtype, dst.shape, Device::cpu()), stream_);
  tokemb::synchronize(stream_);  // the caller may free host_data as soon as we return
}

void Embedding::load_token_table(const void* host_data, std::size_t bytes) {
  load(token_table_, host_data, bytes, "load_token_table");
}
void Embedding::load_position_table(const void* host_data, std::size_t bytes) {
  load(pos_table_, host_data, bytes, "load_position_table");
}

std::vector<float> Embedding::to_host(const TensorView& view) {
  std::vector<float> result(static_cast<std::size_t>(view.empty() ? 0 : view.numel()));
  if (view.empty()) return result;
  Buffer host(view.dtype, view.shape, Device::cpu());
  copy(host, view, stream_);
  synchronize();
  detail::dispatch_float<detail::HostTypes>(view.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* src = static_cast<const T*>(host.data());
    for (std::size_t i = 0; i < result.size(); ++i) {
      if constexpr (std::is_same_v<T, double>) {
        result[i] = static_cast<float>(src[i]);
      } else {
        result[i] = to_float(src[i]);
      }
    }
  });
  return result;
}

std::vector<float> Embedding::token_table_to_host() { return to_host(token_table_); }
std::vector<float> Embedding::position_table_to_host() { return to_host(pos_table_); }
std::vector<float> Embedding::token_grad_to_host() { return to_host(token_grad_); }
std::vector<float> Embedding::position_grad_to_host() { return to_host(pos_grad_); }

void Embedding::synchronize() {
  if (config_.device.is_cuda()) tokemb::synchronize(stream_);
  errors_.check(stream_);
}

}  // namespace tokemb
