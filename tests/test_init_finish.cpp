// GPU init's own kernel (kernels/init.cu: init_finish) without cuRAND. GpuInit needs cuRAND's
// device generators, which neither the simulator (scripts/sim-check.sh: libcurand ships no PTX
// it can run) nor a CPU can execute; the part of GPU init that is tokemb's code is this
// launcher and kernel, turning the generator's f32 output into the table's dtype with the
// uniform map's single-rounding fma. Here it gets known f32 "generator output" and its result
// must equal the CPU's computation bit for bit: std::fma, then the CPU backend's rounding to
// the dtype. The generator itself is left to GpuInit on a real GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "tests/test_helpers.hpp"

#if TOKEMB_WITH_CUDA
#include <cuda_runtime.h>

#include "kernels/launch.hpp"
#endif

namespace tokemb::test {
namespace {

class GpuInitFinish : public GpuTest {};

#if TOKEMB_WITH_CUDA
template <class T>
void finish_matches_the_cpu(StreamView s, DType dt, std::mt19937_64& rng) {
  // Sizes around the launcher's grid cap (16 blocks per SM of 256 threads) and 1.
  for (const std::int64_t n : {std::int64_t{1}, std::int64_t{1000}, std::int64_t{70001}}) {
    for (const bool affine : {false, true}) {
      SCOPED_TRACE(::testing::Message() << dtype_name(dt) << " n=" << n << " affine=" << affine);
      std::vector<float> src(static_cast<std::size_t>(n));
      std::uniform_real_distribution<float> u(0.0f, 1.0f);
      for (auto& x : src) x = u(rng);
      src[0] = 1.0f;  // cuRAND's uniforms are in (0, 1]
      const float low = -0.37f, width = 0.74f;
      std::vector<T> want(src.size());
      for (std::size_t i = 0; i < src.size(); ++i)
        want[i] = from_f<T>(affine ? std::fma(src[i], width, low) : src[i]);
      Buffer src_d = to_device(src, DType::f32, Shape{n}, s);
      Buffer dst(dt, Shape{n}, Device::cuda(0));
      poison_device(dst, s);
      detail::DeviceInfo dev;
      cudaDeviceGetAttribute(&dev.multiprocessors, cudaDevAttrMultiProcessorCount, 0);
      detail::cuda::init_finish(static_cast<const float*>(src_d.data()), dst.data(), dt, n, affine,
                                width, low, dev, s.value());
      const auto got = to_host<T>(dst, s);
      ASSERT_TRUE(same_bits(got.data(), want.data(), got.size() * sizeof(T)));
    }
  }
}
#endif

TEST_F(GpuInitFinish, GeneratorOutputBecomesTheTableExactlyAsOnTheCpu) {
#if TOKEMB_WITH_CUDA
  std::mt19937_64 rng(fresh_seed());
  finish_matches_the_cpu<float>(stream(), DType::f32, rng);
  finish_matches_the_cpu<bf16_t>(stream(), DType::bf16, rng);
  finish_matches_the_cpu<f16_t>(stream(), DType::f16, rng);
#endif
}

}  // namespace
}  // namespace tokemb::test
