// PyTorch's CPU generator: MT19937 seeded like torch.manual_seed, and the vectorisable path of
// Tensor.normal_ (tensors of at least 16 elements), in float arithmetic as PyTorch does it.
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

void TorchGenerator::normal(float* out, std::size_t n, float mean, float stddev) {
  TOKEMB_EXPECTS(n >= 16, InvalidArgument, "TorchGenerator::normal: n is ", n,
                 "; PyTorch draws fewer than 16 elements through a different (scalar) path, "
                 "which is not reproduced: need n >= 16");
  TOKEMB_EXPECTS(out != nullptr, InvalidArgument, "TorchGenerator::normal: out is a null pointer");
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
