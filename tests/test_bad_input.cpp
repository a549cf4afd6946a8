// Bad input, large sizes and out-of-memory (issue 6): every class of bad argument on the CPU and,
// in the Gpu* suites, on a CUDA device. Each test checks the exception type, that its message
// names the value, the place and the valid range, and that nothing outside the destination
// tensors changed: every tensor lives in the middle of a larger allocation whose guard bytes on
// both sides hold a random canary, and a call that is rejected must leave every byte of every
// tensor (tables and gradients included) exactly as it was.
//
// Inputs are fresh random values per run (the seed is printed by SCOPED_TRACE). Table and
// gradient values are small dyadic rationals (k / 64), so every sum is exact in f32 whatever the
// summation order: GPU results are compared bit for bit with the host expectation even for the
// atomic backward.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <typeinfo>
#include <vector>

#include "tests/test_helpers.hpp"

#if TOKEMB_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace tokemb::test {
namespace {

const StreamView host_stream = StreamView::legacy_default();
constexpr std::int64_t kI32Min = std::numeric_limits<std::int32_t>::min();
constexpr std::int64_t kI32Max = std::numeric_limits<std::int32_t>::max();
constexpr std::int64_t kI64Min = std::numeric_limits<std::int64_t>::min();
constexpr std::int64_t kI64Max = std::numeric_limits<std::int64_t>::max();

// ---- exceptions ------------------------------------------------------------------------------

/// Runs f and returns the exception of type E it throws; a failure if it throws nothing or
/// something else.
template <class E, class F>
std::optional<E> catch_as(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected " << typeid(E).name() << ", got " << typeid(e).name() << ": "
                  << e.what();
    return std::nullopt;
  }
  ADD_FAILURE() << "expected " << typeid(E).name() << ", nothing was thrown";
  return std::nullopt;
}

void expect_message_has(const std::exception& e, const std::vector<std::string>& parts) {
  const std::string msg = e.what();
  for (const auto& p : parts)
    EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' is not in the message: " << msg;
}

template <class E, class F>
void expect_throw_with(F&& f, const std::vector<std::string>& parts) {
  if (auto e = catch_as<E>(f)) expect_message_has(*e, parts);
}

std::string range(std::int64_t limit) { return "[0, " + std::to_string(limit) + ")"; }

std::string at(std::int64_t b, std::int64_t t) {
  return "(b=" + std::to_string(b) + ", t=" + std::to_string(t) + ")";
}

/// The checks shared by every IndexOutOfRange that describes a row.
void expect_row_error(const IndexOutOfRange& e, IndexOutOfRange::Kind kind, std::int64_t value,
                      std::int64_t b, std::int64_t t, std::int64_t limit, std::uint64_t count) {
  EXPECT_EQ(e.kind(), kind);
  EXPECT_EQ(e.value(), value);
  EXPECT_EQ(e.batch(), b);
  EXPECT_EQ(e.time(), t);
  EXPECT_EQ(e.limit(), limit);
  EXPECT_EQ(e.count(), count);
  const bool token = kind == IndexOutOfRange::Kind::token;
  expect_message_has(
      e, {(token ? "token id " : "position ") + std::to_string(value), at(b, t), range(limit)});
}

// ---- CUDA health -----------------------------------------------------------------------------

/// No pending or sticky CUDA error, and the device still synchronises.
void expect_cuda_healthy() {
#if TOKEMB_WITH_CUDA
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
#endif
}

std::size_t cuda_free_bytes() {
#if TOKEMB_WITH_CUDA
  std::size_t free_bytes = 0, total = 0;
  if (cudaMemGetInfo(&free_bytes, &total) != cudaSuccess) return 0;
  return free_bytes;
#else
  return 0;
#endif
}

// ---- values ----------------------------------------------------------------------------------

/// k / 64 with k in [-128, 127]: exact in f32, bf16 and f16, and so are sums of a few hundred.
float dyadic(std::mt19937_64& rng) {
  return static_cast<float>(std::uniform_int_distribution<int>(-128, 127)(rng)) / 64.0f;
}

std::vector<float> dyadic_values(std::size_t n, std::mt19937_64& rng) {
  std::vector<float> v(n);
  for (auto& x : v) x = dyadic(rng);
  return v;
}

/// Host bytes of \p v in floating dtype \p t (rounded to nearest even).
std::vector<unsigned char> encode_floats(DType t, const std::vector<float>& v) {
  const std::size_t es = dtype_size(t);
  std::vector<unsigned char> bytes(v.size() * es);
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (t == DType::f32) {
      std::memcpy(&bytes[i * es], &v[i], 4);
    } else if (t == DType::bf16) {
      const bf16_t x = bf16_t::from_float(v[i]);
      std::memcpy(&bytes[i * es], &x, 2);
    } else {
      const f16_t x = f16_t::from_float(v[i]);
      std::memcpy(&bytes[i * es], &x, 2);
    }
  }
  return bytes;
}

std::vector<float> decode_floats(DType t, const std::vector<unsigned char>& bytes) {
  const std::size_t es = dtype_size(t);
  std::vector<float> v(bytes.size() / es);
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (t == DType::f32) {
      std::memcpy(&v[i], &bytes[i * es], 4);
    } else if (t == DType::bf16) {
      bf16_t x;
      std::memcpy(&x, &bytes[i * es], 2);
      v[i] = x.to_float();
    } else {
      f16_t x;
      std::memcpy(&x, &bytes[i * es], 2);
      v[i] = x.to_float();
    }
  }
  return v;
}

/// What from_float(x) reads back as in dtype t.
float round_to(DType t, float x) { return decode_floats(t, encode_floats(t, {x}))[0]; }

std::vector<unsigned char> encode_ids(DType t, const std::vector<std::int64_t>& v) {
  std::vector<unsigned char> bytes(v.size() * dtype_size(t));
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (t == DType::i32) {
      const auto x = static_cast<std::int32_t>(v[i]);
      std::memcpy(&bytes[i * 4], &x, 4);
    } else {
      std::memcpy(&bytes[i * 8], &v[i], 8);
    }
  }
  return bytes;
}

// ---- guarded tensors -------------------------------------------------------------------------

constexpr std::size_t kGuardBytes = 256;

/// A tensor in the middle of one larger allocation (host or device) with kGuardBytes of random
/// canary before and after it; \p shift moves it by whole elements (off 16-byte alignment).
class Guarded {
 public:
  Guarded() = default;
  Guarded(DType dtype, Shape shape, Device device, StreamView stream, std::uint64_t seed,
          std::size_t shift = 0)
      : dtype_(dtype), shape_(shape), device_(device), stream_(stream) {
    payload_ = static_cast<std::size_t>(shape.numel()) * dtype_size(dtype);
    offset_ = kGuardBytes + shift * dtype_size(dtype);
    total_ = (offset_ + payload_ + kGuardBytes + 7) / 8 * 8;
    storage_ = Buffer(DType::i64, Shape{static_cast<std::int64_t>(total_ / 8)}, device);
    std::vector<unsigned char> canary(total_);
    std::mt19937_64 rng(seed);
    for (auto& b : canary) b = static_cast<unsigned char>(rng() | 1u);  // never 0
    copy(storage_, TensorView(canary.data(), DType::i64, storage_.shape(), Device::cpu()), stream_);
    synchronize(stream_);
    snapshot();
  }

  bool allocated() const { return storage_.data() != nullptr; }
  void* data() const { return static_cast<unsigned char*>(storage_.data()) + offset_; }
  TensorView view() const { return TensorView(data(), dtype_, shape_, device_); }
  /// The same memory seen with another dtype / shape (for mismatch tests).
  TensorView view_as(DType dtype, Shape shape) const {
    return TensorView(data(), dtype, shape, device_);
  }
  DType dtype() const { return dtype_; }

  std::vector<unsigned char> all_bytes() const {
    std::vector<unsigned char> h(total_);
    copy(TensorView(h.data(), DType::i64, storage_.shape(), Device::cpu()), storage_, stream_);
    synchronize(stream_);
    return h;
  }
  std::vector<unsigned char> payload() const {
    const auto all = all_bytes();
    return std::vector<unsigned char>(
        all.begin() + static_cast<std::ptrdiff_t>(offset_),
        all.begin() + static_cast<std::ptrdiff_t>(offset_ + payload_));
  }
  void write(const std::vector<unsigned char>& bytes) {
    ASSERT_EQ(bytes.size(), payload_);
    if (payload_ == 0) return;
    const Shape flat{static_cast<std::int64_t>(payload_ / dtype_size(dtype_))};
    copy(TensorView(data(), dtype_, flat, device_),
         TensorView(bytes.data(), dtype_, flat, Device::cpu()), stream_);
    synchronize(stream_);
    snapshot();
  }
  void write_floats(const std::vector<float>& v) { write(encode_floats(dtype_, v)); }
  void write_ids(const std::vector<std::int64_t>& v) { write(encode_ids(dtype_, v)); }
  std::vector<float> floats() const { return decode_floats(dtype_, payload()); }

  void snapshot() { snap_ = all_bytes(); }

  /// The canary on both sides is as it was at the last write/snapshot.
  ::testing::AssertionResult guards_intact(const char* name) const {
    const auto now = all_bytes();
    for (std::size_t i = 0; i < total_; ++i) {
      if (i >= offset_ && i < offset_ + payload_) continue;
      if (now[i] != snap_[i])
        return ::testing::AssertionFailure()
               << name << ": guard byte " << (i < offset_ ? "before" : "after")
               << " the tensor, at "
               << (i < offset_ ? static_cast<long long>(i) - static_cast<long long>(offset_)
                               : static_cast<long long>(i - offset_ - payload_))
               << ", was overwritten";
    }
    return ::testing::AssertionSuccess();
  }
  /// Every byte (tensor and guards) is as it was at the last write/snapshot.
  ::testing::AssertionResult unchanged(const char* name) const {
    auto r = guards_intact(name);
    if (!r) return r;
    const auto now = all_bytes();
    for (std::size_t i = offset_; i < offset_ + payload_; ++i)
      if (now[i] != snap_[i])
        return ::testing::AssertionFailure()
               << name << ": byte " << (i - offset_) << " of the tensor changed";
    return ::testing::AssertionSuccess();
  }

 private:
  DType dtype_ = DType::f32;
  Shape shape_;
  Device device_;
  StreamView stream_ = host_stream;
  std::size_t payload_ = 0, offset_ = 0, total_ = 0;
  Buffer storage_;
  std::vector<unsigned char> snap_;
};

// ---- a whole problem: inputs, outputs and gradients of one call -------------------------------

/// Row classification of the host expectation: 0 valid, 1 bad token id, 2 bad position.
struct RowKind {
  int kind = 0;
  std::int64_t token = 0, position = -1, value = 0;
};

struct Problem {
  Device device;
  StreamView stream = host_stream;
  std::int64_t B = 2, T = 3, D = 4, V = 7, P = 5;  // P = 0: no position table
  DType dtype = DType::f32, dout_type = DType::f32, id_type = DType::i64, pos_id_type = DType::i64;
  bool explicit_positions = false;
  std::int64_t offset = 0;
  std::optional<std::int64_t> padding_idx;
  BackwardMode mode = BackwardMode::atomic;
  bool accumulate = true;  // false: backward overwrites the gradients
  std::size_t shift = 0;   // every tensor moved off alignment by this many elements
  std::uint64_t seed = 0;

  std::vector<std::int64_t> ids, pos_ids;
  std::vector<float> tok, pos, dout, gtok, gpos;
  Guarded g_ids, g_pos_ids, g_tok, g_pos, g_out, g_dout, g_gtok, g_gpos;
  Buffer workspace;

  /// Random valid inputs for the sizes and dtypes set above.
  void randomize(std::mt19937_64& rng) {
    ids = std::vector<std::int64_t>(static_cast<std::size_t>(B * T));
    for (auto& x : ids) x = std::uniform_int_distribution<std::int64_t>(0, V - 1)(rng);
    pos_ids.assign(static_cast<std::size_t>(B * T), 0);
    if (P > 0)
      for (auto& x : pos_ids) x = std::uniform_int_distribution<std::int64_t>(0, P - 1)(rng);
    tok = dyadic_values(static_cast<std::size_t>(V * D), rng);
    pos = dyadic_values(static_cast<std::size_t>(P * D), rng);
    dout = dyadic_values(static_cast<std::size_t>(B * T * D), rng);
    gtok = dyadic_values(static_cast<std::size_t>(V * D), rng);
    gpos = dyadic_values(static_cast<std::size_t>(P * D), rng);
    seed = rng();
  }

  /// (Re)allocates the guarded tensors on the device and writes the host values into them.
  void upload() {
    std::uint64_t s = seed;
    g_ids = Guarded(id_type, Shape{B, T}, device, stream, ++s, shift);
    g_ids.write_ids(ids);
    g_pos_ids = Guarded(pos_id_type, Shape{B, T}, device, stream, ++s, shift);
    g_pos_ids.write_ids(pos_ids);
    g_tok = Guarded(dtype, Shape{V, D}, device, stream, ++s, shift);
    g_tok.write_floats(tok);
    g_out = Guarded(dtype, Shape{B, T, D}, device, stream, ++s, shift);
    g_dout = Guarded(dout_type, Shape{B, T, D}, device, stream, ++s, shift);
    g_dout.write_floats(dout);
    g_gtok = Guarded(DType::f32, Shape{V, D}, device, stream, ++s, shift);
    g_gtok.write_floats(gtok);
    if (P > 0) {
      g_pos = Guarded(dtype, Shape{P, D}, device, stream, ++s, shift);
      g_pos.write_floats(pos);
      g_gpos = Guarded(DType::f32, Shape{P, D}, device, stream, ++s, shift);
      g_gpos.write_floats(gpos);
    } else {
      g_pos = Guarded();
      g_gpos = Guarded();
    }
  }

  TensorView pos_view() const { return P > 0 ? g_pos.view() : TensorView{}; }
  TensorView gpos_view() const { return P > 0 ? g_gpos.view() : TensorView{}; }

  Options options(ErrorRecord* record = nullptr) const {
    Options o;
    o.position_offset = offset;
    if (explicit_positions) o.position_ids = g_pos_ids.view();
    o.padding_idx = padding_idx;
    o.backward_mode = mode;
    o.accumulate = accumulate;
    o.error_record = record;
    return o;
  }

  void forward(const Options& o) {
    tokemb::forward(g_ids.view(), g_tok.view(), pos_view(), g_out.view(), o, stream);
    synchronize(stream);
  }
  void backward(const Options& o) {
    const std::size_t need =
        backward_workspace_size(g_ids.view(), g_dout.view(), g_gtok.view(), gpos_view(), o);
    if (need > workspace.bytes())
      workspace = Buffer(DType::i64, Shape{static_cast<std::int64_t>((need + 7) / 8)}, device);
    tokemb::backward(g_ids.view(), g_dout.view(), g_gtok.view(), gpos_view(), o,
                     Workspace{workspace.data(), workspace.bytes()}, stream);
    synchronize(stream);
  }

  // Host expectation.
  RowKind row(std::int64_t r) const {
    RowKind k;
    k.token = ids[static_cast<std::size_t>(r)];
    if (k.token < 0 || k.token >= V) {
      k.kind = 1;
      k.value = k.token;
      return k;
    }
    if (P > 0) {
      k.position = explicit_positions ? pos_ids[static_cast<std::size_t>(r)] : offset + r % T;
      if (k.position < 0 || k.position >= P) {
        k.kind = 2;
        k.value = k.position;
      }
    }
    return k;
  }
  std::vector<float> expected_out() const {
    std::vector<float> out(static_cast<std::size_t>(B * T * D), 0.0f);
    for (std::int64_t r = 0; r < B * T; ++r) {
      const RowKind k = row(r);
      if (k.kind != 0) continue;
      for (std::int64_t d = 0; d < D; ++d) {
        float v = round_to(dtype, tok[static_cast<std::size_t>(k.token * D + d)]);
        if (P > 0) v += round_to(dtype, pos[static_cast<std::size_t>(k.position * D + d)]);
        out[static_cast<std::size_t>(r * D + d)] = round_to(dtype, v);
      }
    }
    return out;
  }
  /// Gradients after one backward from the initial values (from zero when overwriting).
  void expected_grads(std::vector<float>& et, std::vector<float>& ep) const {
    et = accumulate ? gtok : std::vector<float>(gtok.size(), 0.0f);
    ep = accumulate ? gpos : std::vector<float>(gpos.size(), 0.0f);
    const std::int64_t pad =
        padding_idx ? (*padding_idx < 0 ? *padding_idx + V : *padding_idx) : -1;
    for (std::int64_t r = 0; r < B * T; ++r) {
      const RowKind k = row(r);
      if (k.kind != 0) continue;
      for (std::int64_t d = 0; d < D; ++d) {
        const float g = round_to(dout_type, dout[static_cast<std::size_t>(r * D + d)]);
        if (k.token != pad) et[static_cast<std::size_t>(k.token * D + d)] += g;
        if (P > 0) ep[static_cast<std::size_t>(k.position * D + d)] += g;
      }
    }
  }

  // Checks.
  void expect_guards_intact() const {
    EXPECT_TRUE(g_ids.guards_intact("ids"));
    EXPECT_TRUE(g_pos_ids.guards_intact("position_ids"));
    EXPECT_TRUE(g_tok.guards_intact("token_table"));
    EXPECT_TRUE(g_out.guards_intact("out"));
    EXPECT_TRUE(g_dout.guards_intact("dout"));
    EXPECT_TRUE(g_gtok.guards_intact("grad_token"));
    if (P > 0) {
      EXPECT_TRUE(g_pos.guards_intact("pos_table"));
      EXPECT_TRUE(g_gpos.guards_intact("grad_pos"));
    }
  }
  void expect_inputs_unchanged() const {
    EXPECT_TRUE(g_ids.unchanged("ids"));
    EXPECT_TRUE(g_pos_ids.unchanged("position_ids"));
    EXPECT_TRUE(g_tok.unchanged("token_table"));
    EXPECT_TRUE(g_dout.unchanged("dout"));
    if (P > 0) {
      EXPECT_TRUE(g_pos.unchanged("pos_table"));
    }
  }
  void expect_nothing_changed() const {
    expect_inputs_unchanged();
    EXPECT_TRUE(g_out.unchanged("out"));
    EXPECT_TRUE(g_gtok.unchanged("grad_token"));
    if (P > 0) {
      EXPECT_TRUE(g_gpos.unchanged("grad_pos"));
    }
  }
  /// After a successful forward: out is the expectation, nothing else changed.
  void expect_forward_result() const {
    expect_guards_intact();
    expect_inputs_unchanged();
    EXPECT_TRUE(g_gtok.unchanged("grad_token"));
    if (P > 0) {
      EXPECT_TRUE(g_gpos.unchanged("grad_pos"));
    }
    const auto got = g_out.floats(), want = expected_out();
    ASSERT_EQ(got.size(), want.size());
    for (std::size_t i = 0; i < got.size(); ++i)
      ASSERT_EQ(got[i], want[i]) << "out row " << i / static_cast<std::size_t>(D) << ", d "
                                 << i % static_cast<std::size_t>(D);
  }
  /// After a successful backward: the gradients are the expectation, nothing else changed.
  void expect_backward_result() const {
    expect_guards_intact();
    expect_inputs_unchanged();
    std::vector<float> et, ep;
    expected_grads(et, ep);
    const auto gt = g_gtok.floats();
    for (std::size_t i = 0; i < gt.size(); ++i)
      ASSERT_EQ(gt[i], et[i]) << "grad_token row " << i / static_cast<std::size_t>(D) << ", d "
                              << i % static_cast<std::size_t>(D);
    if (P > 0) {
      const auto gp = g_gpos.floats();
      for (std::size_t i = 0; i < gp.size(); ++i)
        ASSERT_EQ(gp[i], ep[i]) << "grad_pos row " << i / static_cast<std::size_t>(D) << ", d "
                                << i % static_cast<std::size_t>(D);
    }
  }
};

Problem small_problem(Device device, StreamView stream, std::mt19937_64& rng) {
  Problem p;
  p.device = device;
  p.stream = stream;
  p.B = std::uniform_int_distribution<std::int64_t>(2, 4)(rng);
  p.T = std::uniform_int_distribution<std::int64_t>(3, 9)(rng);
  p.D = std::uniform_int_distribution<std::int64_t>(1, 70)(rng);
  p.V = std::uniform_int_distribution<std::int64_t>(5, 50)(rng);
  p.P = p.T + std::uniform_int_distribution<std::int64_t>(0, 10)(rng);
  p.offset = std::uniform_int_distribution<std::int64_t>(0, p.P - p.T)(rng);
  p.randomize(rng);
  return p;
}

// ---- out-of-range ids and positions ----------------------------------------------------------

enum class Bad { token, position };

/// A value out of range for a table of `limit` rows.
struct BadValue {
  std::string name;
  std::function<std::int64_t(std::int64_t limit)> of;
};

/// The bad values of ids of type \p t: just outside both ends, far outside, the type's extremes.
std::vector<BadValue> bad_values(DType t) {
  std::vector<BadValue> v = {{"-1", [](std::int64_t) { return std::int64_t{-1}; }},
                             {"limit", [](std::int64_t l) { return l; }},
                             {"limit + 7", [](std::int64_t l) { return l + 7; }}};
  if (t == DType::i32) {
    v.push_back({"INT32_MIN", [](std::int64_t) { return kI32Min; }});
    v.push_back({"INT32_MAX", [](std::int64_t) { return kI32Max; }});
  } else {
    v.push_back({"INT64_MIN", [](std::int64_t) { return kI64Min; }});
    v.push_back({"INT64_MAX", [](std::int64_t) { return kI64Max; }});
    // 2^32 + 1 reads row 1 if an implementation truncates ids to 32 bits.
    v.push_back({"2^32 + 1", [](std::int64_t) { return (std::int64_t{1} << 32) + 1; }});
    v.push_back({"-2^32", [](std::int64_t) { return -(std::int64_t{1} << 32); }});
  }
  return v;
}

/// Two bad rows r1 < r2 (r1 holds \p bad, r2 another bad value); forward and backward with and
/// without an error record, in both backward modes.
void check_bad_rows(Device device, StreamView stream, DType dtype, DType index, Bad which,
                    const BadValue& bad, std::mt19937_64& rng) {
  Problem p = small_problem(device, stream, rng);
  p.dtype = dtype;
  p.id_type = index;
  p.pos_id_type = index;
  p.dout_type = static_cast<DType>(std::uniform_int_distribution<int>(0, 2)(rng));
  p.explicit_positions = which == Bad::position || rng() % 2 == 0;
  if (which == Bad::token && rng() % 4 == 0) {  // no position table
    p.P = 0;
    p.offset = 0;
    p.explicit_positions = false;
  }
  p.randomize(rng);
  const std::int64_t n = p.B * p.T;
  const std::int64_t r1 = std::uniform_int_distribution<std::int64_t>(0, n - 2)(rng);
  const std::int64_t r2 = std::uniform_int_distribution<std::int64_t>(r1 + 1, n - 1)(rng);
  const std::int64_t limit = which == Bad::token ? p.V : p.P;
  const std::int64_t value = bad.of(limit);
  const std::int64_t second = value == -1 ? limit : -1;
  auto& target = which == Bad::token ? p.ids : p.pos_ids;
  target[static_cast<std::size_t>(r1)] = value;
  target[static_cast<std::size_t>(r2)] = second;
  const auto kind =
      which == Bad::token ? IndexOutOfRange::Kind::token : IndexOutOfRange::Kind::position;
  SCOPED_TRACE(::testing::Message()
               << "B=" << p.B << " T=" << p.T << " D=" << p.D << " V=" << p.V << " P=" << p.P
               << " bad value " << bad.name << " = " << value << " at row " << r1 << ", " << second
               << " at row " << r2 << " dout " << dtype_name(p.dout_type));

  for (int variant = 0; variant < 4; ++variant) {
    p.mode = variant % 2 ? BackwardMode::deterministic : BackwardMode::atomic;
    p.accumulate = variant < 2;
    SCOPED_TRACE(std::string(variant % 2 ? "deterministic" : "atomic") +
                 (p.accumulate ? ", accumulate" : ", overwrite"));
    // Without a record: the CPU throws before writing anything; a CUDA call zeroes the rows and
    // skips their gradients silently.
    p.upload();
    if (device.is_cpu()) {
      if (auto e = catch_as<IndexOutOfRange>([&] { p.forward(p.options()); }))
        expect_row_error(*e, kind, value, r1 / p.T, r1 % p.T, limit, 2);
      p.expect_nothing_changed();
      if (auto e = catch_as<IndexOutOfRange>([&] { p.backward(p.options()); }))
        expect_row_error(*e, kind, value, r1 / p.T, r1 % p.T, limit, 2);
      p.expect_nothing_changed();
    } else {
      p.forward(p.options());
      p.expect_forward_result();
      p.backward(p.options());
      p.expect_backward_result();
      expect_cuda_healthy();
    }

    // With a record: same results on both devices; the record names the first row.
    p.upload();
    ErrorMonitor monitor(device, stream);
    p.forward(p.options(monitor.get()));
    p.expect_forward_result();
    if (auto e = catch_as<IndexOutOfRange>([&] { monitor.check(stream); }))
      expect_row_error(*e, kind, value, r1 / p.T, r1 % p.T, limit, 2);
    EXPECT_NO_THROW(monitor.check(stream)) << "check() clears the record";
    p.backward(p.options(monitor.get()));
    p.expect_backward_result();
    if (auto e = catch_as<IndexOutOfRange>([&] { monitor.check(stream); }))
      expect_row_error(*e, kind, value, r1 / p.T, r1 % p.T, limit, 2);
    if (device.is_cuda()) expect_cuda_healthy();
  }
}

class GpuBadInput : public GpuTest {};

template <class C>
class BadInputRows : public ::testing::Test {};
TYPED_TEST_SUITE(BadInputRows, AllCombos, ComboNames);

template <class C>
class GpuBadInputRows : public GpuTest {};
TYPED_TEST_SUITE(GpuBadInputRows, AllCombos, ComboNames);

void bad_rows(Device device, StreamView stream, DType dtype, DType index, Bad which) {
  const auto seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (const BadValue& bad : bad_values(index))
    check_bad_rows(device, stream, dtype, index, which, bad, rng);
}

TYPED_TEST(BadInputRows, TokenIdsOutOfRange) {
  bad_rows(Device::cpu(), host_stream, TypeParam::dtype, TypeParam::index, Bad::token);
}
TYPED_TEST(BadInputRows, PositionIdsOutOfRange) {
  bad_rows(Device::cpu(), host_stream, TypeParam::dtype, TypeParam::index, Bad::position);
}
TYPED_TEST(GpuBadInputRows, TokenIdsOutOfRange) {
  bad_rows(Device::cuda(0), this->stream(), TypeParam::dtype, TypeParam::index, Bad::token);
}
TYPED_TEST(GpuBadInputRows, PositionIdsOutOfRange) {
  bad_rows(Device::cuda(0), this->stream(), TypeParam::dtype, TypeParam::index, Bad::position);
}

/// A row with both a bad token id and a bad position is reported as a bad token; its
/// position is not looked at.
void bad_token_and_position_in_one_row(Device device, StreamView stream) {
  const auto seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  Problem p = small_problem(device, stream, rng);
  p.explicit_positions = true;
  const std::int64_t r = std::uniform_int_distribution<std::int64_t>(0, p.B * p.T - 1)(rng);
  p.ids[static_cast<std::size_t>(r)] = p.V + 3;
  p.pos_ids[static_cast<std::size_t>(r)] = -9;
  p.upload();
  ErrorMonitor monitor(device, stream);
  p.forward(p.options(monitor.get()));
  p.expect_forward_result();
  if (auto e = catch_as<IndexOutOfRange>([&] { monitor.check(stream); }))
    expect_row_error(*e, IndexOutOfRange::Kind::token, p.V + 3, r / p.T, r % p.T, p.V, 1);
}

TEST(BadInput, BadTokenAndBadPositionInOneRowReportsTheToken) {
  bad_token_and_position_in_one_row(Device::cpu(), host_stream);
}
TEST_F(GpuBadInput, BadTokenAndBadPositionInOneRowReportsTheToken) {
  bad_token_and_position_in_one_row(Device::cuda(0), stream());
}

// ---- positions from the offset: checked on the host before any launch -------------------------

/// offset + t outside [0, P) for some t: IndexOutOfRange before anything runs, even with a
/// record (which stays empty).
void check_offset_error(Problem& p, std::int64_t offset, std::int64_t value, std::int64_t t,
                        std::uint64_t count) {
  SCOPED_TRACE("offset " + std::to_string(offset) + ", T " + std::to_string(p.T) + ", P " +
               std::to_string(p.P));
  p.offset = offset;
  p.explicit_positions = false;
  p.upload();
  ErrorMonitor monitor(p.device, p.stream);
  for (ErrorRecord* rec : {static_cast<ErrorRecord*>(nullptr), monitor.get()}) {
    for (int op = 0; op < 2; ++op) {
      auto e = catch_as<IndexOutOfRange>([&] {
        if (op == 0) {
          p.forward(p.options(rec));
        } else {
          p.backward(p.options(rec));
        }
      });
      if (e) {
        EXPECT_EQ(e->kind(), IndexOutOfRange::Kind::position);
        EXPECT_EQ(e->value(), value);
        EXPECT_EQ(e->time(), t);
        EXPECT_EQ(e->limit(), p.P);
        EXPECT_EQ(e->count(), count);
        expect_message_has(
            *e, {"position " + std::to_string(value), "position_offset " + std::to_string(offset),
                 "t " + std::to_string(t), range(p.P)});
      }
      p.expect_nothing_changed();
    }
  }
  EXPECT_NO_THROW(monitor.check(p.stream)) << "a host-side rejection records nothing";
  if (p.device.is_cuda()) expect_cuda_healthy();
}

void offset_errors(Device device, StreamView stream) {
  const auto seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  Problem p = small_problem(device, stream, rng);
  const auto B = static_cast<std::uint64_t>(p.B);
  // One step too far: offset + T = P + 1.
  check_offset_error(p, p.P - p.T + 1, p.P, p.T - 1, B);
  // Far past the end, and at the end of int64.
  check_offset_error(p, p.P + 100, p.P + 100, 0, B * static_cast<std::uint64_t>(p.T));
  check_offset_error(p, kI64Max, kI64Max, 0, B * static_cast<std::uint64_t>(p.T));
  // Negative: the first |offset| steps are before the table.
  check_offset_error(p, -2, -2, 0, B * 2);
}

/// position_offset = INT64_MIN: every step is before the table (the count must not come from
/// negating the offset, which overflows).
void offset_int64_min(Device device, StreamView stream) {
  const auto seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  Problem p = small_problem(device, stream, rng);
  check_offset_error(p, kI64Min, kI64Min, 0, static_cast<std::uint64_t>(p.B * p.T));
}

TEST(BadInput, PositionOffsetOutsideContextIsRejectedBeforeLaunch) {
  offset_errors(Device::cpu(), host_stream);
}
TEST_F(GpuBadInput, PositionOffsetOutsideContextIsRejectedBeforeLaunch) {
  offset_errors(Device::cuda(0), stream());
}
TEST(BadInput, PositionOffsetInt64MinIsRejectedWithTheRightCount) {
  offset_int64_min(Device::cpu(), host_stream);
}
TEST_F(GpuBadInput, PositionOffsetInt64MinIsRejectedWithTheRightCount) {
  offset_int64_min(Device::cuda(0), stream());
}

/// T > Tctx (offset 0): positions P .. T-1 are past the table; rejected before any launch.
void sequence_longer_than_context(Device device, StreamView stream) {
  const auto seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  Problem p = small_problem(device, stream, rng);
  p.P = p.T - 2;  // T > P
  p.randomize(rng);
  check_offset_error(p, 0, p.P, p.P, static_cast<std::uint64_t>(p.B * 2));

  // The module raises it at the call (nothing is enqueued), and stays usable.
  EmbeddingConfig c;
  c.vocab_size = p.V;
  c.dim = p.D;
  c.context_length = p.P;
  c.device = device;
  Embedding m(c, stream);
  Guarded out(DType::f32, Shape{p.B, p.T, p.D}, device, stream, rng());
  Guarded ids(DType::i64, Shape{p.B, p.T}, device, stream, rng());
  ids.write_ids(p.ids);
  if (auto e = catch_as<IndexOutOfRange>([&] { m.forward(ids.view(), out.view()); })) {
    EXPECT_EQ(e->value(), p.P);
    expect_message_has(*e, {"position " + std::to_string(p.P), range(p.P)});
  }
  EXPECT_TRUE(out.unchanged("out"));
  EXPECT_NO_THROW(m.synchronize());
  for (float x : m.token_table_to_host()) ASSERT_EQ(x, 0.0f);
}

TEST(BadInput, SequenceLongerThanContextIsRejected) {
  sequence_longer_than_context(Device::cpu(), host_stream);
}
TEST_F(GpuBadInput, SequenceLongerThanContextIsRejected) {
  sequence_longer_than_context(Device::cuda(0), stream());
}

// ---- validation: rejected before anything is written -----------------------------------------

/// Runs a call that validation must reject with E naming \p parts; every tensor unchanged.
template <class E>
void expect_rejected(Problem& p, const std::function<void()>& call,
                     const std::vector<std::string>& parts) {
  ::testing::Message what;
  for (const auto& part : parts) what << "'" << part << "' ";
  SCOPED_TRACE(what);
  expect_throw_with<E>(call, parts);
  p.expect_nothing_changed();
}

void null_pointers(Device device, StreamView stream) {
  std::mt19937_64 rng(fresh_seed());
  Problem p = small_problem(device, stream, rng);
  p.upload();
  const Options o = p.options();
  auto null = [](TensorView v) {
    v.data = nullptr;
    return v;
  };
  auto fwd = [&](const TensorView& ids, const TensorView& tok, const TensorView& pos,
                 const TensorView& out, const Options& opt) {
    return [&, ids, tok, pos, out, opt] { tokemb::forward(ids, tok, pos, out, opt, stream); };
  };
  auto bwd = [&](const TensorView& ids, const TensorView& dout, const TensorView& gt,
                 const TensorView& gp, const Options& opt) {
    return [&, ids, dout, gt, gp, opt] {
      tokemb::backward(ids, dout, gt, gp, opt, Workspace{}, stream);
    };
  };
  const TensorView ids = p.g_ids.view(), tok = p.g_tok.view(), pos = p.pos_view(),
                   out = p.g_out.view(), dout = p.g_dout.view(), gt = p.g_gtok.view(),
                   gp = p.gpos_view();
  expect_rejected<InvalidArgument>(p, fwd(null(ids), tok, pos, out, o), {"ids", "null pointer"});
  expect_rejected<InvalidArgument>(p, fwd(ids, null(tok), pos, out, o),
                                   {"token_table", "null pointer"});
  expect_rejected<InvalidArgument>(p, fwd(ids, tok, pos, null(out), o), {"out", "null pointer"});
  expect_rejected<InvalidArgument>(p, bwd(null(ids), dout, gt, gp, o), {"ids", "null pointer"});
  expect_rejected<InvalidArgument>(p, bwd(ids, null(dout), gt, gp, o), {"dout", "null pointer"});
  expect_rejected<InvalidArgument>(p, bwd(ids, dout, null(gt), gp, o),
                                   {"grad_token", "null pointer"});
  expect_rejected<InvalidArgument>(
      p, [&] { (void)backward_workspace_size(null(ids), dout, gt, gp, o); },
      {"ids", "null pointer"});
  // Explicit position ids with a shape but no data: a null that is not "absent".
  Options with_null_positions = o;
  with_null_positions.position_ids = p.g_pos_ids.view();
  with_null_positions.position_ids.data = nullptr;
  if (!with_null_positions.position_ids.empty()) {
    expect_rejected<InvalidArgument>(p, fwd(ids, tok, pos, out, with_null_positions),
                                     {"position_ids", "null pointer"});
  }
  // Error-record helpers.
  expect_throw_with<InvalidArgument>([&] { clear_error_record(nullptr, device, stream); },
                                     {"record", "null pointer"});
  expect_throw_with<InvalidArgument>([&] { check_error_record(nullptr, device, stream); },
                                     {"record", "null pointer"});
  // Module loads.
  EmbeddingConfig c;
  c.vocab_size = p.V;
  c.dim = p.D;
  c.context_length = p.P;
  c.device = device;
  Embedding m(c, stream);
  expect_throw_with<InvalidArgument>([&] { m.load_token_table(nullptr, 16); },
                                     {"load_token_table", "null pointer"});
  for (float x : m.token_table_to_host()) ASSERT_EQ(x, 0.0f);
}

TEST(BadInput, NullPointersAreRejected) { null_pointers(Device::cpu(), host_stream); }
TEST_F(GpuBadInput, NullPointersAreRejected) { null_pointers(Device::cuda(0), stream()); }

// An absent position table is an empty TensorView{}; a null pointer that carries a shape is a
// mistake and must be rejected, not taken as "positions off".
TEST(BadInput, NullPositionTableWithAShapeIsRejected) {
  std::mt19937_64 rng(fresh_seed());
  Problem p = small_problem(Device::cpu(), host_stream, rng);
  p.upload();
  TensorView pos = p.g_pos.view();
  pos.data = nullptr;
  expect_rejected<InvalidArgument>(p,
                                   [&] {
                                     tokemb::forward(p.g_ids.view(), p.g_tok.view(), pos,
                                                     p.g_out.view(), p.options(), host_stream);
                                   },
                                   {"pos_table", "null pointer"});
  TensorView gpos = p.g_gpos.view();
  gpos.data = nullptr;
  expect_rejected<InvalidArgument>(p,
                                   [&] {
                                     tokemb::backward(p.g_ids.view(), p.g_dout.view(),
                                                      p.g_gtok.view(), gpos, p.options(),
                                                      Workspace{}, host_stream);
                                   },
                                   {"grad_pos", "null pointer"});
}

TEST(BadInput, NegativeDimensionsAreRejectedByShape) {
  expect_throw_with<InvalidArgument>([] { Shape s{-1, 3}; }, {"dimension 0", "-1", ">= 0"});
  expect_throw_with<InvalidArgument>([] { Shape s{2, 3, -5}; }, {"dimension 2", "-5", ">= 0"});
  expect_throw_with<InvalidArgument>([] { Shape s{kI64Min}; },
                                     {"dimension 0", std::to_string(kI64Min)});
  expect_throw_with<InvalidArgument>([] { Shape s{1, 2, 3, 4, 5}; }, {"rank 5", "4"});
}

void zero_and_negative_sizes(Device device, StreamView stream) {
  std::mt19937_64 rng(fresh_seed());
  Problem p = small_problem(device, stream, rng);
  p.upload();
  const Options o = p.options();
  const std::int64_t B = p.B, T = p.T, D = p.D, V = p.V, P = p.P;
  auto fwd = [&](const TensorView& ids, const TensorView& tok, const TensorView& pos,
                 const TensorView& out) {
    return [&, ids, tok, pos, out] { tokemb::forward(ids, tok, pos, out, o, stream); };
  };
  const TensorView ids = p.g_ids.view(), tok = p.g_tok.view(), pos = p.pos_view(),
                   out = p.g_out.view();
  const DType dt = p.dtype, it = p.id_type;
  expect_rejected<InvalidArgument>(
      p, fwd(p.g_ids.view_as(it, {0, T}), tok, pos, p.g_out.view_as(dt, {0, T, D})),
      {"ids", "[0, " + std::to_string(T) + "]", ">= 1"});
  expect_rejected<InvalidArgument>(
      p, fwd(p.g_ids.view_as(it, {B, 0}), tok, pos, p.g_out.view_as(dt, {B, 0, D})),
      {"ids", ">= 1"});
  expect_rejected<InvalidArgument>(p, fwd(ids, p.g_tok.view_as(dt, {0, D}), pos, out),
                                   {"token_table", "[0, " + std::to_string(D) + "]", ">= 1"});
  expect_rejected<InvalidArgument>(p,
                                   fwd(ids, p.g_tok.view_as(dt, {V, 0}),
                                       p.g_pos.view_as(dt, {P, 0}), p.g_out.view_as(dt, {B, T, 0})),
                                   {"token_table", ">= 1"});
  expect_rejected<InvalidArgument>(p, fwd(ids, tok, p.g_pos.view_as(dt, {0, D}), out),
                                   {"pos_table", "[0, " + std::to_string(D) + "]", ">= 1"});
  expect_rejected<InvalidArgument>(p,
                                   [&] {
                                     tokemb::backward(ids, p.g_dout.view_as(p.dout_type, {B, T, 0}),
                                                      p.g_gtok.view(), p.gpos_view(), o,
                                                      Workspace{}, stream);
                                   },
                                   {"dout", ">= 1"});

  // Module configuration.
  auto config = [&] {
    EmbeddingConfig c;
    c.vocab_size = V;
    c.dim = D;
    c.context_length = P;
    c.device = device;
    return c;
  };
  EmbeddingConfig c = config();
  c.vocab_size = 0;
  expect_throw_with<InvalidArgument>([&] { Embedding m(c, stream); }, {"vocab_size", "0", ">= 1"});
  c.vocab_size = -3;
  expect_throw_with<InvalidArgument>([&] { Embedding m(c, stream); }, {"vocab_size", "-3"});
  c = config();
  c.dim = 0;
  expect_throw_with<InvalidArgument>([&] { Embedding m(c, stream); }, {"dim", "0", ">= 1"});
  c.dim = kI64Min;
  expect_throw_with<InvalidArgument>([&] { Embedding m(c, stream); },
                                     {"dim", std::to_string(kI64Min)});
  c = config();
  c.context_length = -1;
  expect_throw_with<InvalidArgument>([&] { Embedding m(c, stream); },
                                     {"context_length", "-1", ">= 0"});
  Embedding m(config(), stream);
  expect_throw_with<InvalidArgument>([&] { m.reserve(0); }, {"max_tokens", "0"});
  expect_throw_with<InvalidArgument>([&] { m.reserve(-4); }, {"max_tokens", "-4"});
}

TEST(BadInput, ZeroAndNegativeSizesAreRejected) {
  zero_and_negative_sizes(Device::cpu(), host_stream);
}
TEST_F(GpuBadInput, ZeroAndNegativeSizesAreRejected) {
  zero_and_negative_sizes(Device::cuda(0), stream());
}

void dtype_and_shape_mismatches(Device device, StreamView stream) {
  std::mt19937_64 rng(fresh_seed());
  Problem p = small_problem(device, stream, rng);
  p.dtype = DType::f32;
  p.upload();
  const std::int64_t B = p.B, T = p.T, D = p.D, V = p.V, P = p.P;
  const Options o = p.options();
  auto fwd = [&](const TensorView& ids, const TensorView& tok, const TensorView& pos,
                 const TensorView& out, const Options& opt) {
    return [&, ids, tok, pos, out, opt] { tokemb::forward(ids, tok, pos, out, opt, stream); };
  };
  auto bwd = [&](const TensorView& ids, const TensorView& dout, const TensorView& gt,
                 const TensorView& gp) {
    return [&, ids, dout, gt, gp] { tokemb::backward(ids, dout, gt, gp, o, Workspace{}, stream); };
  };
  const TensorView ids = p.g_ids.view(), tok = p.g_tok.view(), pos = p.pos_view(),
                   out = p.g_out.view(), dout = p.g_dout.view(), gt = p.g_gtok.view(),
                   gp = p.gpos_view();
  auto dims = [](std::initializer_list<std::int64_t> d) { return Shape(d).str(); };

  // dtypes
  for (DType bad : {DType::f32, DType::bf16, DType::f16})
    expect_rejected<InvalidArgument>(p, fwd(p.g_ids.view_as(bad, {B, T}), tok, pos, out, o),
                                     {"ids", dtype_name(bad), "i32 or i64"});
  Options bad_pos_ids = o;
  bad_pos_ids.position_ids = p.g_pos_ids.view_as(DType::f16, {B, T});
  expect_rejected<InvalidArgument>(p, fwd(ids, tok, pos, out, bad_pos_ids),
                                   {"position_ids", "f16", "i32 or i64"});
  for (DType bad : {DType::i32, DType::i64})
    expect_rejected<InvalidArgument>(p, fwd(ids, p.g_tok.view_as(bad, {V, D}), pos, out, o),
                                     {"token_table", dtype_name(bad), "f32, bf16 or f16"});
  expect_rejected<InvalidArgument>(p, fwd(ids, tok, p.g_pos.view_as(DType::bf16, {P, D}), out, o),
                                   {"pos_table", "bf16", "f32"});
  expect_rejected<InvalidArgument>(p, fwd(ids, tok, pos, p.g_out.view_as(DType::f16, {B, T, D}), o),
                                   {"out", "f16", "f32"});
  expect_rejected<InvalidArgument>(p, bwd(ids, dout, p.g_gtok.view_as(DType::bf16, {V, D}), gp),
                                   {"grad_token", "bf16", "f32"});
  expect_rejected<InvalidArgument>(p, bwd(ids, dout, gt, p.g_gpos.view_as(DType::f16, {P, D})),
                                   {"grad_pos", "f16", "f32"});
  expect_rejected<InvalidArgument>(p, bwd(ids, p.g_dout.view_as(DType::i64, {B, T, D}), gt, gp),
                                   {"dout", "i64", "f32, bf16 or f16"});

  // shapes (a wrong width D2 != D over no more than the tensor's memory)
  const std::int64_t D2 = D == 1 ? 2 : 1, P2 = D == 1 ? P / 2 : P * D;
  expect_rejected<InvalidArgument>(p, fwd(p.g_ids.view_as(p.id_type, {B * T}), tok, pos, out, o),
                                   {"ids", dims({B * T}), "rank 1", "rank 2"});
  expect_rejected<InvalidArgument>(p, fwd(p.g_ids.view_as(p.id_type, {B, T, 1}), tok, pos, out, o),
                                   {"ids", dims({B, T, 1}), "rank 2"});
  expect_rejected<InvalidArgument>(p, fwd(ids, p.g_tok.view_as(DType::f32, {V, D, 1}), pos, out, o),
                                   {"token_table", dims({V, D, 1}), "rank 2"});
  expect_rejected<InvalidArgument>(
      p, fwd(ids, tok, pos, p.g_out.view_as(DType::f32, {B, T, D - 1 > 0 ? D - 1 : D + 1}), o),
      {"out", dims({B, T, D}), "expected"});
  if (B != T)
    expect_rejected<InvalidArgument>(p,
                                     fwd(ids, tok, pos, p.g_out.view_as(DType::f32, {T, B, D}), o),
                                     {"out", dims({T, B, D}), dims({B, T, D})});
  expect_rejected<InvalidArgument>(
      p, fwd(ids, tok, pos, p.g_out.view_as(DType::f32, {B * T, D}), o), {"out", "rank 3"});
  expect_rejected<InvalidArgument>(p, fwd(ids, tok, p.g_pos.view_as(DType::f32, {P2, D2}), out, o),
                                   {"pos_table", dims({P2, D2}), "D = " + std::to_string(D)});
  Options wrong_pos_shape = o;
  wrong_pos_shape.position_ids = p.g_pos_ids.view_as(p.pos_id_type, {T, B});
  if (B != T)
    expect_rejected<InvalidArgument>(p, fwd(ids, tok, pos, out, wrong_pos_shape),
                                     {"position_ids", dims({T, B}), dims({B, T})});
  expect_rejected<InvalidArgument>(p, bwd(ids, p.g_dout.view_as(p.dout_type, {B, T}), gt, gp),
                                   {"dout", "rank 3"});
  expect_rejected<InvalidArgument>(p, bwd(ids, dout, gt, p.g_gpos.view_as(DType::f32, {P2, D2})),
                                   {"grad_pos", dims({P2, D2}), "D = " + std::to_string(D)});
  // padding_idx outside [-V, V).
  for (std::int64_t bad : {V, -V - 1, kI64Min, kI64Max}) {
    Options bad_padding = o;
    bad_padding.padding_idx = bad;
    expect_rejected<InvalidArgument>(
        p, [&] { tokemb::backward(ids, dout, gt, gp, bad_padding, Workspace{}, stream); },
        {"padding_idx", std::to_string(bad),
         "[" + std::to_string(-V) + ", " + std::to_string(V) + ")"});
  }
}

TEST(BadInput, DtypeAndShapeMismatchesAreRejected) {
  dtype_and_shape_mismatches(Device::cpu(), host_stream);
}
TEST_F(GpuBadInput, DtypeAndShapeMismatchesAreRejected) {
  dtype_and_shape_mismatches(Device::cuda(0), stream());
}

// ---- sizes that overflow ---------------------------------------------------------------------

void size_overflow(Device device, StreamView stream) {
  std::mt19937_64 rng(fresh_seed());
  Problem p = small_problem(device, stream, rng);
  p.upload();
  const std::int64_t B = p.B, T = p.T, D = p.D;
  const std::int64_t big = std::int64_t{1} << 62;
  const DType dt = p.dtype;
  const Options o = p.options();
  const TensorView ids = p.g_ids.view();
  // Views with huge shapes over small memory: validation must refuse them without touching it.
  // B * T * D overflows int64 although the table [1, 2^62] does not.
  expect_rejected<InvalidArgument>(
      p,
      [&] {
        tokemb::forward(ids, p.g_tok.view_as(dt, {1, big}), TensorView{},
                        p.g_out.view_as(dt, {B, T, big}), o, stream);
      },
      {"B * T * D", std::to_string(B * T) + " * " + std::to_string(big), "overflows int64"});
  expect_rejected<InvalidArgument>(p,
                                   [&] {
                                     tokemb::backward(ids,
                                                      p.g_dout.view_as(p.dout_type, {B, T, big}),
                                                      p.g_gtok.view_as(DType::f32, {1, big}),
                                                      TensorView{}, o, Workspace{}, stream);
                                   },
                                   {"B * T * D", "overflows int64"});
  // A table whose element count overflows.
  const std::int64_t huge = std::int64_t{1} << 40;
  expect_rejected<InvalidArgument>(p,
                                   [&] {
                                     tokemb::forward(ids, p.g_tok.view_as(dt, {huge, huge}),
                                                     TensorView{},
                                                     p.g_out.view_as(dt, {B, T, huge}), o, stream);
                                   },
                                   {std::to_string(huge), "overflows"});
  // More rows than the kernels index with 32 bits.
  expect_rejected<InvalidArgument>(
      p,
      [&] {
        tokemb::forward(p.g_ids.view_as(p.id_type, {65536, 65536}), p.g_tok.view(), TensorView{},
                        p.g_out.view_as(dt, {65536, 65536, D}), o, stream);
      },
      {"B * T", "4294967296", "exceeds the supported maximum", std::to_string(kI32Max)});
  expect_rejected<InvalidArgument>(
      p,
      [&] {
        tokemb::forward(ids, p.g_tok.view_as(dt, {kI32Max + 1, 1}), TensorView{},
                        p.g_out.view_as(dt, {B, T, 1}), o, stream);
      },
      {"vocabulary size", std::to_string(kI32Max + 1), std::to_string(kI32Max)});
  expect_rejected<InvalidArgument>(
      p,
      [&] {
        tokemb::forward(ids, p.g_tok.view_as(dt, {p.V, 1}), p.g_pos.view_as(dt, {kI32Max + 1, 1}),
                        p.g_out.view_as(dt, {B, T, 1}), o, stream);
      },
      {"context length", std::to_string(kI32Max + 1), std::to_string(kI32Max)});
  // Buffers whose byte count overflows size_t are refused before any allocation.
  expect_throw_with<InvalidArgument>([&] { Buffer b(DType::f32, Shape{big}, device); },
                                     {"Buffer", std::to_string(big), "overflows size_t"});
  if (device.is_cuda()) expect_cuda_healthy();
}

TEST(BadInput, SizesThatOverflowAreRejected) { size_overflow(Device::cpu(), host_stream); }
TEST_F(GpuBadInput, SizesThatOverflowAreRejected) { size_overflow(Device::cuda(0), stream()); }

// ---- misaligned pointers ---------------------------------------------------------------------

/// Every tensor one element off 16-byte alignment, odd and even D: the same result, bit for bit,
/// as the aligned call (on the GPU: the scalar path instead of a fault).
void misaligned_pointers(Device device, StreamView stream, DType dtype) {
  const auto seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 outer(seed);
  for (std::int64_t D : {1, 3, 8, 37, 64, 129}) {
    for (int variant = 0; variant < 4; ++variant) {
      const BackwardMode mode = variant % 2 ? BackwardMode::deterministic : BackwardMode::atomic;
      const bool accumulate = variant < 2;
      const std::uint64_t problem_seed = outer();
      const bool explicit_positions = outer() % 2 == 0;
      std::vector<float> out[2], gtok[2], gpos[2];
      for (std::size_t shift : {0u, 1u}) {
        SCOPED_TRACE(::testing::Message()
                     << "D=" << D << " shift " << shift << " element(s), "
                     << (mode == BackwardMode::atomic ? "atomic" : "deterministic")
                     << (accumulate ? ", accumulate" : ", overwrite"));
        std::mt19937_64 rng(problem_seed);
        Problem p = small_problem(device, stream, rng);
        p.D = D;
        p.dtype = dtype;
        p.dout_type = dtype;
        p.mode = mode;
        p.accumulate = accumulate;
        p.explicit_positions = explicit_positions;
        p.shift = shift;
        p.randomize(rng);
        p.upload();
        p.forward(p.options());
        p.expect_forward_result();
        p.backward(p.options());
        p.expect_backward_result();
        out[shift] = p.g_out.floats();
        gtok[shift] = p.g_gtok.floats();
        gpos[shift] = p.g_gpos.floats();
      }
      EXPECT_EQ(out[0], out[1]);
      EXPECT_EQ(gtok[0], gtok[1]);
      EXPECT_EQ(gpos[0], gpos[1]);
    }
  }
  if (device.is_cuda()) expect_cuda_healthy();
}

TEST(BadInput, MisalignedPointersGiveTheAlignedResult) {
  for (DType t : {DType::f32, DType::bf16, DType::f16}) {
    SCOPED_TRACE(dtype_name(t));
    misaligned_pointers(Device::cpu(), host_stream, t);
  }
}
TEST_F(GpuBadInput, MisalignedPointersGiveTheAlignedResult) {
  for (DType t : {DType::f32, DType::bf16, DType::f16}) {
    SCOPED_TRACE(dtype_name(t));
    misaligned_pointers(Device::cuda(0), stream(), t);
  }
}

// A pointer that is not a multiple of its element size (a bf16 table one byte off, an f32 table
// three bytes off) is rejected before any access: on the CPU it would be undefined behaviour, and
// a CUDA kernel would fault with a misaligned address, a sticky error that ends the context.
TEST(BadInput, PointersNotAlignedToTheirElementAreRejected) {
  std::mt19937_64 rng(fresh_seed());
  Problem p = small_problem(Device::cpu(), host_stream, rng);
  p.dtype = DType::bf16;
  p.upload();
  auto bytes_off = [](TensorView v, std::size_t n) {
    v.data = static_cast<unsigned char*>(v.data) + n;
    return v;
  };
  expect_rejected<InvalidArgument>(p,
                                   [&] {
                                     tokemb::forward(p.g_ids.view(), bytes_off(p.g_tok.view(), 1),
                                                     p.pos_view(), p.g_out.view(), p.options(),
                                                     host_stream);
                                   },
                                   {"token_table", "aligned"});
  expect_rejected<InvalidArgument>(p,
                                   [&] {
                                     tokemb::backward(p.g_ids.view(), p.g_dout.view(),
                                                      bytes_off(p.g_gtok.view(), 3), p.gpos_view(),
                                                      p.options(), Workspace{}, host_stream);
                                   },
                                   {"grad_token", "aligned"});
}

// ---- out of memory ---------------------------------------------------------------------------
// Under AddressSanitizer these need ASAN_OPTIONS=allocator_may_return_null=1 (scripts/
// ci-sanitize.sh sets it): by default ASan reports a 2^62-byte request as an error instead of
// returning null as the system allocator does. LeakSanitizer then checks that nothing leaked.

TEST(BadInput, HostOutOfMemoryIsTypedAndLeaksNothing) {
  const std::int64_t n = std::int64_t{1} << 60;  // 2^62 bytes of f32
  expect_throw_with<OutOfMemory>([&] { Buffer b(DType::f32, Shape{n}, Device::cpu()); },
                                 {"Buffer", std::to_string(n * 4), "failed"});
  // The module's position table cannot be allocated after its token table was: the token table
  // is released (LeakSanitizer checks it in the sanitizer build).
  EmbeddingConfig c;
  c.vocab_size = 4096;
  c.dim = 1024;
  c.context_length = std::int64_t{1} << 50;  // 2^60 elements
  expect_throw_with<OutOfMemory>([&] { Embedding m(c, host_stream); },
                                 {std::to_string((std::int64_t{1} << 60) * 4)});
  Buffer ok(DType::f32, Shape{1024}, Device::cpu());
  EXPECT_NE(ok.data(), nullptr);
}

TEST_F(GpuBadInput, DeviceOutOfMemoryIsTypedLeaksNothingAndTheContextStaysUsable) {
  synchronize(stream());
  const std::size_t free_before = cuda_free_bytes();
  const std::int64_t n = std::int64_t{1} << 50;  // 4 PiB of f32
  expect_throw_with<OutOfMemory>([&] { Buffer b(DType::f32, Shape{n}, Device::cuda(0)); },
                                 {"cudaMalloc", std::to_string(n * 4), "out of memory"});
  // A module whose 64 MiB token table is allocated but whose position table is not.
  EmbeddingConfig c;
  c.vocab_size = 16384;
  c.dim = 1024;
  c.context_length = std::int64_t{1} << 40;
  c.device = Device::cuda(0);
  expect_throw_with<OutOfMemory>([&] { Embedding m(c, stream()); }, {"out of memory"});
  expect_cuda_healthy();
  const std::size_t free_after = cuda_free_bytes();
  EXPECT_GE(free_after + (std::size_t{32} << 20), free_before)
      << "device memory went from " << free_before << " to " << free_after << " bytes free";
  // The context still works: a correct forward gives the right answer.
  std::mt19937_64 rng(fresh_seed());
  Problem p = small_problem(Device::cuda(0), stream(), rng);
  p.upload();
  p.forward(p.options());
  p.expect_forward_result();
  expect_cuda_healthy();
}

// ---- the module after an out-of-range error --------------------------------------------------

void module_usable_after_error(Device device, StreamView stream) {
  const auto seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  Problem p = small_problem(device, stream, rng);
  p.dtype = static_cast<DType>(std::uniform_int_distribution<int>(0, 2)(rng));
  std::fill(p.gtok.begin(), p.gtok.end(), 0.0f);  // the module's gradients start at zero
  std::fill(p.gpos.begin(), p.gpos.end(), 0.0f);
  EmbeddingConfig c;
  c.vocab_size = p.V;
  c.dim = p.D;
  c.context_length = p.P;
  c.dtype = p.dtype;
  c.device = device;
  Embedding m(c, stream);
  const auto tok_bytes = encode_floats(p.dtype, p.tok), pos_bytes = encode_floats(p.dtype, p.pos);
  m.load_token_table(tok_bytes.data(), tok_bytes.size());
  m.load_position_table(pos_bytes.data(), pos_bytes.size());
  auto module_forward = [&] {
    m.forward(p.g_ids.view(), p.g_out.view(), p.offset,
              p.explicit_positions ? p.g_pos_ids.view() : TensorView{});
  };
  auto module_backward = [&] {
    m.backward(p.g_ids.view(), p.g_dout.view(), p.offset,
               p.explicit_positions ? p.g_pos_ids.view() : TensorView{});
  };

  // A bad token id: the call returns, the error surfaces at synchronize().
  const std::int64_t r = std::uniform_int_distribution<std::int64_t>(0, p.B * p.T - 1)(rng);
  const std::vector<std::int64_t> good_ids = p.ids;
  p.ids[static_cast<std::size_t>(r)] = -p.V;
  p.upload();
  module_forward();
  if (auto e = catch_as<IndexOutOfRange>([&] { m.synchronize(); }))
    expect_row_error(*e, IndexOutOfRange::Kind::token, -p.V, r / p.T, r % p.T, p.V, 1);
  p.expect_forward_result();  // the row is zero, the others are right
  EXPECT_NO_THROW(m.synchronize()) << "the error is reported once";
  if (device.is_cuda()) expect_cuda_healthy();

  // A correct forward afterwards gives correct results and no error.
  p.ids = good_ids;
  p.upload();
  module_forward();
  EXPECT_NO_THROW(m.synchronize());
  p.expect_forward_result();

  // Backward with a bad position: the error surfaces at the next *_to_host, then the gradients
  // (without the bad row) can be read.
  p.explicit_positions = true;
  p.pos_ids[static_cast<std::size_t>(r)] = p.P + 11;
  p.upload();
  module_backward();
  if (auto e = catch_as<IndexOutOfRange>([&] { (void)m.token_grad_to_host(); }))
    expect_row_error(*e, IndexOutOfRange::Kind::position, p.P + 11, r / p.T, r % p.T, p.P, 1);
  std::vector<float> et, ep;
  p.expected_grads(et, ep);
  EXPECT_EQ(m.token_grad_to_host(), et);
  EXPECT_EQ(m.position_grad_to_host(), ep);
  // Tables untouched by all of this.
  EXPECT_EQ(encode_floats(p.dtype, m.token_table_to_host()), tok_bytes);
  EXPECT_EQ(encode_floats(p.dtype, m.position_table_to_host()), pos_bytes);
  if (device.is_cuda()) expect_cuda_healthy();
}

TEST(BadInput, ModuleStaysUsableAfterIndexOutOfRange) {
  module_usable_after_error(Device::cpu(), host_stream);
}
TEST_F(GpuBadInput, ModuleStaysUsableAfterIndexOutOfRange) {
  module_usable_after_error(Device::cuda(0), stream());
}

// ---- GPU-only ----------------------------------------------------------------------------------

/// The device error record says exactly what the CPU record says for the same inputs.
TEST_F(GpuBadInput, ErrorRecordMatchesTheCpuRecord) {
  const auto seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 outer(seed);
  for (int iter = 0; iter < 24; ++iter) {
    const std::uint64_t s = outer();
    // Sizes, dtypes and the fraction of bad rows (all of them in the last iterations: every
    // thread contends for the record's lock).
    std::mt19937_64 cfg(s);
    const bool all_bad = iter >= 20;
    const std::int64_t B = all_bad ? 64 : std::uniform_int_distribution<std::int64_t>(1, 8)(cfg);
    const std::int64_t T = all_bad ? 512 : std::uniform_int_distribution<std::int64_t>(1, 64)(cfg);
    const std::int64_t D = std::uniform_int_distribution<std::int64_t>(1, 80)(cfg);
    const double bad_rate = all_bad ? 1.0 : std::uniform_real_distribution<double>(0.0, 0.1)(cfg);
    const bool explicit_positions = cfg() % 2 == 0;
    const auto dtype = static_cast<DType>(cfg() % 3);
    const DType index = cfg() % 2 ? DType::i32 : DType::i64;
    SCOPED_TRACE(::testing::Message() << "iteration " << iter << ": B=" << B << " T=" << T
                                      << " D=" << D << " bad rate " << bad_rate);
    Problem p[2];
    for (int dev = 0; dev < 2; ++dev) {
      std::mt19937_64 rng(s ^ 0x9e3779b97f4a7c15ull);
      Problem& q = p[dev];
      q.device = dev == 0 ? Device::cpu() : Device::cuda(0);
      q.stream = dev == 0 ? host_stream : stream();
      q.B = B;
      q.T = T;
      q.D = D;
      q.V = std::uniform_int_distribution<std::int64_t>(1, 300)(rng);
      q.P = explicit_positions ? std::uniform_int_distribution<std::int64_t>(1, 300)(rng) : T + 3;
      q.offset = explicit_positions ? 0 : 3;
      q.explicit_positions = explicit_positions;
      q.dtype = dtype;
      q.id_type = index;
      q.pos_id_type = index;
      q.randomize(rng);
      std::bernoulli_distribution bad(bad_rate);
      for (std::size_t i = 0; i < q.ids.size(); ++i) {
        if (bad(rng)) {
          const int which = static_cast<int>(rng() % 3);
          if (which == 0 || !explicit_positions) {
            q.ids[i] = rng() % 2 ? -1 - static_cast<std::int64_t>(rng() % 1000)
                                 : q.V + static_cast<std::int64_t>(rng() % 1000);
          } else {
            q.pos_ids[i] = rng() % 2 ? -1 : q.P + static_cast<std::int64_t>(rng() % 7);
          }
        }
      }
      q.upload();
    }
    ErrorMonitor cpu_record(Device::cpu(), host_stream), gpu_record(Device::cuda(0), stream());
    auto compare_records = [&](int calls) {
      std::optional<IndexOutOfRange> errors[2];
      for (int dev = 0; dev < 2; ++dev) {
        try {
          (dev == 0 ? cpu_record : gpu_record).check(dev == 0 ? host_stream : stream());
        } catch (const IndexOutOfRange& e) {
          errors[dev] = e;
        }
      }
      ASSERT_EQ(errors[0].has_value(), errors[1].has_value());
      if (!errors[0]) return;
      const IndexOutOfRange &c = *errors[0], &g = *errors[1];
      EXPECT_EQ(g.kind(), c.kind());
      EXPECT_EQ(g.value(), c.value());
      EXPECT_EQ(g.batch(), c.batch());
      EXPECT_EQ(g.time(), c.time());
      EXPECT_EQ(g.limit(), c.limit());
      EXPECT_EQ(g.count(), c.count());
      EXPECT_EQ(std::string(g.what()), std::string(c.what()));
      if (all_bad) {
        EXPECT_EQ(g.batch(), 0);
        EXPECT_EQ(g.time(), 0);
        EXPECT_EQ(g.count(), static_cast<std::uint64_t>(calls * B * T));
      }
    };
    for (int dev = 0; dev < 2; ++dev) {
      p[dev].forward(p[dev].options(dev == 0 ? cpu_record.get() : gpu_record.get()));
      p[dev].expect_forward_result();
    }
    EXPECT_EQ(p[1].g_out.payload(), p[0].g_out.payload());
    compare_records(1);
    // Two backward calls into one record: the count adds up, the first row stays.
    for (int call = 0; call < 2; ++call)
      for (int dev = 0; dev < 2; ++dev)
        p[dev].backward(p[dev].options(dev == 0 ? cpu_record.get() : gpu_record.get()));
    EXPECT_TRUE(p[1].g_gtok.guards_intact("grad_token"));
    EXPECT_EQ(p[1].g_gtok.floats(), p[0].g_gtok.floats());
    EXPECT_EQ(p[1].g_gpos.floats(), p[0].g_gpos.floats());
    compare_records(2);
    expect_cuda_healthy();
  }
}

/// Deterministic mode: bitwise-identical gradients over 100 runs for a GPT-2-like shape with
/// Zipf-distributed ids (heavy duplication) and random (non-dyadic) f32 gradients.
TEST_F(GpuBadInput, DeterministicBackwardIsBitwiseIdenticalOver100Runs) {
  constexpr std::int64_t V = 50257, D = 768, P = 1024, B = 8, T = 1024;
  const auto seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  auto ids = random_ids<std::int64_t>(B * T, V, IdDistribution::zipf, rng);
  auto dout = random_values<float>(B * T * D, rng);
  Buffer d_ids = to_device(ids, DType::i64, {B, T}, stream());
  Buffer d_dout = to_device(dout, DType::f32, {B, T, D}, stream());
  Buffer gt(DType::f32, Shape{V, D}, Device::cuda(0)), gp(DType::f32, Shape{P, D}, Device::cuda(0));
  Options o;
  o.backward_mode = BackwardMode::deterministic;
  const std::size_t ws_bytes = backward_workspace_size(d_ids, d_dout, gt, gp, o);
  Buffer ws(DType::i64,
            Shape{std::max<std::int64_t>(1, static_cast<std::int64_t>((ws_bytes + 7) / 8))},
            Device::cuda(0));
  std::vector<float> first_t, first_p;
  for (int run = 0; run < 100; ++run) {
    fill_zero(gt, stream());
    fill_zero(gp, stream());
    backward(d_ids, d_dout, gt, gp, o, Workspace{ws.data(), ws.bytes()}, stream());
    auto ht = tokemb::test::to_host<float>(gt, stream());
    auto hp = tokemb::test::to_host<float>(gp, stream());
    if (run == 0) {
      // Sanity: close to the CPU reference (so equality below is not equality of garbage).
      std::vector<float> ct(static_cast<std::size_t>(V * D), 0.0f),
          cp(static_cast<std::size_t>(P * D), 0.0f);
      backward(host_view(ids, DType::i64, {B, T}), host_view(dout, DType::f32, {B, T, D}),
               host_view(ct, DType::f32, {V, D}), host_view(cp, DType::f32, {P, D}), Options{},
               Workspace{}, host_stream);
      for (std::size_t i = 0; i < ct.size(); ++i)
        ASSERT_NEAR(ht[i], ct[i], 1e-4f * (1.0f + std::fabs(ct[i]))) << "grad_token element " << i;
      for (std::size_t i = 0; i < cp.size(); ++i)
        ASSERT_NEAR(hp[i], cp[i], 1e-4f * (1.0f + std::fabs(cp[i]))) << "grad_pos element " << i;
      first_t = std::move(ht);
      first_p = std::move(hp);
      continue;
    }
    ASSERT_TRUE(same_bits(ht.data(), first_t.data(), first_t.size() * 4)) << "run " << run;
    ASSERT_TRUE(same_bits(hp.data(), first_p.data(), first_p.size() * 4)) << "run " << run;
  }
  expect_cuda_healthy();
}

/// A bf16 token table of more than 2^31 elements (~4.3 GB, its f32 gradient ~8.6 GB): rows near
/// the end, and a row that straddles element 2^31, are looked up and receive their gradient.
/// Expected values are computed for the touched rows only.
TEST_F(GpuBadInput, TableOfMoreThan2e31Elements) {
  constexpr std::int64_t D = 1000;
  constexpr std::int64_t V = (std::int64_t{1} << 31) / D + 10;  // V * D = 2^31 + 9352
  constexpr std::int64_t P = 1024, B = 4, T = 64;
  static_assert(V * D > (std::int64_t{1} << 31), "the table must exceed 2^31 elements");
  const std::size_t need = static_cast<std::size_t>(V * D) * (2 + 4) + (std::size_t{1} << 30);
  const std::size_t free_bytes = cuda_free_bytes();
  if (free_bytes < need)
    GTEST_SKIP() << "needs " << need / (1 << 20) << " MiB of free device memory, "
                 << free_bytes / (1 << 20) << " MiB are free";
  const auto seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const Device dev = Device::cuda(0);

  // The rows that are used; the row holding element 2^31 straddles it.
  const std::int64_t straddle = (std::int64_t{1} << 31) / D;
  ASSERT_LT(straddle * D, std::int64_t{1} << 31);
  ASSERT_GT((straddle + 1) * D, std::int64_t{1} << 31);
  const std::vector<std::int64_t> used = {0,     straddle - 1, straddle, straddle + 1,
                                          V - 3, V - 2,        V - 1};

  Buffer tok(DType::bf16, Shape{V, D}, dev), pos(DType::bf16, Shape{P, D}, dev);
  fill_zero(tok, stream());
  std::vector<std::vector<float>> tok_rows;
  for (std::int64_t r : used) {
    tok_rows.push_back(dyadic_values(static_cast<std::size_t>(D), rng));
    const auto bytes = encode_floats(DType::bf16, tok_rows.back());
    copy(
        TensorView(static_cast<unsigned char*>(tok.data()) + r * D * 2, DType::bf16, Shape{D}, dev),
        TensorView(bytes.data(), DType::bf16, Shape{D}, Device::cpu()), stream());
    synchronize(stream());
  }
  const auto pos_vals = dyadic_values(static_cast<std::size_t>(P * D), rng);
  {
    const auto bytes = encode_floats(DType::bf16, pos_vals);
    copy(pos, TensorView(bytes.data(), DType::bf16, Shape{P, D}, Device::cpu()), stream());
  }
  // ids from the used rows (duplicates near the end), one row just past the end.
  std::vector<std::int64_t> ids(static_cast<std::size_t>(B * T));
  std::vector<std::size_t> which(ids.size());
  for (std::size_t i = 0; i < ids.size(); ++i) {
    which[i] = static_cast<std::size_t>(rng() % used.size());
    ids[i] = used[which[i]];
  }
  const std::size_t bad_row = static_cast<std::size_t>(rng() % ids.size());
  ids[bad_row] = V;
  Buffer d_ids = to_device(ids, DType::i64, {B, T}, stream());
  const auto dout_vals = dyadic_values(static_cast<std::size_t>(B * T * D), rng);
  const auto dout_bytes = encode_floats(DType::bf16, dout_vals);
  Buffer dout(DType::bf16, Shape{B, T, D}, dev);
  copy(dout, TensorView(dout_bytes.data(), DType::bf16, Shape{B, T, D}, Device::cpu()), stream());
  ErrorMonitor record(dev, stream());
  Options o;
  o.error_record = record.get();

  // Forward.
  Buffer out(DType::bf16, Shape{B, T, D}, dev);
  forward(d_ids, tok, pos, out, o, stream());
  const auto out_host = decode_floats(DType::bf16, [&] {
    std::vector<unsigned char> h(static_cast<std::size_t>(B * T * D * 2));
    copy(TensorView(h.data(), DType::bf16, Shape{B, T, D}, Device::cpu()), out, stream());
    synchronize(stream());
    return h;
  }());
  for (std::size_t r = 0; r < ids.size(); ++r) {
    const std::int64_t t = static_cast<std::int64_t>(r) % T;
    for (std::int64_t d = 0; d < D; ++d) {
      const float want =
          r == bad_row
              ? 0.0f
              : round_to(DType::bf16,
                         tok_rows[which[r]][static_cast<std::size_t>(d)] +
                             round_to(DType::bf16, pos_vals[static_cast<std::size_t>(t * D + d)]));
      ASSERT_EQ(out_host[r * static_cast<std::size_t>(D) + static_cast<std::size_t>(d)], want)
          << "row " << r << " (token " << ids[r] << "), d " << d;
    }
  }
  if (auto e = catch_as<IndexOutOfRange>([&] { record.check(stream()); }))
    expect_row_error(*e, IndexOutOfRange::Kind::token, V, static_cast<std::int64_t>(bad_row) / T,
                     static_cast<std::int64_t>(bad_row) % T, V, 1);

  // Backward, both modes, into an f32 gradient of V * D elements.
  Buffer gt(DType::f32, Shape{V, D}, dev), gp(DType::f32, Shape{P, D}, dev);
  for (BackwardMode mode : {BackwardMode::atomic, BackwardMode::deterministic}) {
    SCOPED_TRACE(mode == BackwardMode::atomic ? "atomic" : "deterministic");
    fill_zero(gt, stream());
    fill_zero(gp, stream());
    o.backward_mode = mode;
    const std::size_t ws_bytes = backward_workspace_size(d_ids, dout, gt, gp, o);
    Buffer ws(DType::i64,
              Shape{std::max<std::int64_t>(1, static_cast<std::int64_t>((ws_bytes + 7) / 8))}, dev);
    backward(d_ids, dout, gt, gp, o, Workspace{ws.data(), ws.bytes()}, stream());
    // Expected sums for the used rows; their neighbours (unused) must stay zero.
    std::vector<std::int64_t> check_rows = used;
    for (std::int64_t r : used)
      for (std::int64_t n : {r - 1, r + 1})
        if (n >= 0 && n < V && std::find(used.begin(), used.end(), n) == used.end())
          check_rows.push_back(n);
    for (std::int64_t r : check_rows) {
      std::vector<float> want(static_cast<std::size_t>(D), 0.0f);
      for (std::size_t i = 0; i < ids.size(); ++i)
        if (i != bad_row && ids[i] == r)
          for (std::int64_t d = 0; d < D; ++d)
            want[static_cast<std::size_t>(d)] +=
                round_to(DType::bf16,
                         dout_vals[i * static_cast<std::size_t>(D) + static_cast<std::size_t>(d)]);
      std::vector<float> got(static_cast<std::size_t>(D));
      copy(TensorView(got.data(), DType::f32, Shape{D}, Device::cpu()),
           TensorView(static_cast<float*>(gt.data()) + r * D, DType::f32, Shape{D}, dev), stream());
      synchronize(stream());
      ASSERT_EQ(got, want) << "grad_token row " << r;
    }
    if (auto e = catch_as<IndexOutOfRange>([&] { record.check(stream()); }))
      expect_row_error(*e, IndexOutOfRange::Kind::token, V, static_cast<std::int64_t>(bad_row) / T,
                       static_cast<std::int64_t>(bad_row) % T, V, 1);
  }
  expect_cuda_healthy();
}

// A host pointer handed to a CUDA call would make the kernel fault and end the CUDA context;
// validation asks the driver where each pointer lives and rejects it first.
TEST_F(GpuBadInput, HostPointersInACudaCallAreRejectedAndTheContextStaysUsable) {
  constexpr std::int64_t V = 16, D = 8, P = 4, B = 2, T = 4;
  std::vector<std::int64_t> ids_h(B * T, 3);
  std::vector<float> tok_h(V * D, 1.0f), out_h(B * T * D, 0.0f);
  Buffer ids = to_device(ids_h, DType::i64, Shape{B, T}, stream());
  Buffer tok = to_device(tok_h, DType::f32, Shape{V, D}, stream());
  Buffer pos(DType::f32, Shape{P, D}, Device::cuda(0));
  Buffer out(DType::f32, Shape{B, T, D}, Device::cuda(0));
  fill_zero(pos, stream());
  const TensorView host_out(out_h.data(), DType::f32, Shape{B, T, D}, Device::cuda(0));
  try {
    tokemb::forward(ids, tok, pos, host_out, Options{}, stream());
    FAIL() << "no exception";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("out"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("host memory"), std::string::npos) << e.what();
  }
  ErrorRecord host_record = {};
  Options o;
  o.error_record = &host_record;  // a host record for a device call
  EXPECT_THROW(tokemb::forward(ids, tok, pos, out, o, stream()), InvalidArgument);
  tokemb::forward(ids, tok, pos, out, Options{}, stream());  // still fine afterwards
  const auto got = to_host<float>(out, stream());
  for (float x : got) ASSERT_EQ(x, 1.0f);
#if TOKEMB_WITH_CUDA
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
#endif
}

}  // namespace
}  // namespace tokemb::test
