// Deterministic backward (issue 6): bitwise-identical gradients run after run.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "tests/bad_input_helpers.hpp"

namespace tokemb::test {
namespace {

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

}  // namespace
}  // namespace tokemb::test
