// Issue 21: what nn.Embedding accepts, tokemb accepts too. Strided ids, position_ids and dout
// (slices, transposes, broadcasts, reversed and non-mergeable strides) and any number of leading
// dimensions are read in place; f64 tables and gradients; gradients in dout's dtype (bf16/f16:
// one rounding per element, always the sort-based path).
//
// CPU: a strided call gives the same bits as the same call on contiguous copies (the CPU
// reference sums in row order, so the layout must not change a bit); f64 against a naive double
// computation; 16-bit gradients against the f32 gradient rounded once. GPU twins (skipped without
// a device; run on the simulator by scripts/sim-check.sh): the same calls against the CPU
// reference, forward exactly, backward within the documented tolerance.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <string>

#include "tests/test_helpers.hpp"

namespace tokemb::test {
namespace {

const StreamView host_stream = StreamView::legacy_default();  // ignored for CPU tensors

// ---- strided host tensors ----------------------------------------------------------------------

/// A tensor of logical shape \p shape laid out with element strides \p strides in a storage
/// vector (poisoned where no element lives). Elements sharing storage (stride 0) hold the value
/// written last; dense() reads every logical element back through the strides.
template <class E>
struct Strided {
  std::vector<E> storage;
  std::int64_t base = 0;  // storage index of the logical element 0
  Shape shape;
  std::vector<std::int64_t> strides;

  Strided(Shape s, std::vector<std::int64_t> st, E poison) : shape(s), strides(std::move(st)) {
    std::int64_t lo = 0, hi = 0;
    for (int i = 0; i < shape.rank(); ++i) {
      if (shape[i] == 0) continue;
      const std::int64_t span = strides[static_cast<std::size_t>(i)] * (shape[i] - 1);
      (span < 0 ? lo : hi) += span;
    }
    base = -lo;
    storage.assign(static_cast<std::size_t>(hi - lo + 1), poison);
  }
  std::int64_t offset(std::int64_t flat) const {
    std::int64_t off = base;
    for (int i = shape.rank() - 1; i >= 0; --i) {
      off += (flat % shape[i]) * strides[static_cast<std::size_t>(i)];
      flat /= shape[i];
    }
    return off;
  }
  void fill(const std::function<E(std::int64_t)>& value) {
    for (std::int64_t i = 0; i < shape.numel(); ++i)
      storage[static_cast<std::size_t>(offset(i))] = value(i);
  }
  std::vector<E> dense() const {
    std::vector<E> d(static_cast<std::size_t>(shape.numel()));
    for (std::int64_t i = 0; i < shape.numel(); ++i)
      d[static_cast<std::size_t>(i)] = storage[static_cast<std::size_t>(offset(i))];
    return d;
  }
  TensorView view(DType dtype) {
    return TensorView(storage.data() + base, dtype, shape, strides.data(), Device::cpu());
  }
};

/// The layouts of the ids (and, with a column stride, of dout) that the tests walk through.
struct IdLayout {
  const char* name;
  Shape shape;                        // of ids
  std::vector<std::int64_t> strides;  // of ids
};

std::vector<IdLayout> id_layouts() {
  return {
      {"contiguous", Shape{3, 5}, {5, 1}},
      {"sliced_rows", Shape{3, 5}, {6, 1}},  // batch[:, :-1]
      {"transposed", Shape{3, 5}, {1, 3}},
      {"broadcast_batch", Shape{3, 5}, {0, 1}},  // expand()
      {"reversed_time", Shape{3, 5}, {5, -1}},
      {"one_dim", Shape{7}, {1}},
      {"one_dim_strided", Shape{7}, {3}},
      {"three_dims_unmergeable", Shape{2, 3, 4}, {17, 5, 1}},
      {"three_dims_contiguous", Shape{2, 3, 4}, {12, 4, 1}},
  };
}

/// dout strides for ids of shape \p ids: \p kind "contiguous", "expanded" (every stride 0: the
/// gradient of out.sum()), "column_stride" (every other element), "padded_rows" (rows of D + 1).
std::vector<std::int64_t> dout_strides(const Shape& ids, std::int64_t D, const std::string& kind) {
  const int r = ids.rank();
  std::vector<std::int64_t> s(static_cast<std::size_t>(r + 1));
  const std::int64_t col = kind == "column_stride" ? 2 : 1;
  const std::int64_t row = kind == "column_stride" ? 2 * D : kind == "padded_rows" ? D + 1 : D;
  s[static_cast<std::size_t>(r)] = kind == "expanded" ? 0 : col;
  std::int64_t next = row;
  for (int i = r - 1; i >= 0; --i) {
    s[static_cast<std::size_t>(i)] = kind == "expanded" ? 0 : next;
    next *= ids[i];
  }
  return s;
}

Shape with_dim(const Shape& s, std::int64_t last) {
  std::int64_t d[Shape::max_rank];
  for (int i = 0; i < s.rank(); ++i) d[i] = s[i];
  d[s.rank()] = last;
  return Shape(d, s.rank() + 1);
}

const char* const kDoutKinds[] = {"contiguous", "expanded", "column_stride", "padded_rows"};

// ---- CPU: strided == contiguous, bit for bit ---------------------------------------------------

TEST(CpuLayouts, StridedIdsPositionIdsAndDoutGiveTheContiguousResultBitForBit) {
  constexpr std::int64_t V = 13, D = 6, P = 16;
  const auto seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  auto tok = random_values<float>(V * D, rng), pos = random_values<float>(P * D, rng);
  for (const IdLayout& l : id_layouts()) {
    SCOPED_TRACE(l.name);
    const std::int64_t n = l.shape.numel(), T = l.shape[l.shape.rank() - 1];
    Strided<std::int64_t> ids(l.shape, l.strides, -1);
    ids.fill([&](std::int64_t) { return static_cast<std::int64_t>(rng() % V); });
    auto ids_dense = ids.dense();
    // Position ids of the same layout, any value in [0, P).
    Strided<std::int32_t> pids(l.shape, l.strides, -1);
    pids.fill([&](std::int64_t) { return static_cast<std::int32_t>(rng() % P); });
    auto pids_dense = pids.dense();
    const Shape out_shape = with_dim(l.shape, D);

    for (bool explicit_positions : {false, true}) {
      SCOPED_TRACE(explicit_positions ? "position_ids" : "offset positions");
      Options o, o_dense;
      if (explicit_positions) {
        o.position_ids = pids.view(DType::i32);
        o_dense.position_ids = host_view(pids_dense, DType::i32, l.shape);
      } else {
        o.position_offset = o_dense.position_offset = P - T;
      }
      std::vector<float> out(static_cast<std::size_t>(n * D), NAN), want(out.size(), NAN);
      forward(ids.view(DType::i64), host_view(tok, DType::f32, {V, D}),
              host_view(pos, DType::f32, {P, D}), host_view(out, DType::f32, out_shape), o,
              host_stream);
      forward(host_view(ids_dense, DType::i64, l.shape), host_view(tok, DType::f32, {V, D}),
              host_view(pos, DType::f32, {P, D}), host_view(want, DType::f32, out_shape), o_dense,
              host_stream);
      ASSERT_TRUE(same_bits(out.data(), want.data(), out.size() * sizeof(float)));
      // Row r of the output is token ids[r] (the r-th element in row-major order) at position
      // offset + r % T: spot-check the last row against the tables directly.
      const std::int64_t r = n - 1;
      const std::int64_t q = explicit_positions ? pids_dense.back() : P - T + r % T;
      EXPECT_EQ(out[static_cast<std::size_t>(r * D)],
                tok[static_cast<std::size_t>(ids_dense.back() * D)] +
                    pos[static_cast<std::size_t>(q * D)]);

      for (const char* kind : kDoutKinds) {
        SCOPED_TRACE(kind);
        Strided<float> dout(out_shape, dout_strides(l.shape, D, kind), NAN);
        std::uniform_real_distribution<float> u(-1.0f, 1.0f);
        dout.fill([&](std::int64_t) { return u(rng); });
        auto dout_dense = dout.dense();
        for (bool accumulate : {true, false}) {
          std::vector<float> gt(V * D), gp(P * D);
          for (auto& x : gt) x = u(rng);
          for (auto& x : gp) x = u(rng);
          auto gt_dense = gt, gp_dense = gp;
          o.accumulate = o_dense.accumulate = accumulate;
          backward(ids.view(DType::i64), dout.view(DType::f32), host_view(gt, DType::f32, {V, D}),
                   host_view(gp, DType::f32, {P, D}), o, Workspace{}, host_stream);
          backward(host_view(ids_dense, DType::i64, l.shape),
                   host_view(dout_dense, DType::f32, out_shape),
                   host_view(gt_dense, DType::f32, {V, D}), host_view(gp_dense, DType::f32, {P, D}),
                   o_dense, Workspace{}, host_stream);
          ASSERT_TRUE(same_bits(gt.data(), gt_dense.data(), gt.size() * sizeof(float)));
          ASSERT_TRUE(same_bits(gp.data(), gp_dense.data(), gp.size() * sizeof(float)));
        }
      }
    }
  }
}

TEST(CpuLayouts, EveryRankFromOneToSevenGivesRowsInRowMajorOrder) {
  constexpr std::int64_t V = 9, D = 3, P = 4;
  std::vector<float> tok(V * D), pos(P * D);
  for (std::size_t i = 0; i < tok.size(); ++i) tok[i] = static_cast<float>(i);
  for (std::size_t i = 0; i < pos.size(); ++i) pos[i] = 1000.0f * static_cast<float>(i);
  for (int rank = 1; rank <= 7; ++rank) {
    SCOPED_TRACE("rank " + std::to_string(rank));
    std::int64_t dims[8];
    for (int i = 0; i < rank; ++i) dims[i] = i == rank - 1 ? P : (i % 2 ? 1 : 2);
    const Shape s(dims, rank);
    std::vector<std::int32_t> ids(static_cast<std::size_t>(s.numel()));
    for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<std::int32_t>((i * 5) % V);
    std::vector<float> out(ids.size() * D, NAN);
    forward(host_view(ids, DType::i32, s), host_view(tok, DType::f32, {V, D}),
            host_view(pos, DType::f32, {P, D}), host_view(out, DType::f32, with_dim(s, D)),
            Options{}, host_stream);
    for (std::size_t r = 0; r < ids.size(); ++r)
      for (std::int64_t d = 0; d < D; ++d)
        ASSERT_EQ(out[r * D + static_cast<std::size_t>(d)],
                  tok[static_cast<std::size_t>(ids[r] * D + d)] +
                      pos[static_cast<std::size_t>((static_cast<std::int64_t>(r) % P) * D + d)]);
  }
  // Rank 8 ids would need a rank-9 output.
  std::vector<std::int32_t> ids(1, 0);
  std::vector<float> out(D);
  const std::int64_t ones[8] = {1, 1, 1, 1, 1, 1, 1, 1};
  EXPECT_THROW(forward(host_view(ids, DType::i32, Shape(ones, 8)),
                       host_view(tok, DType::f32, {V, D}), TensorView{},
                       host_view(out, DType::f32, {1, D}), Options{}, host_stream),
               InvalidArgument);
}

// Found by fuzz_validate: an empty batch whose other dimensions multiply past int64 ([0, 2^40,
// 2^40]) made the row-major stride computation overflow (undefined behaviour). It is a valid
// empty batch: nothing is read or written.
TEST(CpuLayouts, EmptyBatchWithHugeDimensionsIsANoOp) {
  std::vector<std::int64_t> ids(1, 0);
  std::vector<float> tok(4, 1.0f), out(1, -7.0f), dout(1, 1.0f), g(4, 0.5f);
  const std::int64_t big = std::int64_t{1} << 40;
  EXPECT_NO_THROW(forward(host_view(ids, DType::i64, {0, big, big}),
                          host_view(tok, DType::f32, {2, 2}), TensorView{},
                          host_view(out, DType::f32, {0, big, big, 2}), Options{}, host_stream));
  EXPECT_NO_THROW(backward(host_view(ids, DType::i64, {big, 0, big}),
                           host_view(dout, DType::f32, {big, 0, big, 2}),
                           host_view(g, DType::f32, {2, 2}), TensorView{}, Options{}, Workspace{},
                           host_stream));
  EXPECT_EQ(out[0], -7.0f);
  EXPECT_EQ(g, std::vector<float>(4, 0.5f));
}

TEST(CpuLayouts, TablesOutputsAndGradientsMustBeContiguousAndTheMessageSaysWhich) {
  constexpr std::int64_t V = 4, D = 4;
  std::vector<float> tok(V * D * 2), out(2 * D), g(V * D * 2);
  std::vector<std::int64_t> ids = {0, 1};
  const std::int64_t col2[2] = {2 * D, 2};  // every other column
  auto expect_message = [](const std::function<void()>& f, const std::string& part) {
    try {
      f();
      ADD_FAILURE() << "no exception";
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
  };
  const TensorView strided_tok(tok.data(), DType::f32, Shape{V, D}, col2, Device::cpu());
  expect_message(
      [&] {
        forward(host_view(ids, DType::i64, {1, 2}), strided_tok, TensorView{},
                host_view(out, DType::f32, {1, 2, D}), Options{}, host_stream);
      },
      "token_table of shape [4, 4] has strides [8, 2]; it must be contiguous");
  const std::int64_t out_strides[3] = {2 * D, D, 1};
  std::vector<float> big_out(4 * D);
  expect_message(
      [&] {
        forward(host_view(ids, DType::i64, {2, 1}), host_view(tok, DType::f32, {V, D}),
                TensorView{},
                TensorView(big_out.data(), DType::f32, Shape{2, 1, D}, out_strides, Device::cpu()),
                Options{}, host_stream);
      },
      "out of shape [2, 1, 4] has strides [8, 4, 1]; it must be contiguous");
  std::vector<float> dout(2 * D, 1.0f);
  expect_message(
      [&] {
        backward(host_view(ids, DType::i64, {1, 2}), host_view(dout, DType::f32, {1, 2, D}),
                 TensorView(g.data(), DType::f32, Shape{V, D}, col2, Device::cpu()), TensorView{},
                 Options{}, Workspace{}, host_stream);
      },
      "grad_token of shape [4, 4] has strides [8, 2]");
  // Overlap is measured over a strided view's extent: ids spread over storage that also holds
  // the table may be read together (forward), but not while backward writes that table.
  std::vector<float> shared(64, 0.0f);
  const std::int64_t sparse_ids[2] = {0, 30};
  const TensorView spread_ids(shared.data(), DType::i32, Shape{1, 2}, sparse_ids, Device::cpu());
  const TensorView inner_table(shared.data() + 8, DType::f32, Shape{2, 4}, Device::cpu());
  EXPECT_NO_THROW(forward(spread_ids, inner_table, TensorView{},
                          host_view(out, DType::f32, {1, 2, D}), Options{}, host_stream));
  expect_message(
      [&] {
        backward(spread_ids, host_view(dout, DType::f32, {1, 2, D}), inner_table, TensorView{},
                 Options{}, Workspace{}, host_stream);
      },
      "overlaps ids");
}

// ---- CPU: f64 ---------------------------------------------------------------------------------

TEST(CpuF64, ForwardAndBackwardAreExactDoubleArithmetic) {
  constexpr std::int64_t V = 7, D = 5, P = 6, B = 3, T = 4;
  const auto seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  std::vector<double> tok(V * D), pos(P * D), dout(B * T * D), out(B * T * D, NAN);
  for (auto* v : {&tok, &pos, &dout})
    for (auto& x : *v) x = u(rng) * (1.0 + 1e-9 * u(rng));  // bits below f32 precision
  std::vector<std::int64_t> ids(B * T);
  for (auto& x : ids) x = static_cast<std::int64_t>(rng() % V);
  forward(host_view(ids, DType::i64, {B, T}), host_view(tok, DType::f64, {V, D}),
          host_view(pos, DType::f64, {P, D}), host_view(out, DType::f64, {B, T, D}), Options{},
          host_stream);
  for (std::int64_t r = 0; r < B * T; ++r)
    for (std::int64_t d = 0; d < D; ++d)
      ASSERT_EQ(out[static_cast<std::size_t>(r * D + d)],
                tok[static_cast<std::size_t>(ids[static_cast<std::size_t>(r)] * D + d)] +
                    pos[static_cast<std::size_t>((r % T) * D + d)]);
  std::vector<double> gt(V * D, 0.5), gp(P * D, -0.25), want_t = gt, want_p = gp;
  backward(host_view(ids, DType::i64, {B, T}), host_view(dout, DType::f64, {B, T, D}),
           host_view(gt, DType::f64, {V, D}), host_view(gp, DType::f64, {P, D}), Options{},
           Workspace{}, host_stream);
  // Row-order sums from zero, then added to the starting value: the reference's documented order.
  std::vector<double> st(V * D, 0.0), sp(P * D, 0.0);
  for (std::int64_t r = 0; r < B * T; ++r)
    for (std::int64_t d = 0; d < D; ++d) {
      st[static_cast<std::size_t>(ids[static_cast<std::size_t>(r)] * D + d)] +=
          dout[static_cast<std::size_t>(r * D + d)];
      sp[static_cast<std::size_t>((r % T) * D + d)] += dout[static_cast<std::size_t>(r * D + d)];
    }
  for (std::size_t i = 0; i < gt.size(); ++i) ASSERT_EQ(gt[i], want_t[i] + st[i]) << i;
  for (std::size_t i = 0; i < gp.size(); ++i) ASSERT_EQ(gp[i], want_p[i] + sp[i]) << i;
}

TEST(CpuF64, GradientsMustBeF64ForF64DoutAndF32OrDoutsDtypeOtherwise) {
  std::vector<std::int64_t> ids = {0};
  std::vector<double> dout64(4, 1.0), g64(4);
  std::vector<float> dout32(4, 1.0f), g32(4);
  std::vector<std::uint16_t> g16(4);
  auto call = [&](const TensorView& dout, const TensorView& g) {
    backward(host_view(ids, DType::i64, {1, 1}), dout, g, TensorView{}, Options{}, Workspace{},
             host_stream);
  };
  EXPECT_THROW(call(host_view(dout64, DType::f64, {1, 1, 4}), host_view(g32, DType::f32, {1, 4})),
               InvalidArgument);
  EXPECT_THROW(call(host_view(dout32, DType::f32, {1, 1, 4}), host_view(g64, DType::f64, {1, 4})),
               InvalidArgument);
  EXPECT_THROW(call(host_view(dout32, DType::f32, {1, 1, 4}), host_view(g16, DType::bf16, {1, 4})),
               InvalidArgument);
  EXPECT_NO_THROW(
      call(host_view(dout64, DType::f64, {1, 1, 4}), host_view(g64, DType::f64, {1, 4})));
  EXPECT_EQ(g64[0], 1.0);
  EXPECT_NO_THROW(
      call(host_view(dout32, DType::f32, {1, 1, 4}), host_view(g32, DType::f32, {1, 4})));
}

// ---- CPU: gradients in the table's dtype ------------------------------------------------------

template <class T>
class CpuTableDtypeGrads : public ::testing::Test {};
using HalfTypes = ::testing::Types<bf16_t, f16_t>;
struct HalfNames {
  template <class T>
  static std::string GetName(int) {
    return dtype_name(FloatTraits<T>::dtype);
  }
};
TYPED_TEST_SUITE(CpuTableDtypeGrads, HalfTypes, HalfNames);

TYPED_TEST(CpuTableDtypeGrads, AreTheF32GradientsRoundedOnce) {
  using T = TypeParam;
  constexpr DType dt = FloatTraits<T>::dtype;
  constexpr std::int64_t V = 11, D = 8, P = 6, B = 4, T_ = 6;
  const auto seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  auto dout = random_values<T>(B * T_ * D, rng);
  auto ids = random_ids<std::int32_t>(B * T_, V, IdDistribution::zipf, rng);
  for (bool accumulate : {true, false}) {
    auto gt = random_values<T>(V * D, rng), gp = random_values<T>(P * D, rng);
    std::vector<float> gt32(gt.size()), gp32(gp.size());
    for (std::size_t i = 0; i < gt.size(); ++i) gt32[i] = to_f(gt[i]);
    for (std::size_t i = 0; i < gp.size(); ++i) gp32[i] = to_f(gp[i]);
    Options o;
    o.accumulate = accumulate;
    o.padding_idx = 3;
    backward(host_view(ids, DType::i32, {B, T_}), host_view(dout, dt, {B, T_, D}),
             host_view(gt, dt, {V, D}), host_view(gp, dt, {P, D}), o, Workspace{}, host_stream);
    backward(host_view(ids, DType::i32, {B, T_}), host_view(dout, dt, {B, T_, D}),
             host_view(gt32, DType::f32, {V, D}), host_view(gp32, DType::f32, {P, D}), o,
             Workspace{}, host_stream);
    for (std::size_t i = 0; i < gt.size(); ++i)
      ASSERT_EQ(gt[i].bits, from_f<T>(gt32[i]).bits) << "grad_token " << i;
    for (std::size_t i = 0; i < gp.size(); ++i)
      ASSERT_EQ(gp[i].bits, from_f<T>(gp32[i]).bits) << "grad_pos " << i;
  }
}

TEST(CpuTableDtypeGrads, SixteenBitGradientsNeedTheSortedWorkspaceOnTheGpuOnly) {
  std::vector<std::int64_t> ids = {0, 1};
  std::vector<bf16_t> dout(2 * 8), g(2 * 8);
  Options o;  // atomic, accumulate: no workspace for f32 gradients
  EXPECT_EQ(backward_workspace_size(host_view(ids, DType::i64, {1, 2}),
                                    host_view(dout, DType::bf16, {1, 2, 8}),
                                    host_view(g, DType::bf16, {2, 8}), TensorView{}, o),
            0u);  // the CPU never needs one
}

// ---- GPU twins -------------------------------------------------------------------------------

class GpuLayouts : public GpuTest {};

/// Copies a strided host tensor's storage to the device and views it with the same strides.
template <class E>
struct DeviceStrided {
  Buffer storage;
  TensorView view;
  DeviceStrided(Strided<E>& h, DType dtype, StreamView stream) {
    storage = to_device(h.storage, dtype, Shape{static_cast<std::int64_t>(h.storage.size())},
                        stream);
    view = TensorView(static_cast<E*>(storage.data()) + h.base, dtype, h.shape, h.strides.data(),
                      Device::cuda(0));
  }
};

TEST_F(GpuLayouts, StridedIdsPositionIdsAndDoutMatchTheCpuReference) {
  constexpr std::int64_t V = 29, D = 16, P = 16;
  const auto seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  auto tok = random_values<float>(V * D, rng), pos = random_values<float>(P * D, rng);
  Buffer tok_d = to_device(tok, DType::f32, {V, D}, stream());
  Buffer pos_d = to_device(pos, DType::f32, {P, D}, stream());
  for (const IdLayout& l : id_layouts()) {
    SCOPED_TRACE(l.name);
    const std::int64_t n = l.shape.numel();
    Strided<std::int64_t> ids(l.shape, l.strides, -1);
    ids.fill([&](std::int64_t) { return static_cast<std::int64_t>(rng() % V); });
    Strided<std::int32_t> pids(l.shape, l.strides, -1);
    pids.fill([&](std::int64_t) { return static_cast<std::int32_t>(rng() % P); });
    auto ids_dense = ids.dense();
    auto pids_dense = pids.dense();
    DeviceStrided<std::int64_t> ids_d(ids, DType::i64, stream());
    DeviceStrided<std::int32_t> pids_d(pids, DType::i32, stream());
    const Shape out_shape = with_dim(l.shape, D);
    for (bool explicit_positions : {false, true}) {
      SCOPED_TRACE(explicit_positions ? "position_ids" : "offset positions");
      Options o, oc;
      if (explicit_positions) {
        o.position_ids = pids_d.view;
        oc.position_ids = host_view(pids_dense, DType::i32, l.shape);
      }
      Buffer out_d(DType::f32, out_shape, Device::cuda(0));
      poison_device(out_d, stream());
      forward(ids_d.view, tok_d, pos_d, out_d, o, stream());
      std::vector<float> want(static_cast<std::size_t>(n * D));
      forward(host_view(ids_dense, DType::i64, l.shape), host_view(tok, DType::f32, {V, D}),
              host_view(pos, DType::f32, {P, D}), host_view(want, DType::f32, out_shape), oc,
              host_stream);
      const auto got = to_host<float>(out_d, stream());
      ASSERT_TRUE(same_bits(got.data(), want.data(), want.size() * sizeof(float)));

      for (const char* kind : kDoutKinds) {
        SCOPED_TRACE(kind);
        Strided<float> dout(out_shape, dout_strides(l.shape, D, kind), NAN);
        std::uniform_real_distribution<float> u(-1.0f, 1.0f);
        dout.fill([&](std::int64_t) { return u(rng); });
        auto dout_dense = dout.dense();
        std::vector<float> dout_abs(dout_dense.size());
        for (std::size_t i = 0; i < dout_abs.size(); ++i) dout_abs[i] = std::fabs(dout_dense[i]);
        DeviceStrided<float> dout_d(dout, DType::f32, stream());
        for (BackwardMode mode : {BackwardMode::atomic, BackwardMode::deterministic}) {
          SCOPED_TRACE(mode == BackwardMode::atomic ? "atomic" : "deterministic");
          o.backward_mode = mode;
          o.accumulate = false;
          Buffer gt_d(DType::f32, {V, D}, Device::cuda(0)), gp_d(DType::f32, {P, D}, Device::cuda(0));
          poison_device(gt_d, stream());
          poison_device(gp_d, stream());
          const std::size_t ws = backward_workspace_size(ids_d.view, dout_d.view, gt_d, gp_d, o);
          GuardedWorkspace w(ws, 0, stream(), seed);
          backward(ids_d.view, dout_d.view, gt_d, gp_d, o, w.get(), stream());
          std::vector<float> gt(V * D, 0.0f), gp(P * D, 0.0f), st(V * D, 0.0f), sp(P * D, 0.0f);
          backward(host_view(ids_dense, DType::i64, l.shape),
                   host_view(dout_dense, DType::f32, out_shape), host_view(gt, DType::f32, {V, D}),
                   host_view(gp, DType::f32, {P, D}), oc, Workspace{}, host_stream);
          backward(host_view(ids_dense, DType::i64, l.shape),
                   host_view(dout_abs, DType::f32, out_shape), host_view(st, DType::f32, {V, D}),
                   host_view(sp, DType::f32, {P, D}), oc, Workspace{}, host_stream);
          EXPECT_TRUE(grad_matches(to_host<float>(gt_d, stream()), gt, st, "grad_token"));
          EXPECT_TRUE(grad_matches(to_host<float>(gp_d, stream()), gp, sp, "grad_pos"));
          EXPECT_TRUE(w.canaries_intact());
        }
      }
    }
  }
}

TEST_F(GpuLayouts, F64TablesAndGradientsMatchTheCpuReference) {
  constexpr std::int64_t V = 23, D = 10, P = 12, B = 5, T = 12;
  const auto seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  std::vector<double> tok(V * D), pos(P * D), dout(B * T * D);
  for (auto* v : {&tok, &pos, &dout})
    for (auto& x : *v) x = u(rng) * (1.0 + 1e-9 * u(rng));
  auto ids = random_ids<std::int64_t>(B * T, V, IdDistribution::zipf, rng);
  Buffer ids_d = to_device(ids, DType::i64, {B, T}, stream());
  Buffer tok_d = to_device(tok, DType::f64, {V, D}, stream());
  Buffer pos_d = to_device(pos, DType::f64, {P, D}, stream());
  Buffer dout_d = to_device(dout, DType::f64, {B, T, D}, stream());
  for (std::int64_t dim : {D, D - 1}) {  // D - 1: odd, the scalar path
    SCOPED_TRACE("D " + std::to_string(dim));
    const TensorView tok_v(tok.data(), DType::f64, Shape{V * D / dim, dim}, Device::cpu());
    const TensorView pos_v(pos.data(), DType::f64, Shape{P, dim}, Device::cpu());
    Options o;
    o.dropout.p = 0.25;
    o.dropout.seed = seed;
    std::vector<double> want(static_cast<std::size_t>(B * T * dim));
    forward(host_view(ids, DType::i64, {B, T}), tok_v, pos_v,
            host_view(want, DType::f64, {B, T, dim}), o, host_stream);
    Buffer out_d(DType::f64, {B, T, dim}, Device::cuda(0));
    poison_device(out_d, stream());
    forward(ids_d, TensorView(tok_d.data(), DType::f64, tok_v.shape, Device::cuda(0)),
            TensorView(pos_d.data(), DType::f64, pos_v.shape, Device::cuda(0)), out_d, o,
            stream());
    const auto got = to_host<double>(out_d, stream());
    ASSERT_TRUE(same_bits(got.data(), want.data(), want.size() * sizeof(double)));

    const TensorView dout_v(dout_d.data(), DType::f64, Shape{B, T, dim}, Device::cuda(0));
    for (BackwardMode mode : {BackwardMode::atomic, BackwardMode::deterministic})
      for (bool accumulate : {true, false}) {
        SCOPED_TRACE(std::string(mode == BackwardMode::atomic ? "atomic" : "deterministic") +
                     (accumulate ? " accumulate" : " overwrite"));
        o.backward_mode = mode;
        o.accumulate = accumulate;
        std::vector<double> gt(static_cast<std::size_t>(V * D / dim * dim), 0.5),
            gp(static_cast<std::size_t>(P * dim), -0.5);
        Buffer gt_d = to_device(gt, DType::f64, {V * D / dim, dim}, stream());
        Buffer gp_d = to_device(gp, DType::f64, {P, dim}, stream());
        const std::size_t ws = backward_workspace_size(ids_d, dout_v, gt_d, gp_d, o);
        GuardedWorkspace w(ws, 0, stream(), seed);
        backward(ids_d, dout_v, gt_d, gp_d, o, w.get(), stream());
        backward(host_view(ids, DType::i64, {B, T}),
                 TensorView(dout.data(), DType::f64, Shape{B, T, dim}, Device::cpu()),
                 host_view(gt, DType::f64, {V * D / dim, dim}), host_view(gp, DType::f64, {P, dim}),
                 o, Workspace{}, host_stream);
        // f64 sums in another order: far below any f32 rounding, which must not appear.
        for (auto [d_buf, h] : {std::pair<const Buffer*, std::vector<double>*>{&gt_d, &gt},
                                {&gp_d, &gp}}) {
          const auto g = to_host<double>(*d_buf, stream());
          for (std::size_t i = 0; i < g.size(); ++i)
            ASSERT_NEAR(g[i], (*h)[i], 1e-12 * (1.0 + std::fabs((*h)[i])) * B * T) << i;
        }
        EXPECT_TRUE(w.canaries_intact());
      }
  }
}

template <class T>
class GpuTableDtypeGrads : public GpuTest {};
TYPED_TEST_SUITE(GpuTableDtypeGrads, HalfTypes, HalfNames);

TYPED_TEST(GpuTableDtypeGrads, AreWrittenOnceWithOneRoundingInEveryModeAndRunToRunIdentical) {
  using T = TypeParam;
  constexpr DType dt = FloatTraits<T>::dtype;
  constexpr std::int64_t V = 37, D = 24, P = 40, B = 3, T_ = 40;  // 120 rows: one sorted tile
  const auto seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  auto dout = random_values<T>(B * T_ * D, rng);
  auto ids = random_ids<std::int32_t>(B * T_, V, IdDistribution::zipf, rng);
  Buffer ids_d = to_device(ids, DType::i32, {B, T_}, this->stream());
  Buffer dout_d = to_device(dout, dt, {B, T_, D}, this->stream());
  for (BackwardMode mode : {BackwardMode::atomic, BackwardMode::deterministic})
    for (bool accumulate : {true, false}) {
      SCOPED_TRACE(std::string(mode == BackwardMode::atomic ? "atomic" : "deterministic") +
                   (accumulate ? " accumulate" : " overwrite"));
      Options o;
      o.backward_mode = mode;
      o.accumulate = accumulate;
      o.padding_idx = 2;
      auto gt = random_values<T>(V * D, rng), gp = random_values<T>(P * D, rng);
      std::vector<float> gt32(gt.size()), gp32(gp.size()), st(gt.size(), 0.0f),
          sp(gp.size(), 0.0f);
      for (std::size_t i = 0; i < gt.size(); ++i) gt32[i] = to_f(gt[i]);
      for (std::size_t i = 0; i < gp.size(); ++i) gp32[i] = to_f(gp[i]);
      std::vector<T> results[2];
      for (int run = 0; run < 2; ++run) {
        Buffer gt_d = to_device(gt, dt, {V, D}, this->stream());
        Buffer gp_d = to_device(gp, dt, {P, D}, this->stream());
        const std::size_t ws = backward_workspace_size(ids_d, dout_d, gt_d, gp_d, o);
        ASSERT_GT(ws, 0u);  // 16-bit gradients always sort
        GuardedWorkspace w(ws, 0, this->stream(), seed);
        backward(ids_d, dout_d, gt_d, gp_d, o, w.get(), this->stream());
        EXPECT_TRUE(w.canaries_intact());
        results[run] = to_host<T>(gt_d, this->stream());
        const auto p = to_host<T>(gp_d, this->stream());
        results[run].insert(results[run].end(), p.begin(), p.end());
      }
      ASSERT_TRUE(same_bits(results[0].data(), results[1].data(), results[0].size() * sizeof(T)));
      // The f32 reference, and its sum of |dout| for the tolerance.
      std::vector<T> dout_abs(dout.size());
      for (std::size_t i = 0; i < dout.size(); ++i) dout_abs[i] = from_f<T>(std::fabs(to_f(dout[i])));
      backward(host_view(ids, DType::i32, {B, T_}), host_view(dout, dt, {B, T_, D}),
               host_view(gt32, DType::f32, {V, D}), host_view(gp32, DType::f32, {P, D}), o,
               Workspace{}, host_stream);
      Options oa = o;
      oa.accumulate = true;
      backward(host_view(ids, DType::i32, {B, T_}), host_view(dout_abs, dt, {B, T_, D}),
               host_view(st, DType::f32, {V, D}), host_view(sp, DType::f32, {P, D}), oa,
               Workspace{}, host_stream);
      std::vector<float> want(gt32), sums(st);
      want.insert(want.end(), gp32.begin(), gp32.end());
      sums.insert(sums.end(), sp.begin(), sp.end());
      // One rounding of a sum that the GPU forms in f32 in its own order: at most one ulp of T
      // away from the f32 reference rounded, plus the f32 reordering bound.
      const float ulp = dt == DType::bf16 ? 1.0f / 128 : 1.0f / 1024;
      for (std::size_t i = 0; i < want.size(); ++i) {
        const float got = to_f(results[0][i]);
        const float tol = ulp * std::fabs(want[i]) + kBackwardEps * (sums[i] + std::fabs(want[i])) +
                          1e-6f;
        ASSERT_LE(std::fabs(got - want[i]), tol) << "element " << i << " got " << got << " want "
                                                 << want[i];
      }
    }
}

}  // namespace
}  // namespace tokemb::test
