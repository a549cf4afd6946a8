// Fused dropout and packed sequences (cu_seqlens): the generator against Philox4x32-10's known
// answers, mask statistics, exact scaling, p = 0 and p = 1, forward and backward sharing one
// mask, token mode, cu_seqlens against explicit position ids and its error cases. CPU tests run
// everywhere; the Gpu* twins compare the kernels with the CPU bit for bit (f32 forward) and
// check CUDA-graph replay with the seed and offset read from device memory.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "core/dropout.hpp"
#include "tests/test_helpers.hpp"

#if TOKEMB_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace tokemb::test {
namespace {

const StreamView host_stream = StreamView::legacy_default();

// ---- the generator -----------------------------------------------------------------------------

// Known-answer vectors of Random123 (kat_vectors: philox4x32 with 10 rounds), the reference
// implementation cuRAND's and PyTorch's Philox follow.
TEST(DropoutGenerator, Philox4x32x10MatchesRandom123KnownAnswers) {
  struct Kat {
    std::uint32_t ctr[4], key[2], out[4];
  };
  const Kat kats[] = {
      {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}},
      {{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu},
       {0xffffffffu, 0xffffffffu},
       {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}},
      {{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u},
       {0xa4093822u, 0x299f31d0u},
       {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}},
  };
  for (const Kat& k : kats) {
    const detail::Philox4 got = detail::philox4x32_10(
        detail::Philox4{{k.ctr[0], k.ctr[1], k.ctr[2], k.ctr[3]}}, k.key[0], k.key[1]);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(got.v[i], k.out[i]) << "word " << i;
  }
}

TEST(DropoutGenerator, CounterIsGroupThenOffsetAndKeyIsTheSeed) {
  const std::uint64_t seed = 0x0123456789abcdefull, offset = 0xfedcba9876543210ull;
  const std::uint64_t group = 0x1122334455667788ull;
  const detail::Philox4 a = detail::dropout_words(seed, offset, group);
  const detail::Philox4 b =
      detail::philox4x32_10(detail::Philox4{{0x55667788u, 0x11223344u, 0x76543210u, 0xfedcba98u}},
                            0x89abcdefu, 0x01234567u);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(a.v[i], b.v[i]);
}

// ---- a small problem on the CPU
// ------------------------------------------------------------------

struct Problem {
  std::int64_t V = 97, D = 24, P = 16, B = 5, T = 12;
  std::vector<float> tok, pos, dout;
  std::vector<std::int64_t> ids;
  explicit Problem(std::uint64_t seed, bool distinct_ids = false) {
    std::mt19937_64 rng(seed);
    tok = random_values<float>(static_cast<std::size_t>(V * D), rng);
    pos = random_values<float>(static_cast<std::size_t>(P * D), rng);
    dout = random_values<float>(static_cast<std::size_t>(B * T * D), rng);
    if (distinct_ids) {
      ids.resize(static_cast<std::size_t>(B * T));
      std::iota(ids.begin(), ids.end(), 0);  // B * T = 60 <= V: every row its own token
      std::shuffle(ids.begin(), ids.end(), rng);
    } else {
      ids = random_ids<std::int64_t>(static_cast<std::size_t>(B * T), V, IdDistribution::zipf, rng);
    }
  }
  std::vector<float> forward(const Options& o) {
    std::vector<float> out(static_cast<std::size_t>(B * T * D),
                           std::numeric_limits<float>::quiet_NaN());
    tokemb::forward(host_view(ids, DType::i64, {B, T}), host_view(tok, DType::f32, {V, D}),
                    host_view(pos, DType::f32, {P, D}), host_view(out, DType::f32, {B, T, D}), o,
                    host_stream);
    return out;
  }
  // Overwriting backward from NaN garbage: {grad_token, grad_pos}.
  std::pair<std::vector<float>, std::vector<float>> backward(Options o) {
    std::vector<float> gt(static_cast<std::size_t>(V * D), std::nanf("")),
        gp(static_cast<std::size_t>(P * D), std::nanf(""));
    o.accumulate = false;
    tokemb::backward(host_view(ids, DType::i64, {B, T}), host_view(dout, DType::f32, {B, T, D}),
                     host_view(gt, DType::f32, {V, D}), host_view(gp, DType::f32, {P, D}), o,
                     Workspace{}, host_stream);
    return {gt, gp};
  }
};

Options with_dropout(double p, std::uint64_t seed, std::uint64_t offset,
                     DropoutMode mode = DropoutMode::element) {
  Options o;
  o.dropout.p = p;
  o.dropout.seed = seed;
  o.dropout.offset = offset;
  o.dropout.mode = mode;
  return o;
}

bool bits_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && same_bits(a.data(), b.data(), a.size() * sizeof(float));
}

// Issue 20 item 12: p is a double from the caller to the threshold and scale. The scale is
// float(1 / (1 - p)) computed in double (a float computation differs by one ulp for ~12 % of p,
// e.g. 0.15), the threshold llround(p * 2^24) (at least 1: p = 1e-9 still drops).
TEST(DropoutParams, ScaleAndThresholdComeFromTheDoubleP) {
  const auto seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<double> ps = {0.15, 0.1, 0.5, 0.9, 1e-9, 1e-7, 0.999999, 0.3333333333333333};
  for (int i = 0; i < 1000; ++i) ps.push_back(u(rng));
  for (double p : ps) {
    if (!(p > 0.0)) continue;
    Dropout d;
    d.p = p;
    const detail::DropoutParams dp = detail::dropout_params(d);
    ASSERT_TRUE(dp.enabled()) << p;
    ASSERT_EQ(dp.scale, static_cast<float>(1.0 / (1.0 - p))) << "p = " << p;
    const long long want = std::max(1LL, std::llround(p * 16777216.0));
    ASSERT_EQ(static_cast<long long>(dp.threshold), want) << "p = " << p;
  }
  Dropout tiny;
  tiny.p = 1e-9;
  EXPECT_TRUE(detail::dropout_params(tiny).enabled());
  EXPECT_EQ(detail::dropout_params(tiny).threshold, 1u);
  Dropout one;
  one.p = 1.0;
  EXPECT_EQ(detail::dropout_params(one).threshold, 16777216u);
  EXPECT_EQ(detail::dropout_params(one).scale, 0.0f);
  EXPECT_FALSE(detail::dropout_params(Dropout{}).enabled());
}

// p outside [0, 1] as given is rejected, even where float rounding would bring it back inside
// (1 + 1e-9 and -1e-50 both round to a valid float), and the message shows the value given.
TEST(DropoutParams, ProbabilityOutsideTheUnitIntervalIsRejectedAsGiven) {
  Problem pr(1);
  for (double bad : {1.0 + 1e-9, -1e-50, -0.0 - 1e-300, 1.5, std::nan(""),
                     std::numeric_limits<double>::infinity()}) {
    std::vector<float> out(static_cast<std::size_t>(pr.B * pr.T * pr.D), 5.0f);
    try {
      tokemb::forward(
          host_view(pr.ids, DType::i64, {pr.B, pr.T}), host_view(pr.tok, DType::f32, {pr.V, pr.D}),
          host_view(pr.pos, DType::f32, {pr.P, pr.D}),
          host_view(out, DType::f32, {pr.B, pr.T, pr.D}), with_dropout(bad, 1, 0), host_stream);
      FAIL() << "p = " << bad << " accepted";
    } catch (const InvalidArgument& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("dropout.p"), std::string::npos) << msg;
      EXPECT_NE(msg.find("[0, 1]"), std::string::npos) << msg;
    }
    for (float x : out) ASSERT_EQ(x, 5.0f);
    EmbeddingConfig c;
    c.vocab_size = pr.V;
    c.dim = pr.D;
    c.dropout = bad;
    EXPECT_THROW(Embedding(c, host_stream), InvalidArgument) << bad;
  }
  try {
    (void)pr.forward(with_dropout(1.0 + 1e-9, 1, 0));
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("1.000000001"), std::string::npos) << e.what();
  }
  try {
    (void)pr.forward(with_dropout(-1e-50, 1, 0));
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("-1e-50"), std::string::npos) << e.what();
  }
  // The ends themselves are valid.
  EXPECT_NO_THROW(pr.forward(with_dropout(1.0, 1, 0)));
  EXPECT_NO_THROW(pr.forward(with_dropout(0.0, 1, 0)));
}

TEST(Dropout, ZeroProbabilityIsExactlyNoDropout) {
  const auto seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  Problem pr(seed);
  const Options o = with_dropout(0.0f, seed, 7);
  EXPECT_TRUE(bits_equal(pr.forward(o), pr.forward(Options{})));
  const auto a = pr.backward(o), b = pr.backward(Options{});
  EXPECT_TRUE(bits_equal(a.first, b.first));
  EXPECT_TRUE(bits_equal(a.second, b.second));
}

TEST(Dropout, ProbabilityOneGivesPositiveZerosAndNoGradient) {
  Problem pr(fresh_seed());
  const Options o = with_dropout(1.0f, 3, 0);
  for (float x : pr.forward(o)) {
    ASSERT_EQ(x, 0.0f);
    ASSERT_FALSE(std::signbit(x));
  }
  const auto g = pr.backward(o);
  for (float x : g.first) ASSERT_EQ(x, 0.0f);
  for (float x : g.second) ASSERT_EQ(x, 0.0f);
}

// Every output element is +0 (dropped) or exactly round((tok + pos) * f32(1 / (1 - p))), and the
// kept fraction is within 5 standard deviations of 1 - p.
TEST(Dropout, KeptFractionAndExactScaling) {
  for (float p : {0.1f, 0.5f, 0.9f}) {
    const auto seed = fresh_seed();
    SCOPED_TRACE("p " + std::to_string(p) + " seed " + std::to_string(seed));
    Problem pr(seed);
    pr.B = 40;  // 40 * 12 * 24 = 11520 elements
    pr.ids.assign(static_cast<std::size_t>(pr.B * pr.T), 1);
    const auto out = pr.forward(with_dropout(p, seed, 0));
    const float scale = static_cast<float>(1.0 / (1.0 - static_cast<double>(p)));
    std::int64_t kept = 0;
    for (std::int64_t r = 0; r < pr.B * pr.T; ++r)
      for (std::int64_t d = 0; d < pr.D; ++d) {
        const float x = out[static_cast<std::size_t>(r * pr.D + d)];
        const float sum = pr.tok[static_cast<std::size_t>(1 * pr.D + d)] +
                          pr.pos[static_cast<std::size_t>((r % pr.T) * pr.D + d)];
        if (x == 0.0f && !std::signbit(x) && sum != 0.0f) continue;
        ASSERT_EQ(x, sum * scale) << "r=" << r << " d=" << d;
        ++kept;
      }
    const double n = static_cast<double>(pr.B * pr.T * pr.D);
    const double expect = n * (1.0 - p), sd = std::sqrt(n * p * (1.0 - p));
    EXPECT_NEAR(static_cast<double>(kept), expect, 5.0 * sd);
  }
}

TEST(Dropout, BackwardAppliesForwardsMaskToDout) {
  for (DropoutMode mode : {DropoutMode::element, DropoutMode::token}) {
    const auto seed = fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed));
    Problem pr(seed, /*distinct_ids=*/true);
    const Options o = with_dropout(0.3f, seed, 11, mode);
    const auto out = pr.forward(o);
    const auto g = pr.backward(o);
    const float scale = static_cast<float>(1.0 / 0.7);
    for (std::int64_t r = 0; r < pr.B * pr.T; ++r)
      for (std::int64_t d = 0; d < pr.D; ++d) {
        const std::size_t e = static_cast<std::size_t>(r * pr.D + d);
        const bool kept = out[e] != 0.0f;  // tok + pos is never exactly 0 for these values
        const float expect = kept ? pr.dout[e] * scale : 0.0f;
        // Each token has exactly one row, so its gradient is that row's masked dout, exactly.
        ASSERT_EQ(g.first[static_cast<std::size_t>(pr.ids[static_cast<std::size_t>(r)] * pr.D + d)],
                  expect)
            << "r=" << r << " d=" << d;
      }
    // The positional gradient sums the same masked rows over b (in double, rounded once).
    for (std::int64_t t = 0; t < pr.T; ++t)
      for (std::int64_t d = 0; d < pr.D; ++d) {
        double s = 0;
        for (std::int64_t b = 0; b < pr.B; ++b) {
          const std::size_t e = static_cast<std::size_t>((b * pr.T + t) * pr.D + d);
          s += out[e] != 0.0f ? static_cast<double>(pr.dout[e] * scale) : 0.0;
        }
        ASSERT_EQ(g.second[static_cast<std::size_t>(t * pr.D + d)], static_cast<float>(s));
      }
  }
}

TEST(Dropout, MaskDependsOnSeedAndOffsetOnly) {
  const auto seed = fresh_seed();
  Problem pr(seed);
  const auto a = pr.forward(with_dropout(0.5f, seed, 1));
  EXPECT_TRUE(bits_equal(a, pr.forward(with_dropout(0.5f, seed, 1))));  // same draw
  EXPECT_FALSE(bits_equal(a, pr.forward(with_dropout(0.5f, seed, 2))));
  EXPECT_FALSE(bits_equal(a, pr.forward(with_dropout(0.5f, seed + 1, 1))));
  // The same mask for another dtype and without positions: zeros in the same places.
  std::vector<bf16_t> tok16(pr.tok.size()), out16(pr.B * pr.T * pr.D);
  for (std::size_t i = 0; i < tok16.size(); ++i) tok16[i] = from_f<bf16_t>(pr.tok[i]);
  tokemb::forward(host_view(pr.ids, DType::i64, {pr.B, pr.T}),
                  host_view(tok16, DType::bf16, {pr.V, pr.D}), TensorView{},
                  host_view(out16, DType::bf16, {pr.B, pr.T, pr.D}), with_dropout(0.5f, seed, 1),
                  host_stream);
  for (std::size_t e = 0; e < a.size(); ++e) {
    const std::size_t tok_e =
        static_cast<std::size_t>(pr.ids[e / static_cast<std::size_t>(pr.D)] * pr.D) +
        e % static_cast<std::size_t>(pr.D);
    if (pr.tok[tok_e] == 0.0f) continue;
    ASSERT_EQ(a[e] == 0.0f, to_f(out16[e]) == 0.0f) << "element " << e;
  }
}

TEST(Dropout, TokenModeDropsWholeRows) {
  const auto seed = fresh_seed();
  Problem pr(seed);
  pr.B = 100;
  pr.ids.assign(static_cast<std::size_t>(pr.B * pr.T), 5);
  const auto out = pr.forward(with_dropout(0.25f, seed, 0, DropoutMode::token));
  std::int64_t kept_rows = 0;
  for (std::int64_t r = 0; r < pr.B * pr.T; ++r) {
    std::int64_t zeros = 0;
    for (std::int64_t d = 0; d < pr.D; ++d)
      zeros += out[static_cast<std::size_t>(r * pr.D + d)] == 0.0f;
    ASSERT_TRUE(zeros == 0 || zeros == pr.D) << "row " << r << " has " << zeros << " zeros";
    kept_rows += zeros == 0;
  }
  const double n = static_cast<double>(pr.B * pr.T);
  EXPECT_NEAR(static_cast<double>(kept_rows), 0.75 * n, 5.0 * std::sqrt(n * 0.25 * 0.75));
}

TEST(Dropout, SeedAndOffsetFromMemoryMatchTheValues) {
  const auto seed = fresh_seed();
  Problem pr(seed);
  const std::uint64_t so[2] = {seed, 42};
  Options o = with_dropout(0.2f, 0, 0);
  o.dropout.seed_offset = so;
  EXPECT_TRUE(bits_equal(pr.forward(o), pr.forward(with_dropout(0.2f, seed, 42))));
}

TEST(Dropout, InvalidProbabilityOrModeIsRejectedBeforeWriting) {
  Problem pr(1);
  for (float p : {-0.1f, 1.5f, std::nanf("")}) {
    std::vector<float> out(static_cast<std::size_t>(pr.B * pr.T * pr.D), 9.0f);
    EXPECT_THROW(tokemb::forward(host_view(pr.ids, DType::i64, {pr.B, pr.T}),
                                 host_view(pr.tok, DType::f32, {pr.V, pr.D}),
                                 host_view(pr.pos, DType::f32, {pr.P, pr.D}),
                                 host_view(out, DType::f32, {pr.B, pr.T, pr.D}),
                                 with_dropout(p, 1, 0), host_stream),
                 InvalidArgument);
    for (float x : out) ASSERT_EQ(x, 9.0f);
  }
  Options o = with_dropout(0.5f, 1, 0);
  o.dropout.mode = static_cast<DropoutMode>(7);
  EXPECT_THROW(pr.forward(o), InvalidArgument);
}

// ---- packed sequences
// ----------------------------------------------------------------------------

// Explicit position ids equivalent to cu_seqlens.
std::vector<std::int64_t> positions_of(const std::vector<std::int32_t>& cu, std::int64_t offset) {
  std::vector<std::int64_t> pos(static_cast<std::size_t>(cu.back()));
  for (std::size_t s = 0; s + 1 < cu.size(); ++s)
    for (std::int32_t i = cu[s]; i < cu[s + 1]; ++i)
      pos[static_cast<std::size_t>(i)] = offset + (i - cu[s]);
  return pos;
}

TEST(PackedSequences, CuSeqlensEqualsExplicitPositionIds) {
  const auto seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  Problem pr(seed);  // B * T = 60 rows, P = 16
  // Sequences of 5, 0 (empty), 12, 16, 0, 7, 20 rows... capped at P: lengths 5, 0, 12, 16, 0, 11,
  // 16 = 60, with empty sequences inside and at the end.
  const std::vector<std::int32_t> cu0 = {0, 5, 5, 17, 33, 33, 44, 60, 60};
  // With an offset the sequences must end before P: lengths 5, 0, 12, 13, 0, 13, 13, 4.
  const std::vector<std::int32_t> cu3 = {0, 5, 5, 17, 30, 30, 43, 56, 60};
  for (std::int64_t offset : {std::int64_t{0}, std::int64_t{1}, std::int64_t{3}}) {
    SCOPED_TRACE("position_offset " + std::to_string(offset));
    const std::vector<std::int32_t>& cu = offset == 0 ? cu0 : cu3;
    Options a;
    std::vector<std::int32_t> cu_v = cu;
    a.cu_seqlens = host_view(cu_v, DType::i32, {static_cast<std::int64_t>(cu.size())});
    a.position_offset = offset;
    Options b;
    std::vector<std::int64_t> pid = positions_of(cu, offset);
    b.position_ids = host_view(pid, DType::i64, {pr.B, pr.T});
    EXPECT_TRUE(bits_equal(pr.forward(a), pr.forward(b)));
    for (BackwardMode m : {BackwardMode::atomic, BackwardMode::deterministic}) {
      a.backward_mode = b.backward_mode = m;
      const auto ga = pr.backward(a), gb = pr.backward(b);
      EXPECT_TRUE(bits_equal(ga.first, gb.first));
      EXPECT_TRUE(bits_equal(ga.second, gb.second));
    }
    // With dropout too: the mask does not care where positions come from.
    a.dropout = b.dropout = with_dropout(0.4f, seed, 3).dropout;
    EXPECT_TRUE(bits_equal(pr.forward(a), pr.forward(b)));
  }
}

TEST(PackedSequences, SequenceLongerThanTheContextIsARecordedPositionError) {
  Problem pr(fresh_seed());                    // P = 16
  std::vector<std::int32_t> cu = {0, 10, 60};  // the second sequence has 50 rows
  ErrorMonitor monitor(Device::cpu(), host_stream);
  Options o;
  o.cu_seqlens = host_view(cu, DType::i32, {3});
  o.error_record = monitor.get();
  const auto out = pr.forward(o);
  // Rows 10 .. 25 have positions 0 .. 15; row 26 (position 16) onwards are zeroed.
  for (std::int64_t r = 0; r < pr.B * pr.T; ++r)
    for (std::int64_t d = 0; d < pr.D; ++d) {
      const float x = out[static_cast<std::size_t>(r * pr.D + d)];
      if (r >= 26) {
        ASSERT_EQ(x, 0.0f) << r;
      } else {
        const std::int64_t position = r < 10 ? r : r - 10;
        ASSERT_EQ(x,
                  pr.tok[static_cast<std::size_t>(pr.ids[static_cast<std::size_t>(r)] * pr.D + d)] +
                      pr.pos[static_cast<std::size_t>(position * pr.D + d)]);
      }
    }
  try {
    monitor.check(host_stream);
    FAIL() << "no error recorded";
  } catch (const IndexOutOfRange& e) {
    EXPECT_EQ(e.kind(), IndexOutOfRange::Kind::position);
    EXPECT_EQ(e.value(), 16);
    EXPECT_EQ(e.batch(), 26 / pr.T);
    EXPECT_EQ(e.time(), 26 % pr.T);
    EXPECT_EQ(e.limit(), pr.P);
    EXPECT_EQ(e.count(), 60u - 26u);
  }
}

TEST(PackedSequences, MalformedCuSeqlensIsAnIndexErrorNeverACrash) {
  Problem pr(fresh_seed());  // B * T = 60
  struct Case {
    std::vector<std::int32_t> cu;
    std::int64_t entry;  // the entry the first reporting row names
  };
  const Case cases[] = {
      {{1, 30, 60}, 0},           // does not start at 0
      {{0, 30, 59}, 2},           // does not end at B * T
      {{0, 40, 30, 60}, 2},       // decreasing (row 1 checks the pair (1, 2))
      {{0, 30, 1000000, 60}, 3},  // a huge entry
      {{0, -5, 60}, 1},           // negative
  };
  for (const Case& c : cases) {
    std::vector<std::int32_t> cu = c.cu;
    Options o;
    o.cu_seqlens = host_view(cu, DType::i32, {static_cast<std::int64_t>(cu.size())});
    // Without a record the CPU throws before writing anything.
    std::vector<float> out(static_cast<std::size_t>(pr.B * pr.T * pr.D), 5.0f);
    try {
      tokemb::forward(host_view(pr.ids, DType::i64, {pr.B, pr.T}),
                      host_view(pr.tok, DType::f32, {pr.V, pr.D}),
                      host_view(pr.pos, DType::f32, {pr.P, pr.D}),
                      host_view(out, DType::f32, {pr.B, pr.T, pr.D}), o, host_stream);
      FAIL() << "no exception for cu_seqlens[" << c.entry << "]";
    } catch (const IndexOutOfRange& e) {
      EXPECT_EQ(e.kind(), IndexOutOfRange::Kind::sequence);
      EXPECT_EQ(e.value(), c.entry);
      EXPECT_EQ(e.limit(), static_cast<std::int64_t>(cu.size()));
      EXPECT_NE(std::string(e.what()).find("cu_seqlens"), std::string::npos) << e.what();
    }
    for (float x : out) ASSERT_EQ(x, 5.0f);
  }
}

// A row with both a bad token and a malformed cu_seqlens reports the token (the row rule checks
// the token first): the same on the CPU without a record, and in the record.
TEST(PackedSequences, ARowWithABadTokenAndAMalformedCuSeqlensReportsTheToken) {
  Problem pr(fresh_seed());  // B * T = 60
  std::vector<std::int64_t> ids = pr.ids;
  ids[0] = pr.V + 4;                       // row 0: a bad token ...
  std::vector<std::int32_t> cu = {1, 60};  // ... and every row sees cu_seqlens[0] != 0
  Options o;
  o.cu_seqlens = host_view(cu, DType::i32, {2});
  std::vector<float> out(static_cast<std::size_t>(pr.B * pr.T * pr.D), 5.0f);
  auto run = [&] {
    tokemb::forward(host_view(ids, DType::i64, {pr.B, pr.T}),
                    host_view(pr.tok, DType::f32, {pr.V, pr.D}),
                    host_view(pr.pos, DType::f32, {pr.P, pr.D}),
                    host_view(out, DType::f32, {pr.B, pr.T, pr.D}), o, host_stream);
  };
  try {
    run();
    FAIL() << "no exception";
  } catch (const IndexOutOfRange& e) {
    EXPECT_EQ(e.kind(), IndexOutOfRange::Kind::token) << e.what();
    EXPECT_EQ(e.value(), pr.V + 4);
    EXPECT_EQ(e.batch(), 0);
    EXPECT_EQ(e.time(), 0);
    EXPECT_EQ(e.limit(), pr.V);
  }
  for (float x : out) ASSERT_EQ(x, 5.0f);
  ErrorMonitor monitor(Device::cpu(), host_stream);
  o.error_record = monitor.get();
  run();
  try {
    monitor.check(host_stream);
    FAIL() << "nothing recorded";
  } catch (const IndexOutOfRange& e) {
    EXPECT_EQ(e.kind(), IndexOutOfRange::Kind::token) << e.what();
    EXPECT_EQ(e.value(), pr.V + 4);
    EXPECT_EQ(e.count(), static_cast<std::uint64_t>(pr.B * pr.T));  // every row is bad
  }
}

// Issue 20 item 17: with cu_seqlens, position_offset is bounded up front (every sequence starts
// at it): near INT64_MAX it used to overflow offset + (r - cu_seqlens[s]) and come back as a
// malformed cu_seqlens. Now InvalidArgument naming the value and [0, P), nothing written.
TEST(PackedSequences, PositionOffsetOutsideTheTableIsAnArgumentError) {
  Problem pr(fresh_seed());  // P = 16
  std::vector<std::int32_t> cu = {0, 30, 60};
  std::vector<float> out(static_cast<std::size_t>(pr.B * pr.T * pr.D), 5.0f);
  std::vector<float> gt(static_cast<std::size_t>(pr.V * pr.D), 0.5f),
      gp(static_cast<std::size_t>(pr.P * pr.D), 0.5f);
  const std::int64_t max = std::numeric_limits<std::int64_t>::max();
  for (std::int64_t offset : {max, max - 59, max - 100, std::int64_t{1} << 40, pr.P, pr.P + 1,
                              std::int64_t{-1}, std::numeric_limits<std::int64_t>::min()}) {
    SCOPED_TRACE("position_offset " + std::to_string(offset));
    Options o;
    o.cu_seqlens = host_view(cu, DType::i32, {3});
    o.position_offset = offset;
    for (bool fwd : {true, false}) {
      try {
        if (fwd) {
          tokemb::forward(host_view(pr.ids, DType::i64, {pr.B, pr.T}),
                          host_view(pr.tok, DType::f32, {pr.V, pr.D}),
                          host_view(pr.pos, DType::f32, {pr.P, pr.D}),
                          host_view(out, DType::f32, {pr.B, pr.T, pr.D}), o, host_stream);
        } else {
          tokemb::backward(host_view(pr.ids, DType::i64, {pr.B, pr.T}),
                           host_view(pr.dout, DType::f32, {pr.B, pr.T, pr.D}),
                           host_view(gt, DType::f32, {pr.V, pr.D}),
                           host_view(gp, DType::f32, {pr.P, pr.D}), o, Workspace{}, host_stream);
        }
        FAIL() << "no exception";
      } catch (const InvalidArgument& e) {
        const std::string msg = e.what();
        EXPECT_NE(msg.find("position_offset " + std::to_string(offset)), std::string::npos) << msg;
        EXPECT_NE(msg.find("[0, 16)"), std::string::npos) << msg;
      } catch (const std::exception& e) {
        FAIL() << "wrong exception: " << e.what();
      }
    }
  }
  for (float x : out) ASSERT_EQ(x, 5.0f);
  for (float x : gt) ASSERT_EQ(x, 0.5f);
  for (float x : gp) ASSERT_EQ(x, 0.5f);
  // The largest valid offset: one-row sequences at position P - 1.
  std::vector<std::int32_t> singles(61);
  std::iota(singles.begin(), singles.end(), 0);
  Options last;
  last.cu_seqlens = host_view(singles, DType::i32, {61});
  last.position_offset = pr.P - 1;
  std::vector<std::int64_t> pid(60, pr.P - 1);
  Options same;
  same.position_ids = host_view(pid, DType::i64, {pr.B, pr.T});
  EXPECT_TRUE(bits_equal(pr.forward(last), pr.forward(same)));
}

TEST(PackedSequences, ArgumentErrors) {
  Problem pr(1);
  std::vector<std::int32_t> cu = {0, 60};
  std::vector<std::int64_t> cu64 = {0, 60};
  std::vector<std::int64_t> pid(60, 0);
  Options both;
  both.cu_seqlens = host_view(cu, DType::i32, {2});
  both.position_ids = host_view(pid, DType::i64, {pr.B, pr.T});
  EXPECT_THROW(pr.forward(both), InvalidArgument);
  Options wrong_type;
  wrong_type.cu_seqlens = host_view(cu64, DType::i64, {2});
  EXPECT_THROW(pr.forward(wrong_type), InvalidArgument);
  Options negative;
  negative.cu_seqlens = host_view(cu, DType::i32, {2});
  negative.position_offset = -1;
  EXPECT_THROW(pr.forward(negative), InvalidArgument);
  Options no_positions;
  no_positions.cu_seqlens = host_view(cu, DType::i32, {2});
  std::vector<float> out(static_cast<std::size_t>(pr.B * pr.T * pr.D));
  EXPECT_THROW(
      tokemb::forward(host_view(pr.ids, DType::i64, {pr.B, pr.T}),
                      host_view(pr.tok, DType::f32, {pr.V, pr.D}), TensorView{},
                      host_view(out, DType::f32, {pr.B, pr.T, pr.D}), no_positions, host_stream),
      InvalidArgument);
}

// ---- the module
// ----------------------------------------------------------------------------------

// A module holding the problem's tables, with dropout p drawn from seed.
Embedding problem_module(const Problem& pr, double p, std::uint64_t seed, Device dev,
                         StreamView stream, BackwardMode mode = BackwardMode::atomic) {
  EmbeddingConfig c;
  c.vocab_size = pr.V;
  c.dim = pr.D;
  c.context_length = pr.P;
  c.dropout = p;
  c.dropout_seed = seed;
  c.device = dev;
  c.backward_mode = mode;
  Embedding m(c, stream);
  m.load_token_table(pr.tok.data(), pr.tok.size() * 4);
  m.load_position_table(pr.pos.data(), pr.pos.size() * 4);
  return m;
}

TEST(DropoutModule, TrainingForwardsDrawSuccessiveOffsetsAndBackwardsPairFirstInFirstOut) {
  const auto seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  Problem pr(seed);
  Embedding m = problem_module(pr, 0.25f, seed, Device::cpu(), host_stream);
  auto ids = host_view(pr.ids, DType::i64, {pr.B, pr.T});
  auto dout = host_view(pr.dout, DType::f32, {pr.B, pr.T, pr.D});
  std::vector<float> out(static_cast<std::size_t>(pr.B * pr.T * pr.D));
  auto out_v = host_view(out, DType::f32, {pr.B, pr.T, pr.D});

  EXPECT_TRUE(m.training());
  m.forward(ids, out_v);  // offset 0
  EXPECT_TRUE(bits_equal(out, pr.forward(with_dropout(0.25f, seed, 0))));
  m.forward(ids, out_v);  // offset 1
  EXPECT_TRUE(bits_equal(out, pr.forward(with_dropout(0.25f, seed, 1))));
  EXPECT_EQ(m.pending_dropout_masks(), 2u);
  EXPECT_EQ(m.next_dropout_offset(), 2u);

  // backward, backward: the first pairs with offset 0, the second with offset 1.
  m.zero_grad_and_backward(ids, dout);
  EXPECT_TRUE(bits_equal(m.token_grad_to_host(), pr.backward(with_dropout(0.25f, seed, 0)).first));
  m.zero_grad_and_backward(ids, dout);
  EXPECT_TRUE(bits_equal(m.token_grad_to_host(), pr.backward(with_dropout(0.25f, seed, 1)).first));
  EXPECT_EQ(m.pending_dropout_masks(), 0u);

  // Evaluation: no dropout, nothing queued; a backward then has no mask.
  m.eval();
  m.forward(ids, out_v);
  EXPECT_TRUE(bits_equal(out, pr.forward(Options{})));
  EXPECT_EQ(m.pending_dropout_masks(), 0u);
  m.zero_grad_and_backward(ids, dout);
  EXPECT_TRUE(bits_equal(m.token_grad_to_host(), pr.backward(Options{}).first));

  // set_dropout_state restarts the sequence.
  m.train();
  m.set_dropout_state(seed + 1, 7);
  m.forward(ids, out_v);
  EXPECT_TRUE(bits_equal(out, pr.forward(with_dropout(0.25f, seed + 1, 7))));
  // A rejected forward (bad shape) queues nothing.
  EXPECT_THROW(m.forward(ids, host_view(out, DType::f32, {pr.B * pr.T, pr.D})), InvalidArgument);
  EXPECT_EQ(m.pending_dropout_masks(), 1u);
}

// A checkpoint restore after a failed step: forward (queued with the old state), then
// set_dropout_state, then forward, then backward: the backward must use the new state's mask,
// not the stale forward's.
TEST(DropoutModule, SetDropoutStateDropsStalePendingForwards) {
  const auto seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  Problem pr(seed);
  Embedding m = problem_module(pr, 0.3, seed, Device::cpu(), host_stream);
  auto ids = host_view(pr.ids, DType::i64, {pr.B, pr.T});
  auto dout = host_view(pr.dout, DType::f32, {pr.B, pr.T, pr.D});
  std::vector<float> out(static_cast<std::size_t>(pr.B * pr.T * pr.D));
  auto out_v = host_view(out, DType::f32, {pr.B, pr.T, pr.D});
  m.forward(ids, out_v);  // (seed, 0): the failed step, never backpropagated
  EXPECT_EQ(m.pending_dropout_masks(), 1u);
  m.set_dropout_state(seed + 9, 40);
  EXPECT_EQ(m.pending_dropout_masks(), 0u);
  m.forward(ids, out_v);  // (seed + 9, 40)
  EXPECT_TRUE(bits_equal(out, pr.forward(with_dropout(0.3, seed + 9, 40))));
  m.zero_grad_and_backward(ids, dout);
  const auto want = pr.backward(with_dropout(0.3, seed + 9, 40));
  EXPECT_TRUE(bits_equal(m.token_grad_to_host(), want.first));
  EXPECT_TRUE(bits_equal(m.position_grad_to_host(), want.second));
  EXPECT_FALSE(bits_equal(m.token_grad_to_host(), pr.backward(with_dropout(0.3, seed, 0)).first));
  EXPECT_EQ(m.pending_dropout_masks(), 0u);
}

// Graph-safe mode: the state lives in the module's memory (host memory for a CPU module), every
// training forward and backward reads it, and advance_dropout_state moves to the next mask.
TEST(DropoutModule, GraphSafeStateIsReadWhenTheCallRunsAndAdvancedOnTheStream) {
  const auto seed = fresh_seed();
  Problem pr(seed);
  Embedding m = problem_module(pr, 0.4f, seed, Device::cpu(), host_stream);
  m.set_dropout_state(seed, 5);
  m.set_graph_safe_dropout(true);
  EXPECT_TRUE(m.graph_safe_dropout());
  auto ids = host_view(pr.ids, DType::i64, {pr.B, pr.T});
  auto dout = host_view(pr.dout, DType::f32, {pr.B, pr.T, pr.D});
  std::vector<float> out(static_cast<std::size_t>(pr.B * pr.T * pr.D));
  auto out_v = host_view(out, DType::f32, {pr.B, pr.T, pr.D});
  for (std::uint64_t step = 5; step < 8; ++step) {
    m.forward(ids, out_v);
    EXPECT_TRUE(bits_equal(out, pr.forward(with_dropout(0.4f, seed, step)))) << step;
    m.zero_grad_and_backward(ids, dout);
    EXPECT_TRUE(
        bits_equal(m.token_grad_to_host(), pr.backward(with_dropout(0.4f, seed, step)).first))
        << step;
    EXPECT_EQ(m.pending_dropout_masks(), 0u);  // no queue in this mode
    m.advance_dropout_state();
  }
  m.set_graph_safe_dropout(false);
  EXPECT_THROW(m.advance_dropout_state(), InvalidArgument);
}

TEST(DropoutModule, PackedSequencesThroughPositions) {
  Problem pr(fresh_seed());
  EmbeddingConfig c;
  c.vocab_size = pr.V;
  c.dim = pr.D;
  c.context_length = pr.P;
  Embedding m(c, host_stream);
  m.load_token_table(pr.tok.data(), pr.tok.size() * 4);
  m.load_position_table(pr.pos.data(), pr.pos.size() * 4);
  std::vector<std::int32_t> cu = {0, 16, 30, 46, 60};
  Positions where;
  where.cu_seqlens = host_view(cu, DType::i32, {5});
  std::vector<float> out(static_cast<std::size_t>(pr.B * pr.T * pr.D));
  m.forward(host_view(pr.ids, DType::i64, {pr.B, pr.T}),
            host_view(out, DType::f32, {pr.B, pr.T, pr.D}), where);
  Options o;
  o.cu_seqlens = where.cu_seqlens;
  EXPECT_TRUE(bits_equal(out, pr.forward(o)));
  EXPECT_THROW(EmbeddingConfig bad = c; bad.dropout = 2.0f;
               Embedding(bad, host_stream), InvalidArgument);
}

// ---- on the GPU (skipped without one)
// ------------------------------------------------------------

class GpuDropout : public GpuTest {};

// Forward with dropout is bitwise the CPU's for f32 (vector and scalar paths, both modes, with
// offset positions and cu_seqlens); backward matches the CPU to the backward tolerance and the
// deterministic mode is bitwise reproducible.
TEST_F(GpuDropout, MatchesTheCpuBitwiseForF32) {
  const auto seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  for (std::int64_t D : {std::int64_t{24}, std::int64_t{7}}) {
    for (DropoutMode mode : {DropoutMode::element, DropoutMode::token}) {
      Problem pr(seed);
      pr.D = D;
      std::mt19937_64 rng(seed);
      pr.tok = random_values<float>(static_cast<std::size_t>(pr.V * D), rng);
      pr.pos = random_values<float>(static_cast<std::size_t>(pr.P * D), rng);
      pr.dout = random_values<float>(static_cast<std::size_t>(pr.B * pr.T * D), rng);
      // Sequences of 7, 0, 16, 15, 12 and 10 rows: none longer than the P = 16 positions (the
      // first run of this test, on the simulator, found that its earlier 21-row sequence made
      // the CPU reference raise IndexOutOfRange).
      std::vector<std::int32_t> cu = {0, 7, 7, 23, 38, 50, 60};
      const std::int64_t ncu = static_cast<std::int64_t>(cu.size());
      for (bool packed : {false, true}) {
        Options o = with_dropout(0.3f, seed, 5, mode);
        Buffer cu_d = to_device(cu, DType::i32, Shape{ncu}, stream());
        std::vector<std::int32_t> cu_h = cu;
        if (packed) o.cu_seqlens = host_view(cu_h, DType::i32, {ncu});
        const auto cpu_out = pr.forward(o);
        Buffer ids = to_device(pr.ids, DType::i64, Shape{pr.B, pr.T}, stream());
        Buffer tok = to_device(pr.tok, DType::f32, Shape{pr.V, D}, stream());
        Buffer pos = to_device(pr.pos, DType::f32, Shape{pr.P, D}, stream());
        Buffer out(DType::f32, Shape{pr.B, pr.T, D}, Device::cuda(0));
        poison_device(out, stream());
        Options og = o;
        if (packed) og.cu_seqlens = cu_d;
        tokemb::forward(ids, tok, pos, out, og, stream());
        const auto gpu_out = to_host<float>(out, stream());
        ASSERT_TRUE(bits_equal(cpu_out, gpu_out)) << "D=" << D << " packed=" << packed;

        const auto cpu_g = pr.backward(o);
        Buffer dout = to_device(pr.dout, DType::f32, Shape{pr.B, pr.T, D}, stream());
        Buffer gt(DType::f32, Shape{pr.V, D}, Device::cuda(0));
        Buffer gp(DType::f32, Shape{pr.P, D}, Device::cuda(0));
        for (BackwardMode m : {BackwardMode::atomic, BackwardMode::deterministic}) {
          og.backward_mode = m;
          og.accumulate = false;
          const std::size_t ws_bytes = backward_workspace_size(ids, dout, gt, gp, og);
          Buffer ws(DType::f32, Shape{static_cast<std::int64_t>(ws_bytes / 4 + 1)},
                    Device::cuda(0));
          poison_device(gt, stream());
          poison_device(gp, stream());
          tokemb::backward(ids, dout, gt, gp, og, Workspace{ws.data(), ws_bytes}, stream());
          const auto g1 = to_host<float>(gt, stream()), p1 = to_host<float>(gp, stream());
          for (std::size_t i = 0; i < g1.size(); ++i)
            ASSERT_NEAR(g1[i], cpu_g.first[i], 1e-5f * (1.0f + std::fabs(cpu_g.first[i]))) << i;
          for (std::size_t i = 0; i < p1.size(); ++i)
            ASSERT_NEAR(p1[i], cpu_g.second[i], 1e-5f * (1.0f + std::fabs(cpu_g.second[i]))) << i;
          if (m == BackwardMode::deterministic) {
            tokemb::backward(ids, dout, gt, gp, og, Workspace{ws.data(), ws_bytes}, stream());
            EXPECT_TRUE(bits_equal(g1, to_host<float>(gt, stream())));
            EXPECT_TRUE(bits_equal(p1, to_host<float>(gp, stream())));
          }
        }
      }
    }
  }
}

// A captured forward + backward reads (seed, offset) from device memory when it runs: each
// replay after the caller changes the offset draws a new mask, the same one a direct call with
// that offset draws.
TEST_F(GpuDropout, GraphReplayDrawsTheMaskOfTheOffsetInDeviceMemory) {
#if TOKEMB_WITH_CUDA
  const auto seed = fresh_seed();
  Problem pr(seed);
  Buffer ids = to_device(pr.ids, DType::i64, Shape{pr.B, pr.T}, stream());
  Buffer tok = to_device(pr.tok, DType::f32, Shape{pr.V, pr.D}, stream());
  Buffer pos = to_device(pr.pos, DType::f32, Shape{pr.P, pr.D}, stream());
  Buffer dout = to_device(pr.dout, DType::f32, Shape{pr.B, pr.T, pr.D}, stream());
  Buffer out(DType::f32, Shape{pr.B, pr.T, pr.D}, Device::cuda(0));
  Buffer gt(DType::f32, Shape{pr.V, pr.D}, Device::cuda(0));
  Buffer gp(DType::f32, Shape{pr.P, pr.D}, Device::cuda(0));
  std::vector<std::uint64_t> so = {seed, 1};
  Buffer so_d = to_device(so, DType::i64, Shape{2}, stream());
  Options o = with_dropout(0.5f, 0, 0);
  o.dropout.seed_offset = static_cast<const std::uint64_t*>(so_d.data());
  o.backward_mode = BackwardMode::deterministic;
  o.accumulate = false;
  const std::size_t ws_bytes = backward_workspace_size(ids, dout, gt, gp, o);
  Buffer ws(DType::f32, Shape{static_cast<std::int64_t>(ws_bytes / 4 + 1)}, Device::cuda(0));
  cudaStream_t s = stream().value();
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  tokemb::forward(ids, tok, pos, out, o, stream());
  tokemb::backward(ids, dout, gt, gp, o, Workspace{ws.data(), ws_bytes}, stream());
  ASSERT_EQ(cudaStreamEndCapture(s, &graph), cudaSuccess);
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  std::vector<std::vector<float>> outs;
  for (std::uint64_t offset : {1u, 2u}) {
    so[1] = offset;
    copy(so_d, TensorView(so.data(), DType::i64, Shape{2}, Device::cpu()), stream());
    ASSERT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
    outs.push_back(to_host<float>(out, stream()));
    const auto g_replay = to_host<float>(gt, stream());
    // The direct call with the same offset.
    Options direct = with_dropout(0.5f, seed, offset);
    direct.backward_mode = BackwardMode::deterministic;
    direct.accumulate = false;
    EXPECT_TRUE(bits_equal(outs.back(), pr.forward(direct)));
    tokemb::backward(ids, dout, gt, gp, direct, Workspace{ws.data(), ws_bytes}, stream());
    EXPECT_TRUE(bits_equal(g_replay, to_host<float>(gt, stream())));
  }
  EXPECT_FALSE(bits_equal(outs[0], outs[1]));
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
#endif
}

// The module in graph-safe mode: forward, backward and advance captured once; each replay draws
// the next mask (the same as direct calls at that offset).
TEST_F(GpuDropout, ModuleGraphReplayAdvancesItsOwnMask) {
#if TOKEMB_WITH_CUDA
  const auto seed = fresh_seed();
  Problem pr(seed);
  Embedding m =
      problem_module(pr, 0.3f, seed, Device::cuda(0), stream(), BackwardMode::deterministic);
  m.reserve(pr.B * pr.T);
  m.set_graph_safe_dropout(true);
  Buffer ids = to_device(pr.ids, DType::i64, Shape{pr.B, pr.T}, stream());
  Buffer dout = to_device(pr.dout, DType::f32, Shape{pr.B, pr.T, pr.D}, stream());
  Buffer out(DType::f32, Shape{pr.B, pr.T, pr.D}, Device::cuda(0));
  cudaStream_t s = stream().value();
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  m.forward(ids, out);
  m.zero_grad_and_backward(ids, dout);
  m.advance_dropout_state();
  ASSERT_EQ(cudaStreamEndCapture(s, &graph), cudaSuccess);
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  for (std::uint64_t offset = 0; offset < 3; ++offset) {
    ASSERT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
    Options o = with_dropout(0.3f, seed, offset);
    EXPECT_TRUE(bits_equal(to_host<float>(out, stream()), pr.forward(o))) << offset;
    const auto g = m.token_grad_to_host();
    const auto want = pr.backward(o).first;
    for (std::size_t i = 0; i < g.size(); ++i)
      ASSERT_NEAR(g[i], want[i], 1e-5f * (1.0f + std::fabs(want[i]))) << offset << " " << i;
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
#endif
}

}  // namespace
}  // namespace tokemb::test
