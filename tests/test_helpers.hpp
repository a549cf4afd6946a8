#pragma once
// Shared test helpers: host/device tensors from vectors, fresh random inputs (uniform, Zipf,
// all-identical ids), dtype tolerances, and the fixture that skips GPU tests without a device.

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <tokemb/tokemb.hpp>

namespace tokemb::test {

// ---- type lists for typed suites -------------------------------------------------------------

template <class T>
struct FloatTraits;
template <>
struct FloatTraits<float> {
  static constexpr DType dtype = DType::f32;
  // Forward: one f32 add rounded once; the CPU reference does the same arithmetic, so GPU and
  // CPU agree exactly. Backward sums in f32 (GPU) vs double (CPU): allow a relative error of a
  // few ulps per summand.
  static constexpr float forward_tol = 0.0f;
};
template <>
struct FloatTraits<bf16_t> {
  static constexpr DType dtype = DType::bf16;
  static constexpr float forward_tol = 0.0f;  // same f32 add, same round-to-nearest-even
};
template <>
struct FloatTraits<f16_t> {
  static constexpr DType dtype = DType::f16;
  static constexpr float forward_tol = 0.0f;
};

template <class I>
constexpr DType index_dtype() {
  return sizeof(I) == 4 ? DType::i32 : DType::i64;
}

/// A (table dtype, index type) pair for typed suites.
template <class T, class I>
struct Combo {
  using Float = T;
  using Index = I;
  static constexpr DType dtype = FloatTraits<T>::dtype;
  static constexpr DType index = index_dtype<I>();
};

using AllCombos = ::testing::Types<Combo<float, std::int32_t>, Combo<float, std::int64_t>,
                                   Combo<bf16_t, std::int32_t>, Combo<bf16_t, std::int64_t>,
                                   Combo<f16_t, std::int32_t>, Combo<f16_t, std::int64_t>>;

struct ComboNames {
  template <class C>
  static std::string GetName(int) {
    return std::string(dtype_name(C::dtype)) + "_" + dtype_name(C::index);
  }
};

// Short names for the library's host conversions (tokemb/types.hpp).
template <class T>
float to_f(T x) {
  return tokemb::to_float(x);
}
template <class T>
T from_f(float x) {
  return tokemb::from_float<T>(x);
}

// ---- random inputs ---------------------------------------------------------------------------

/// A fresh seed per call (printed by the tests that use it, so a failure can be replayed).
/// A new random seed per call, or TOKEMB_TEST_SEED when it is set (to replay the seed that a
/// failure's trace printed).
inline std::uint64_t fresh_seed() {
  if (const char* fixed = std::getenv("TOKEMB_TEST_SEED")) return std::strtoull(fixed, nullptr, 0);
  static std::random_device rd;
  return (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
}

template <class T>
std::vector<T> random_values(std::size_t n, std::mt19937_64& rng, float scale = 1.0f) {
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<T> v(n);
  for (auto& x : v) x = from_f<T>(dist(rng));
  return v;
}

enum class IdDistribution { uniform, zipf, identical };

inline const char* distribution_name(IdDistribution d) {
  switch (d) {
    case IdDistribution::uniform:
      return "uniform";
    case IdDistribution::zipf:
      return "zipf";
    case IdDistribution::identical:
      return "identical";
  }
  return "?";
}

/// n ids in [0, V): uniform; Zipf–Mandelbrot p(r) ∝ 1/(r + 2.7) over ranks mapped to ids by a
/// seeded permutation; or all equal to one random id.
template <class I>
std::vector<I> random_ids(std::size_t n, std::int64_t V, IdDistribution dist,
                          std::mt19937_64& rng) {
  std::vector<I> ids(n);
  if (dist == IdDistribution::uniform) {
    std::uniform_int_distribution<std::int64_t> u(0, V - 1);
    for (auto& x : ids) x = static_cast<I>(u(rng));
  } else if (dist == IdDistribution::identical) {
    const I id = static_cast<I>(std::uniform_int_distribution<std::int64_t>(0, V - 1)(rng));
    for (auto& x : ids) x = id;
  } else {
    std::vector<double> cdf(static_cast<std::size_t>(V));
    double s = 0;
    for (std::int64_t r = 0; r < V; ++r)
      cdf[static_cast<std::size_t>(r)] = (s += 1.0 / (r + 1 + 2.7));
    std::vector<std::int64_t> perm(static_cast<std::size_t>(V));
    for (std::int64_t i = 0; i < V; ++i) perm[static_cast<std::size_t>(i)] = i;
    std::shuffle(perm.begin(), perm.end(), rng);
    std::uniform_real_distribution<double> u(0.0, s);
    for (auto& x : ids) {
      const auto it = std::lower_bound(cdf.begin(), cdf.end(), u(rng));
      const auto rank =
          std::min<std::size_t>(static_cast<std::size_t>(it - cdf.begin()), cdf.size() - 1);
      x = static_cast<I>(perm[rank]);
    }
  }
  return ids;
}

// ---- tensors ---------------------------------------------------------------------------------

/// A host vector viewed as a tensor.
template <class T>
TensorView host_view(std::vector<T>& v, DType dtype, Shape shape) {
  return TensorView(v.data(), dtype, shape, Device::cpu());
}

/// A device buffer holding a copy of a host vector (synchronous).
template <class T>
Buffer to_device(const std::vector<T>& v, DType dtype, Shape shape, StreamView stream,
                 int device = 0) {
  Buffer b(dtype, shape, Device::cuda(device));
  copy(b, TensorView(v.data(), dtype, shape, Device::cpu()), stream);
  synchronize(stream);
  return b;
}

/// Copies a tensor (any device) to a host vector of T (synchronous).
template <class T>
std::vector<T> to_host(const TensorView& v, StreamView stream) {
  std::vector<T> h(static_cast<std::size_t>(v.numel()));
  copy(TensorView(h.data(), v.dtype, v.shape, Device::cpu()), v, stream);
  synchronize(stream);
  return h;
}

/// Fills a device buffer with NaN bit patterns (0xFF bytes: NaN in f32, bf16 and f16), so an
/// element the kernel forgets to write shows up.
void poison_device(const TensorView& v, StreamView stream);

inline bool same_bits(const void* a, const void* b, std::size_t bytes) {
  return std::memcmp(a, b, bytes) == 0;
}

// ---- backward tolerance ----------------------------------------------------------------------

/// Relative bound of the backward comparison, in f32 epsilons of each element's own
/// contributions. A GPU sums in f32 in an order of its own (atomics: any order); the CPU
/// reference sums in double in row order and rounds once. For random-sign dout the f32 error of
/// any order stays below ~1 eps x S (S = sum of |dout| over the rows reaching the element: 65536
/// rows summed in random orders on the host give at most 0.7 eps x S), so 8 eps x S leaves a wide
/// margin while one dropped row (|dout| ~ 100 eps x S at 65536 rows) is far outside it.
inline constexpr float kBackwardEps = 8.0f * std::numeric_limits<float>::epsilon();

/// |got - want| <= kBackwardEps * (S + |want|) + 1e-6 for every element, where abs_sum holds S per
/// element (the CPU reference run on |dout|, from zero). The |want| term covers the rounding of
/// the gradient's own starting value; 1e-6 covers elements nothing (or only tiny values) reach.
inline ::testing::AssertionResult grad_matches(const std::vector<float>& got,
                                               const std::vector<float>& want,
                                               const std::vector<float>& abs_sum,
                                               const char* what) {
  if (got.size() != want.size() || abs_sum.size() != want.size())
    return ::testing::AssertionFailure() << what << ": sizes differ";
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double tol = static_cast<double>(kBackwardEps) *
                           (static_cast<double>(abs_sum[i]) + std::fabs(double{want[i]})) +
                       1e-6;
    const double err = std::fabs(static_cast<double>(got[i]) - static_cast<double>(want[i]));
    if (!(err <= tol))  // NaN fails too
      return ::testing::AssertionFailure()
             << what << " element " << i << ": got " << got[i] << ", want " << want[i] << " (error "
             << err << ", bound " << tol << ", sum of |dout| " << abs_sum[i] << ")";
  }
  return ::testing::AssertionSuccess();
}

// ---- workspace with canaries -----------------------------------------------------------------

/// A device workspace of exactly \p bytes (what backward_workspace_size asked for), \p shift
/// bytes into an allocation with random canary bytes before and after it: a kernel that writes
/// outside its workspace changes a canary.
class GuardedWorkspace {
 public:
  static constexpr std::size_t kCanary = 4096;
  GuardedWorkspace(std::size_t bytes, std::size_t shift, StreamView stream, std::uint64_t seed)
      : bytes_(bytes), shift_(shift), stream_(stream) {
    const std::size_t total = (kCanary + shift + bytes + kCanary + 7) / 8 * 8;
    storage_ = Buffer(DType::i64, Shape{static_cast<std::int64_t>(total / 8)}, Device::cuda(0));
    canary_.resize(total);
    std::mt19937_64 rng(seed);
    for (auto& b : canary_) b = static_cast<unsigned char>(rng());
    copy(storage_, TensorView(canary_.data(), DType::i64, storage_.shape(), Device::cpu()),
         stream_);
    synchronize(stream_);
  }
  Workspace get() const {
    return Workspace{static_cast<unsigned char*>(storage_.data()) + kCanary + shift_, bytes_};
  }
  /// The bytes outside the workspace are as written at construction.
  ::testing::AssertionResult canaries_intact() const {
    std::vector<unsigned char> now(canary_.size());
    copy(TensorView(now.data(), DType::i64, storage_.shape(), Device::cpu()), storage_, stream_);
    synchronize(stream_);
    const std::size_t begin = kCanary + shift_, end = begin + bytes_;
    for (std::size_t i = 0; i < now.size(); ++i) {
      if (i >= begin && i < end) continue;
      if (now[i] != canary_[i])
        return ::testing::AssertionFailure()
               << "workspace canary byte " << (i < begin ? "before" : "after") << " the " << bytes_
               << "-byte workspace, at offset "
               << (i < begin ? static_cast<long long>(i) - static_cast<long long>(begin)
                             : static_cast<long long>(i - end))
               << ", was overwritten";
    }
    return ::testing::AssertionSuccess();
  }

 private:
  std::size_t bytes_, shift_;
  StreamView stream_;
  Buffer storage_;
  std::vector<unsigned char> canary_;
};

// ---- fixtures --------------------------------------------------------------------------------

/// Base fixture of GPU tests: skips with the reason when there is no usable CUDA device, and
/// owns a stream on device 0.
class GpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!TOKEMB_WITH_CUDA) GTEST_SKIP() << "this build has no CUDA backend (TOKEMB_WITH_CUDA=OFF)";
    if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device is present on this machine";
    stream_ = std::make_unique<Stream>(0);
  }
  StreamView stream() const { return stream_->view(); }
  std::unique_ptr<Stream> stream_;
};

}  // namespace tokemb::test
