#pragma once
// Private: the one place where runtime dtypes become template types. A "type map" says which
// C++ type stands for each floating dtype: HostTypes for the CPU backend, DeviceTypes (in
// kernels/common.cuh) for the CUDA kernels. Index dtypes are always int32_t / int64_t.
//
//   dispatch_float<HostTypes>(dtype, [&](auto tag) { using T = typename decltype(tag)::type; ...});
//   dispatch_index(dtype, [&](auto tag) { using I = typename decltype(tag)::type; ... });

#include <cstdint>
#include <type_traits>

#include <tokemb/types.hpp>

#include "core/check.hpp"

namespace tokemb::detail {

template <class T>
struct type_tag {
  using type = T;
};

/// Host storage types of the floating dtypes.
struct HostTypes {
  using f32 = float;
  using bf16 = bf16_t;
  using f16 = f16_t;
  using f64 = double;
};

template <class Types, class F>
decltype(auto) dispatch_float(DType dtype, F&& f) {
  switch (dtype) {
    case DType::f32:
      return f(type_tag<typename Types::f32>{});
    case DType::bf16:
      return f(type_tag<typename Types::bf16>{});
    case DType::f16:
      return f(type_tag<typename Types::f16>{});
    case DType::f64:
      return f(type_tag<typename Types::f64>{});
    default:
      break;
  }
  TOKEMB_FAIL(InvalidArgument, "dtype ", dtype_name(dtype),
              " is not a floating type (f32, bf16, f16, f64)");
}

template <class F>
decltype(auto) dispatch_index(DType dtype, F&& f) {
  switch (dtype) {
    case DType::i32:
      return f(type_tag<std::int32_t>{});
    case DType::i64:
      return f(type_tag<std::int64_t>{});
    default:
      break;
  }
  TOKEMB_FAIL(InvalidArgument, "dtype ", dtype_name(dtype), " is not an index type (i32, i64)");
}

}  // namespace tokemb::detail

namespace tokemb::detail {

/// The type arithmetic on elements of T is done in: f32 for f32, bf16 and f16, f64 for f64.
template <class T>
using acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

}  // namespace tokemb::detail
