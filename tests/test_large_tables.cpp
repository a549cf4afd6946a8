// Tables of more than 2^31 elements (issue 6): 64-bit element offsets in forward and backward.
// Needs a device with enough free memory; skips with the amount otherwise.
#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "tests/bad_input_helpers.hpp"

namespace tokemb::test {
namespace {

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

}  // namespace
}  // namespace tokemb::test
