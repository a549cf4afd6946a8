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
  float a = 0.0f;  ///< normal: mean;   uniform: low
  float b = 1.0f;  ///< normal: stddev; uniform: high

  static InitSpec normal(float mean, float stddev) { return {Kind::normal, mean, stddev}; }
  static InitSpec uniform(float low, float high) { return {Kind::uniform, low, high}; }
  /// GPT-2's embedding init: N(0, 0.02).
  static InitSpec gpt2() { return normal(0.0f, 0.02f); }
};

/// The 64-bit Philox key (cuRAND's generator seed) that stream \p stream_id of \p seed uses:
/// `splitmix64(seed ^ splitmix64(stream_id))`, where splitmix64(x) is Vigna's SplitMix64 output
/// function applied to x + 0x9E3779B97F4A7C15. Distinct keys give independent Philox streams;
/// for a fixed stream id, distinct seeds always give distinct keys. Part of the reproducibility
/// contract: a table from init_table(t, seed, id, ...) is what cuRAND's Philox4x32-10 generator
/// (CURAND_ORDERING_PSEUDO_DEFAULT, offset 0) seeded with philox_key(seed, id) produces.
std::uint64_t philox_key(std::uint64_t seed, std::uint64_t stream_id) noexcept;

/// Fills \p table (f32, bf16 or f16; CPU or CUDA) from Philox stream \p stream_id of \p seed.
///
/// cuRAND draws an even count m = numel rounded up to even (its normals come in pairs), as f32,
/// in row-major order: curandGenerateNormal(mean, stddev) for a normal spec, and for a uniform
/// spec curandGenerateUniform's u in (0, 1] mapped to fmaf(u, high - low, low) (one rounding, so
/// results lie in [low, high]). The first numel values are kept; bf16/f16 tables get them rounded
/// to nearest even. The same (seed, stream_id, spec, shape) gives the same table in every run
/// and on every device; CPU and GPU tables agree bitwise for uniform specs and to a few ulps for
/// normal specs (cuRAND's host and device math libraries differ).
///
/// A CUDA table is filled on the device (cuRAND's host API on device memory, plus one conversion
/// kernel: no host round trip), ordered on \p stream; the call then synchronises \p stream.
/// A CPU table ignores \p stream.
///
/// \throws InvalidArgument null data, a non-floating dtype, a non-finite mean or a negative or
///         non-finite stddev, a uniform range with low > high or non-finite bounds or width.
/// \throws Unsupported a CPU table in a build without cuRAND's host library
///         (TOKEMB_WITH_CURAND_HOST == 0), or a CUDA table in a build without the CUDA backend.
/// \throws CudaError / OutOfMemory when cuRAND or CUDA fails.
void init_table(const TensorView& table, std::uint64_t seed, std::uint64_t stream_id,
                const InitSpec& spec, StreamView stream);

/// Fills the module's token table (stream 0) and position table (stream 1, if the module has
/// one) from \p seed, on the module's stream. The two tables are independent. The padding row
/// (if any) is drawn like every other row. Example (GPT-2's init):
/// \code
///   tokemb::init_module(module, /*seed=*/42, tokemb::InitSpec::gpt2());
/// \endcode
void init_module(Embedding& module, std::uint64_t seed, const InitSpec& spec);

/// PyTorch's CPU generator: MT19937 seeded like torch.manual_seed, with PyTorch's normal_ for
/// float tensors of every size. Results agree with PyTorch to about 1e-6 relative, not always
/// bitwise (PyTorch may use vectorised log/sin/cos); the scalar path (n < 16) was checked
/// bitwise against PyTorch 1.13.
class TorchGenerator {
 public:
  /// Standard MT19937 initialisation from the low 32 bits of \p seed (as torch.manual_seed
  /// and std::mt19937 do).
  explicit TorchGenerator(std::uint64_t seed);
  /// Next raw 32-bit output of the Mersenne Twister.
  std::uint32_t next_u32();
  /// Fills out[0..n) like `torch.empty(n).normal_(mean, std)` on the CPU. For n >= 16 (the
  /// vectorised path): n uniforms (x & 0xFFFFFF) * 2^-24, Box-Muller in float over each chunk
  /// of 16 (element j pairs with j + 8), and for n % 16 != 0 the last 16 elements redrawn and
  /// transformed again. For n < 16 (the scalar path), element by element in double: the cached
  /// second value of the previous Box-Muller pair if there is one, else u1, u2 from two 53-bit
  /// uniforms (each from two 32-bit outputs), r = sqrt(-2 log(1 - u2)), theta = 2 pi u1, the
  /// value r cos(theta) and r sin(theta) cached for the next element, even across calls, as
  /// PyTorch's generator does.
  /// \throws InvalidArgument for a null \p out with n > 0.
  void normal(float* out, std::size_t n, float mean, float stddev);

 private:
  double next_double_uniform();
  std::mt19937 engine_;
  bool has_cached_normal_ = false;  // PyTorch's next_double_normal_sample
  double cached_normal_ = 0.0;
};

/// `torch.manual_seed(seed); tok = nn.Embedding(V, D); pos = nn.Embedding(P, D)`: fills the
/// module's token table, then its position table (if any), from one generator, N(0, 1).
/// With a padding_idx the token table's padding row is zeroed afterwards, as
/// `nn.Embedding(V, D, padding_idx=p)` does. Values are drawn in f32; bf16/f16 tables get them
/// rounded to nearest even (what `.to(torch.bfloat16)` gives). Both tables are computed on the
/// host before either is written. For example `init_module_pytorch(m, 123)` on a 6 x 3 token
/// table gives the book's `torch.manual_seed(123); torch.nn.Embedding(6, 3).weight`.
/// Tables of every size are drawn as PyTorch draws them (fewer than 16 elements take PyTorch's
/// scalar path; see TorchGenerator::normal).
void init_module_pytorch(Embedding& module, std::uint64_t seed);

}  // namespace tokemb
