// Uses the installed tokemb: the book's token + position example on the CPU backend (and on the
// GPU too when one is present). Exits non-zero if the result is wrong.
#include <cmath>
#include <cstdio>
#include <vector>

#include <tokemb/tokemb.hpp>

int main() {
  using namespace tokemb;
  const StreamView stream = StreamView::legacy_default();
  std::vector<float> tok = {0.5f, -0.2f, 0.1f}, pos = {0.1f, 0.3f, -0.1f}, out(3);
  std::vector<std::int64_t> ids = {0};
  forward(TensorView(ids.data(), DType::i64, {1, 1}, Device::cpu()),
          TensorView(tok.data(), DType::f32, {1, 3}, Device::cpu()),
          TensorView(pos.data(), DType::f32, {1, 3}, Device::cpu()),
          TensorView(out.data(), DType::f32, {1, 1, 3}, Device::cpu()), Options{}, stream);
  std::printf("tokemb %d.%d.%d (CUDA backend: %s, CUDA devices: %d): [%.1f, %.1f, %.1f]\n",
              TOKEMB_VERSION_MAJOR, TOKEMB_VERSION_MINOR, TOKEMB_VERSION_PATCH,
              TOKEMB_WITH_CUDA ? "yes" : "no", cuda_device_count(), out[0], out[1], out[2]);
  const float expect[3] = {0.6f, 0.1f, 0.0f};
  for (int i = 0; i < 3; ++i)
    if (std::fabs(out[i] - expect[i]) > 1e-6f) return 1;
  return 0;
}
