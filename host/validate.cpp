// Argument validation shared by forward and backward (see validate.hpp).
#include "host/validate.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <string>
#include <utility>

#include "core/check.hpp"
#include "core/dropout.hpp"
#include "core/error_record.hpp"
#include "host/backend.hpp"

namespace tokemb::detail {

namespace {

// Rows of tables and the number of (b, t) rows must fit in int32: the CUDA kernels keep row
// numbers in 32 bits (element offsets are always 64-bit).
constexpr std::int64_t max_rows = std::numeric_limits<std::int32_t>::max();

// An optional tensor is absent only as an empty view (null pointer, no shape). A null pointer
// that carries a shape is a mistake, not a request to switch the feature off.
bool is_absent(const char* op, const char* name, const TensorView& v) {
  TOKEMB_EXPECTS(v.data != nullptr || v.shape.rank() == 0, InvalidArgument, op, ": ", name,
                 " is a null pointer with shape ", v.shape.str(),
                 "; pass an empty TensorView{} to leave it out");
  return v.data == nullptr;
}

void expect_pointer(const char* op, const char* name, const void* p, std::size_t alignment,
                    Device device) {
  TOKEMB_EXPECTS(reinterpret_cast<std::uintptr_t>(p) % alignment == 0, InvalidArgument, op, ": ",
                 name, " at ", p, " is not aligned to its element size (", alignment, " bytes)");
  check_pointer_location(op, name, p, device);
}

// Tables need every dimension >= 1. Tensors shaped by the batch (ids, position_ids, out,
// dout: the leading dimensions and T) may have zeros in them (an empty batch, as in
// nn.Embedding): \p batch_dims of them may be 0; the pointer must still be a real one. Only
// ids, position_ids and dout may be strided (\p strided_ok): the kernels write tables, outputs
// and gradients, and read the tables, as dense rows.
void expect_tensor(const char* op, const char* name, const TensorView& v, Device device, int rank,
                   const char* layout, int batch_dims = 0, bool strided_ok = false) {
  TOKEMB_EXPECTS(v.data != nullptr, InvalidArgument, op, ": ", name, " is a null pointer");
  TOKEMB_EXPECTS(v.device == device, InvalidArgument, op, ": ", name, " is on ", v.device.str(),
                 " but ids are on ", device.str(), "; all tensors of a call must share one device");
  TOKEMB_EXPECTS(dtype_size(v.dtype) != 0, InvalidArgument, op, ": ", name,
                 " has an unknown dtype value ", static_cast<int>(v.dtype));
  expect_pointer(op, name, v.data, dtype_size(v.dtype), device);
  TOKEMB_EXPECTS(v.shape.rank() == rank, InvalidArgument, op, ": ", name, " has shape ",
                 v.shape.str(), " (rank ", v.shape.rank(), "), expected rank ", rank, " ", layout);
  for (int i = 0; i < rank; ++i) {
    if (i < batch_dims) {
      TOKEMB_EXPECTS(v.shape[i] >= 0, InvalidArgument, op, ": ", name, " has shape ", v.shape.str(),
                     "; the batch dimensions must be >= 0");
    } else {
      TOKEMB_EXPECTS(v.shape[i] > 0, InvalidArgument, op, ": ", name, " has shape ", v.shape.str(),
                     batch_dims > 0 ? "; dimensions past the batch and T must be >= 1"
                                    : "; every dimension must be >= 1");
    }
  }
  (void)v.numel();  // throws InvalidArgument if the element count overflows int64
  if (!strided_ok && !v.is_contiguous()) {
    std::string strides;
    for (int i = 0; i < rank; ++i) strides += (i ? ", " : "") + std::to_string(v.stride(i));
    TOKEMB_FAIL(InvalidArgument, op, ": ", name, " of shape ", v.shape.str(), " has strides [",
                strides, "]; it must be contiguous (only ids, position_ids and dout may be strided)");
  }
  if (!v.is_contiguous()) {  // a stride times its dimension must not overflow int64
    try {
      (void)v.extent();
    } catch (const InvalidArgument& e) {
      TOKEMB_FAIL(InvalidArgument, op, ": ", name, ": ", e.what());
    }
  }
}

// The row layout of the first \p dims dimensions of \p v (core/params.hpp: RowLayout), with
// neighbouring dimensions merged where row-major order allows (stride[i] == stride[i + 1] *
// size[i + 1]) and dimensions of size 1 dropped: contiguous rows become rank 1.
RowLayout make_row_layout(const TensorView& v, int dims) {
  std::int64_t size[Shape::max_rank], stride[Shape::max_rank];
  int n = 0;
  RowLayout l;
  if (v.numel() == 0) return l;  // no row is ever read (and its strides may be meaningless)
  for (int i = 0; i < dims; ++i) {
    if (v.shape[i] == 1) continue;
    std::int64_t span = 0;  // a stride that would overflow here cannot equal stride[n - 1]
    if (n > 0 && !__builtin_mul_overflow(v.stride(i), v.shape[i], &span) &&
        stride[n - 1] == span) {
      size[n - 1] *= v.shape[i];  // cannot overflow: it divides numel()
      stride[n - 1] = v.stride(i);
    } else {
      size[n] = v.shape[i];
      stride[n] = v.stride(i);
      ++n;
    }
  }
  if (n == 0) {  // at most one row
    l.rank = 1;
    l.stride[0] = 0;
    return l;
  }
  l.rank = n;
  for (int i = 0; i < n; ++i) {
    l.size[i] = size[i];
    l.stride[i] = stride[i];
  }
  return l;
}

// \p s with one more dimension \p last (out and dout: ids' shape and D).
Shape with_last(const Shape& s, std::int64_t last) {
  std::int64_t d[Shape::max_rank];
  for (int i = 0; i < s.rank(); ++i) d[i] = s[i];
  d[s.rank()] = last;  // s.rank() < Shape::max_rank: ids' rank was checked
  return Shape(d, s.rank() + 1);
}

void expect_shape(const char* op, const char* name, const TensorView& v, const Shape& expected,
                  const char* layout) {
  TOKEMB_EXPECTS(v.shape == expected, InvalidArgument, op, ": ", name, " has shape ", v.shape.str(),
                 ", expected ", expected.str(), " ", layout);
}

DropoutParams validate_dropout(const char* op, const Dropout& d, Device dev) {
  // !(p >= 0 && p <= 1) also rejects NaN.
  TOKEMB_EXPECTS(d.p >= 0.0 && d.p <= 1.0, InvalidArgument, op, ": dropout.p is ",
                 format_double(d.p), "; it must be in [0, 1]");
  TOKEMB_EXPECTS(d.mode == DropoutMode::element || d.mode == DropoutMode::token, InvalidArgument,
                 op, ": dropout.mode is ", static_cast<int>(d.mode),
                 ", expected DropoutMode::element (0) or DropoutMode::token (1)");
  if (d.seed_offset != nullptr)
    expect_pointer(op, "dropout.seed_offset", d.seed_offset, alignof(std::uint64_t), dev);
  // p = 0: off, exactly the result without dropout, at the same speed.
  return dropout_params(d);
}

// A call must not write memory it also reads (or writes through another argument): the
// kernels read and write in parallel, so the result would depend on the order of the threads
// (and with accumulate = false the gradients are zeroed before seed_offset is read). The rule,
// written once: every buffer a call writes (out; grad_token, grad_pos; the error record) is
// compared with every other buffer of the call, read or written (ids, the tables, dout,
// position_ids, cu_seqlens, dropout.seed_offset, the error record). Byte ranges
// [data, data + bytes) must be disjoint; ranges that merely touch (one ends where the other
// begins, as a caching allocator places them) are fine, and an empty range overlaps nothing.
struct Span {
  const char* name;
  const void* data;
  std::size_t bytes;
};

// A strided view's span is the byte range from its lowest to its highest element.
Span span(const char* name, const TensorView& v) {
  if (v.data == nullptr) return Span{name, nullptr, 0};
  if (v.is_contiguous()) return Span{name, v.data, v.bytes()};
  const auto [first, last] = v.extent();  // checked by expect_tensor
  return Span{name, static_cast<const char*>(v.data) + first,
              static_cast<std::size_t>(last - first)};
}

void expect_disjoint(const char* op, const Span& w, const Span& b) {
  if (w.data == nullptr || b.data == nullptr || w.bytes == 0 || b.bytes == 0) return;
  const auto a0 = reinterpret_cast<std::uintptr_t>(w.data);
  const auto b0 = reinterpret_cast<std::uintptr_t>(b.data);
  // Differences, not ends: a1 = a0 + bytes could wrap around the address space.
  const bool apart = a0 <= b0 ? b0 - a0 >= w.bytes : a0 - b0 >= b.bytes;
  TOKEMB_EXPECTS(apart, InvalidArgument, op, ": ", w.name, " [", w.data, ", +", w.bytes,
                 " bytes) overlaps ", b.name, " [", b.data, ", +", b.bytes,
                 " bytes); memory a call writes must not share bytes with another argument");
}

// \p written against each of \p written (the others) and \p read, plus the options' buffers.
void expect_no_overlap(const char* op, std::initializer_list<Span> written,
                       std::initializer_list<Span> read, const Options& o) {
  const Span opts[] = {
      span("position_ids", o.position_ids),
      span("cu_seqlens", o.cu_seqlens),
      Span{"dropout.seed_offset", o.dropout.seed_offset, 2 * sizeof(std::uint64_t)},
  };
  const Span record{"error_record", o.error_record, sizeof(ErrorRecord)};
  auto against_all = [&](const Span& w) {
    for (const Span& r : read) expect_disjoint(op, w, r);
    for (const Span& r : opts) expect_disjoint(op, w, r);
  };
  for (const Span* w = written.begin(); w != written.end(); ++w) {
    for (const Span* x = w + 1; x != written.end(); ++x) expect_disjoint(op, *w, *x);
    expect_disjoint(op, *w, record);
    against_all(*w);
  }
  against_all(record);  // the record is written too (a bad row), while the inputs are read
}

// What forward and backward share: ids, positions, padding, device.
RowParams validate_rows(const char* op, const TensorView& ids, std::int64_t V, std::int64_t D,
                        std::int64_t P, const Options& o) {
  TOKEMB_EXPECTS(ids.data != nullptr, InvalidArgument, op, ": ids is a null pointer");
  const Device dev = ids.device;
  if (dev.is_cuda()) require_cuda(dev, op);
  const int rank = ids.shape.rank();
  TOKEMB_EXPECTS(rank >= 1 && rank <= RowLayout::max_rank, InvalidArgument, op, ": ids has shape ",
                 ids.shape.str(), " (rank ", rank, "); expected [..., T] of rank 1 to ",
                 RowLayout::max_rank, " (positions run along the last dimension)");
  expect_tensor(op, "ids", ids, dev, rank, "[..., T]", /*batch_dims=*/rank, /*strided_ok=*/true);
  TOKEMB_EXPECTS(is_index(ids.dtype), InvalidArgument, op, ": ids has dtype ",
                 dtype_name(ids.dtype), ", expected i32 or i64");
  RowParams r;
  r.ids = ids.data;
  r.id_type = ids.dtype;
  r.ids_layout = make_row_layout(ids, rank);
  r.B = 1;
  for (int i = 0; i + 1 < rank; ++i) r.B *= ids.shape[i];  // a factor of numel (or 0): no overflow
  r.T = ids.shape[rank - 1];
  r.D = D;
  TOKEMB_EXPECTS(V <= max_rows, InvalidArgument, op, ": vocabulary size ", V,
                 " exceeds the supported maximum ", max_rows);
  // Shards: the table's rows are global ids [vocab_start, vocab_start + V); of those, the ones
  // below vocab_size hold valid ids and are the rows this call may touch.
  TOKEMB_EXPECTS(o.vocab_start >= 0, InvalidArgument, op, ": vocab_start ", o.vocab_start,
                 " is negative");
  TOKEMB_EXPECTS(o.vocab_size >= 0, InvalidArgument, op, ": vocab_size ", o.vocab_size,
                 " is negative (0: vocab_start + the table's rows)");
  TOKEMB_EXPECTS(o.vocab_start <= max_rows, InvalidArgument, op, ": vocab_start ", o.vocab_start,
                 " exceeds the supported maximum ", max_rows);
  const std::int64_t vocab = o.vocab_size > 0 ? o.vocab_size : o.vocab_start + V;
  TOKEMB_EXPECTS(o.vocab_start < vocab, InvalidArgument, op, ": vocab_start ", o.vocab_start,
                 " is not below vocab_size ", vocab, ": the shard must hold at least one valid id");
  r.V = std::min(V, vocab - o.vocab_start);
  r.vocab_start = o.vocab_start;
  r.vocab_valid = vocab;
  r.P = P;
  TOKEMB_EXPECTS(P <= max_rows, InvalidArgument, op, ": context length ", P,
                 " exceeds the supported maximum ", max_rows);
  TOKEMB_EXPECTS(ids.numel() <= max_rows, InvalidArgument, op, ": B * T = ", ids.numel(),
                 " rows exceeds the supported maximum ", max_rows, " per call");
  std::int64_t total = 0;
  TOKEMB_EXPECTS(!__builtin_mul_overflow(ids.numel(), D, &total), InvalidArgument, op,
                 ": B * T * D = ", ids.numel(), " * ", D, " overflows int64");

  const bool has_cu_seqlens = !is_absent(op, "cu_seqlens", o.cu_seqlens);
  if (has_cu_seqlens) {
    TOKEMB_EXPECTS(P > 0, InvalidArgument, op,
                   ": cu_seqlens given but there is no position table (positions are off)");
    TOKEMB_EXPECTS(is_absent(op, "position_ids", o.position_ids), InvalidArgument, op,
                   ": both position_ids and cu_seqlens are given; pass one of them");
    expect_tensor(op, "cu_seqlens", o.cu_seqlens, dev, 1, "[S + 1]");
    TOKEMB_EXPECTS(o.cu_seqlens.dtype == DType::i32, InvalidArgument, op, ": cu_seqlens has dtype ",
                   dtype_name(o.cu_seqlens.dtype), ", expected i32");
    TOKEMB_EXPECTS(o.cu_seqlens.shape[0] >= 2, InvalidArgument, op, ": cu_seqlens has shape ",
                   o.cu_seqlens.shape.str(), "; it needs S + 1 >= 2 entries (0 and B * T)");
    TOKEMB_EXPECTS(o.cu_seqlens.shape[0] - 1 <= max_rows, InvalidArgument, op, ": cu_seqlens has ",
                   o.cu_seqlens.shape[0], " entries; at most ", max_rows, " sequences per call");
    // Every sequence's first row has position position_offset: bounding it by the table here
    // also keeps position_offset + (r - cu_seqlens[s]) far from overflowing int64.
    TOKEMB_EXPECTS(o.position_offset >= 0 && o.position_offset < P, InvalidArgument, op,
                   ": position_offset ", o.position_offset,
                   " is outside the position table; with cu_seqlens it must be in [0, ", P,
                   ") (each sequence starts at position position_offset)");
    r.cu_seqlens = static_cast<const std::int32_t*>(o.cu_seqlens.data);
    r.num_seqs = o.cu_seqlens.shape[0] - 1;
    r.offset = o.position_offset;
  } else if (!is_absent(op, "position_ids", o.position_ids)) {
    TOKEMB_EXPECTS(P > 0, InvalidArgument, op,
                   ": position_ids given but there is no position table (positions are off)");
    expect_tensor(op, "position_ids", o.position_ids, dev, o.position_ids.shape.rank(),
                  "(the shape of ids)", /*batch_dims=*/o.position_ids.shape.rank(),
                  /*strided_ok=*/true);
    TOKEMB_EXPECTS(is_index(o.position_ids.dtype), InvalidArgument, op, ": position_ids has dtype ",
                   dtype_name(o.position_ids.dtype), ", expected i32 or i64");
    expect_shape(op, "position_ids", o.position_ids, ids.shape, "(the shape of ids)");
    r.pos_ids = o.position_ids.data;
    r.pos_id_type = o.position_ids.dtype;
    r.pos_layout = make_row_layout(o.position_ids, rank);
  } else if (P > 0) {
    // Offset positions are known on the host: check them now rather than per row.
    // An empty batch reads no position (as pos_emb(arange(offset, offset + 0)) in PyTorch).
    if (r.rows() > 0 && (o.position_offset < 0 || o.position_offset > P - r.T)) {
      const std::int64_t bad_t =
          o.position_offset < 0 ? 0 : std::max<std::int64_t>(0, P - o.position_offset);
      const std::int64_t bad = o.position_offset + bad_t;
      // Negating the offset could overflow (INT64_MIN): compare instead.
      const std::int64_t n_bad_t = o.position_offset < 0
                                       ? (o.position_offset <= -r.T ? r.T : -o.position_offset)
                                       : r.T - bad_t;
      TOKEMB_THROW(IndexOutOfRange(
          format_message(op, ": position ", bad, " (position_offset ", o.position_offset, " + t ",
                         bad_t, ", T = ", r.T,
                         ") is outside the position table; valid positions are [0, ", P, ")"),
          IndexOutOfRange::Kind::position, bad, 0, bad_t, P,
          static_cast<std::uint64_t>(n_bad_t * r.B)));
    }
    r.offset = o.position_offset;
  }
  if (o.padding_idx) {  // a global id; -1 when another shard holds it
    const std::int64_t p = *o.padding_idx;
    TOKEMB_EXPECTS(p >= -vocab && p < vocab, InvalidArgument, op, ": padding_idx ", p,
                   " is outside the valid range [", -vocab, ", ", vocab, ")");
    const std::int64_t local = (p < 0 ? p + vocab : p) - o.vocab_start;
    r.padding_idx = local >= 0 && local < r.V ? local : -1;
  }
  if (o.error_record != nullptr)
    expect_pointer(op, "error_record", o.error_record, alignof(ErrorRecord), dev);
  r.error_record = detail::record_data(o.error_record);
  r.dropout = validate_dropout(op, o.dropout, dev);
  return r;
}

}  // namespace

ForwardParams validate_forward(const TensorView& ids, const TensorView& token_table,
                               const TensorView& pos_table, const TensorView& out,
                               const Options& options) {
  const char* op = "tokemb::forward";
  TOKEMB_EXPECTS(ids.data != nullptr, InvalidArgument, op, ": ids is a null pointer");
  const Device dev = ids.device;
  if (dev.is_cuda()) require_cuda(dev, op);  // before anything asks the CUDA driver
  expect_tensor(op, "token_table", token_table, dev, 2, "[V, D]");
  TOKEMB_EXPECTS(is_floating(token_table.dtype), InvalidArgument, op, ": token_table has dtype ",
                 dtype_name(token_table.dtype), ", expected f32, bf16, f16 or f64");
  const std::int64_t V = token_table.shape[0], D = token_table.shape[1];
  std::int64_t P = 0;
  if (!is_absent(op, "pos_table", pos_table)) {
    expect_tensor(op, "pos_table", pos_table, dev, 2, "[P, D]");
    TOKEMB_EXPECTS(pos_table.dtype == token_table.dtype, InvalidArgument, op,
                   ": pos_table has dtype ", dtype_name(pos_table.dtype), " but token_table has ",
                   dtype_name(token_table.dtype));
    TOKEMB_EXPECTS(pos_table.shape[1] == D, InvalidArgument, op, ": pos_table has shape ",
                   pos_table.shape.str(), " but token_table has D = ", D);
    P = pos_table.shape[0];
  }
  ForwardParams p;
  static_cast<RowParams&>(p) = validate_rows(op, ids, V, D, P, options);
  const int rank = ids.shape.rank() + 1;
  expect_tensor(op, "out", out, dev, rank, "[..., T, D] (ids' shape and D)", /*batch_dims=*/rank - 1);
  expect_shape(op, "out", out, with_last(ids.shape, D), "(ids' shape and D)");
  TOKEMB_EXPECTS(out.dtype == token_table.dtype, InvalidArgument, op, ": out has dtype ",
                 dtype_name(out.dtype), " but the tables have ", dtype_name(token_table.dtype));
  expect_no_overlap(
      op, {span("out", out)},
      {span("ids", ids), span("token_table", token_table), span("pos_table", pos_table)}, options);
  p.token_table = token_table.data;
  p.pos_table = pos_table.data;
  p.out = out.data;
  p.dtype = token_table.dtype;
  return p;
}

BackwardParams validate_backward(const TensorView& ids, const TensorView& dout,
                                 const TensorView& grad_token, const TensorView& grad_pos,
                                 const Options& options) {
  const char* op = "tokemb::backward";
  TOKEMB_EXPECTS(ids.data != nullptr, InvalidArgument, op, ": ids is a null pointer");
  const Device dev = ids.device;
  if (dev.is_cuda()) require_cuda(dev, op);  // before anything asks the CUDA driver
  expect_tensor(op, "grad_token", grad_token, dev, 2, "[V, D]");
  TOKEMB_EXPECTS(is_floating(grad_token.dtype), InvalidArgument, op, ": grad_token has dtype ",
                 dtype_name(grad_token.dtype), ", expected f32, bf16, f16 or f64");
  const std::int64_t V = grad_token.shape[0], D = grad_token.shape[1];
  std::int64_t P = 0;
  if (!is_absent(op, "grad_pos", grad_pos)) {
    expect_tensor(op, "grad_pos", grad_pos, dev, 2, "[P, D]");
    TOKEMB_EXPECTS(grad_pos.dtype == grad_token.dtype, InvalidArgument, op,
                   ": grad_pos has dtype ", dtype_name(grad_pos.dtype), " but grad_token has ",
                   dtype_name(grad_token.dtype), "; the two gradients share one dtype");
    TOKEMB_EXPECTS(grad_pos.shape[1] == D, InvalidArgument, op, ": grad_pos has shape ",
                   grad_pos.shape.str(), " but grad_token has D = ", D);
    P = grad_pos.shape[0];
  }
  BackwardParams p;
  static_cast<RowParams&>(p) = validate_rows(op, ids, V, D, P, options);
  const int rank = ids.shape.rank() + 1;
  expect_tensor(op, "dout", dout, dev, rank, "[..., T, D] (ids' shape and D)",
                /*batch_dims=*/rank - 1, /*strided_ok=*/true);
  expect_shape(op, "dout", dout, with_last(ids.shape, D), "(ids' shape and D)");
  TOKEMB_EXPECTS(is_floating(dout.dtype), InvalidArgument, op, ": dout has dtype ",
                 dtype_name(dout.dtype), ", expected f32, bf16, f16 or f64");
  // Gradients are f32 or dout's dtype; f64 sums need f64 gradients (an f32 one would drop the
  // precision the caller asked for).
  TOKEMB_EXPECTS(
      grad_token.dtype == dout.dtype || (grad_token.dtype == DType::f32 && dout.dtype != DType::f64),
      InvalidArgument, op, ": grad_token has dtype ", dtype_name(grad_token.dtype), " and dout ",
      dtype_name(dout.dtype), "; the gradients must be f32 or dout's dtype",
      dout.dtype == DType::f64 ? " (f64 for an f64 dout)" : "");
  expect_no_overlap(op, {span("grad_token", grad_token), span("grad_pos", grad_pos)},
                    {span("ids", ids), span("dout", dout)}, options);
  p.dout = dout.data;
  p.dout_type = dout.dtype;
  p.dout_layout = make_row_layout(dout, rank - 1);
  p.dout_col_stride = dout.stride(rank - 1);
  p.grad_token = grad_token.data;
  p.grad_pos = grad_pos.data;
  p.grad_type = grad_token.dtype;
  TOKEMB_EXPECTS(options.backward_mode == BackwardMode::atomic ||
                     options.backward_mode == BackwardMode::deterministic,
                 InvalidArgument, op, ": options.backward_mode is ",
                 static_cast<int>(options.backward_mode),
                 ", expected BackwardMode::atomic (0) or BackwardMode::deterministic (1)");
  p.mode = effective_backward_mode(options.backward_mode, p.grad_type);
  p.accumulate = options.accumulate;
  return p;
}

}  // namespace tokemb::detail
