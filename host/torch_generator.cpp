// PyTorch's CPU generator: MT19937 seeded like torch.manual_seed, and both paths of
// Tensor.normal_ for float tensors: the vectorisable one (at least 16 contiguous elements), in
// float arithmetic, and the scalar one (fewer), at::normal_distribution<double> element by
// element (aten/src/ATen/core/DistributionsHelper.h, TransformationHelper.h).
#include <cmath>

#include <tokemb/init.hpp>

#include "core/check.hpp"

namespace tokemb {

namespace {

constexpr double pi = 3.14159265358979323846;

// Box-Muller on one chunk of 16 uniforms: d[j] pairs with d[j + 8].
void normal_fill_16(float* d, float mean, float stddev) {
  for (int j = 0; j < 8; ++j) {
    const float u1 = 1.0f - d[j];  // [0, 1) -> (0, 1] for the log
    const float u2 = d[j + 8];
    const float radius = std::sqrt(-2.0f * std::log(u1));
    const float theta = static_cast<float>(2.0 * pi * static_cast<double>(u2));
    d[j] = radius * std::cos(theta) * stddev + mean;
    d[j + 8] = radius * std::sin(theta) * stddev + mean;
  }
}

}  // namespace

TorchGenerator::TorchGenerator(std::uint64_t seed)
    : engine_(static_cast<std::uint32_t>(seed)) {}  // PyTorch keeps the low 32 bits too

std::uint32_t TorchGenerator::next_u32() { return static_cast<std::uint32_t>(engine_()); }

// at::uniform_real_distribution<double>(0, 1): CPUGeneratorImpl::random64() joins two outputs
// (the first is the high word); the low 53 bits times 2^-53.
double TorchGenerator::next_double_uniform() {
  const std::uint64_t hi = next_u32();
  const std::uint64_t lo = next_u32();
  const std::uint64_t v = ((hi << 32) | lo) & ((std::uint64_t{1} << 53) - 1);
  return static_cast<double>(v) * (1.0 / 9007199254740992.0);
}

void TorchGenerator::normal(float* out, std::size_t n, float mean, float stddev) {
  TOKEMB_EXPECTS(out != nullptr || n == 0, InvalidArgument,
                 "TorchGenerator::normal: out is a null pointer");
  if (n < 16) {
    // at::normal_distribution<double>(mean, std), one element at a time; the pair's second
    // value is kept for the next element (and the next call), as the generator keeps it.
    for (std::size_t i = 0; i < n; ++i) {
      double x;
      if (has_cached_normal_) {
        x = cached_normal_;
        has_cached_normal_ = false;
      } else {
        const double u1 = next_double_uniform();
        const double u2 = next_double_uniform();
        const double r = std::sqrt(-2.0 * std::log(1.0 - u2));
        const double theta = 2.0 * pi * u1;
        cached_normal_ = r * std::sin(theta);
        has_cached_normal_ = true;
        x = r * std::cos(theta);
      }
      out[i] = static_cast<float>(x * static_cast<double>(stddev) + static_cast<double>(mean));
    }
    return;
  }
  auto uniform = [this]() {
    return static_cast<float>(next_u32() & ((1u << 24) - 1)) * (1.0f / 16777216.0f);
  };
  for (std::size_t i = 0; i < n; ++i) out[i] = uniform();
  for (std::size_t i = 0; i + 16 <= n; i += 16) normal_fill_16(out + i, mean, stddev);
  if (n % 16 != 0) {
    // PyTorch redraws the last 16 elements (overwriting part of the last full chunk).
    float* tail = out + n - 16;
    for (int i = 0; i < 16; ++i) tail[i] = uniform();
    normal_fill_16(tail, mean, stddev);
  }
}

}  // namespace tokemb
