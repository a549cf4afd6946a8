#pragma once
// Private: out-of-range rows found on the host, and the IndexOutOfRange exception built from an
// error record (shared by the CPU backend and check_error_record).

#include <cstdint>
#include <string>

#include <tokemb/error.hpp>
#include <tokemb/ops.hpp>

#include "core/error_record.hpp"
#include "core/params.hpp"

namespace tokemb::detail {

/// The empty record: no error.
ErrorRecordData empty_error_record() noexcept;

/// Merges the out-of-range rows of a call into \p rec on the host (CPU backend).
/// Returns the number of bad rows found.
std::uint64_t scan_rows_on_host(const RowParams& p, ErrorRecordData& rec);

/// What happened to the out-of-range rows, for the message.
enum class BadRows : std::uint8_t {
  recorded,     ///< the call went on: output rows zeroed, gradients skipped (GPU, or a record)
  not_written,  ///< the call raised before writing anything (CPU without a record)
};

/// The exception describing \p rec (which must hold at least one error); \p where names the
/// operation or check that raised it.
IndexOutOfRange make_index_error(const ErrorRecordData& rec, const std::string& where,
                                 BadRows what = BadRows::recorded);

}  // namespace tokemb::detail
