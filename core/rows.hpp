#pragma once
// Private, shared by host/ and kernels/: the row rule, written once. Row r = b * T + t of a call
// reads token ids[r] and position pos(r) = position_ids[r] (packed sequences) or offset + t;
// it is valid when the token is in [0, V) and, with a position table, the position is in
// [0, P). The CPU reference, the host-side error scan and every kernel call resolve_row; only
// the loads differ (the device reads ids through the read-only cache).

#include <cstdint>

#include <tokemb/error.hpp>

#include "core/params.hpp"

namespace tokemb::detail {

/// What is wrong with a row, if anything. The error values are IndexOutOfRange::Kind's, so a
/// recorded status is the exception's kind.
enum class RowStatus : std::int32_t {
  ok = 0,
  bad_token = static_cast<std::int32_t>(IndexOutOfRange::Kind::token),
  bad_position = static_cast<std::int32_t>(IndexOutOfRange::Kind::position),
};
static_assert(static_cast<std::int32_t>(RowStatus::bad_token) != 0 &&
                  static_cast<std::int32_t>(RowStatus::bad_position) != 0,
              "RowStatus::ok must differ from every IndexOutOfRange::Kind");

/// What row r reads.
struct Row {
  std::int64_t token = 0;      // ids[r] (out of range when status == bad_token)
  std::int64_t position = -1;  // -1 when positions are off
  RowStatus status = RowStatus::ok;

  TOKEMB_HOST_DEVICE bool ok() const { return status == RowStatus::ok; }
  /// The offending value and the bound of its valid range [0, limit), for an invalid row.
  TOKEMB_HOST_DEVICE std::int64_t bad_value() const {
    return status == RowStatus::bad_token ? token : position;
  }
  TOKEMB_HOST_DEVICE std::int64_t limit(const RowParams& p) const {
    return status == RowStatus::bad_token ? p.V : p.P;
  }
};

/// Element i of an index array of type I (int32_t or int64_t). On the device through the
/// read-only data cache: ids are read once per row and never written by the kernels.
template <class I>
TOKEMB_HOST_DEVICE inline std::int64_t load_index(const void* base, std::int64_t i) {
  const I* p = static_cast<const I*>(base) + i;
#if defined(__CUDA_ARCH__)
  if constexpr (sizeof(I) == 8) {
    return static_cast<std::int64_t>(__ldg(reinterpret_cast<const long long*>(p)));
  } else {
    return static_cast<std::int64_t>(__ldg(p));
  }
#else
  return static_cast<std::int64_t>(*p);
#endif
}

/// The same, for an index array whose type is known only at run time (i32 or i64).
TOKEMB_HOST_DEVICE inline std::int64_t load_index(const void* base, DType type, std::int64_t i) {
  return type == DType::i32 ? load_index<std::int32_t>(base, i) : load_index<std::int64_t>(base, i);
}

/// The row rule. I is the type of p.ids (a template argument so that kernels specialise the
/// load; host code passes p.id_type through resolve_row_any).
template <class I>
TOKEMB_HOST_DEVICE inline Row resolve_row(const RowParams& p, std::int64_t r) {
  Row row;
  row.token = load_index<I>(p.ids, r);
  if (row.token < 0 || row.token >= p.V) row.status = RowStatus::bad_token;
  if (p.positions()) {
    row.position = p.pos_ids ? load_index(p.pos_ids, p.pos_id_type, r) : p.offset + r % p.T;
    if (row.ok() && (row.position < 0 || row.position >= p.P)) row.status = RowStatus::bad_position;
  }
  return row;
}

TOKEMB_HOST_DEVICE inline Row resolve_row_any(const RowParams& p, std::int64_t r) {
  return p.id_type == DType::i32 ? resolve_row<std::int32_t>(p, r)
                                 : resolve_row<std::int64_t>(p, r);
}

}  // namespace tokemb::detail
