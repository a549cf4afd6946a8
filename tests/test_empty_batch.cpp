// Issue 20 item 11: empty batches (B = 0 or T = 0) are valid, as in nn.Embedding: forward writes
// nothing, backward accumulating leaves the gradients, backward overwriting zeroes them (the
// rows the call may write), in both backward modes, with every kind of positions; the module
// too. On the CPU and, in the Gpu twin, through the CUDA path (which launches no kernel for
// them: no 0-sized grid).
#include <gtest/gtest.h>

#include <cmath>

#include "tests/test_helpers.hpp"

namespace tokemb::test {
namespace {

const StreamView host_stream = StreamView::legacy_default();

constexpr std::int64_t V = 9, D = 8, P = 6;

// A tensor on `device` filled with `value` (f32) or `ids` (i64), of `n` elements.
Buffer filled(Device device, StreamView stream, std::int64_t n, float value) {
  std::vector<float> h(static_cast<std::size_t>(n), value);
  Buffer b(DType::f32, Shape{n}, device);
  copy(b, TensorView(h.data(), DType::f32, Shape{n}, Device::cpu()), stream);
  return b;
}

std::vector<float> host_copy(const Buffer& b, StreamView stream) {
  return to_host<float>(b.view(), stream);
}

bool all_equal(const std::vector<float>& v, float x) {
  for (float y : v)
    if (!(y == x)) return false;
  return true;
}

void empty_batches(Device device, StreamView stream) {
  // Backing memory for the batch-shaped tensors: real, non-null pointers, never written.
  Buffer ids_mem(DType::i64, Shape{16}, device), pid_mem(DType::i64, Shape{16}, device);
  fill_zero(ids_mem, stream);
  fill_zero(pid_mem, stream);
  Buffer out_mem = filled(device, stream, 64, 5.0f), dout_mem = filled(device, stream, 64, 1.0f);
  Buffer tok = filled(device, stream, V * D, 0.25f), pos = filled(device, stream, P * D, 0.5f);
  const TensorView tok_v(tok.data(), DType::f32, Shape{V, D}, device);
  const TensorView pos_v(pos.data(), DType::f32, Shape{P, D}, device);
  std::vector<std::int32_t> cu_h = {0, 0};
  Buffer cu(DType::i32, Shape{2}, device);
  copy(cu, TensorView(cu_h.data(), DType::i32, Shape{2}, Device::cpu()), stream);

  for (const auto& bt : {std::pair<std::int64_t, std::int64_t>{0, 4}, {3, 0}, {0, 0}}) {
    const std::int64_t B = bt.first, T = bt.second;
    SCOPED_TRACE("B = " + std::to_string(B) + ", T = " + std::to_string(T));
    const TensorView ids(ids_mem.data(), DType::i64, Shape{B, T}, device);
    const TensorView out(out_mem.data(), DType::f32, Shape{B, T, D}, device);
    const TensorView dout(dout_mem.data(), DType::f32, Shape{B, T, D}, device);
    for (int positions = 0; positions < 4; ++positions) {
      SCOPED_TRACE("positions " + std::to_string(positions));
      Options o;
      if (positions == 1) o.position_offset = P + 3;  // no row reads a position: accepted
      if (positions == 2)
        o.position_ids = TensorView(pid_mem.data(), DType::i64, Shape{B, T}, device);
      if (positions == 3) o.cu_seqlens = cu.view();
      o.dropout.p = 0.5;
      o.dropout.seed = 3;
      tokemb::forward(ids, tok_v, pos_v, out, o, stream);
      EXPECT_TRUE(all_equal(host_copy(out_mem, stream), 5.0f));
      for (BackwardMode mode : {BackwardMode::atomic, BackwardMode::deterministic}) {
        o.backward_mode = mode;
        Buffer gt = filled(device, stream, V * D, 7.0f), gp = filled(device, stream, P * D, 7.0f);
        const TensorView gt_v(gt.data(), DType::f32, Shape{V, D}, device);
        const TensorView gp_v(gp.data(), DType::f32, Shape{P, D}, device);
        o.accumulate = true;
        EXPECT_EQ(backward_workspace_size(ids, dout, gt_v, gp_v, o), 0u);
        tokemb::backward(ids, dout, gt_v, gp_v, o, Workspace{}, stream);
        EXPECT_TRUE(all_equal(host_copy(gt, stream), 7.0f));
        EXPECT_TRUE(all_equal(host_copy(gp, stream), 7.0f));
        o.accumulate = false;
        EXPECT_EQ(backward_workspace_size(ids, dout, gt_v, gp_v, o), 0u);
        tokemb::backward(ids, dout, gt_v, gp_v, o, Workspace{}, stream);
        EXPECT_TRUE(all_equal(host_copy(gt, stream), 0.0f));
        EXPECT_TRUE(all_equal(host_copy(gp, stream), 0.0f));
        // A padded vocabulary: the rows past vocab_size are never written, not even now.
        Buffer gt2 = filled(device, stream, V * D, 7.0f);
        Options padded;
        padded.accumulate = false;
        padded.backward_mode = mode;
        padded.vocab_size = V - 2;
        tokemb::backward(ids, dout, TensorView(gt2.data(), DType::f32, Shape{V, D}, device),
                         TensorView{}, padded, Workspace{}, stream);
        const std::vector<float> g2 = host_copy(gt2, stream);
        for (std::int64_t i = 0; i < V * D; ++i)
          ASSERT_EQ(g2[static_cast<std::size_t>(i)], i < (V - 2) * D ? 0.0f : 7.0f) << i;
      }
      EXPECT_TRUE(all_equal(host_copy(dout_mem, stream), 1.0f));
    }
  }
  // Other dimensions stay >= 1: D = 0 and an empty table are still errors.
  const TensorView ids(ids_mem.data(), DType::i64, Shape{0, 4}, device);
  EXPECT_THROW(
      tokemb::forward(ids, TensorView(tok.data(), DType::f32, Shape{V, 0}, device), TensorView{},
                      TensorView(out_mem.data(), DType::f32, Shape{0, 4, 0}, device), Options{},
                      stream),
      InvalidArgument);
  EXPECT_THROW(tokemb::forward(ids, tok_v, pos_v,
                               TensorView(out_mem.data(), DType::f32, Shape{0, 4, 0}, device),
                               Options{}, stream),
               InvalidArgument);

  // The module.
  EmbeddingConfig c;
  c.vocab_size = V;
  c.dim = D;
  c.context_length = P;
  c.device = device;
  c.dropout = 0.25;
  for (BackwardMode mode : {BackwardMode::atomic, BackwardMode::deterministic}) {
    c.backward_mode = mode;
    Embedding m(c, stream);
    const TensorView ids0(ids_mem.data(), DType::i64, Shape{2, 0}, device);
    m.forward(ids0, TensorView(out_mem.data(), DType::f32, Shape{2, 0, D}, device));
    EXPECT_TRUE(all_equal(host_copy(out_mem, stream), 5.0f));
    Buffer g = filled(device, stream, V * D, 1.0f);
    copy(m.token_grad(), TensorView(g.data(), DType::f32, Shape{V, D}, device), stream);
    m.backward(ids0, TensorView(dout_mem.data(), DType::f32, Shape{2, 0, D}, device));
    EXPECT_TRUE(all_equal(m.token_grad_to_host(), 1.0f));
    m.zero_grad_and_backward(ids0, TensorView(dout_mem.data(), DType::f32, Shape{2, 0, D}, device));
    EXPECT_TRUE(all_equal(m.token_grad_to_host(), 0.0f));
    EXPECT_TRUE(all_equal(m.position_grad_to_host(), 0.0f));
    m.synchronize();  // nothing recorded
  }
}

TEST(EmptyBatch, ForwardWritesNothingAndBackwardZeroesOrLeavesTheGradients) {
  empty_batches(Device::cpu(), host_stream);
}

// tensor.hpp: "an empty tensor is contiguous" (as PyTorch's is_contiguous()), whatever its
// strides and wherever its zero dimension is. is_contiguous() only noticed a zero dimension once
// its scan (innermost first) reached it, so [0, 3] with strides [1, 5] was "not contiguous", and
// forward() refused an empty out of that layout although it writes nothing to it.
TEST(EmptyBatch, AnEmptyTensorIsContiguousWhateverItsStrides) {
  float mem[8] = {};
  const Device cpu = Device::cpu();
  const std::int64_t s2[2] = {1, 5}, s3[3] = {9, 9, 9}, big[3] = {std::int64_t{1} << 62,
                                                                   std::int64_t{1} << 40, 1};
  EXPECT_TRUE(TensorView(mem, DType::f32, Shape{0, 3}, s2, cpu).is_contiguous());
  EXPECT_TRUE(TensorView(mem, DType::f32, Shape{3, 0}, s2, cpu).is_contiguous());
  EXPECT_TRUE(TensorView(mem, DType::f32, Shape{2, 0, 3}, s3, cpu).is_contiguous());
  EXPECT_TRUE(TensorView(mem, DType::f32, Shape{0, std::int64_t{1} << 40, std::int64_t{1} << 40},
                         big, cpu)
                  .is_contiguous());

  // An empty batch's out with strides of its own (a slice of a larger buffer, say).
  std::int64_t ids_mem[4] = {};
  float tok[V * D] = {}, pos[P * D] = {};
  const std::int64_t ids_strides[2] = {1, 1}, out_strides[3] = {1, 5, 7};
  const TensorView ids(ids_mem, DType::i64, Shape{0, 3}, ids_strides, cpu);
  const TensorView out(mem, DType::f32, Shape{0, 3, D}, out_strides, cpu);
  EXPECT_NO_THROW(forward(ids, TensorView(tok, DType::f32, Shape{V, D}, cpu),
                          TensorView(pos, DType::f32, Shape{P, D}, cpu), out, Options{},
                          host_stream));
}

class GpuEmptyBatch : public GpuTest {};

TEST_F(GpuEmptyBatch, ForwardWritesNothingAndBackwardZeroesOrLeavesTheGradients) {
  empty_batches(Device::cuda(0), stream());
}

}  // namespace
}  // namespace tokemb::test
