#pragma once
// Private: what one (b, t) row of a call reads, for the CPU backend. The CUDA kernels have the
// same logic in kernels/common.cuh (resolve_row); tests compare the two.

#include <cstdint>

#include "kernels/params.hpp"

namespace tokemb::detail {

struct RowInfo {
  std::int64_t token = 0;      // valid when kind == 0
  std::int64_t position = -1;  // -1 when positions are off
  int kind = 0;                // 0 ok, 1 bad token id, 2 bad position
  std::int64_t bad_value = 0;
};

inline std::int64_t load_index(const void* base, DType type, std::int64_t i) {
  return type == DType::i32 ? static_cast<const std::int32_t*>(base)[i]
                            : static_cast<const std::int64_t*>(base)[i];
}

inline RowInfo row_info(const RowParams& p, std::int64_t r) {
  RowInfo info;
  info.token = load_index(p.ids, p.id_type, r);
  if (info.token < 0 || info.token >= p.V) {
    info.kind = 1;
    info.bad_value = info.token;
    return info;
  }
  if (p.positions()) {
    info.position = p.pos_ids ? load_index(p.pos_ids, p.pos_id_type, r) : p.offset + r % p.T;
    if (info.position < 0 || info.position >= p.P) {
      info.kind = 2;
      info.bad_value = info.position;
    }
  }
  return info;
}

}  // namespace tokemb::detail
