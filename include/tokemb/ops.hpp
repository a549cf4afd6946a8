#pragma once
/// \file ops.hpp
/// Stateless operations on tensor views: the fused forward lookup and the accumulating backward.
///
/// Shapes: ids [..., T]: any number (at least one) of dimensions, positions running along the last
/// (the book's arange(T)); the leading dimensions are the batch, B their product, and row
/// r = b * T + t of a call is the ids' element in row-major order. ids (i32 or i64), position_ids
/// (the ids' shape) and dout ([..., T, D]) may have any strides (TensorView::strided: slices,
/// transposes, broadcasts), read in place; the kernels take a contiguous fast path when the
/// strides allow it. token_table [V, D], pos_table [P, D] (P = context length), out [..., T, D]
/// and the gradient tables are contiguous.
///
/// Dtypes: token_table, pos_table and out share one floating dtype (f32, bf16, f16 or f64);
/// arithmetic is f32 (f64 for f64 tables) with one rounding per element written. dout may have
/// any floating dtype; grad_token and grad_pos share one dtype, f32 or dout's (see backward()).
/// All tensors of one call live on one device. On a CUDA device the work is enqueued on the
/// given stream and the call returns without synchronising or allocating (it can be captured in
/// a CUDA graph); on the CPU it runs at once.

#include <cstddef>
#include <cstdint>
#include <optional>

#include <tokemb/stream.hpp>
#include <tokemb/tensor.hpp>

namespace tokemb {

/// Where out-of-range token ids and positions are recorded. Lives in device memory for CUDA
/// calls and host memory for CPU calls; clear it (clear_error_record) before first use, and
/// read it with check_error_record (or let an ErrorMonitor own one). Among the rows recorded
/// since the last clear it keeps the one with the smallest flat index b * T + t, with the count
/// of all of them. Opaque: its bytes are the library's (they can be copied, cudaMalloc'ed with
/// sizeof(ErrorRecord), or held on the stack for CPU calls).
struct ErrorRecord {
  alignas(8) unsigned char opaque[56];
};

/// Gradient accumulation strategy of backward().
enum class BackwardMode : std::uint8_t {
  /// Scatter-add with atomics, duplicate ids combined on chip first. Fastest; the summation
  /// order (and so the last bits of the result) can differ from run to run. Needs no workspace
  /// when accumulating; overwriting (Options::accumulate = false) uses the sort-based token pass
  /// and needs one (backward_workspace_size).
  atomic,
  /// Sort-based: bitwise-identical gradients run after run for the same inputs. Needs a
  /// workspace (backward_workspace_size).
  deterministic,
};

/// Which elements fused dropout zeroes.
enum class DropoutMode : std::uint8_t {
  /// Each element independently (nn.Dropout).
  element,
  /// Whole token vectors: one draw per (b, t) row, the same for its D elements.
  token,
};

/// Dropout fused into forward (applied to tok + pos) and backward (applied to dout before the
/// scatter), like the book's GPTModel's drop_emb(tok_emb(ids) + pos_emb(arange(T))). Each
/// element is kept with probability 1 - p and scaled by 1 / (1 - p), or set to 0. The mask is
/// never stored: it is a function of (seed, offset, the element's flat index b*T*D + t*D + d)
/// through Philox4x32-10, the same on the CPU and every GPU and for any batch split. Backward
/// regenerates forward's mask from the same (seed, offset): pass it the same Dropout. Use a new
/// offset (e.g. offset + 1) for each new mask.
struct Dropout {
  /// Drop probability in [0, 1] (checked as given: 1 + 1e-9 and -1e-50 are rejected). A double
  /// up to the point where the mask's threshold round(p * 2^24) and the scale are computed. 0
  /// (the default) is off: exactly the result without dropout.
  double p = 0.0;
  std::uint64_t seed = 0;
  std::uint64_t offset = 0;
  DropoutMode mode = DropoutMode::element;
  /// Optional: two uint64 {seed, offset} in memory of the call's device, read when the call runs
  /// instead of seed and offset. A captured CUDA graph then draws a new mask on each replay
  /// when the caller updates that memory between replays (as PyTorch's graph-safe RNG does).
  const std::uint64_t* seed_offset = nullptr;
};

/// Options shared by forward() and backward().
struct Options {
  /// Position of time step t is position_offset + t (decoding with a KV cache). Ignored when
  /// position_ids is given.
  std::int64_t position_offset = 0;
  /// Explicit positions (i32 or i64, the shape of ids, any strides) for packed sequences; empty
  /// for offset + t.
  TensorView position_ids;
  /// Packed sequences without a position tensor (FlashAttention's convention): int32 [S + 1],
  /// non-decreasing from 0 to B * T, indexing the flattened rows. Row i of sequence s
  /// (cu_seqlens[s] <= i < cu_seqlens[s + 1]) has position position_offset + i - cu_seqlens[s],
  /// computed in the kernel. A malformed cu_seqlens is reported like an out-of-range id
  /// (IndexOutOfRange::Kind::sequence), never read out of bounds. Exclusive with position_ids.
  TensorView cu_seqlens;
  /// Fused dropout (off by default).
  Dropout dropout;
  /// Vocabulary-parallel shards (Megatron's VocabParallelEmbedding): the token table (and
  /// grad_token) holds rows [vocab_start, vocab_start + rows) of a global vocabulary. An id in
  /// the shard reads its local row; a valid id outside it contributes no token term in forward
  /// (the output row is the positional term alone, or zeros: the ranks' outputs sum to the
  /// unsharded output) and no token gradient in backward, without an error; an id outside
  /// [0, vocab_size) is out of range, as unsharded. padding_idx is a global id.
  std::int64_t vocab_start = 0;
  /// Number of valid ids in the global vocabulary; 0 means vocab_start + the table's rows. A
  /// padded table (llm.c pads 50257 to 50304 rows) passes the real count: rows at or past it
  /// are never read, never written (not even when overwriting) and get no gradient.
  std::int64_t vocab_size = 0;
  /// This token's row receives no gradient (its forward row is the table row, as in PyTorch).
  std::optional<std::int64_t> padding_idx;
  /// backward() only.
  BackwardMode backward_mode = BackwardMode::atomic;
  /// backward() only. true: add this call's gradients to grad_token and grad_pos. false:
  /// overwrite them with this call's gradients (every row is written; rows no id or position
  /// reaches, and padding_idx's row, become zero): the result of zeroing followed by an
  /// accumulating backward, without the separate zeroing pass. The token gradient table is
  /// written once instead of being zeroed and then read back and updated (both modes sort the
  /// ids for this, so both need a workspace). The atomic mode still zeroes the small position
  /// gradient first and adds to it with atomics.
  bool accumulate = true;
  /// Optional record of out-of-range ids/positions. Such rows are never read or written out of
  /// bounds: forward writes zeros for them and backward skips them. With a record, the first one
  /// is recorded; without one, a CUDA call handles them silently and a CPU call throws
  /// IndexOutOfRange before it writes anything.
  ErrorRecord* error_record = nullptr;
};

/// Caller-provided scratch memory on the tensors' device (CUB style: ask the size first).
struct Workspace {
  void* data = nullptr;
  std::size_t bytes = 0;
};

/// out[b, t, :] = token_table[ids[b, t], :] + pos_table[pos(b, t), :] (pos_table may be an
/// empty view: token embedding only). Throws InvalidArgument on any argument error before
/// touching memory; out must share no byte with any other argument (buffers that merely touch
/// are fine), Options' buffers and the error record included. An empty batch (B = 0 or T = 0)
/// is valid and writes nothing.
void forward(const TensorView& ids, const TensorView& token_table, const TensorView& pos_table,
             const TensorView& out, const Options& options, StreamView stream);

/// Bytes of workspace backward() needs for these arguments (0 for the accumulating atomic mode
/// and on the CPU). Depends only on shapes, dtypes, device and options.
std::size_t backward_workspace_size(const TensorView& ids, const TensorView& dout,
                                    const TensorView& grad_token, const TensorView& grad_pos,
                                    const Options& options);

/// Accumulates gradients (with Options::accumulate false, sets them: as if both were zeroed
/// first):
///   grad_token[ids[b, t], :] += dout[b, t, :]   (except padding_idx)
///   grad_pos[pos(b, t), :]   += dout[b, t, :]   (when grad_pos is not empty)
/// grad_token [V, D] and grad_pos [P, D] share one dtype:
///  * f32, for dout of f32, bf16 or f16: summed in f32;
///  * dout's dtype (the table's dtype when dout is the output's gradient), so that no f32 copy of
///    a bf16 table's gradient is needed. bf16/f16: the sums are formed in f32 and each gradient
///    element is written once with one rounding (accumulating: the old value is read, added in
///    f32 and rounded once). Atomic adds into a 16-bit table cannot round once, so these calls
///    always take the sort-based path (BackwardMode::deterministic), whatever backward_mode
///    says, and need its workspace. f64 (dout f64): summed in f64, either mode.
/// An empty batch (B = 0 or T = 0) adds nothing (with accumulate false: both gradients become
/// zero).
void backward(const TensorView& ids, const TensorView& dout, const TensorView& grad_token,
              const TensorView& grad_pos, const Options& options, Workspace workspace,
              StreamView stream);

/// Sets \p record (device memory for a CUDA device, host memory for the CPU) to "no error".
void clear_error_record(ErrorRecord* record, Device device, StreamView stream);

/// Synchronises \p stream, reads \p record and throws IndexOutOfRange describing the first
/// recorded row if there is one; clears the record before throwing when \p clear is true.
void check_error_record(ErrorRecord* record, Device device, StreamView stream, bool clear = true);

/// An owning error record on one device (device memory for CUDA, host memory for the CPU).
class ErrorMonitor {
 public:
  ErrorMonitor(Device device, StreamView stream);
  ErrorRecord* get() const noexcept { return static_cast<ErrorRecord*>(buffer_.data()); }
  /// See check_error_record.
  void check(StreamView stream, bool clear = true) {
    check_error_record(get(), device_, stream, clear);
  }
  void clear(StreamView stream) { clear_error_record(get(), device_, stream); }

 private:
  Device device_;
  Buffer buffer_;
};

}  // namespace tokemb
