// The Embedding module on the CPU (the GPU module is covered in test_gpu_ops.cpp).
#include <gtest/gtest.h>

#include "tests/test_helpers.hpp"

namespace tokemb::test {
namespace {

const StreamView host_stream = StreamView::legacy_default();

TEST(CpuModule, ForwardBackwardZeroGradAndHostCopies) {
  EmbeddingConfig c;
  c.vocab_size = 10;
  c.dim = 3;
  c.context_length = 4;
  Embedding m(c, host_stream);
  EXPECT_EQ(m.token_table().shape, (Shape{10, 3}));
  EXPECT_EQ(m.position_grad().shape, (Shape{4, 3}));
  for (float x : m.token_table_to_host()) EXPECT_EQ(x, 0.0f);

  std::vector<float> tok(30), pos(12);
  for (int i = 0; i < 30; ++i) tok[static_cast<std::size_t>(i)] = static_cast<float>(i);
  for (int i = 0; i < 12; ++i) pos[static_cast<std::size_t>(i)] = 0.5f * static_cast<float>(i);
  m.load_token_table(tok.data(), tok.size() * 4);
  m.load_position_table(pos.data(), pos.size() * 4);
  EXPECT_EQ(m.token_table_to_host(), tok);
  EXPECT_THROW(m.load_token_table(tok.data(), 4), InvalidArgument);

  std::vector<std::int64_t> ids = {9, 2, 2, 0};
  std::vector<float> out(4 * 3);
  m.forward(host_view(ids, DType::i64, {2, 2}), host_view(out, DType::f32, {2, 2, 3}), 1);
  for (std::int64_t r = 0; r < 4; ++r)
    for (std::int64_t d = 0; d < 3; ++d)
      EXPECT_EQ(out[static_cast<std::size_t>(r * 3 + d)],
                tok[static_cast<std::size_t>(ids[r] * 3 + d)] +
                    pos[static_cast<std::size_t>((1 + r % 2) * 3 + d)]);

  std::vector<float> dout(12, 1.0f);
  m.backward(host_view(ids, DType::i64, {2, 2}), host_view(dout, DType::f32, {2, 2, 3}), 1);
  m.backward(host_view(ids, DType::i64, {2, 2}), host_view(dout, DType::f32, {2, 2, 3}), 1);
  auto gt = m.token_grad_to_host();
  EXPECT_EQ(gt[2 * 3], 4.0f);  // token 2 twice per call, two calls
  EXPECT_EQ(gt[9 * 3], 2.0f);
  EXPECT_EQ(gt[1 * 3], 0.0f);
  auto gp = m.position_grad_to_host();
  EXPECT_EQ(gp[0], 0.0f);
  EXPECT_EQ(gp[1 * 3], 4.0f);  // position 1: b = 0, 1; two calls
  m.zero_grad();
  for (float x : m.token_grad_to_host()) EXPECT_EQ(x, 0.0f);

  // zero_grad_and_backward: the gradients of this call only, whatever was there before (here:
  // the gradients of other ids at other positions).
  std::vector<std::int64_t> other_ids = {1, 3, 3, 1};
  m.backward(host_view(other_ids, DType::i64, {2, 2}), host_view(dout, DType::f32, {2, 2, 3}));
  m.backward(host_view(ids, DType::i64, {2, 2}), host_view(dout, DType::f32, {2, 2, 3}), 1);
  m.zero_grad_and_backward(host_view(ids, DType::i64, {2, 2}),
                           host_view(dout, DType::f32, {2, 2, 3}), 1);
  gt = m.token_grad_to_host();
  EXPECT_EQ(gt[2 * 3], 2.0f);
  EXPECT_EQ(gt[9 * 3], 1.0f);
  EXPECT_EQ(gt[0], 1.0f);
  EXPECT_EQ(gt[1 * 3], 0.0f);  // only other_ids reached tokens 1 and 3
  EXPECT_EQ(gt[3 * 3], 0.0f);
  gp = m.position_grad_to_host();
  EXPECT_EQ(gp[0], 0.0f);  // only the first call reached position 0
  EXPECT_EQ(gp[1 * 3], 2.0f);
  EXPECT_EQ(gp[3 * 3], 0.0f);
}

TEST(CpuModule, OutOfRangeIdSurfacesAtSynchronizeAndModuleStaysUsable) {
  EmbeddingConfig c;
  c.vocab_size = 5;
  c.dim = 2;
  c.context_length = 3;
  Embedding m(c, host_stream);
  std::vector<std::int32_t> ids = {1, 5, 2};
  std::vector<float> out(6, 9.0f);
  m.forward(host_view(ids, DType::i32, {1, 3}), host_view(out, DType::f32, {1, 3, 2}));
  EXPECT_EQ(out[2], 0.0f);
  EXPECT_EQ(out[3], 0.0f);
  EXPECT_THROW(m.synchronize(), IndexOutOfRange);
  ids[1] = 4;
  m.forward(host_view(ids, DType::i32, {1, 3}), host_view(out, DType::f32, {1, 3, 2}));
  EXPECT_NO_THROW(m.synchronize());
}

// An f64 module keeps f64 gradients and sums in f64, so its backward takes an f64 dout only
// (embedding.hpp); a narrower dout is refused before anything is written, with a message that
// says so (rather than summing an f64 gradient from f32 values behind the caller's back).
TEST(CpuModule, F64ModuleTakesAnF64DoutAndRefusesANarrowerOne) {
  EmbeddingConfig c;
  c.vocab_size = 5;
  c.dim = 2;
  c.context_length = 3;
  c.dtype = DType::f64;
  Embedding m(c, host_stream);
  const std::int64_t ids[3] = {1, 4, 1};
  const float dout32[6] = {0.5f, 1.0f, 0.25f, 2.0f, 0.5f, 1.0f};
  try {
    m.backward(TensorView(ids, DType::i64, Shape{1, 3}, Device::cpu()),
               TensorView(dout32, DType::f32, Shape{1, 3, 2}, Device::cpu()));
    ADD_FAILURE() << "an f32 dout was accepted by an f64 module";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("an f64 module takes an f64 dout"), std::string::npos) << e.what();
  }
  const double dout[6] = {0.5, 1.0, 0.25, 2.0, 0.5, 1.0 + 0x1p-40};
  ASSERT_NO_THROW(m.backward(TensorView(ids, DType::i64, Shape{1, 3}, Device::cpu()),
                             TensorView(dout, DType::f64, Shape{1, 3, 2}, Device::cpu())));
  m.synchronize();
  ASSERT_EQ(m.token_grad().dtype, DType::f64);
  std::vector<double> g(10);
  copy(TensorView(g.data(), DType::f64, Shape{5, 2}, Device::cpu()), m.token_grad(), host_stream);
  for (double x : {g[0], g[1], g[4], g[5], g[6], g[7]}) EXPECT_EQ(x, 0.0);
  EXPECT_EQ(g[2], 1.0);  // row 1: 0.5 + 0.5
  EXPECT_EQ(g[3], 2.0 + 0x1p-40);  // below f32's precision: summed in f64
  EXPECT_EQ(g[8], 0.25);  // row 4
  EXPECT_EQ(g[9], 2.0);
}

TEST(CpuModule, ConfigIsValidated) {
  EmbeddingConfig c;
  c.vocab_size = 0;
  c.dim = 4;
  EXPECT_THROW(Embedding(c, host_stream), InvalidArgument);
  c.vocab_size = 3;
  c.dtype = DType::i32;
  EXPECT_THROW(Embedding(c, host_stream), InvalidArgument);
}

TEST(CpuModule, Bf16TablesRoundTripThroughHost) {
  EmbeddingConfig c;
  c.vocab_size = 4;
  c.dim = 2;
  c.dtype = DType::bf16;
  Embedding m(c, host_stream);
  EXPECT_TRUE(m.position_table().empty());
  std::vector<bf16_t> tok(8);
  for (int i = 0; i < 8; ++i)
    tok[static_cast<std::size_t>(i)] = bf16_t::from_float(0.5f * static_cast<float>(i));
  m.load_token_table(tok.data(), 16);
  auto back = m.token_table_to_host();
  for (int i = 0; i < 8; ++i)
    EXPECT_EQ(back[static_cast<std::size_t>(i)], 0.5f * static_cast<float>(i));
  EXPECT_THROW(m.load_position_table(tok.data(), 16), InvalidArgument);
}

}  // namespace
}  // namespace tokemb::test
