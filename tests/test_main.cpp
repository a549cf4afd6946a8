// Test entry point; also implements the few helpers that need the CUDA runtime.
#include <gtest/gtest.h>

#include "tests/test_helpers.hpp"

#if TOKEMB_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace tokemb::test {

void poison_device(const TensorView& v, StreamView stream) {
#if TOKEMB_WITH_CUDA
  ASSERT_EQ(cudaMemsetAsync(v.data, 0xff, v.bytes(), stream.value()), cudaSuccess);
#else
  (void)v;
  (void)stream;
#endif
}

}  // namespace tokemb::test

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
