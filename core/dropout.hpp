#pragma once
// Private, shared by host/ and kernels/: the dropout mask, written once. The CPU reference and
// the kernels call the same functions, so their masks are the same bits.
//
// The mask is never stored. Element e (flat index b*T*D + t*D + d; in token mode the row
// b*T + t) draws the 32-bit word e % 4 of Philox4x32-10 (Salmon et al., SC'11; the generator of
// cuRAND and PyTorch) at counter (e / 4, offset) and key seed:
//   counter = {lo(e / 4), hi(e / 4), lo(offset), hi(offset)},  key = {lo(seed), hi(seed)}.
// So the mask depends only on (seed, offset, e): not on the launch geometry, the GPU, the batch
// split or the dtype. Successive calls use successive offsets (disjoint counter ranges).
// An element is kept when (word >> 8) >= threshold, threshold = round(p * 2^24): kept with
// probability 1 - threshold / 2^24 (within 2^-25 of 1 - p), and scaled by 1 / (1 - p).

#include <algorithm>
#include <cmath>
#include <cstdint>

#include <tokemb/ops.hpp>

#include "core/params.hpp"

namespace tokemb::detail {

struct Philox4 {
  std::uint32_t v[4];
};

TOKEMB_HOST_DEVICE inline std::uint32_t mulhilo32(std::uint32_t a, std::uint32_t b,
                                                  std::uint32_t* hi) {
#if defined(__CUDA_ARCH__)
  *hi = __umulhi(a, b);
  return a * b;
#else
  const std::uint64_t prod = static_cast<std::uint64_t>(a) * b;
  *hi = static_cast<std::uint32_t>(prod >> 32);
  return static_cast<std::uint32_t>(prod);
#endif
}

/// Philox4x32 with 10 rounds (Random123's philox4x32_R(10, ctr, key)).
TOKEMB_HOST_DEVICE inline Philox4 philox4x32_10(Philox4 ctr, std::uint32_t k0, std::uint32_t k1) {
  constexpr std::uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  constexpr std::uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int round = 0; round < 10; ++round) {
    std::uint32_t hi0, hi1;
    const std::uint32_t lo0 = mulhilo32(kM0, ctr.v[0], &hi0);
    const std::uint32_t lo1 = mulhilo32(kM1, ctr.v[2], &hi1);
    ctr = Philox4{{hi1 ^ ctr.v[1] ^ k0, lo1, hi0 ^ ctr.v[3] ^ k1, lo0}};
    k0 += kW0;
    k1 += kW1;
  }
  return ctr;
}

/// The four words of group g (elements 4g .. 4g + 3) for (seed, offset).
TOKEMB_HOST_DEVICE inline Philox4 dropout_words(std::uint64_t seed, std::uint64_t offset,
                                                std::uint64_t group) {
  const Philox4 ctr{{static_cast<std::uint32_t>(group), static_cast<std::uint32_t>(group >> 32),
                     static_cast<std::uint32_t>(offset), static_cast<std::uint32_t>(offset >> 32)}};
  return philox4x32_10(ctr, static_cast<std::uint32_t>(seed),
                       static_cast<std::uint32_t>(seed >> 32));
}

/// The factor for a word: scale when kept, 0 when dropped.
TOKEMB_HOST_DEVICE inline float dropout_factor(const DropoutParams& d, std::uint32_t word) {
  return (word >> 8) >= d.threshold ? d.scale : 0.0f;
}

/// x with its factor applied: x * scale when kept, +0 when dropped (not x * 0, which would keep
/// the sign of x and turn an infinity into NaN).
TOKEMB_HOST_DEVICE inline float dropout_apply(float x, float factor) {
  return factor == 0.0f ? 0.0f : x * factor;
}
/// The same for f64 tables: the f32 scale widened exactly, the product rounded once to f64.
TOKEMB_HOST_DEVICE inline double dropout_apply(double x, float factor) {
  return factor == 0.0f ? 0.0 : x * static_cast<double>(factor);
}

/// The factor of element (or, in token mode, row) \p index.
TOKEMB_HOST_DEVICE inline float dropout_factor_at(const DropoutParams& d, std::uint64_t seed,
                                                  std::uint64_t offset, std::uint64_t index) {
  const Philox4 w = dropout_words(seed, offset, index / 4);
  return dropout_factor(d, w.v[index % 4]);
}

/// Factors of N consecutive elements starting at flat index e0 of row \p row. N % 4 == 0 needs
/// e0 % 4 == 0 (the kernels' vector path: D % N == 0), and then costs one Philox call per 4.
template <int N>
TOKEMB_HOST_DEVICE inline void dropout_factors(const DropoutParams& d, std::uint64_t seed,
                                               std::uint64_t offset, std::int64_t row,
                                               std::int64_t e0, float (&f)[N]) {
  if (d.per_token) {
    const float x = dropout_factor_at(d, seed, offset, static_cast<std::uint64_t>(row));
    for (int j = 0; j < N; ++j) f[j] = x;
  } else if constexpr (N % 4 == 0) {
    for (int q = 0; q < N / 4; ++q) {
      const Philox4 w = dropout_words(seed, offset, static_cast<std::uint64_t>(e0) / 4 + q);
      for (int i = 0; i < 4; ++i) f[4 * q + i] = dropout_factor(d, w.v[i]);
    }
  } else {
    for (int j = 0; j < N; ++j)
      f[j] = dropout_factor_at(d, seed, offset, static_cast<std::uint64_t>(e0 + j));
  }
}

/// The kernels' form of a (validated: p in [0, 1]) Dropout: threshold round(p * 2^24), at least
/// 1 so that any p > 0 drops something, at most 2^24 (p = 1 drops everything); the scale
/// 1 / (1 - p) rounded to f32 once. p = 0 gives the disabled params.
inline DropoutParams dropout_params(const Dropout& d) {
  DropoutParams r;
  if (!(d.p > 0.0)) return r;
  constexpr double two24 = 16777216.0;
  // p is a double from the caller to here: no float rounding before the threshold and scale.
  r.threshold =
      static_cast<std::uint32_t>(std::min(two24, std::max(1.0, std::floor(d.p * two24 + 0.5))));
  r.scale = d.p < 1.0 ? static_cast<float>(1.0 / (1.0 - d.p)) : 0.0f;
  r.per_token = d.mode == DropoutMode::token;
  r.seed = d.seed;
  r.offset = d.offset;
  r.seed_offset = d.seed_offset;
  return r;
}

/// The (seed, offset) a call draws with: from memory when the caller passed a pointer (read
/// when the call runs: CUDA graphs replay with new values), else the call's own.
TOKEMB_HOST_DEVICE inline void dropout_seed_offset(const DropoutParams& d, std::uint64_t* seed,
                                                   std::uint64_t* offset) {
  if (d.seed_offset != nullptr) {
    *seed = d.seed_offset[0];
    *offset = d.seed_offset[1];
  } else {
    *seed = d.seed;
    *offset = d.offset;
  }
}

}  // namespace tokemb::detail
