// Fuzzes argument validation of forward, backward and backward_workspace_size with arbitrary
// shapes (rank 0..4, dimensions from 0 to INT64_MAX), dtypes (including values outside the
// enum), devices, null pointers, offsets, position ids, padding indices and modes.
//
// The tensors' data pointers point at a small dummy array: validation must reject every call
// whose arguments are inconsistent before touching memory, so the backends are never run here
// (fuzz_cpu_ops runs them on real memory). Invariants checked:
//  - only tokemb::Error subclasses are thrown (anything else escapes and is reported);
//  - when validation accepts, the normalised parameters are consistent with the views: the
//    shapes agree, B * T * D fits in int64, rows fit in int32, offset + T <= P, padding_idx is
//    normalised into [0, V), pointers are the views' pointers.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <vector>

#include <tokemb/tokemb.hpp>

#include "core/error_record.hpp"
#include "host/io/tensor_bytes.hpp"
#include "host/validate.hpp"

namespace {

using tokemb::Device;
using tokemb::DType;
using tokemb::Shape;
using tokemb::TensorView;

alignas(64) unsigned char g_dummy[256];
tokemb::ErrorRecord g_record;

void check(bool cond, const char* what) {
  if (!cond) {
    std::fprintf(stderr, "fuzz_validate: invariant violated: %s\n", what);
    std::abort();
  }
}

std::int64_t pick_dim(FuzzedDataProvider& in) {
  static constexpr std::int64_t interesting[] = {
      0,
      1,
      2,
      3,
      7,
      64,
      1024,
      std::int64_t{std::numeric_limits<std::int32_t>::max()},
      std::int64_t{std::numeric_limits<std::int32_t>::max()} + 1,
      std::int64_t{1} << 32,
      std::int64_t{1} << 40,
      std::int64_t{1} << 62,
      std::numeric_limits<std::int64_t>::max(),
  };
  switch (in.ConsumeIntegralInRange<int>(0, 3)) {
    case 0:
      return in.PickValueInArray(interesting);
    case 1:
      return in.ConsumeIntegralInRange<std::int64_t>(0, 16);
    case 2:
      return in.ConsumeIntegralInRange<std::int64_t>(0, std::numeric_limits<std::int64_t>::max());
    default:
      return in.ConsumeIntegralInRange<std::int64_t>(0, 4096);
  }
}

Shape pick_shape(FuzzedDataProvider& in, int typical_rank) {
  int rank = typical_rank;
  if (in.ConsumeIntegralInRange<int>(0, 7) == 0) rank = in.ConsumeIntegralInRange<int>(0, 4);
  std::vector<std::int64_t> d;
  for (int i = 0; i < rank; ++i) d.push_back(pick_dim(in));
  return tokemb::detail::make_shape(d);
}

DType pick_dtype(FuzzedDataProvider& in, DType typical) {
  switch (in.ConsumeIntegralInRange<int>(0, 15)) {
    case 0:
      return static_cast<DType>(in.ConsumeIntegral<std::uint8_t>());  // garbage
    case 1:
    case 2:
    case 3:
    case 4:
      return static_cast<DType>(in.ConsumeIntegralInRange<int>(0, 4));
    default:
      return typical;
  }
}

Device pick_device(FuzzedDataProvider& in) {
  switch (in.ConsumeIntegralInRange<int>(0, 31)) {
    case 0:
      return Device::cuda(0);
    case 1:
      return Device::cuda(in.ConsumeIntegral<int>());
    default:
      return Device::cpu();
  }
}

TensorView pick_view(FuzzedDataProvider& in, DType typical_dtype, int typical_rank,
                     bool may_be_empty) {
  TensorView v;
  if (may_be_empty && in.ConsumeIntegralInRange<int>(0, 5) == 0) return v;  // absent
  v.data = in.ConsumeIntegralInRange<int>(0, 15) == 0 ? nullptr : g_dummy;
  v.dtype = pick_dtype(in, typical_dtype);
  v.shape = pick_shape(in, typical_rank);
  v.device = pick_device(in);
  return v;
}

// Common checks on accepted parameters.
void check_rows(const tokemb::detail::RowParams& p, const TensorView& ids,
                const tokemb::Options& o) {
  check(ids.data != nullptr && p.ids == ids.data, "ids pointer");
  check(ids.shape.rank() == 2 && p.B == ids.shape[0] && p.T == ids.shape[1], "B, T from ids");
  check(p.B >= 0 && p.T >= 0 && p.D >= 1 && p.V >= 1 && p.P >= 0,
        "sizes (B and T may be 0: an empty batch)");
  check(p.id_type == DType::i32 || p.id_type == DType::i64, "ids dtype");
  std::int64_t rows = 0, elems = 0;
  check(!__builtin_mul_overflow(p.B, p.T, &rows), "B * T overflows");
  check(rows <= std::numeric_limits<std::int32_t>::max(), "B * T fits int32");
  check(!__builtin_mul_overflow(rows, p.D, &elems), "B * T * D overflows");
  check(p.V <= std::numeric_limits<std::int32_t>::max(), "V fits int32");
  check(p.P <= std::numeric_limits<std::int32_t>::max(), "P fits int32");
  if (p.pos_ids != nullptr) {
    check(p.P > 0, "position ids without a position table");
    check(o.position_ids.shape == ids.shape, "position ids shape");
    check(p.pos_id_type == DType::i32 || p.pos_id_type == DType::i64, "position ids dtype");
  } else if (p.cu_seqlens != nullptr) {
    check(p.P > 0 && p.offset >= 0 && p.offset < p.P, "cu_seqlens: 0 <= offset < P");
  } else if (p.P > 0 && rows > 0) {  // an empty batch reads no position
    check(p.offset >= 0 && p.offset <= p.P - p.T, "offset + T <= P");
  }
  check(p.padding_idx == -1 || (p.padding_idx >= 0 && p.padding_idx < p.V), "padding_idx");
  if (o.padding_idx) {
    const std::int64_t want = *o.padding_idx < 0 ? *o.padding_idx + p.V : *o.padding_idx;
    check(p.padding_idx == want, "padding_idx normalisation");
  }
  check(p.error_record == tokemb::detail::record_data(o.error_record), "error record");
}

bool is_float(DType t) { return t == DType::f32 || t == DType::bf16 || t == DType::f16; }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  const bool is_backward = in.ConsumeBool();

  tokemb::Options o;
  switch (in.ConsumeIntegralInRange<int>(0, 3)) {
    case 0:
      o.position_offset = in.ConsumeIntegral<std::int64_t>();
      break;
    case 1:
      o.position_offset = in.ConsumeIntegralInRange<std::int64_t>(-4, 64);
      break;
    default:
      break;
  }
  if (in.ConsumeIntegralInRange<int>(0, 3) == 0)
    o.position_ids = pick_view(in, DType::i64, 2, false);
  if (in.ConsumeIntegralInRange<int>(0, 3) == 0)
    o.padding_idx = in.ConsumeBool() ? in.ConsumeIntegralInRange<std::int64_t>(-70, 70)
                                     : in.ConsumeIntegral<std::int64_t>();
  o.backward_mode =
      in.ConsumeBool() ? tokemb::BackwardMode::deterministic : tokemb::BackwardMode::atomic;
  if (in.ConsumeIntegralInRange<int>(0, 15) == 0)  // a value outside the enum must be refused
    o.backward_mode = static_cast<tokemb::BackwardMode>(in.ConsumeIntegralInRange<int>(2, 255));
  o.accumulate = in.ConsumeBool();
  if (in.ConsumeBool()) o.error_record = &g_record;
  // Dropout, packed sequences and vocabulary shards: any value must be validated or refused.
  if (in.ConsumeIntegralInRange<int>(0, 3) == 0) {
    const double probs[] = {
        0.0, 0.1, 1.0, -0.5, 1.5, std::numeric_limits<double>::quiet_NaN(), 1.0 + 1e-9, -1e-50};
    o.dropout.p = probs[in.ConsumeIntegralInRange<int>(0, 7)];
    o.dropout.seed = in.ConsumeIntegral<std::uint64_t>();
    o.dropout.mode = static_cast<tokemb::DropoutMode>(in.ConsumeIntegralInRange<int>(0, 2));
  }
  if (in.ConsumeIntegralInRange<int>(0, 3) == 0)
    o.cu_seqlens = pick_view(in, in.ConsumeBool() ? DType::i32 : DType::i64, 1, true);
  if (in.ConsumeIntegralInRange<int>(0, 3) == 0) {
    o.vocab_start = in.ConsumeIntegralInRange<std::int64_t>(-2, 80);
    o.vocab_size = in.ConsumeBool() ? in.ConsumeIntegralInRange<std::int64_t>(-2, 120)
                                    : in.ConsumeIntegral<std::int64_t>();
  }
  const bool sharded = o.vocab_start != 0 || o.vocab_size != 0;

  const TensorView ids = pick_view(in, in.ConsumeBool() ? DType::i32 : DType::i64, 2, false);
  const DType table_type =
      is_backward ? DType::f32 : static_cast<DType>(in.ConsumeIntegralInRange<int>(0, 2));
  const TensorView tok = pick_view(in, table_type, 2, false);
  const TensorView pos = pick_view(in, table_type, 2, true);
  const TensorView out = pick_view(
      in, is_backward ? static_cast<DType>(in.ConsumeIntegralInRange<int>(0, 2)) : table_type, 3,
      false);

  try {
    if (!is_backward) {
      const tokemb::detail::ForwardParams p =
          tokemb::detail::validate_forward(ids, tok, pos, out, o);
      check_rows(p, ids, o);
      check(tok.device == ids.device && out.device == ids.device, "devices");
      // Shards: the rows a call touches are the table's rows below vocab_size.
      check(sharded ? (p.V >= 1 && p.V <= tok.shape[0] && tok.shape[1] == p.D)
                    : tok.shape == (Shape{p.V, p.D}),
            "token table shape");
      check(!p.dropout.enabled() || (o.dropout.p > 0.0 && o.dropout.p <= 1.0), "dropout p");
      check(p.cu_seqlens == nullptr || (o.cu_seqlens.dtype == DType::i32 && p.P > 0 &&
                                        p.num_seqs + 1 == o.cu_seqlens.shape[0]),
            "cu_seqlens");
      check(is_float(p.dtype) && tok.dtype == p.dtype && out.dtype == p.dtype, "forward dtypes");
      check(p.token_table == tok.data && p.out == out.data && p.pos_table == pos.data, "pointers");
      check(out.shape == (Shape{p.B, p.T, p.D}), "out shape");
      if (pos.empty()) {
        check(p.P == 0, "no position table");
      } else {
        check(pos.shape == (Shape{p.P, p.D}) && pos.dtype == p.dtype && pos.device == ids.device,
              "position table");
      }
    } else {
      // Argument order: ids, dout, grad_token, grad_pos.
      const tokemb::detail::BackwardParams p =
          tokemb::detail::validate_backward(ids, out, tok, pos, o);
      check_rows(p, ids, o);
      check(tok.device == ids.device && out.device == ids.device, "devices");
      check((sharded ? (p.V >= 1 && p.V <= tok.shape[0] && tok.shape[1] == p.D)
                     : tok.shape == (Shape{p.V, p.D})) &&
                tok.dtype == DType::f32,
            "grad_token");
      check(out.shape == (Shape{p.B, p.T, p.D}) && is_float(out.dtype), "dout");
      check(p.dout == out.data && p.grad_token == tok.data, "pointers");
      if (pos.empty()) {
        check(p.P == 0 && p.grad_pos == nullptr, "no position gradient");
      } else {
        check(pos.shape == (Shape{p.P, p.D}) && pos.dtype == DType::f32 && pos.device == ids.device,
              "grad_pos");
      }
      check(p.mode == o.backward_mode, "mode");
      check(p.mode == tokemb::BackwardMode::atomic || p.mode == tokemb::BackwardMode::deterministic,
            "an unknown backward mode was accepted");
      check(p.accumulate == o.accumulate, "accumulate");
      // The public size query validates the same way and needs no memory on the CPU.
      if (ids.device.is_cpu())
        check(tokemb::backward_workspace_size(ids, out, tok, pos, o) == 0, "CPU workspace is 0");
    }
  } catch (const tokemb::Error& e) {
    check(e.what() != nullptr && e.what()[0] != '\0', "exception has a message");
  }
  return 0;
}
