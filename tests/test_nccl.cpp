// The tensor-parallel component (tokemb::tokemb_nccl): shard arithmetic on the CPU, and the
// module on one GPU with a one-rank communicator (ncclCommInitAll over device 0), compared with
// an unsharded run: tensor parallel, sequence parallel in both layouts, with dropout. Several
// GPUs: tests/nccl_multi_rank.cpp (see README "Multi-GPU").
#include <gtest/gtest.h>

#include "tests/nccl_check.hpp"
#include "tests/test_helpers.hpp"

namespace tokemb::test {
namespace {

TEST(NcclShard, EvenSplitCoversEveryRowOnce) {
  for (int world = 1; world <= 5; ++world)
    for (std::int64_t rows : {std::int64_t{5}, std::int64_t{50257}, std::int64_t{50304}}) {
      std::int64_t next = 0;
      for (int r = 0; r < world; ++r) {
        const nccl::Shard s = nccl::vocab_shard(rows, r, world);
        EXPECT_EQ(s.start, next);
        EXPECT_GE(s.rows, rows / world);
        EXPECT_LE(s.rows, rows / world + 1);
        next = s.start + s.rows;
      }
      EXPECT_EQ(next, rows);
    }
  EXPECT_THROW(nccl::vocab_shard(10, 3, 3), InvalidArgument);
  EXPECT_THROW(nccl::vocab_shard(2, 0, 3), InvalidArgument);
}

class GpuNccl : public GpuTest {};

TEST_F(GpuNccl, OneRankEqualsTheUnshardedModule) {
  const auto seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  for (bool sp : {false, true})
    for (auto layout : {nccl::SequenceLayout::batch_first, nccl::SequenceLayout::sequence_first})
      for (float p : {0.0f, 0.2f}) {
        NcclCase c;
        c.sequence_parallel = sp;
        c.layout = layout;
        c.dropout = p;
        EXPECT_EQ(run_nccl_check(c, 1, seed), "") << "sp=" << sp << " p=" << p;
      }
}

// Issue 20 item 15: reserve() grows the workspace backward uses, so a captured forward +
// zero_grad_and_backward (deterministic, both parallel layouts) does not allocate (an allocation
// would invalidate the capture), and the replay gives the direct calls' bits.
TEST_F(GpuNccl, ReservedModuleStepCapturesInACudaGraph) {
  constexpr std::int64_t V = 1000, D = 64, P = 64, B = 3, T = 8;
  const auto seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const auto ids_h = random_ids<std::int64_t>(B * T, V, IdDistribution::zipf, rng);
  const auto dout_h = random_values<float>(B * T * D, rng);
  for (bool sp : {false, true}) {
    SCOPED_TRACE(sp ? "sequence parallel" : "tensor parallel");
    ncclComm_t comm = nullptr;
    int dev0 = 0;
    ASSERT_EQ(ncclCommInitAll(&comm, 1, &dev0), ncclSuccess);
    {
      const StreamView s = stream();
      nccl::ParallelConfig pc;
      pc.embedding.vocab_size = V;
      pc.embedding.dim = D;
      pc.embedding.context_length = P;
      pc.embedding.device = Device::cuda(0);
      pc.embedding.backward_mode = BackwardMode::deterministic;
      pc.sequence_parallel = sp;
      nccl::TensorParallelEmbedding direct(pc, comm, s), graphed(pc, comm, s);
      init_module(direct.local(), seed, InitSpec::gpt2());
      init_module(graphed.local(), seed, InitSpec::gpt2());
      graphed.reserve(B * T);
      Buffer ids = to_device(ids_h, DType::i64, Shape{B, T}, s);
      Buffer dout = to_device(dout_h, DType::f32, Shape{B, T, D}, s);
      Buffer out_d(DType::f32, Shape{B, T, D}, Device::cuda(0)),
          out_g(DType::f32, Shape{B, T, D}, Device::cuda(0));
      cudaGraph_t graph = nullptr;
      cudaGraphExec_t exec = nullptr;
      ASSERT_EQ(cudaStreamBeginCapture(s.value(), cudaStreamCaptureModeThreadLocal), cudaSuccess);
      graphed.forward(ids, out_g);
      graphed.zero_grad_and_backward(ids, dout);
      ASSERT_EQ(cudaStreamEndCapture(s.value(), &graph), cudaSuccess);
      ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
      ASSERT_EQ(cudaGraphLaunch(exec, s.value()), cudaSuccess);
      ASSERT_EQ(cudaStreamSynchronize(s.value()), cudaSuccess);
      cudaGraphExecDestroy(exec);
      cudaGraphDestroy(graph);
      direct.forward(ids, out_d);
      direct.zero_grad_and_backward(ids, dout);
      direct.synchronize();
      graphed.synchronize();
      const std::int64_t n = B * T * D;  // one rank: its slice is the whole output
      EXPECT_TRUE(same_bits(to_host<float>(out_g, s).data(), to_host<float>(out_d, s).data(),
                            static_cast<std::size_t>(n) * 4));
      const auto g1 = direct.local().token_grad_to_host(),
                 g2 = graphed.local().token_grad_to_host();
      const auto p1 = direct.local().position_grad_to_host(),
                 p2 = graphed.local().position_grad_to_host();
      EXPECT_TRUE(same_bits(g1.data(), g2.data(), g1.size() * 4));
      EXPECT_TRUE(same_bits(p1.data(), p2.data(), p1.size() * 4));
    }
    ncclCommDestroy(comm);
  }
}

}  // namespace
}  // namespace tokemb::test
