// Vocabulary-parallel shards (Options::vocab_start / vocab_size) in one process: for every split
// of the vocabulary into 1 to 4 shards (uneven ones included), the sum of the shards' forwards is
// the unsharded forward bit for bit (f32), and each shard's gradient is its rows of the unsharded
// gradient; a padded table's rows past vocab_size are never touched; an id outside the global
// vocabulary is an error on every shard. The Gpu twin runs the same splits through the kernels.
#include <gtest/gtest.h>

#include <cmath>

#include "tests/test_helpers.hpp"

namespace tokemb::test {
namespace {

const StreamView host_stream = StreamView::legacy_default();

struct ShardProblem {
  std::int64_t V = 50, rows = 56, D = 8, P = 16, B = 3, T = 10;  // 6 padding rows past V
  std::vector<float> tok, pos, dout;
  std::vector<std::int64_t> ids;
  explicit ShardProblem(std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    tok = random_values<float>(static_cast<std::size_t>(rows * D), rng);
    pos = random_values<float>(static_cast<std::size_t>(P * D), rng);
    dout = random_values<float>(static_cast<std::size_t>(B * T * D), rng);
    ids = random_ids<std::int64_t>(static_cast<std::size_t>(B * T), V, IdDistribution::zipf, rng);
  }
};

// Splits [0, V) at random points into n shards; the last one also holds the padding rows.
std::vector<std::int64_t> split_points(std::int64_t V, int n, std::mt19937_64& rng) {
  std::vector<std::int64_t> cuts = {0};
  std::uniform_int_distribution<std::int64_t> u(1, V - 1);
  while (static_cast<int>(cuts.size()) < n) {
    const std::int64_t c = u(rng);
    if (std::find(cuts.begin(), cuts.end(), c) == cuts.end()) cuts.push_back(c);
  }
  std::sort(cuts.begin(), cuts.end());
  cuts.push_back(V);
  return cuts;
}

struct Run {
  std::vector<float> out, grad_tok, grad_pos;
};

// One call pair on the CPU or device 0: forward, then an overwriting backward from NaN
// canaries. tok_rows: the table rows this shard holds. with_pos: the shard adds positions.
Run run_shard(const ShardProblem& pr, std::int64_t start, std::int64_t tok_rows, bool with_pos,
              BackwardMode mode, std::optional<std::int64_t> padding, Device dev,
              StreamView stream) {
  std::vector<float> tok(pr.tok.begin() + start * pr.D, pr.tok.begin() + (start + tok_rows) * pr.D);
  std::vector<float> pos = pr.pos, dout = pr.dout;
  std::vector<std::int64_t> ids = pr.ids;
  Run r;
  r.out.assign(static_cast<std::size_t>(pr.B * pr.T * pr.D), std::nanf(""));
  r.grad_tok.assign(static_cast<std::size_t>(tok_rows * pr.D), std::nanf(""));
  r.grad_pos.assign(static_cast<std::size_t>(pr.P * pr.D), std::nanf(""));
  Options o;
  o.vocab_start = start;
  o.vocab_size = pr.V;
  o.padding_idx = padding;
  o.backward_mode = mode;
  o.accumulate = false;
  auto view = [&](std::vector<float>& v, Shape s) {
    return TensorView(v.data(), DType::f32, s, Device::cpu());
  };
  if (dev.is_cpu()) {
    forward(TensorView(ids.data(), DType::i64, Shape{pr.B, pr.T}, dev), view(tok, {tok_rows, pr.D}),
            with_pos ? view(pos, {pr.P, pr.D}) : TensorView{}, view(r.out, {pr.B, pr.T, pr.D}), o,
            stream);
    backward(TensorView(ids.data(), DType::i64, Shape{pr.B, pr.T}, dev),
             view(dout, {pr.B, pr.T, pr.D}), view(r.grad_tok, {tok_rows, pr.D}),
             with_pos ? view(r.grad_pos, {pr.P, pr.D}) : TensorView{}, o, Workspace{}, stream);
    return r;
  }
  Buffer ids_d = to_device(ids, DType::i64, Shape{pr.B, pr.T}, stream);
  Buffer tok_d = to_device(tok, DType::f32, Shape{tok_rows, pr.D}, stream);
  Buffer pos_d = to_device(pos, DType::f32, Shape{pr.P, pr.D}, stream);
  Buffer dout_d = to_device(dout, DType::f32, Shape{pr.B, pr.T, pr.D}, stream);
  Buffer out_d = to_device(r.out, DType::f32, Shape{pr.B, pr.T, pr.D}, stream);
  Buffer gt_d = to_device(r.grad_tok, DType::f32, Shape{tok_rows, pr.D}, stream);
  Buffer gp_d = to_device(r.grad_pos, DType::f32, Shape{pr.P, pr.D}, stream);
  const TensorView pos_v = with_pos ? pos_d.view() : TensorView{};
  const TensorView gp_v = with_pos ? gp_d.view() : TensorView{};
  forward(ids_d, tok_d, pos_v, out_d, o, stream);
  const std::size_t bytes = backward_workspace_size(ids_d, dout_d, gt_d, gp_v, o);
  Buffer ws(DType::i64, Shape{static_cast<std::int64_t>(bytes / 8 + 1)}, dev);
  backward(ids_d, dout_d, gt_d, gp_v, o, Workspace{ws.data(), bytes}, stream);
  r.out = to_host<float>(out_d, stream);
  r.grad_tok = to_host<float>(gt_d, stream);
  r.grad_pos = to_host<float>(gp_d, stream);
  return r;
}

void check_splits(Device dev, StreamView stream) {
  const auto seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  ShardProblem pr(seed);
  for (std::optional<std::int64_t> padding :
       {std::optional<std::int64_t>{}, std::optional<std::int64_t>{pr.ids[3]}}) {
    for (BackwardMode mode : {BackwardMode::atomic, BackwardMode::deterministic}) {
      // Unsharded reference over the padded table.
      const Run whole = run_shard(pr, 0, pr.rows, true, mode, padding, dev, stream);
      for (int n = 1; n <= 4; ++n) {
        const std::vector<std::int64_t> cuts = split_points(pr.V, n, rng);
        std::vector<float> sum(whole.out.size(), 0.0f);
        for (int k = 0; k < n; ++k) {
          const std::int64_t start = cuts[static_cast<std::size_t>(k)];
          // The last shard holds the padded rows past V too.
          const std::int64_t rows =
              (k + 1 == n ? pr.rows : cuts[static_cast<std::size_t>(k + 1)]) - start;
          SCOPED_TRACE("shards " + std::to_string(n) + ", shard " + std::to_string(k) + " = [" +
                       std::to_string(start) + ", " + std::to_string(start + rows) + ")");
          const Run s = run_shard(pr, start, rows, k == 0, mode, padding, dev, stream);
          for (std::size_t i = 0; i < sum.size(); ++i) sum[i] += s.out[i];
          // The shard's gradient rows are its rows of the whole gradient, the same bits;
          // padding rows past V stay as they were (NaN canaries), even when overwriting.
          for (std::int64_t row = 0; row < rows; ++row)
            for (std::int64_t d = 0; d < pr.D; ++d) {
              const float got = s.grad_tok[static_cast<std::size_t>(row * pr.D + d)];
              if (start + row >= pr.V) {
                ASSERT_TRUE(std::isnan(got)) << "padding row " << start + row << " was written";
              } else {
                const float want =
                    whole.grad_tok[static_cast<std::size_t>((start + row) * pr.D + d)];
                if (mode == BackwardMode::deterministic || dev.is_cpu()) {
                  ASSERT_TRUE(same_bits(&got, &want, 4))
                      << "row " << start + row << ": " << got << " vs " << want;
                } else {
                  ASSERT_NEAR(got, want, 1e-5f * (1.0f + std::fabs(want))) << start + row;
                }
              }
            }
          if (k == 0) {
            for (std::size_t i = 0; i < s.grad_pos.size(); ++i)
              ASSERT_NEAR(s.grad_pos[i], whole.grad_pos[i],
                          1e-5f * (1.0f + std::fabs(whole.grad_pos[i])));
          }
        }
        for (std::size_t i = 0; i < sum.size(); ++i)
          ASSERT_TRUE(same_bits(&sum[i], &whole.out[i], 4))
              << "n=" << n << " element " << i << ": " << sum[i] << " vs " << whole.out[i];
      }
    }
  }
}

TEST(Shards, SumOfShardForwardsIsTheForwardAndGradientsAreTheRows) {
  check_splits(Device::cpu(), host_stream);
}

TEST(Shards, IdsOutsideTheGlobalVocabularyFailOnEveryShard) {
  ShardProblem pr(fresh_seed());
  pr.ids[7] = 52;  // a padding row of the table, but not a valid id
  for (std::int64_t start : {std::int64_t{0}, std::int64_t{20}, std::int64_t{40}}) {
    const std::int64_t rows = start == 40 ? pr.rows - 40 : 20;
    try {
      run_shard(pr, start, rows, start == 0, BackwardMode::atomic, std::nullopt, Device::cpu(),
                host_stream);
      FAIL() << "no error on the shard at " << start;
    } catch (const IndexOutOfRange& e) {
      EXPECT_EQ(e.kind(), IndexOutOfRange::Kind::token);
      EXPECT_EQ(e.value(), 52);
      EXPECT_EQ(e.limit(), pr.V);
      EXPECT_EQ(e.time(), 7);
    }
  }
}

TEST(Shards, ArgumentErrors) {
  ShardProblem pr(1);
  std::vector<float> out(static_cast<std::size_t>(pr.B * pr.T * pr.D));
  auto call = [&](std::int64_t start, std::int64_t size, std::optional<std::int64_t> padding) {
    Options o;
    o.vocab_start = start;
    o.vocab_size = size;
    o.padding_idx = padding;
    forward(host_view(pr.ids, DType::i64, {pr.B, pr.T}), host_view(pr.tok, DType::f32, {10, pr.D}),
            TensorView{}, host_view(out, DType::f32, {pr.B, pr.T, pr.D}), o, host_stream);
  };
  EXPECT_THROW(call(-1, 50, std::nullopt), InvalidArgument);
  EXPECT_THROW(call(0, -5, std::nullopt), InvalidArgument);
  EXPECT_THROW(call(50, 50, std::nullopt), InvalidArgument);  // no valid id in the shard
  EXPECT_THROW(call(0, 50, 50), InvalidArgument);             // padding_idx is a global id
  EXPECT_NO_THROW(call(40, 50, -1));                          // id 49: in this shard
}

class GpuShards : public GpuTest {};

TEST_F(GpuShards, SumOfShardForwardsIsTheForwardAndGradientsAreTheRows) {
  check_splits(Device::cuda(0), stream());
}

}  // namespace
}  // namespace tokemb::test
