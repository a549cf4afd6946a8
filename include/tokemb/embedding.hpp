#pragma once
/// \file embedding.hpp
/// The module: a token table, a position table and their f32 gradients on one device — the
/// pair of `nn.Embedding`s at the input of a GPT model.

#include <cstdint>
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
  DType dtype = DType::f32;         ///< dtype of the tables and of forward's output
  Device device = Device::cpu();
  std::optional<std::int64_t> padding_idx;  ///< this token's row receives no gradient
  BackwardMode backward_mode = BackwardMode::atomic;
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

  /// out[b, t] = token[ids[b, t]] + pos[position_offset + t] (or position_ids[b, t]).
  /// ids and out on the module's device; out [B, T, D] of the module's dtype.
  void forward(const TensorView& ids, const TensorView& out, std::int64_t position_offset = 0,
               const TensorView& position_ids = TensorView{});
  /// Accumulates into the gradients (see tokemb::backward). dout [B, T, D], any float dtype.
  void backward(const TensorView& ids, const TensorView& dout, std::int64_t position_offset = 0,
                const TensorView& position_ids = TensorView{});
  /// zero_grad() then backward(), fused: the gradients end up holding exactly this call's
  /// gradients (Options::accumulate = false). Each token-gradient row is written once instead
  /// of zeroed, read back and updated.
  void zero_grad_and_backward(const TensorView& ids, const TensorView& dout,
                              std::int64_t position_offset = 0,
                              const TensorView& position_ids = TensorView{});
  /// Zeroes both gradients (stream-ordered).
  void zero_grad();
  /// Sizes the backward workspace (deterministic mode, and zero_grad_and_backward in either
  /// mode) for up to \p max_tokens ids (B * T) now, so that later backward calls never allocate
  /// (needed before capturing them in a CUDA graph).
  void reserve(std::int64_t max_tokens);

  /// Fill a table from host memory holding V*D (or P*D) elements of the table's dtype.
  void load_token_table(const void* host_data, std::size_t bytes);
  void load_position_table(const void* host_data, std::size_t bytes);
  /// Copy tables and gradients to host vectors of float (converting bf16/f16). Synchronising.
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
  Options options(std::int64_t position_offset, const TensorView& position_ids) const;
  void run_backward(const TensorView& ids, const TensorView& dout, const Options& o);

  EmbeddingConfig config_;
  StreamView stream_;
  Buffer token_table_, pos_table_, token_grad_, pos_grad_;
  ErrorMonitor errors_;
  Buffer workspace_;
};

}  // namespace tokemb
