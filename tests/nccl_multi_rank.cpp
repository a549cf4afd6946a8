// Multi-GPU check of tokemb::tokemb_nccl, for a machine with several GPUs (not run by CI, which
// has none): `tokemb_nccl_multi_rank --ranks N` runs the tensor-parallel and sequence-parallel
// module on N GPUs of this process and compares every rank with an unsharded run on GPU 0.
// Exit status: 0 pass, 1 fail, 77 skipped (fewer than N GPUs), 2 usage error.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "tests/nccl_check.hpp"

int main(int argc, char** argv) {
  int ranks = 2;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--ranks") == 0 && i + 1 < argc) {
      ranks = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: %s [--ranks N]\n", argv[0]);
      return 2;
    }
  }
  if (ranks < 1) {
    std::fprintf(stderr, "--ranks must be >= 1\n");
    return 2;
  }
  if (tokemb::cuda_device_count() < ranks) {
    std::printf("SKIP: %d GPUs needed, %d visible\n", ranks, tokemb::cuda_device_count());
    return 77;
  }
  int failures = 0;
  for (bool sp : {false, true})
    for (auto layout : {tokemb::nccl::SequenceLayout::batch_first,
                        tokemb::nccl::SequenceLayout::sequence_first})
      for (float p : {0.0f, 0.2f}) {
        tokemb::test::NcclCase c;
        c.T = 8 * ranks;  // a multiple of the ranks for sequence parallelism
        c.sequence_parallel = sp;
        c.layout = layout;
        c.dropout = p;
        const std::string err = tokemb::test::run_nccl_check(c, ranks, 1234);
        std::printf("%s ranks=%d sequence_parallel=%d layout=%s dropout=%.1f %s\n",
                    err.empty() ? "PASS" : "FAIL", ranks, sp ? 1 : 0,
                    layout == tokemb::nccl::SequenceLayout::batch_first ? "batch_first"
                                                                        : "sequence_first",
                    p, err.c_str());
        failures += !err.empty();
      }
  return failures == 0 ? 0 : 1;
}
