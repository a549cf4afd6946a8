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

/// A token table of more than 2^31 elements in \p dt (bf16: ~4.3 GB, f32: ~8.6 GB; its f32
/// gradient ~8.6 GB): rows near the end, and a row that straddles element 2^31, are looked up
/// and receive their gradient, with positions from the offset and from explicit position ids;
/// backward in both modes, accumulating and overwriting (the overwrite writes every row,
/// including the rows past element 2^31 that nothing reaches: they must read zero). Values are
/// dyadic, so every sum is exact and compared bit for bit. Expected values are computed for the
/// touched rows, their neighbours and a sample of untouched rows only.
void table_of_more_than_2e31_elements(StreamView s, DType dt) {
  constexpr std::int64_t D = 1000;
  constexpr std::int64_t V = (std::int64_t{1} << 31) / D + 10;  // V * D = 2^31 + 9352
  constexpr std::int64_t P = 1024, B = 4, T = 64;
  static_assert(V * D > (std::int64_t{1} << 31), "the table must exceed 2^31 elements");
  const std::size_t es = dtype_size(dt);
  const std::size_t need = static_cast<std::size_t>(V * D) * (es + 4) + (std::size_t{1} << 30);
  const std::size_t free_bytes = cuda_free_bytes();
  if (free_bytes < need)
    GTEST_SKIP() << "needs " << need / (1 << 20) << " MiB of free device memory, "
                 << free_bytes / (1 << 20) << " MiB are free";
  const auto seed = fresh_seed();
  SCOPED_TRACE(std::string(dtype_name(dt)) + " seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const Device dev = Device::cuda(0);

  // The rows that are used; the row holding element 2^31 straddles it.
  const std::int64_t straddle = (std::int64_t{1} << 31) / D;
  ASSERT_LT(straddle * D, std::int64_t{1} << 31);
  ASSERT_GT((straddle + 1) * D, std::int64_t{1} << 31);
  const std::vector<std::int64_t> used = {0,     straddle - 1, straddle, straddle + 1,
                                          V - 3, V - 2,        V - 1};

  Buffer tok(dt, Shape{V, D}, dev), pos(dt, Shape{P, D}, dev);
  fill_zero(tok, s);
  std::vector<std::vector<float>> tok_rows;
  for (std::int64_t r : used) {
    tok_rows.push_back(dyadic_values(static_cast<std::size_t>(D), rng));
    const auto bytes = encode_floats(dt, tok_rows.back());
    copy(TensorView(static_cast<unsigned char*>(tok.data()) + r * D * static_cast<std::int64_t>(es),
                    dt, Shape{D}, dev),
         TensorView(bytes.data(), dt, Shape{D}, Device::cpu()), s);
    synchronize(s);
  }
  const auto pos_vals = dyadic_values(static_cast<std::size_t>(P * D), rng);
  {
    const auto bytes = encode_floats(dt, pos_vals);
    copy(pos, TensorView(bytes.data(), dt, Shape{P, D}, Device::cpu()), s);
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
  std::vector<std::int64_t> pos_ids(ids.size());
  for (auto& x : pos_ids) x = static_cast<std::int64_t>(rng() % P);
  Buffer d_ids = to_device(ids, DType::i64, {B, T}, s);
  Buffer d_pos_ids = to_device(pos_ids, DType::i64, {B, T}, s);
  const auto dout_vals = dyadic_values(static_cast<std::size_t>(B * T * D), rng);
  const auto dout_bytes = encode_floats(dt, dout_vals);
  Buffer dout(dt, Shape{B, T, D}, dev);
  copy(dout, TensorView(dout_bytes.data(), dt, Shape{B, T, D}, Device::cpu()), s);
  ErrorMonitor record(dev, s);
  // Rows that nothing reaches, past element 2^31, for the overwrite's zeroing.
  std::vector<std::int64_t> untouched = {straddle + 2, straddle + 1000, V - 5};
  for (int i = 0; i < 4; ++i)
    untouched.push_back(
        straddle + 3 +
        static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(V - 8 - straddle)));

  for (bool explicit_positions : {false, true}) {
    SCOPED_TRACE(explicit_positions ? "position ids" : "positions from the offset");
    Options o;
    o.error_record = record.get();
    if (explicit_positions) o.position_ids = d_pos_ids.view();
    auto position_of = [&](std::size_t r) {
      return explicit_positions ? pos_ids[r] : static_cast<std::int64_t>(r) % T;
    };

    // Forward.
    Buffer out(dt, Shape{B, T, D}, dev);
    forward(d_ids, tok, pos, out, o, s);
    const auto out_host = decode_floats(dt, [&] {
      std::vector<unsigned char> h(static_cast<std::size_t>(B * T * D) * es);
      copy(TensorView(h.data(), dt, Shape{B, T, D}, Device::cpu()), out, s);
      synchronize(s);
      return h;
    }());
    for (std::size_t r = 0; r < ids.size(); ++r) {
      const std::int64_t q = position_of(r);
      for (std::int64_t d = 0; d < D; ++d) {
        const float want =
            r == bad_row
                ? 0.0f
                : round_to(dt, tok_rows[which[r]][static_cast<std::size_t>(d)] +
                                   round_to(dt, pos_vals[static_cast<std::size_t>(q * D + d)]));
        ASSERT_EQ(out_host[r * static_cast<std::size_t>(D) + static_cast<std::size_t>(d)], want)
            << "row " << r << " (token " << ids[r] << "), d " << d;
      }
    }
    if (auto e = catch_as<IndexOutOfRange>([&] { record.check(s); }))
      expect_row_error(*e, IndexOutOfRange::Kind::token, V, static_cast<std::int64_t>(bad_row) / T,
                       static_cast<std::int64_t>(bad_row) % T, V, 1);

    // Backward, both modes, accumulating (from zero) and overwriting (from NaN), into an f32
    // gradient of V * D elements.
    Buffer gt(DType::f32, Shape{V, D}, dev), gp(DType::f32, Shape{P, D}, dev);
    for (int variant = 0; variant < 4; ++variant) {
      const BackwardMode mode = variant % 2 ? BackwardMode::deterministic : BackwardMode::atomic;
      const bool accumulate = variant < 2;
      SCOPED_TRACE(std::string(variant % 2 ? "deterministic" : "atomic") +
                   (accumulate ? ", accumulate" : ", overwrite"));
      if (accumulate) {
        fill_zero(gt, s);
        fill_zero(gp, s);
      } else {
        poison_device(gt, s);
        poison_device(gp, s);
      }
      o.backward_mode = mode;
      o.accumulate = accumulate;
      const std::size_t ws_bytes = backward_workspace_size(d_ids, dout, gt, gp, o);
      Buffer ws(DType::i64,
                Shape{std::max<std::int64_t>(1, static_cast<std::int64_t>((ws_bytes + 7) / 8))},
                dev);
      backward(d_ids, dout, gt, gp, o, Workspace{ws.data(), ws.bytes()}, s);
      // Expected sums for the used rows; their neighbours and the sampled rows must be zero.
      std::vector<std::int64_t> check_rows = used;
      for (std::int64_t r : used)
        for (std::int64_t n : {r - 1, r + 1})
          if (n >= 0 && n < V && std::find(used.begin(), used.end(), n) == used.end())
            check_rows.push_back(n);
      check_rows.insert(check_rows.end(), untouched.begin(), untouched.end());
      for (std::int64_t r : check_rows) {
        std::vector<float> want(static_cast<std::size_t>(D), 0.0f);
        for (std::size_t i = 0; i < ids.size(); ++i)
          if (i != bad_row && ids[i] == r)
            for (std::int64_t d = 0; d < D; ++d)
              want[static_cast<std::size_t>(d)] += round_to(
                  dt, dout_vals[i * static_cast<std::size_t>(D) + static_cast<std::size_t>(d)]);
        std::vector<float> got(static_cast<std::size_t>(D));
        copy(TensorView(got.data(), DType::f32, Shape{D}, Device::cpu()),
             TensorView(static_cast<float*>(gt.data()) + r * D, DType::f32, Shape{D}, dev), s);
        synchronize(s);
        ASSERT_EQ(got, want) << "grad_token row " << r;
      }
      // The whole positional gradient.
      std::vector<float> want_p(static_cast<std::size_t>(P * D), 0.0f);
      for (std::size_t i = 0; i < ids.size(); ++i)
        if (i != bad_row)
          for (std::int64_t d = 0; d < D; ++d)
            want_p[static_cast<std::size_t>(position_of(i) * D + d)] += round_to(
                dt, dout_vals[i * static_cast<std::size_t>(D) + static_cast<std::size_t>(d)]);
      ASSERT_EQ(tokemb::test::to_host<float>(gp, s), want_p) << "grad_pos";
      if (auto e = catch_as<IndexOutOfRange>([&] { record.check(s); }))
        expect_row_error(*e, IndexOutOfRange::Kind::token, V,
                         static_cast<std::int64_t>(bad_row) / T,
                         static_cast<std::int64_t>(bad_row) % T, V, 1);
    }
  }
  expect_cuda_healthy();
}

TEST_F(GpuBadInput, TableOfMoreThan2e31Elements) {
  table_of_more_than_2e31_elements(stream(), DType::bf16);
}

// The same with an f32 table (~17 GB with its gradient), where the device has the memory.
TEST_F(GpuBadInput, TableOfMoreThan2e31ElementsF32) {
  table_of_more_than_2e31_elements(stream(), DType::f32);
}

}  // namespace
}  // namespace tokemb::test
