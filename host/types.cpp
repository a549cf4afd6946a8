// Names and parsing of dtypes and devices; host float16 conversion.
#include <cmath>
#include <cstring>

#include <tokemb/error.hpp>
#include <tokemb/types.hpp>

#include "host/check.hpp"

namespace tokemb {

const char* dtype_name(DType t) noexcept {
  switch (t) {
    case DType::f32: return "f32";
    case DType::bf16: return "bf16";
    case DType::f16: return "f16";
    case DType::i32: return "i32";
    case DType::i64: return "i64";
  }
  return "unknown";
}

DType parse_dtype(const std::string& name) {
  if (name == "f32" || name == "float32") return DType::f32;
  if (name == "bf16" || name == "bfloat16") return DType::bf16;
  if (name == "f16" || name == "float16") return DType::f16;
  if (name == "i32" || name == "int32") return DType::i32;
  if (name == "i64" || name == "int64") return DType::i64;
  TOKEMB_FAIL(InvalidArgument, "dtype name '", name, "' is not one of f32, bf16, f16, i32, i64");
}

std::string Device::str() const {
  return is_cpu() ? std::string("cpu") : "cuda:" + std::to_string(index);
}

f16_t f16_t::from_float(float f) noexcept {
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
    float fa;
    std::memcpy(&fa, &a, 4);
    // fa * 2^24 is exact; nearbyint rounds half to even in the default rounding mode. A result
    // of 1024 is the smallest normal half, whose encoding is exactly 0x400.
    r.bits = static_cast<std::uint16_t>(sign | static_cast<std::uint32_t>(std::nearbyint(fa * 16777216.0f)));
  } else {
    std::uint32_t h = (a - 0x38000000u) >> 13;  // rebias the exponent, keep 10 mantissa bits
    const std::uint32_t rem = a & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // a carry may reach infinity
    r.bits = static_cast<std::uint16_t>(sign | h);
  }
  return r;
}

float f16_t::to_float() const noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(bits & 0x8000u) << 16;
  const std::uint32_t e = (bits >> 10) & 0x1fu;
  const std::uint32_t m = bits & 0x3ffu;
  std::uint32_t u;
  if (e == 0) {
    float v = static_cast<float>(m) * (1.0f / 16777216.0f);
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

}  // namespace tokemb
