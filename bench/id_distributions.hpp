#pragma once
// Token-id distributions of the benchmarks, reproducible bit for bit on any platform (and in
// bench/torch_baseline.py, which reimplements this file in Python so that PyTorch is timed on
// exactly the same ids).
//
//  - uniform: every id equally likely.
//  - zipf:    Zipf–Mandelbrot, p(r) ∝ 1 / (r + 2.7) over ranks r = 1..V, ranks mapped to ids by a
//             seeded permutation. A stand-in for real text: a few tokens take several percent of
//             a batch, most of the vocabulary never appears.
//  - same:    every id equal (kSameId): the worst case for atomics (all rows hit one gradient row).
//
// The generator is SplitMix64 (not std::mt19937 + std::uniform_int_distribution, whose outputs
// differ between standard libraries), integers in [0, n) are the high 64 bits of x * n, and
// doubles in [0, 1) are the top 53 bits of x. All of that is exact in Python too.

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace bench {

enum class Dist { uniform, zipf, same };

inline const char* dist_name(Dist d) {
  switch (d) {
    case Dist::uniform:
      return "uniform";
    case Dist::zipf:
      return "zipf";
    case Dist::same:
      return "same";
  }
  return "?";
}

// Seeds (keep in sync with bench/torch_baseline.py).
inline constexpr std::uint64_t kSeedUniform = 1;
inline constexpr std::uint64_t kSeedZipfSample = 2;
inline constexpr std::uint64_t kSeedZipfPermutation = 3;
inline constexpr std::int64_t kSameId = 42;
inline constexpr double kZipfShift = 2.7;  // the Mandelbrot offset q in 1 / (r + q)

class SplitMix64 {
 public:
  explicit SplitMix64(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Integer in [0, n): high half of the 128-bit product (bias below 2^-40 for our n).
  std::uint64_t below(std::uint64_t n) {
    return static_cast<std::uint64_t>((static_cast<unsigned __int128>(next()) * n) >> 64);
  }
  // Double in [0, 1) with 53 random bits.
  double uniform01() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

 private:
  std::uint64_t state_;
};

// n ids in [0, V) drawn from distribution d, in row-major [B, T] order.
inline std::vector<std::int64_t> make_ids(Dist d, std::int64_t V, std::int64_t n) {
  if (V <= 0 || n < 0) throw std::invalid_argument("make_ids: V must be > 0 and n >= 0");
  std::vector<std::int64_t> ids(static_cast<std::size_t>(n));
  switch (d) {
    case Dist::uniform: {
      SplitMix64 rng(kSeedUniform);
      for (auto& id : ids) id = static_cast<std::int64_t>(rng.below(static_cast<std::uint64_t>(V)));
      break;
    }
    case Dist::zipf: {
      // Cumulative weights in rank order, summed left to right (Python does the same sum).
      std::vector<double> cdf(static_cast<std::size_t>(V));
      double total = 0.0;
      for (std::int64_t r = 1; r <= V; ++r) {
        total += 1.0 / (static_cast<double>(r) + kZipfShift);
        cdf[static_cast<std::size_t>(r - 1)] = total;
      }
      // Fisher–Yates: rank index i (0-based) becomes id perm[i].
      std::vector<std::int64_t> perm(static_cast<std::size_t>(V));
      for (std::int64_t i = 0; i < V; ++i) perm[static_cast<std::size_t>(i)] = i;
      SplitMix64 prng(kSeedZipfPermutation);
      for (std::int64_t i = V - 1; i > 0; --i) {
        const auto j = static_cast<std::size_t>(prng.below(static_cast<std::uint64_t>(i + 1)));
        std::swap(perm[static_cast<std::size_t>(i)], perm[j]);
      }
      SplitMix64 rng(kSeedZipfSample);
      for (auto& id : ids) {
        const double u = rng.uniform01() * total;
        // First rank whose cumulative weight exceeds u (Python: bisect.bisect_right).
        auto k =
            static_cast<std::size_t>(std::upper_bound(cdf.begin(), cdf.end(), u) - cdf.begin());
        if (k >= cdf.size()) k = cdf.size() - 1;  // u rounded up to total
        id = perm[k];
      }
      break;
    }
    case Dist::same:
      std::fill(ids.begin(), ids.end(), std::min<std::int64_t>(kSameId, V - 1));
      break;
  }
  return ids;
}

// Number of distinct values in ids (all in [0, V)): the token rows a forward must read at least
// once and the gradient rows a backward must update.
inline std::int64_t count_distinct(const std::vector<std::int64_t>& ids, std::int64_t V) {
  std::vector<unsigned char> seen(static_cast<std::size_t>(V), 0);
  std::int64_t n = 0;
  for (std::int64_t id : ids) {
    auto& s = seen[static_cast<std::size_t>(id)];
    n += s == 0;
    s = 1;
  }
  return n;
}

}  // namespace bench
