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

}  // namespace
}  // namespace tokemb::test
