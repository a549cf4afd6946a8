#pragma once
/// \file types.hpp
/// Element types, devices and the 16-bit float storage types used on the host.

#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>

namespace tokemb {

/// Scalar type of a tensor. Tables and activations are f32, bf16, f16 or f64 (arithmetic is done
/// in f32 for the first three and in f64 for f64); token ids and position ids are i32 or i64.
/// New values are appended, so a dtype's number never changes.
enum class DType : std::uint8_t { f32, bf16, f16, i32, i64, f64 };

/// Size of one element of \p t in bytes.
constexpr std::size_t dtype_size(DType t) noexcept {
  switch (t) {
    case DType::f32:
      return 4;
    case DType::bf16:
      return 2;
    case DType::f16:
      return 2;
    case DType::i32:
      return 4;
    case DType::i64:
      return 8;
    case DType::f64:
      return 8;
  }
  return 0;
}

/// True for the floating types a table or activation may have (f32, bf16, f16, f64).
constexpr bool is_floating(DType t) noexcept {
  return t == DType::f32 || t == DType::bf16 || t == DType::f16 || t == DType::f64;
}
/// True for the index types ids and position ids may have (i32, i64).
constexpr bool is_index(DType t) noexcept { return t == DType::i32 || t == DType::i64; }

/// Lower-case name: "f32", "bf16", "f16", "i32", "i64", "f64".
const char* dtype_name(DType t) noexcept;
/// Parses a name produced by dtype_name (also accepts "float32", "bfloat16", "float16",
/// "int32", "int64", "float64"); throws tokemb::InvalidArgument for anything else.
DType parse_dtype(const std::string& name);

/// Where a tensor lives.
enum class DeviceKind : std::uint8_t { cpu, cuda };

/// A device: the host CPU, or CUDA device number \c index.
struct Device {
  DeviceKind kind = DeviceKind::cpu;
  int index = 0;

  static constexpr Device cpu() noexcept { return Device{DeviceKind::cpu, 0}; }
  static constexpr Device cuda(int index = 0) noexcept { return Device{DeviceKind::cuda, index}; }
  constexpr bool is_cpu() const noexcept { return kind == DeviceKind::cpu; }
  constexpr bool is_cuda() const noexcept { return kind == DeviceKind::cuda; }
  friend constexpr bool operator==(Device a, Device b) noexcept {
    return a.kind == b.kind && (a.kind == DeviceKind::cpu || a.index == b.index);
  }
  friend constexpr bool operator!=(Device a, Device b) noexcept { return !(a == b); }
  /// "cpu" or "cuda:N".
  std::string str() const;
};

/// bfloat16 storage on the host (same bits as CUDA's __nv_bfloat16). Conversion from float
/// rounds to nearest even; NaN stays NaN.
struct bf16_t {
  std::uint16_t bits = 0;

  static bf16_t from_float(float f) noexcept {
    std::uint32_t u;
    std::memcpy(&u, &f, 4);
    bf16_t r;
    if ((u & 0x7fffffffu) > 0x7f800000u) {  // NaN: keep it quiet and non-zero
      r.bits = static_cast<std::uint16_t>((u >> 16) | 0x40u);
      return r;
    }
    u += 0x7fffu + ((u >> 16) & 1u);
    r.bits = static_cast<std::uint16_t>(u >> 16);
    return r;
  }
  float to_float() const noexcept {
    std::uint32_t u = static_cast<std::uint32_t>(bits) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
};

/// IEEE binary16 storage on the host (same bits as CUDA's __half). Conversion from float
/// rounds to nearest even, overflows to infinity and keeps subnormals.
struct f16_t {
  std::uint16_t bits = 0;

  static f16_t from_float(float f) noexcept {
    std::uint32_t x;
    std::memcpy(&x, &f, 4);
    const std::uint32_t sign = (x >> 16) & 0x8000u;
    const std::uint32_t a = x & 0x7fffffffu;
    f16_t r;
    if (a >= 0x7f800000u) {  // inf stays inf, NaN stays a quiet NaN
      r.bits = static_cast<std::uint16_t>(sign | 0x7c00u | (a > 0x7f800000u ? 0x200u : 0u));
    } else if (a >= 0x47800000u) {  // >= 65536: beyond the largest finite half after rounding
      r.bits = static_cast<std::uint16_t>(sign | 0x7c00u);
    } else if (a < 0x38800000u) {  // below 2^-14: subnormal (or zero) in half
      // Units of 2^-24: shift the 24-bit significand right, rounding to nearest even. A result
      // of 1024 is the smallest normal half, whose encoding is exactly 0x400.
      const std::uint32_t shift = 126u - (a >> 23);  // >= 14 for these exponents
      const std::uint32_t mant = (a & 0x7fffffu) | (a >= 0x00800000u ? 0x800000u : 0u);
      std::uint32_t m = 0;
      if (shift < 32u) {
        m = mant >> shift;
        const std::uint32_t rem = mant & ((1u << shift) - 1u), half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (m & 1u))) ++m;
      }
      r.bits = static_cast<std::uint16_t>(sign | m);
    } else {
      std::uint32_t h = (a - 0x38000000u) >> 13;  // rebias the exponent, keep 10 mantissa bits
      const std::uint32_t rem = a & 0x1fffu;
      if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // a carry may reach infinity
      r.bits = static_cast<std::uint16_t>(sign | h);
    }
    return r;
  }
  float to_float() const noexcept {
    const std::uint32_t sign = static_cast<std::uint32_t>(bits & 0x8000u) << 16;
    const std::uint32_t e = (bits >> 10) & 0x1fu;
    const std::uint32_t m = bits & 0x3ffu;
    std::uint32_t u;
    if (e == 0) {
      float v = static_cast<float>(m) * (1.0f / 16777216.0f);  // exact: m < 2^10
      std::memcpy(&u, &v, 4);
      u |= sign;
    } else if (e == 31) {
      u = sign | 0x7f800000u | (m << 13);
    } else {
      u = sign | ((e + 112u) << 23) | (m << 13);
    }
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
};

/// The f32 value of a host element of f32, bf16 or f16.
inline float to_float(float x) noexcept { return x; }
inline float to_float(bf16_t x) noexcept { return x.to_float(); }
inline float to_float(f16_t x) noexcept { return x.to_float(); }

/// \p x rounded to nearest even into T (float, bf16_t or f16_t; into double exactly).
template <class T>
T from_float(float x) noexcept {
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
    return x;
  } else {
    return T::from_float(x);
  }
}

}  // namespace tokemb
