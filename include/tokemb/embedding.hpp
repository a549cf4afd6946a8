#pragma once
/// \file embedding.hpp
/// The module: a token table, a position table and their gradients (f32; f64 for an f64 module)
/// on one device — the pair of `nn.Embedding`s at the input of a GPT model.

#include <cstdint>
#include <deque>
#include <optional>
#include <vector>

#include <tokemb/ops.hpp>
#include <tokemb/tensor.hpp>

namespace tokemb {

/// What an Embedding holds.
struct EmbeddingConfig {
  std::int64_t vocab_size = 0;      ///< V, rows of the token table
  std::int64_t dim = 0;             ///< D, the embedding width
  std::int64_t context_length = 0;  ///< P, rows of the position table (0: no position table)
  DType dtype = DType::f32;  ///< dtype of the tables and of forward's output (f32, bf16, f16, f64)
  Device device = Device::cpu();
  std::optional<std::int64_t> padding_idx;  ///< this token's row receives no gradient
  BackwardMode backward_mode = BackwardMode::atomic;
  /// Fused dropout after the embedding (the book's drop_emb): drop probability in [0, 1], used
  /// by forward in training mode only (Embedding::train / eval). A double, as Dropout::p.
  double dropout = 0.0;
  DropoutMode dropout_mode = DropoutMode::element;
  /// Seed of the dropout masks; the module draws offsets 0, 1, 2, ... from it, one per training
  /// forward (set_dropout_state to choose another point in that sequence).
  std::uint64_t dropout_seed = 0;
};

/// Where the positions of one module call come from (see Options).
struct Positions {
  std::int64_t offset = 0;  ///< position of t = 0 (decoding with a KV cache)
  TensorView ids;           ///< explicit positions [B, T], or empty
  TensorView cu_seqlens;    ///< packed sequences: int32 [S + 1], or empty
};

/// Token + positional embedding with gradients. Tables are zero after construction (seeded init
/// and loading are separate calls). All work is ordered on the module's stream; only the calls
/// documented as synchronising block the host. Out-of-range ids and positions are recorded on
/// the device and raised as IndexOutOfRange at the next synchronising call (copy_*_to_host,
/// synchronize, check_errors); the module stays usable afterwards.
class Embedding {
 public:
  Embedding(const EmbeddingConfig& config, StreamView stream);

  const EmbeddingConfig& config() const noexcept { return config_; }
  StreamView stream() const noexcept { return stream_; }
  /// Orders later work on another stream (the caller orders the switch).
  void set_stream(StreamView stream) noexcept { stream_ = stream; }

  TensorView token_table() const noexcept { return token_table_.view(); }
  TensorView position_table() const noexcept { return pos_table_.view(); }
  TensorView token_grad() const noexcept { return token_grad_.view(); }
  TensorView position_grad() const noexcept { return pos_grad_.view(); }

  /// out[b, t] = token[ids[b, t]] + pos[position_offset + t] (or position_ids[b, t]), then
  /// dropout when training with config().dropout > 0. ids and out on the module's device; out
  /// [B, T, D] of the module's dtype. A training forward with dropout draws the next mask
  /// (offset) and queues it for its backward.
  void forward(const TensorView& ids, const TensorView& out, std::int64_t position_offset = 0,
               const TensorView& position_ids = TensorView{});
  void forward(const TensorView& ids, const TensorView& out, const Positions& positions);
  /// Accumulates into the gradients (see tokemb::backward). dout [B, T, D] of f32, bf16 or f16;
  /// an f64 module takes an f64 dout only (its gradients are f64, summed in f64).
  /// If training forwards with dropout are waiting for their backward, this one takes the
  /// oldest one's mask (first in, first out: forward, forward, backward, backward — gradient
  /// accumulation and pipelining — pairs each backward with its own forward).
  void backward(const TensorView& ids, const TensorView& dout, std::int64_t position_offset = 0,
                const TensorView& position_ids = TensorView{});
  void backward(const TensorView& ids, const TensorView& dout, const Positions& positions);
  /// zero_grad() then backward(), fused: the gradients end up holding exactly this call's
  /// gradients (Options::accumulate = false). Each token-gradient row is written once instead
  /// of zeroed, read back and updated.
  void zero_grad_and_backward(const TensorView& ids, const TensorView& dout,
                              std::int64_t position_offset = 0,
                              const TensorView& position_ids = TensorView{});
  void zero_grad_and_backward(const TensorView& ids, const TensorView& dout,
                              const Positions& positions);

  /// Training mode (the default): forward applies dropout. Evaluation mode: it does not.
  void train(bool on = true) noexcept { training_ = on; }
  void eval() noexcept { training_ = false; }
  bool training() const noexcept { return training_; }
  /// Restarts the mask sequence at (seed, next_offset) and forgets the queued masks.
  void set_dropout_state(std::uint64_t seed, std::uint64_t next_offset);
  /// The offset the next training forward will draw with.
  std::uint64_t next_dropout_offset() const noexcept { return next_offset_; }
  /// Masks of training forwards still waiting for their backward.
  std::size_t pending_dropout_masks() const noexcept { return pending_.size(); }

  /// Graph-safe dropout (for CUDA graphs): the module keeps {seed, offset} in its device's memory
  /// and every training forward and backward reads it when it runs (Dropout::seed_offset), so a
  /// captured step uses whatever the state holds at replay. In this mode there is no queue: a
  /// backward uses the mask of the state as it is, so the step is forward, backward, then
  /// advance_dropout_state() (all stream-ordered and capturable: capture all three and each
  /// replay draws the next mask). Turning it on starts at (config().dropout_seed,
  /// next_dropout_offset()) and clears the queue.
  void set_graph_safe_dropout(bool on);
  bool graph_safe_dropout() const noexcept { return dropout_state_.data() != nullptr; }
  /// Graph-safe mode: adds \p by to the offset in device memory, on the module's stream.
  void advance_dropout_state(std::uint64_t by = 1);
  /// Zeroes both gradients (stream-ordered).
  void zero_grad();
  /// Sizes the backward workspace (deterministic mode, and zero_grad_and_backward in either
  /// mode) for up to \p max_tokens ids (B * T, in [1, 2^31 - 1]) now, so that later backward
  /// calls never allocate (needed before capturing them in a CUDA graph).
  void reserve(std::int64_t max_tokens);

  /// Fill a table from host memory holding V*D (or P*D) elements of the table's dtype.
  void load_token_table(const void* host_data, std::size_t bytes);
  void load_position_table(const void* host_data, std::size_t bytes);
  /// Copy tables and gradients to host vectors of float (converting bf16/f16/f64). Synchronising.
  std::vector<float> token_table_to_host();
  std::vector<float> position_table_to_host();
  std::vector<float> token_grad_to_host();
  std::vector<float> position_grad_to_host();

  /// Blocks until the module's work is done, then raises any recorded out-of-range error.
  void synchronize();
  /// Same as synchronize(): raise (and clear) any recorded out-of-range error.
  void check_errors() { synchronize(); }

 private:
  std::vector<float> to_host(const TensorView& view);
  void load(const TensorView& dst, const void* host_data, std::size_t bytes, const char* what);
  Options options(const Positions& positions) const;
  /// The graph-safe mode's {seed, offset} in memory, or null.
  const std::uint64_t* dropout_state() const noexcept {
    return static_cast<const std::uint64_t*>(dropout_state_.data());
  }
  void run_backward(const TensorView& ids, const TensorView& dout, Options o);

  EmbeddingConfig config_;
  StreamView stream_;
  Buffer token_table_, pos_table_, token_grad_, pos_grad_;
  ErrorMonitor errors_;
  Buffer workspace_;
  bool training_ = true;
  std::uint64_t next_offset_ = 0;
  std::deque<std::uint64_t> pending_;  // offsets of forwards whose backward has not run
  Buffer dropout_state_;               // graph-safe mode: {seed, offset} on the module's device
};

}  // namespace tokemb
