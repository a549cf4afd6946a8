#pragma once
// Shared by the bad-input tests (issue 6), split by concern into test_bad_arguments.cpp,
// test_out_of_range.cpp, test_out_of_memory.cpp, test_large_tables.cpp and test_determinism.cpp:
// typed-exception checks, guarded tensors (a tensor in the middle of a larger allocation whose
// guard bytes hold a random canary) and a whole forward/backward problem with its host
// expectation.
//
// Table and gradient values are small dyadic rationals (k / 64), so every sum is exact in f32
// whatever the summation order: GPU results are compared bit for bit with the host expectation
// even for the atomic backward.

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

inline const StreamView host_stream = StreamView::legacy_default();
inline constexpr std::int64_t kI32Min = std::numeric_limits<std::int32_t>::min();
inline constexpr std::int64_t kI32Max = std::numeric_limits<std::int32_t>::max();
inline constexpr std::int64_t kI64Min = std::numeric_limits<std::int64_t>::min();
inline constexpr std::int64_t kI64Max = std::numeric_limits<std::int64_t>::max();

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

inline void expect_message_has(const std::exception& e, const std::vector<std::string>& parts) {
  const std::string msg = e.what();
  for (const auto& p : parts)
    EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' is not in the message: " << msg;
}

template <class E, class F>
void expect_throw_with(F&& f, const std::vector<std::string>& parts) {
  if (auto e = catch_as<E>(f)) expect_message_has(*e, parts);
}

inline std::string range(std::int64_t limit) { return "[0, " + std::to_string(limit) + ")"; }

inline std::string at(std::int64_t b, std::int64_t t) {
  return "(b=" + std::to_string(b) + ", t=" + std::to_string(t) + ")";
}

/// The checks shared by every IndexOutOfRange that describes a row.
inline void expect_row_error(const IndexOutOfRange& e, IndexOutOfRange::Kind kind,
                             std::int64_t value, std::int64_t b, std::int64_t t, std::int64_t limit,
                             std::uint64_t count) {
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
inline void expect_cuda_healthy() {
#if TOKEMB_WITH_CUDA
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
#endif
}

inline std::size_t cuda_free_bytes() {
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
inline float dyadic(std::mt19937_64& rng) {
  return static_cast<float>(std::uniform_int_distribution<int>(-128, 127)(rng)) / 64.0f;
}

inline std::vector<float> dyadic_values(std::size_t n, std::mt19937_64& rng) {
  std::vector<float> v(n);
  for (auto& x : v) x = dyadic(rng);
  return v;
}

/// Host bytes of \p v in floating dtype \p t (rounded to nearest even).
inline std::vector<unsigned char> encode_floats(DType t, const std::vector<float>& v) {
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

inline std::vector<float> decode_floats(DType t, const std::vector<unsigned char>& bytes) {
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
// (Written without the vector helpers: GCC 12 at -O3 sees a bogus -Wstringop-overflow in the
// inlined one-element round trip once this lives in a header.)
inline float round_to(DType t, float x) {
  if (t == DType::bf16) return bf16_t::from_float(x).to_float();
  if (t == DType::f16) return f16_t::from_float(x).to_float();
  return x;
}

inline std::vector<unsigned char> encode_ids(DType t, const std::vector<std::int64_t>& v) {
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

inline constexpr std::size_t kGuardBytes = 256;

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

inline Problem small_problem(Device device, StreamView stream, std::mt19937_64& rng) {
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

/// The fixture of the GPU bad-input tests (one suite name across the split files).
class GpuBadInput : public GpuTest {};

}  // namespace tokemb::test
