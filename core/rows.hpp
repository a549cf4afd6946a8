#pragma once
// Private, shared by host/ and kernels/: the row rule, written once. Row r = b * T + t of a call
// (the ids' elements in row-major order; strided ids are read at ids_layout.offset(r)) reads
// token ids[r] and position pos(r): position_ids[r], or offset + r - cu_seqlens[s] for the
// packed sequence s that holds r, or offset + t. It is valid when the token is in [0, V) and,
// with a position table, the position is in [0, P) (and cu_seqlens is well formed). The CPU
// reference, the host-side error scan and every kernel call resolve_row; only the loads differ (the
// device reads ids through the read-only cache).

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
  bad_sequence = static_cast<std::int32_t>(IndexOutOfRange::Kind::sequence),
};
static_assert(static_cast<std::int32_t>(RowStatus::bad_token) != 0 &&
                  static_cast<std::int32_t>(RowStatus::bad_position) != 0,
              "RowStatus::ok must differ from every IndexOutOfRange::Kind");

/// What row r reads.
struct Row {
  std::int64_t token = 0;  // local row of ids[r] in this shard's table; kOtherShard when another
                           // shard holds it; the bad id itself when status == bad_token
  std::int64_t position = -1;  // -1 when positions are off; bad_sequence: the entry's index
  RowStatus status = RowStatus::ok;

  static constexpr std::int64_t kOtherShard = -1;

  TOKEMB_HOST_DEVICE bool ok() const { return status == RowStatus::ok; }
  /// A valid row whose token row is in this shard (always, unsharded).
  TOKEMB_HOST_DEVICE bool has_token() const { return token >= 0; }
  /// The offending value and the bound of its valid range [0, limit), for an invalid row.
  TOKEMB_HOST_DEVICE std::int64_t bad_value() const {
    return status == RowStatus::bad_token ? token : position;
  }
  TOKEMB_HOST_DEVICE std::int64_t limit(const RowParams& p) const {
    return status == RowStatus::bad_token      ? p.valid_ids()
           : status == RowStatus::bad_sequence ? p.num_seqs + 1
                                               : p.P;
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

/// Position of row r from cu_seqlens (c, S + 1 entries), or the index of a malformed entry
/// (returned as -1 - index). Every entry pair is checked by some row, so a malformed cu_seqlens
/// is always reported: row r checks the pair (r, r + 1), the last row also the pairs past it;
/// each row checks the ends (0 and B * T).
TOKEMB_HOST_DEVICE inline std::int64_t sequence_position(const RowParams& p, std::int64_t r) {
  const std::int32_t* c = p.cu_seqlens;
  const std::int64_t S = p.num_seqs, n = p.rows();
  auto at = [&](std::int64_t i) { return load_index<std::int32_t>(c, i); };
  if (at(0) != 0) return -1;
  if (at(S) != n) return -1 - S;
  if (r < S && at(r) > at(r + 1)) return -1 - (r + 1);
  if (r == n - 1)
    for (std::int64_t i = n; i < S; ++i)
      if (at(i) > at(i + 1)) return -1 - (i + 1);
  // Binary search for s with c[s] <= r < c[s + 1]. Invariant: c[lo] <= r < c[hi] (true at the
  // start: c[0] = 0 <= r < B * T = c[S]), so it holds for the s = lo it ends with even when
  // cu_seqlens is malformed (that is reported by the pair checks). Monotone: s is r's sequence,
  // the non-empty one among equal entries.
  std::int64_t lo = 0, hi = S;
  while (hi - lo > 1) {
    const std::int64_t mid = lo + (hi - lo) / 2;
    if (at(mid) <= r) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return p.offset + (r - at(lo));
}

/// The row rule. I is the type of p.ids (a template argument so that kernels specialise the
/// load; host code passes p.id_type through resolve_row_any).
template <class I>
TOKEMB_HOST_DEVICE inline Row resolve_row(const RowParams& p, std::int64_t r) {
  Row row;
  row.token = load_index<I>(p.ids, p.ids_layout.offset(r));
  if (row.token < 0 || row.token >= p.valid_ids()) {
    row.status = RowStatus::bad_token;
  } else {
    row.token -= p.vocab_start;
    if (row.token < 0 || row.token >= p.V) row.token = Row::kOtherShard;
  }
  if (p.positions()) {
    if (p.cu_seqlens != nullptr) {
      row.position = sequence_position(p, r);
      if (row.position < 0) {
        if (row.ok()) row.status = RowStatus::bad_sequence;
        row.position = -1 - row.position;  // the malformed entry's index
        return row;
      }
    } else {
      row.position = p.pos_ids ? load_index(p.pos_ids, p.pos_id_type, p.pos_layout.offset(r))
                               : p.offset + r % p.T;
    }
    if (row.ok() && (row.position < 0 || row.position >= p.P)) row.status = RowStatus::bad_position;
  }
  return row;
}

TOKEMB_HOST_DEVICE inline Row resolve_row_any(const RowParams& p, std::int64_t r) {
  return p.id_type == DType::i32 ? resolve_row<std::int32_t>(p, r)
                                 : resolve_row<std::int64_t>(p, r);
}

}  // namespace tokemb::detail
