#pragma once
/// \file init.hpp
/// Seeded initialisation of embedding tables.
///
/// Two families:
///  - Philox (cuRAND's Philox4x32-10): the same seed gives the same table on the CPU (cuRAND's
///    host generator) and on the GPU (generated on the device, at memory speed), run after run.
///    Uniforms agree bitwise between CPU and GPU; normals agree to a few ulps (host and device
///    math libraries differ). bf16/f16 tables are generated in f32 and rounded to nearest.
///  - PyTorch-compatible: what `torch.manual_seed(s); nn.Embedding(V, D); nn.Embedding(P, D)`
///    draws on the CPU (MT19937 + PyTorch's normal_ transform), so the book's printed examples
///    can be reproduced digit for digit.

#include <cstdint>
#include <random>
#include <vector>

#include <tokemb/embedding.hpp>
#include <tokemb/stream.hpp>
#include <tokemb/tensor.hpp>

namespace tokemb {

/// The distribution of an init.
struct InitSpec {
  enum class Kind : std::uint8_t { normal, uniform };
  Kind kind = Kind::normal;
  float a = 0.0f;   ///< normal: mean;   uniform: low
  float b = 1.0f;   ///< normal: stddev; uniform: high

  static InitSpec normal(float mean, float stddev) { return {Kind::normal, mean, stddev}; }
  static InitSpec uniform(float low, float high) { return {Kind::uniform, low, high}; }
  /// GPT-2's embedding init: N(0, 0.02).
  static InitSpec gpt2() { return normal(0.0f, 0.02f); }
};

/// Fills \p table (any floating dtype, CPU or CUDA) from Philox stream \p stream_id of \p seed.
/// Different stream ids give independent streams. Throws Unsupported on the CPU when cuRAND's
/// host library is not part of this build.
void init_table(const TensorView& table, std::uint64_t seed, std::uint64_t stream_id,
                const InitSpec& spec, StreamView stream);

/// Fills the module's token table (stream 0) and position table (stream 1) from \p seed.
void init_module(Embedding& module, std::uint64_t seed, const InitSpec& spec);

/// PyTorch's CPU generator: MT19937 seeded like torch.manual_seed, with PyTorch's normal_.
class TorchGenerator {
 public:
  explicit TorchGenerator(std::uint64_t seed);
  /// Next raw 32-bit output of the Mersenne Twister.
  std::uint32_t next_u32();
  /// Fills out[0..n) like `torch.empty(n).normal_(mean, std)` on the CPU.
  void normal(float* out, std::size_t n, float mean, float stddev);

 private:
  std::mt19937 engine_;
};

/// `torch.manual_seed(seed); tok = nn.Embedding(V, D); pos = nn.Embedding(P, D)`: fills the
/// module's token table, then its position table (if any), from one generator, N(0, 1).
void init_module_pytorch(Embedding& module, std::uint64_t seed);

}  // namespace tokemb
