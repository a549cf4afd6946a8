// Deterministic backward (issue 6): bitwise-identical gradients run after run, and across
// processes.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
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

// ---- across processes ------------------------------------------------------------------------
// "Bitwise identical run after run" holds across processes too: nothing in the result may depend
// on addresses, on allocation history or on what ran before in the process. The parent computes
// the gradients for a seed, then runs this test binary again (one test, the child below) with the
// seed in the environment and compares the child's bytes with its own.

constexpr const char* kChildOutEnv = "TOKEMB_TEST_DETERMINISM_OUT";
constexpr const char* kChildSeedEnv = "TOKEMB_TEST_DETERMINISM_SEED";

/// Both gradients (token, then position) of deterministic backward calls for the seed: a
/// GPT-2-like Zipf batch accumulating, the same overwriting, and a decode-like batch (T = 1,
/// B = 4096: the chunked positional sums).
std::vector<unsigned char> deterministic_gradients(std::uint64_t seed, StreamView s) {
  std::vector<unsigned char> bytes;
  struct Shape5 {
    std::int64_t V, D, P, B, T, offset;
    bool accumulate;
  };
  const Shape5 shapes[] = {{50257, 768, 1024, 8, 1024, 0, true},
                           {50257, 768, 1024, 8, 1024, 0, false},
                           {50257, 768, 1024, 4096, 1, 1000, true}};
  std::mt19937_64 rng(seed);
  for (const Shape5& c : shapes) {
    auto ids = random_ids<std::int64_t>(static_cast<std::size_t>(c.B * c.T), c.V,
                                        IdDistribution::zipf, rng);
    auto dout = random_values<float>(static_cast<std::size_t>(c.B * c.T * c.D), rng);
    auto g0 = random_values<float>(static_cast<std::size_t>(c.V * c.D), rng);
    Buffer d_ids = to_device(ids, DType::i64, {c.B, c.T}, s);
    Buffer d_dout = to_device(dout, DType::f32, {c.B, c.T, c.D}, s);
    Buffer gt = to_device(g0, DType::f32, {c.V, c.D}, s);
    Buffer gp(DType::f32, Shape{c.P, c.D}, Device::cuda(0));
    fill_zero(gp, s);
    Options o;
    o.backward_mode = BackwardMode::deterministic;
    o.accumulate = c.accumulate;
    o.position_offset = c.offset;
    const std::size_t ws_bytes = backward_workspace_size(d_ids, d_dout, gt, gp, o);
    Buffer ws(DType::i64, Shape{static_cast<std::int64_t>(ws_bytes / 8 + 1)}, Device::cuda(0));
    backward(d_ids, d_dout, gt, gp, o, Workspace{ws.data(), ws.bytes()}, s);
    for (const Buffer* g : {&gt, &gp}) {
      const auto h = tokemb::test::to_host<float>(*g, s);
      const auto* p = reinterpret_cast<const unsigned char*>(h.data());
      bytes.insert(bytes.end(), p, p + h.size() * sizeof(float));
    }
  }
  return bytes;
}

class GpuDeterminism : public GpuTest {};

TEST_F(GpuDeterminism, BitwiseIdenticalAcrossProcesses) {
  if (std::getenv(kChildOutEnv) != nullptr) GTEST_SKIP() << "this is the child process";
  const auto seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const std::vector<unsigned char> mine = deterministic_gradients(seed, stream());
  const std::string out =
      (std::filesystem::temp_directory_path() / ("tokemb_det_" + std::to_string(seed) + ".bin"))
          .string();
  // The child: this binary, one test, the seed and the output path in its environment.
  const std::string cmd = std::string(kChildOutEnv) + "='" + out + "' " + kChildSeedEnv + "=" +
                          std::to_string(seed) +
                          " /proc/self/exe --gtest_filter=GpuDeterminism.ChildProcessPart"
                          " >/dev/null 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  std::ifstream f(out, std::ios::binary);
  const std::vector<unsigned char> theirs((std::istreambuf_iterator<char>(f)), {});
  std::remove(out.c_str());
  ASSERT_EQ(theirs.size(), mine.size()) << "the child wrote " << theirs.size() << " bytes";
  EXPECT_TRUE(same_bits(theirs.data(), mine.data(), mine.size()));
}

/// Runs only as the child of BitwiseIdenticalAcrossProcesses (skips otherwise).
TEST_F(GpuDeterminism, ChildProcessPart) {
  const char* out = std::getenv(kChildOutEnv);
  const char* seed = std::getenv(kChildSeedEnv);
  if (out == nullptr || seed == nullptr)
    GTEST_SKIP() << "runs as the child of GpuDeterminism.BitwiseIdenticalAcrossProcesses";
  // Allocate and free something first, so the child's buffers land at other addresses.
  { Buffer shift(DType::f32, Shape{12345}, Device::cuda(0)); }
  const auto bytes = deterministic_gradients(std::stoull(seed), stream());
  std::ofstream f(out, std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(f.good());
}

}  // namespace
}  // namespace tokemb::test
