// Fuzzes the CPU backend through the public forward() and backward() with small random shapes,
// every dtype combination, arbitrary token ids and positions (any int32/int64 value, offsets and
// explicit position ids), padding indices and error records, on real memory surrounded by
// canary guards.
//
// The harness computes what the call must do and checks, bit for bit:
//  - nothing outside the destination tensors is written (guards), inputs are never written;
//  - a rejected call (InvalidArgument, IndexOutOfRange) writes nothing at all and reports the
//    right offending value, (b, t), limit and count;
//  - forward: valid rows are token + position rounded once to the table dtype, bad rows are 0;
//  - backward: valid rows are added to their token / position gradient rows (padding_idx's
//    token row excepted), bad rows are skipped;
//  - the error record keeps the smallest bad flat index, its value and the running count.
// Table and gradient values are small dyadic rationals (k / 16), so every sum is exact and the
// result does not depend on the summation order.
#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <optional>
#include <vector>

#include <tokemb/tokemb.hpp>

#include "core/error_record.hpp"

namespace {

using tokemb::bf16_t;
using tokemb::Device;
using tokemb::DType;
using tokemb::f16_t;
using tokemb::Shape;
using tokemb::TensorView;

[[noreturn]] void fail(const char* what, long long a = 0, long long b = 0) {
  std::fprintf(stderr, "fuzz_cpu_ops: %s (%lld, %lld)\n", what, a, b);
  std::abort();
}
void check(bool cond, const char* what, long long a = 0, long long b = 0) {
  if (!cond) fail(what, a, b);
}

constexpr std::size_t kGuard = 64;

// A tensor in the middle of a byte vector, with canary bytes on both sides. \p shift moves the
// tensor by whole elements off the 16-byte alignment of the storage.
struct Guarded {
  std::vector<unsigned char> storage;
  std::size_t offset = 0, bytes = 0;
  DType dtype = DType::f32;
  Shape shape;

  Guarded() = default;
  Guarded(DType t, Shape s, std::size_t shift_elems, unsigned char seed) : dtype(t), shape(s) {
    bytes = static_cast<std::size_t>(s.numel()) * tokemb::dtype_size(t);
    offset = kGuard + shift_elems * tokemb::dtype_size(t);
    storage.resize(offset + bytes + kGuard);
    for (std::size_t i = 0; i < storage.size(); ++i)
      storage[i] = static_cast<unsigned char>(seed * 31u + i * 7u + 0xA5u);
  }
  void* ptr() { return storage.data() + offset; }
  TensorView view() { return TensorView(ptr(), dtype, shape, Device::cpu()); }
};

// Element i of a floating tensor as float / from float.
float get(const Guarded& g, std::int64_t i) {
  const unsigned char* p = g.storage.data() + g.offset;
  switch (g.dtype) {
    case DType::f32: {
      float x;
      std::memcpy(&x, p + i * 4, 4);
      return x;
    }
    case DType::bf16: {
      bf16_t x;
      std::memcpy(&x, p + i * 2, 2);
      return x.to_float();
    }
    default: {
      f16_t x;
      std::memcpy(&x, p + i * 2, 2);
      return x.to_float();
    }
  }
}
void put(Guarded& g, std::int64_t i, float v) {
  unsigned char* p = g.storage.data() + g.offset;
  switch (g.dtype) {
    case DType::f32:
      std::memcpy(p + i * 4, &v, 4);
      break;
    case DType::bf16: {
      const bf16_t x = bf16_t::from_float(v);
      std::memcpy(p + i * 2, &x, 2);
      break;
    }
    default: {
      const f16_t x = f16_t::from_float(v);
      std::memcpy(p + i * 2, &x, 2);
      break;
    }
  }
}
// The bytes of from_float(v) in dtype t (what a correctly rounded result looks like).
void encode(DType t, float v, unsigned char* dst) {
  if (t == DType::f32) {
    std::memcpy(dst, &v, 4);
  } else if (t == DType::bf16) {
    const bf16_t x = bf16_t::from_float(v);
    std::memcpy(dst, &x, 2);
  } else {
    const f16_t x = f16_t::from_float(v);
    std::memcpy(dst, &x, 2);
  }
}

std::int64_t get_index(const Guarded& g, std::int64_t i) {
  const unsigned char* p = g.storage.data() + g.offset;
  if (g.dtype == DType::i32) {
    std::int32_t x;
    std::memcpy(&x, p + i * 4, 4);
    return x;
  }
  std::int64_t x;
  std::memcpy(&x, p + i * 8, 8);
  return x;
}
void put_index(Guarded& g, std::int64_t i, std::int64_t v) {
  unsigned char* p = g.storage.data() + g.offset;
  if (g.dtype == DType::i32) {
    const auto x = static_cast<std::int32_t>(v);
    std::memcpy(p + i * 4, &x, 4);
  } else {
    std::memcpy(p + i * 8, &v, 8);
  }
}

std::int64_t pick_index(FuzzedDataProvider& in, DType t, std::int64_t limit) {
  switch (in.ConsumeIntegralInRange<int>(0, 9)) {
    case 0:
      return t == DType::i32 ? std::int64_t{in.ConsumeIntegral<std::int32_t>()}
                             : in.ConsumeIntegral<std::int64_t>();
    case 1: {
      static constexpr std::int64_t edge[] = {
          -1, std::numeric_limits<std::int32_t>::min(), std::numeric_limits<std::int32_t>::max(),
          std::numeric_limits<std::int64_t>::min(), std::numeric_limits<std::int64_t>::max()};
      const std::int64_t v = in.PickValueInArray(edge);
      if (t == DType::i32 && (v < std::numeric_limits<std::int32_t>::min() ||
                              v > std::numeric_limits<std::int32_t>::max()))
        return -1;
      return v;
    }
    case 2:
      return limit + in.ConsumeIntegralInRange<std::int64_t>(0, 3);  // just past the end
    default:
      return limit > 0 ? in.ConsumeIntegralInRange<std::int64_t>(0, limit - 1) : 0;
  }
}

float small_value(FuzzedDataProvider& in) {
  return static_cast<float>(in.ConsumeIntegral<std::int8_t>()) / 16.0f;
}

struct Expected {
  // What validation must say (none of these: the call is valid).
  bool invalid = false;       // InvalidArgument
  bool offset_error = false;  // IndexOutOfRange raised on the host for position_offset
  std::int64_t off_value = 0, off_t = 0, off_count = 0;
  // Per row: 0 valid, 1 bad token, 2 bad position; token and position of valid rows.
  std::vector<int> kind;
  std::vector<std::int64_t> token, position, bad_value;
  std::uint64_t bad = 0;
  std::int64_t first_bad = -1;
};

void check_record_matches(const tokemb::detail::ErrorRecordData& rec, const Expected& e,
                          std::int64_t T, std::int64_t V, std::int64_t P,
                          const tokemb::detail::ErrorRecordData& before) {
  check(rec.count == before.count + e.bad, "record count", static_cast<long long>(rec.count),
        static_cast<long long>(before.count + e.bad));
  const bool replaced =
      e.first_bad >= 0 && static_cast<unsigned long long>(e.first_bad) < before.first_key;
  if (!replaced) {
    check(std::memcmp(&rec.first_key, &before.first_key, sizeof rec.first_key) == 0 &&
              rec.value == before.value && rec.batch == before.batch && rec.time == before.time &&
              rec.limit == before.limit && rec.kind == before.kind,
          "record's first row changed although no smaller bad row was seen");
    return;
  }
  const auto r = static_cast<std::size_t>(e.first_bad);
  check(rec.first_key == static_cast<unsigned long long>(e.first_bad), "record first_key",
        static_cast<long long>(rec.first_key), e.first_bad);
  check(rec.value == e.bad_value[r], "record value", rec.value, e.bad_value[r]);
  check(rec.batch == e.first_bad / T && rec.time == e.first_bad % T, "record (b, t)", rec.batch,
        rec.time);
  check(rec.kind == e.kind[r], "record kind", rec.kind, e.kind[r]);
  check(rec.limit == (e.kind[r] == 1 ? V : P), "record limit", rec.limit, e.kind[r] == 1 ? V : P);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  const std::int64_t B = in.ConsumeIntegralInRange<std::int64_t>(1, 6);
  const std::int64_t T = in.ConsumeIntegralInRange<std::int64_t>(1, 12);
  const std::int64_t D = in.ConsumeIntegralInRange<std::int64_t>(1, 40);
  const std::int64_t V = in.ConsumeIntegralInRange<std::int64_t>(1, 48);
  const std::int64_t P = in.ConsumeIntegralInRange<std::int64_t>(0, 24);
  const auto table_type = static_cast<DType>(in.ConsumeIntegralInRange<int>(0, 2));
  const auto dout_type = static_cast<DType>(in.ConsumeIntegralInRange<int>(0, 2));
  const DType id_type = in.ConsumeBool() ? DType::i32 : DType::i64;
  const DType pos_id_type = in.ConsumeBool() ? DType::i32 : DType::i64;
  const int op = in.ConsumeIntegralInRange<int>(0, 2);  // forward, backward, both
  const auto shift = [&] { return static_cast<std::size_t>(in.ConsumeIntegralInRange<int>(0, 1)); };

  tokemb::Options o;
  const bool explicit_positions = in.ConsumeIntegralInRange<int>(0, 3) == 0;
  if (!explicit_positions) {
    switch (in.ConsumeIntegralInRange<int>(0, 7)) {
      case 0:
        o.position_offset = in.ConsumeIntegral<std::int64_t>();
        break;
      case 1:
        o.position_offset = in.ConsumeIntegralInRange<std::int64_t>(-3, 30);
        break;
      default:
        o.position_offset = P > T ? in.ConsumeIntegralInRange<std::int64_t>(0, P - T) : 0;
        break;
    }
  }
  if (in.ConsumeIntegralInRange<int>(0, 3) == 0)
    o.padding_idx = in.ConsumeIntegralInRange<int>(0, 7) == 0
                        ? in.ConsumeIntegral<std::int64_t>()
                        : in.ConsumeIntegralInRange<std::int64_t>(-V - 2, V + 1);
  o.backward_mode =
      in.ConsumeBool() ? tokemb::BackwardMode::deterministic : tokemb::BackwardMode::atomic;
  o.accumulate = in.ConsumeIntegralInRange<int>(0, 3) != 0;      // overwrite one time in four
  const int record_mode = in.ConsumeIntegralInRange<int>(0, 2);  // none, cleared, pre-filled

  Guarded ids(id_type, Shape{B, T}, shift(), 1);
  Guarded pos_ids(pos_id_type, Shape{B, T}, shift(), 2);
  Guarded tok(table_type, Shape{V, D}, shift(), 3);
  Guarded pos = P > 0 ? Guarded(table_type, Shape{P, D}, shift(), 4) : Guarded();
  Guarded out(table_type, Shape{B, T, D}, shift(), 5);
  Guarded dout(dout_type, Shape{B, T, D}, shift(), 6);
  Guarded gtok(DType::f32, Shape{V, D}, shift(), 7);
  Guarded gpos = P > 0 ? Guarded(DType::f32, Shape{P, D}, shift(), 8) : Guarded();

  for (std::int64_t i = 0; i < B * T; ++i) put_index(ids, i, pick_index(in, id_type, V));
  if (explicit_positions)
    for (std::int64_t i = 0; i < B * T; ++i) put_index(pos_ids, i, pick_index(in, pos_id_type, P));
  for (std::int64_t i = 0; i < V * D; ++i) put(tok, i, small_value(in));
  for (std::int64_t i = 0; i < P * D; ++i) put(pos, i, small_value(in));
  for (std::int64_t i = 0; i < B * T * D; ++i) put(dout, i, small_value(in));
  for (std::int64_t i = 0; i < V * D; ++i) put(gtok, i, small_value(in));
  for (std::int64_t i = 0; i < P * D; ++i) put(gpos, i, small_value(in));
  if (explicit_positions) o.position_ids = pos_ids.view();

  // The public record is opaque; the fuzzer checks its fields through the library's layout.
  tokemb::ErrorRecord record_storage;
  tokemb::detail::ErrorRecordData& record = *tokemb::detail::record_data(&record_storage);
  tokemb::clear_error_record(&record_storage, Device::cpu(), tokemb::StreamView::legacy_default());
  if (record_mode == 2) {  // a record that already holds an error from an earlier call
    record.count = in.ConsumeIntegralInRange<unsigned long long>(1, 1000);
    record.first_key = in.ConsumeIntegralInRange<unsigned long long>(0, 2 * B * T);
    record.value = -12345;
    record.batch = 0;
    record.time = static_cast<std::int64_t>(record.first_key);
    record.limit = 1;
    record.kind = 1;
  }
  if (record_mode != 0) o.error_record = &record_storage;

  // ---- what must happen -------------------------------------------------------------------
  Expected e;
  if (explicit_positions && P == 0) e.invalid = true;
  if (o.padding_idx && (*o.padding_idx < -V || *o.padding_idx >= V)) e.invalid = true;
  if (!explicit_positions && P > 0 && (o.position_offset < 0 || o.position_offset > P - T)) {
    e.offset_error = true;
    e.off_t = o.position_offset < 0 ? 0 : std::max<std::int64_t>(0, P - o.position_offset);
    e.off_value = o.position_offset + e.off_t;
    // Rows t with offset + t outside [0, P), per sequence (no negation: offset may be INT64_MIN).
    e.off_count =
        (o.position_offset < 0 ? (o.position_offset < -T ? T : -o.position_offset) : T - e.off_t) *
        B;
  }
  const std::int64_t padding =
      o.padding_idx ? (*o.padding_idx < 0 ? *o.padding_idx + V : *o.padding_idx) : -1;
  const auto rows = static_cast<std::size_t>(B * T);
  e.kind.assign(rows, 0);
  e.token.assign(rows, 0);
  e.position.assign(rows, -1);
  e.bad_value.assign(rows, 0);
  for (std::int64_t r = 0; r < B * T; ++r) {
    const auto i = static_cast<std::size_t>(r);
    const std::int64_t t = get_index(ids, r);
    e.token[i] = t;
    if (t < 0 || t >= V) {
      e.kind[i] = 1;
      e.bad_value[i] = t;
    } else if (P > 0 && !e.offset_error) {
      const std::int64_t p = explicit_positions ? get_index(pos_ids, r) : o.position_offset + r % T;
      e.position[i] = p;
      if (p < 0 || p >= P) {
        e.kind[i] = 2;
        e.bad_value[i] = p;
      }
    }
    if (e.kind[i] != 0) {
      ++e.bad;
      if (e.first_bad < 0) e.first_bad = r;
    }
  }

  // ---- run ------------------------------------------------------------------------------
  const Guarded ids0 = ids, pos_ids0 = pos_ids, tok0 = tok, pos0 = pos, dout0 = dout;
  const Guarded out0 = out, gtok0 = gtok, gpos0 = gpos;
  const tokemb::detail::ErrorRecordData record0 = record;
  const TensorView pos_view = P > 0 ? pos.view() : TensorView{};
  const TensorView gpos_view = P > 0 ? gpos.view() : TensorView{};
  const auto stream = tokemb::StreamView::legacy_default();
  const bool run_forward = op != 1, run_backward = op != 0;

  bool threw = false;
  try {
    if (run_forward) tokemb::forward(ids.view(), tok.view(), pos_view, out.view(), o, stream);
    if (run_backward) {
      check(
          tokemb::backward_workspace_size(ids.view(), dout.view(), gtok.view(), gpos_view, o) == 0,
          "CPU workspace must be 0");
      tokemb::backward(ids.view(), dout.view(), gtok.view(), gpos_view, o, tokemb::Workspace{},
                       stream);
    }
  } catch (const tokemb::InvalidArgument& ex) {
    threw = true;
    check(e.invalid, "unexpected InvalidArgument");
    check(std::strlen(ex.what()) > 0, "empty message");
  } catch (const tokemb::IndexOutOfRange& ex) {
    threw = true;
    if (e.offset_error && ex.limit() == P && ex.kind() == tokemb::IndexOutOfRange::Kind::position &&
        ex.value() == e.off_value && ex.time() == e.off_t && ex.batch() == 0) {
      check(ex.count() == static_cast<std::uint64_t>(e.off_count), "offset error count",
            static_cast<long long>(ex.count()), e.off_count);
    } else {
      // The no-record path: the first bad row of the first call.
      check(!e.invalid && !e.offset_error, "IndexOutOfRange instead of the validation error");
      check(o.error_record == nullptr && e.bad > 0,
            "IndexOutOfRange without bad rows or with a record");
      const auto r = static_cast<std::size_t>(e.first_bad);
      check(ex.value() == e.bad_value[r] && ex.batch() == e.first_bad / T &&
                ex.time() == e.first_bad % T,
            "IndexOutOfRange names the wrong row", ex.value(), e.bad_value[r]);
      check(static_cast<int>(ex.kind()) == e.kind[r], "IndexOutOfRange kind");
      check(ex.limit() == (e.kind[r] == 1 ? V : P), "IndexOutOfRange limit");
      check(ex.count() == e.bad, "IndexOutOfRange count", static_cast<long long>(ex.count()),
            static_cast<long long>(e.bad));
    }
  }

  // Inputs are never written, whatever happened.
  check(ids.storage == ids0.storage && pos_ids.storage == pos_ids0.storage, "ids written");
  check(tok.storage == tok0.storage && pos.storage == pos0.storage, "tables written");
  check(dout.storage == dout0.storage, "dout written");

  if (threw) {
    check(out.storage == out0.storage, "out written by a rejected call");
    check(gtok.storage == gtok0.storage && gpos.storage == gpos0.storage,
          "gradients written by a rejected call");
    check(std::memcmp(&record, &record0, sizeof record) == 0, "record written by a rejected call");
    return 0;
  }
  check(!e.invalid && !e.offset_error, "validation error not raised");
  check(o.error_record != nullptr || e.bad == 0, "bad rows without a record did not throw");

  // Guards.
  auto guards_ok = [](const Guarded& a, const Guarded& b) {
    if (a.storage.empty() || b.storage.empty()) return a.storage.size() == b.storage.size();
    return a.storage.size() == b.storage.size() &&
           std::memcmp(a.storage.data(), b.storage.data(), a.offset) == 0 &&
           std::memcmp(a.storage.data() + a.offset + a.bytes, b.storage.data() + b.offset + b.bytes,
                       a.storage.size() - a.offset - a.bytes) == 0;
  };
  check(guards_ok(out, out0), "write before/after out");
  check(guards_ok(gtok, gtok0), "write before/after grad_token");
  check(guards_ok(gpos, gpos0), "write before/after grad_pos");

  if (run_forward) {
    const std::size_t es = tokemb::dtype_size(table_type);
    std::vector<unsigned char> want(es);
    for (std::int64_t r = 0; r < B * T; ++r) {
      const auto i = static_cast<std::size_t>(r);
      for (std::int64_t d = 0; d < D; ++d) {
        float v = 0.0f;
        if (e.kind[i] == 0) {
          v = get(tok, e.token[i] * D + d);
          if (P > 0) v += get(pos, e.position[i] * D + d);
        }
        encode(table_type, v, want.data());
        check(
            std::memcmp(out.storage.data() + out.offset + static_cast<std::size_t>(r * D + d) * es,
                        want.data(), es) == 0,
            "forward output row", r, d);
      }
    }
  } else {
    check(out.storage == out0.storage, "out written by backward");
  }

  if (run_backward) {
    std::vector<double> want_tok(static_cast<std::size_t>(V * D)),
        want_pos(static_cast<std::size_t>(P * D));
    // Accumulate adds to what was there; overwrite starts from zero.
    for (std::int64_t i = 0; i < V * D; ++i)
      want_tok[static_cast<std::size_t>(i)] = o.accumulate ? get(gtok0, i) : 0.0;
    for (std::int64_t i = 0; i < P * D; ++i)
      want_pos[static_cast<std::size_t>(i)] = o.accumulate ? get(gpos0, i) : 0.0;
    for (std::int64_t r = 0; r < B * T; ++r) {
      const auto i = static_cast<std::size_t>(r);
      if (e.kind[i] != 0) continue;
      for (std::int64_t d = 0; d < D; ++d) {
        const double g = get(dout, r * D + d);
        if (e.token[i] != padding) want_tok[static_cast<std::size_t>(e.token[i] * D + d)] += g;
        if (P > 0) want_pos[static_cast<std::size_t>(e.position[i] * D + d)] += g;
      }
    }
    for (std::int64_t i = 0; i < V * D; ++i)
      check(get(gtok, i) == static_cast<float>(want_tok[static_cast<std::size_t>(i)]),
            "grad_token element", i / D, i % D);
    for (std::int64_t i = 0; i < P * D; ++i)
      check(get(gpos, i) == static_cast<float>(want_pos[static_cast<std::size_t>(i)]),
            "grad_pos element", i / D, i % D);
  } else {
    check(gtok.storage == gtok0.storage && gpos.storage == gpos0.storage,
          "gradients written by forward");
  }

  if (o.error_record != nullptr) {
    // forward and backward each record the same rows.
    Expected twice = e;
    tokemb::detail::ErrorRecordData after_first = record0;
    if (run_forward && run_backward) {
      // The first call's merge, then the second's: the count doubles, the first row is the same.
      twice.bad = 2 * e.bad;
    }
    check_record_matches(record, twice, T, V, P, after_first);
    // check_error_record raises exactly what the record says, and clears it.
    if (record.count > 0) {
      const tokemb::detail::ErrorRecordData held = record;
      try {
        tokemb::check_error_record(&record_storage, Device::cpu(), stream);
        fail("check_error_record did not throw");
      } catch (const tokemb::IndexOutOfRange& ex) {
        check(ex.count() == held.count && ex.value() == held.value && ex.batch() == held.batch &&
                  ex.time() == held.time && ex.limit() == held.limit,
              "check_error_record's exception differs from the record");
      }
      check(record.count == 0 && record.first_key == ~0ull, "check_error_record did not clear");
    } else {
      tokemb::check_error_record(&record_storage, Device::cpu(), stream);
    }
  }
  return 0;
}
