// The CPU backend against hand-computed values and an independent naive expectation, typed over
// table dtypes x index types.
#include <gtest/gtest.h>

#include <cmath>

#include "tests/test_helpers.hpp"

namespace tokemb::test {
namespace {

const StreamView host_stream = StreamView::legacy_default();  // ignored for CPU tensors

TEST(CpuReference, BookExampleTokenPlusPosition) {
  // The chapter's arithmetic: [0.5, -0.2, 0.1] + [0.1, 0.3, -0.1] = [0.6, 0.1, 0.0].
  std::vector<float> tok = {0.5f, -0.2f, 0.1f}, pos = {0.1f, 0.3f, -0.1f}, out(3, -1.0f);
  std::vector<std::int64_t> ids = {0};
  forward(host_view(ids, DType::i64, {1, 1}), host_view(tok, DType::f32, {1, 3}),
          host_view(pos, DType::f32, {1, 3}), host_view(out, DType::f32, {1, 1, 3}), Options{},
          host_stream);
  EXPECT_FLOAT_EQ(out[0], 0.6f);
  EXPECT_FLOAT_EQ(out[1], 0.1f);
  EXPECT_NEAR(out[2], 0.0f, 1e-7f);
}

TEST(CpuReference, LookupOfTokenThreeReturnsRowThree) {
  std::vector<float> table(6 * 3);
  for (int i = 0; i < 18; ++i)
    table[static_cast<std::size_t>(i)] = static_cast<float>(i) * 0.25f - 1.0f;
  std::vector<std::int32_t> ids = {3};
  std::vector<float> out(3, 0.0f);
  forward(host_view(ids, DType::i32, {1, 1}), host_view(table, DType::f32, {6, 3}), TensorView{},
          host_view(out, DType::f32, {1, 1, 3}), Options{}, host_stream);
  EXPECT_EQ(out, (std::vector<float>{table[9], table[10], table[11]}));
}

template <class C>
class CpuOps : public ::testing::Test {};
TYPED_TEST_SUITE(CpuOps, AllCombos, ComboNames);

TYPED_TEST(CpuOps, BatchOfEightSequencesOfFourTokensD256) {
  using T = typename TypeParam::Float;
  using I = typename TypeParam::Index;
  constexpr std::int64_t V = 50257, D = 256, P = 4, B = 8, T_ = 4;
  const auto seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  auto tok = random_values<T>(V * D, rng), pos = random_values<T>(P * D, rng);
  auto ids = random_ids<I>(B * T_, V, IdDistribution::uniform, rng);
  std::vector<T> out(B * T_ * D, from_f<T>(std::numeric_limits<float>::quiet_NaN()));
  const auto tok_before = tok, pos_before = pos;
  const auto ids_before = ids;
  TensorView out_v = host_view(out, TypeParam::dtype, {B, T_, D});
  forward(host_view(ids, TypeParam::index, {B, T_}), host_view(tok, TypeParam::dtype, {V, D}),
          host_view(pos, TypeParam::dtype, {P, D}), out_v, Options{}, host_stream);
  // The inputs are read only (every output element is checked below).
  EXPECT_TRUE(same_bits(tok.data(), tok_before.data(), tok.size() * sizeof(T)));
  EXPECT_TRUE(same_bits(pos.data(), pos_before.data(), pos.size() * sizeof(T)));
  EXPECT_EQ(ids, ids_before);
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t t = 0; t < T_; ++t)
      for (std::int64_t d = 0; d < D; ++d) {
        const float expect =
            to_f(from_f<T>(to_f(tok[ids[b * T_ + t] * D + d]) + to_f(pos[t * D + d])));
        ASSERT_EQ(to_f(out[(b * T_ + t) * D + d]), expect) << "b=" << b << " t=" << t << " d=" << d;
      }
}

TYPED_TEST(CpuOps, OffsetPositionIdsAndPositionsOff) {
  using T = typename TypeParam::Float;
  using I = typename TypeParam::Index;
  constexpr std::int64_t V = 11, D = 5, P = 9, B = 2, T_ = 3;
  std::mt19937_64 rng(fresh_seed());
  auto tok = random_values<T>(V * D, rng), pos = random_values<T>(P * D, rng);
  auto ids = random_ids<I>(B * T_, V, IdDistribution::uniform, rng);
  std::vector<I> pos_ids = {8, 0, 4, 1, 1, 7};
  std::vector<T> out(B * T_ * D);
  auto run = [&](const Options& o, bool with_pos) {
    forward(host_view(ids, TypeParam::index, {B, T_}), host_view(tok, TypeParam::dtype, {V, D}),
            with_pos ? host_view(pos, TypeParam::dtype, {P, D}) : TensorView{},
            host_view(out, TypeParam::dtype, {B, T_, D}), o, host_stream);
  };
  auto check = [&](auto position_of, bool with_pos) {
    for (std::int64_t r = 0; r < B * T_; ++r)
      for (std::int64_t d = 0; d < D; ++d) {
        float e = to_f(tok[ids[r] * D + d]);
        if (with_pos) e = to_f(from_f<T>(e + to_f(pos[position_of(r) * D + d])));
        ASSERT_EQ(to_f(out[r * D + d]), e) << "row " << r << " d " << d;
      }
  };
  Options o;
  o.position_offset = 6;  // decoding: positions 6, 7, 8
  run(o, true);
  check([&](std::int64_t r) { return 6 + r % T_; }, true);
  Options p;
  p.position_ids = host_view(pos_ids, TypeParam::index, {B, T_});
  run(p, true);
  check([&](std::int64_t r) { return static_cast<std::int64_t>(pos_ids[r]); }, true);
  run(Options{}, false);
  check([](std::int64_t) { return 0; }, false);
}

TYPED_TEST(CpuOps, BackwardAccumulatesRepeatedIdsSkipsPaddingAndAccumulatesAcrossCalls) {
  using T = typename TypeParam::Float;
  using I = typename TypeParam::Index;
  constexpr std::int64_t V = 6, D = 3, P = 4, B = 2, T_ = 3;
  // ids: token 1 appears three times, token 0 is padding.
  std::vector<I> ids = {1, 1, 2, 0, 1, 5};
  std::vector<T> dout(B * T_ * D);
  for (std::size_t i = 0; i < dout.size(); ++i)
    dout[i] = from_f<T>(0.125f * static_cast<float>(i + 1));
  std::vector<float> gt(V * D, 0.0f), gp(P * D, 0.0f);
  Options o;
  o.padding_idx = 0;
  for (int call = 1; call <= 2; ++call) {
    backward(host_view(ids, TypeParam::index, {B, T_}),
             host_view(dout, TypeParam::dtype, {B, T_, D}), host_view(gt, DType::f32, {V, D}),
             host_view(gp, DType::f32, {P, D}), o, Workspace{}, host_stream);
    auto row = [&](std::int64_t r, std::int64_t d) { return to_f(dout[r * D + d]); };
    for (std::int64_t d = 0; d < D; ++d) {
      EXPECT_FLOAT_EQ(gt[1 * D + d], call * (row(0, d) + row(1, d) + row(4, d)));
      EXPECT_FLOAT_EQ(gt[2 * D + d], call * row(2, d));
      EXPECT_FLOAT_EQ(gt[5 * D + d], call * row(5, d));
      EXPECT_EQ(gt[0 * D + d], 0.0f) << "padding_idx row received a gradient";
      EXPECT_EQ(gt[3 * D + d], 0.0f);
      EXPECT_EQ(gt[4 * D + d], 0.0f);
      for (std::int64_t t = 0; t < T_; ++t)  // the padding row still feeds its position
        EXPECT_FLOAT_EQ(gp[t * D + d], call * (row(t, d) + row(T_ + t, d)));
      EXPECT_EQ(gp[3 * D + d], 0.0f);
    }
  }
}

TYPED_TEST(CpuOps, OverwriteEqualsZeroThenAccumulateBitForBit) {
  using T = typename TypeParam::Float;
  using I = typename TypeParam::Index;
  constexpr std::int64_t V = 40, D = 7, P = 12, B = 3, T_ = 5;
  const auto seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  auto ids = random_ids<I>(B * T_, V, IdDistribution::zipf, rng);
  auto dout = random_values<T>(B * T_ * D, rng);
  std::vector<I> pos_ids(B * T_);
  for (auto& x : pos_ids) x = static_cast<I>(rng() % P);
  const TensorView ids_v = host_view(ids, TypeParam::index, {B, T_}),
                   dout_v = host_view(dout, TypeParam::dtype, {B, T_, D});
  for (int variant = 0; variant < 3; ++variant) {  // offset positions, position ids, padding
    SCOPED_TRACE("variant " + std::to_string(variant));
    Options o;
    if (variant == 0) o.position_offset = 4;
    if (variant == 1) o.position_ids = host_view(pos_ids, TypeParam::index, {B, T_});
    if (variant == 2) o.padding_idx = static_cast<std::int64_t>(ids[0]);
    // Expected: zero, then accumulate.
    std::vector<float> gt_exp(V * D, 0.0f), gp_exp(P * D, 0.0f);
    backward(ids_v, dout_v, host_view(gt_exp, DType::f32, {V, D}),
             host_view(gp_exp, DType::f32, {P, D}), o, Workspace{}, host_stream);
    // Overwrite on tables full of garbage (NaN included): nothing of it may survive.
    std::vector<float> gt = random_values<float>(V * D, rng, 100.0f), gp(P * D, std::nanf(""));
    gt[5] = std::nanf("");
    o.accumulate = false;
    backward(ids_v, dout_v, host_view(gt, DType::f32, {V, D}), host_view(gp, DType::f32, {P, D}), o,
             Workspace{}, host_stream);
    ASSERT_TRUE(same_bits(gt.data(), gt_exp.data(), gt.size() * sizeof(float)));
    ASSERT_TRUE(same_bits(gp.data(), gp_exp.data(), gp.size() * sizeof(float)));
    // A second overwrite gives the same again (it does not add to the first).
    backward(ids_v, dout_v, host_view(gt, DType::f32, {V, D}), host_view(gp, DType::f32, {P, D}), o,
             Workspace{}, host_stream);
    ASSERT_TRUE(same_bits(gt.data(), gt_exp.data(), gt.size() * sizeof(float)));
    ASSERT_TRUE(same_bits(gp.data(), gp_exp.data(), gp.size() * sizeof(float)));
  }
}

TEST(CpuReference, OverwriteWithABadIdAndNoRecordWritesNothing) {
  // The CPU throws before writing: an overwrite must not have zeroed the tables either.
  std::vector<std::int64_t> ids = {1, 7};
  std::vector<float> dout = {1, 2, 3, 4}, gt(3 * 2, 5.0f), gp(2 * 2, 6.0f);
  Options o;
  o.accumulate = false;
  EXPECT_THROW(backward(host_view(ids, DType::i64, {1, 2}), host_view(dout, DType::f32, {1, 2, 2}),
                        host_view(gt, DType::f32, {3, 2}), host_view(gp, DType::f32, {2, 2}), o,
                        Workspace{}, host_stream),
               IndexOutOfRange);
  EXPECT_EQ(gt, std::vector<float>(6, 5.0f));
  EXPECT_EQ(gp, std::vector<float>(4, 6.0f));
}

TEST(CpuReference, NegativePaddingIdxCountsFromTheEnd) {
  std::vector<std::int64_t> ids = {4, 2};
  std::vector<float> dout = {1, 2, 3, 4}, gt(5 * 2, 0.0f);
  Options o;
  o.padding_idx = -1;  // == 4
  backward(host_view(ids, DType::i64, {1, 2}), host_view(dout, DType::f32, {1, 2, 2}),
           host_view(gt, DType::f32, {5, 2}), TensorView{}, o, Workspace{}, host_stream);
  EXPECT_EQ(gt, (std::vector<float>{0, 0, 0, 0, 3, 4, 0, 0, 0, 0}));
}

TEST(CpuReference, BackwardWithPositionIdsScattersIntoPositions) {
  std::vector<std::int32_t> ids = {0, 0, 0}, pids = {2, 0, 2};
  std::vector<float> dout = {1, 10, 100}, gt(1, 0.0f), gp(3, 0.0f);
  Options o;
  o.position_ids = host_view(pids, DType::i32, {1, 3});
  backward(host_view(ids, DType::i32, {1, 3}), host_view(dout, DType::f32, {1, 3, 1}),
           host_view(gt, DType::f32, {1, 1}), host_view(gp, DType::f32, {3, 1}), o, Workspace{},
           host_stream);
  EXPECT_EQ(gt[0], 111.0f);
  EXPECT_EQ(gp, (std::vector<float>{10, 0, 101}));
}

// The reference sums each gradient element in double, in increasing row order, and rounds once.
// Cancellation makes both observable (multiples of 0.125, as elsewhere, are exact in any order):
//  * dout {1e8, 1, -1e8} -> 1: in f32, 1e8 + 1 rounds back to 1e8 and the sum would be 0;
//  * dout {2^60, -2^60, 1} -> 1 in increasing order; in decreasing order 1 + -2^60 rounds to
//    -2^60 even in double and the sum would be 0.
// Every row has the same token and (with position ids) the same position, in both gradients,
// for every dtype of dout that holds the values exactly (f32 only: 1e8 + 1 is not a bf16).
TEST(CpuReference, BackwardSumsInDoubleInIncreasingRowOrder) {
  const std::vector<std::vector<float>> cases = {
      {1e8f, 1.0f, -1e8f}, {std::ldexp(1.0f, 60), -std::ldexp(1.0f, 60), 1.0f}};
  for (const auto& dout : cases) {
    SCOPED_TRACE(::testing::Message()
                 << "dout {" << dout[0] << ", " << dout[1] << ", " << dout[2] << "}");
    for (int positions = 0; positions < 3; ++positions) {  // offset, position ids, none
      SCOPED_TRACE("positions variant " + std::to_string(positions));
      for (bool accumulate : {true, false}) {
        std::vector<std::int64_t> ids = {0, 0, 0}, pids = {1, 1, 1};
        std::vector<float> d = dout, gt(2, 0.0f), gp(2, 0.0f);
        Options o;
        o.accumulate = accumulate;
        // Batch of 3 sequences of one step: with positions from the offset, all rows are t = 0.
        Shape ids_shape{3, 1};
        if (positions == 1) o.position_ids = host_view(pids, DType::i64, ids_shape);
        backward(host_view(ids, DType::i64, ids_shape), host_view(d, DType::f32, {3, 1, 1}),
                 host_view(gt, DType::f32, {2, 1}),
                 positions == 2 ? TensorView{} : host_view(gp, DType::f32, {2, 1}), o, Workspace{},
                 host_stream);
        EXPECT_EQ(gt[0], 1.0f) << "token gradient";
        EXPECT_EQ(gt[1], 0.0f);
        if (positions == 0) {
          EXPECT_EQ(gp[0], 1.0f) << "position gradient (offset)";
        }
        if (positions == 1) {
          EXPECT_EQ(gp[1], 1.0f) << "position gradient (position ids)";
        }
      }
    }
  }
}

// The double sum is added to the existing gradient and the result rounded once to f32:
// 1 + (2^-24 + 2^-50) is just above the midpoint between 1 and the next float, so it rounds up
// to 1 + 2^-23. Rounding the sum to f32 first (2^-24) or adding row by row lands exactly on the
// midpoint, which rounds to even: 1.
TEST(CpuReference, BackwardAddsTheWholeSumToTheGradientAndRoundsOnce) {
  std::vector<std::int64_t> ids = {0, 0};
  std::vector<float> d = {std::ldexp(1.0f, -24), std::ldexp(1.0f, -50)}, gt = {1.0f};
  backward(host_view(ids, DType::i64, {1, 2}), host_view(d, DType::f32, {1, 2, 1}),
           host_view(gt, DType::f32, {1, 1}), TensorView{}, Options{}, Workspace{}, host_stream);
  EXPECT_EQ(gt[0], 1.0f + std::ldexp(1.0f, -23));
}

TEST(CpuReference, OddWidthsWork) {
  for (std::int64_t D : {1, 3, 7}) {
    std::vector<float> tok(4 * D), pos(2 * D), out(2 * 2 * D);
    for (std::size_t i = 0; i < tok.size(); ++i) tok[i] = static_cast<float>(i);
    for (std::size_t i = 0; i < pos.size(); ++i) pos[i] = 100.0f * static_cast<float>(i);
    std::vector<std::int64_t> ids = {3, 0, 1, 2};
    forward(host_view(ids, DType::i64, {2, 2}), host_view(tok, DType::f32, {4, D}),
            host_view(pos, DType::f32, {2, D}), host_view(out, DType::f32, {2, 2, D}), Options{},
            host_stream);
    for (std::int64_t r = 0; r < 4; ++r)
      for (std::int64_t d = 0; d < D; ++d)
        EXPECT_EQ(out[r * D + d], tok[ids[r] * D + d] + pos[(r % 2) * D + d]) << "D=" << D;
  }
}

TEST(HostFloat16, RoundTripsAndRoundsToNearestEven) {
  EXPECT_EQ(f16_t::from_float(1.0f).bits, 0x3c00);
  EXPECT_EQ(f16_t::from_float(-2.0f).bits, 0xc000);
  EXPECT_EQ(f16_t::from_float(65504.0f).bits, 0x7bff);
  EXPECT_EQ(f16_t::from_float(65520.0f).bits, 0x7c00);                // rounds up to infinity
  EXPECT_EQ(f16_t::from_float(5.960464477539063e-08f).bits, 0x0001);  // smallest subnormal
  EXPECT_EQ(f16_t::from_float(1.0f + 1.0f / 2048).bits, 0x3c00);      // tie -> even
  EXPECT_EQ(f16_t::from_float(1.0f + 3.0f / 2048).bits, 0x3c02);      // tie -> even (up)
  EXPECT_TRUE(std::isnan(f16_t::from_float(std::nanf("")).to_float()));
  for (std::uint32_t b = 0; b < 0x7c00; ++b) {  // every finite positive half round-trips
    f16_t h;
    h.bits = static_cast<std::uint16_t>(b);
    ASSERT_EQ(f16_t::from_float(h.to_float()).bits, b);
  }
  EXPECT_EQ(bf16_t::from_float(1.0f).bits, 0x3f80);
  EXPECT_EQ(bf16_t::from_float(1.00390625f).bits, 0x3f80);  // tie -> even
  EXPECT_EQ(bf16_t::from_float(1.01171875f).bits, 0x3f82);  // tie -> even (up)
}

}  // namespace
}  // namespace tokemb::test
