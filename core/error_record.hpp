#pragma once
// Private, shared by host/ and kernels/: the layout behind the opaque public tokemb::ErrorRecord.
// The kernels write it (kernels/common.cuh: record_bad_row), the CPU backend writes it
// (host/index_errors.cpp: scan_rows_on_host) and check_error_record reads it.

#include <cstdint>

#include <tokemb/error.hpp>
#include <tokemb/ops.hpp>

#include "core/rows.hpp"

namespace tokemb::detail {

struct ErrorRecordData {
  unsigned long long count;      // rows out of range since the last clear
  unsigned long long first_key;  // flat index b * T + t of the kept row; ~0 when none
  std::int64_t value;            // its offending id or position
  std::int64_t batch, time;      // its (b, t)
  std::int64_t limit;            // valid range [0, limit)
  std::int32_t kind;             // IndexOutOfRange::Kind (RowStatus of the kept row)
  std::int32_t lock;             // spin lock of the device-side writers
};
static_assert(sizeof(ErrorRecordData) == sizeof(ErrorRecord),
              "ErrorRecord's opaque storage must match its layout");
static_assert(alignof(ErrorRecordData) <= alignof(ErrorRecord),
              "ErrorRecord's opaque storage must be aligned for its layout");

TOKEMB_HOST_DEVICE inline ErrorRecordData* record_data(ErrorRecord* r) {
  return reinterpret_cast<ErrorRecordData*>(r);
}

}  // namespace tokemb::detail
