// Names and parsing of dtypes and devices; host float16 conversion.

#include <tokemb/error.hpp>
#include <tokemb/types.hpp>

#include "core/check.hpp"

namespace tokemb {

const char* dtype_name(DType t) noexcept {
  switch (t) {
    case DType::f32:
      return "f32";
    case DType::bf16:
      return "bf16";
    case DType::f16:
      return "f16";
    case DType::i32:
      return "i32";
    case DType::i64:
      return "i64";
    case DType::f64:
      return "f64";
  }
  return "unknown";
}

DType parse_dtype(const std::string& name) {
  if (name == "f32" || name == "float32") return DType::f32;
  if (name == "bf16" || name == "bfloat16") return DType::bf16;
  if (name == "f16" || name == "float16") return DType::f16;
  if (name == "i32" || name == "int32") return DType::i32;
  if (name == "i64" || name == "int64") return DType::i64;
  if (name == "f64" || name == "float64") return DType::f64;
  TOKEMB_FAIL(InvalidArgument, "dtype name '", name,
              "' is not one of f32, bf16, f16, f64, i32, i64");
}

std::string Device::str() const {
  return is_cpu() ? std::string("cpu") : "cuda:" + std::to_string(index);
}

}  // namespace tokemb
