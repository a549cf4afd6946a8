// Out-of-range rows on the host, error records, and check_error_record / ErrorMonitor.
#include "host/index_errors.hpp"

#include <cstring>
#include <sstream>

#include <tokemb/config.hpp>

#include "core/check.hpp"
#include "core/dispatch.hpp"
#include "core/rows.hpp"
#include "host/backend.hpp"

#if TOKEMB_WITH_CUDA
#include <cuda_runtime_api.h>

#include "core/cuda_check.hpp"
#endif

namespace tokemb {
namespace detail {

ErrorRecordData empty_error_record() noexcept {
  ErrorRecordData r;
  std::memset(&r, 0, sizeof r);
  r.first_key = ~0ull;
  return r;
}

std::uint64_t scan_rows_on_host(const RowParams& p, ErrorRecordData& rec) {
  std::uint64_t bad = 0;
  const std::int64_t n = p.rows();
  for (std::int64_t r = 0; r < n; ++r) {
    const Row row = resolve_row_any(p, r);
    if (row.ok()) continue;
    ++bad;
    if (static_cast<unsigned long long>(r) < rec.first_key) {
      rec.first_key = static_cast<unsigned long long>(r);
      rec.value = row.bad_value();
      rec.batch = r / p.T;
      rec.time = r % p.T;
      rec.limit = row.limit(p);
      rec.kind = static_cast<std::int32_t>(row.status);
    }
  }
  rec.count += bad;
  return bad;
}

IndexOutOfRange make_index_error(const ErrorRecordData& rec, const std::string& where,
                                 BadRows what) {
  const auto kind = static_cast<IndexOutOfRange::Kind>(rec.kind);
  const bool token = kind == IndexOutOfRange::Kind::token;
  std::ostringstream os;
  if (kind == IndexOutOfRange::Kind::sequence) {
    os << where << ": cu_seqlens[" << rec.value << "] (of " << rec.limit
       << " entries) breaks its rule, found at (b=" << rec.batch << ", t=" << rec.time
       << "): cu_seqlens must be non-decreasing from 0 to B * T";
  } else {
    os << where << ": " << (token ? "token id " : "position ") << rec.value
       << " at (b=" << rec.batch << ", t=" << rec.time << ") is outside the "
       << (token ? "token" : "position") << " table; valid " << (token ? "ids" : "positions")
       << " are [0, " << rec.limit << ")";
  }
  os << " (" << rec.count << (rec.count == 1 ? " row" : " rows") << " out of range; "
     << (what == BadRows::recorded
             ? "their output rows were zeroed and their gradients skipped)"
             : "nothing was written: the outputs and gradients are as they were)");
  return IndexOutOfRange(os.str(), kind, rec.value, rec.batch, rec.time, rec.limit, rec.count);
}

}  // namespace detail

void clear_error_record(ErrorRecord* record, Device device, StreamView stream) {
  TOKEMB_EXPECTS(record != nullptr, InvalidArgument,
                 "clear_error_record: record is a null pointer");
  const detail::ErrorRecordData empty = detail::empty_error_record();
  if (device.is_cpu()) {
    std::memcpy(record, &empty, sizeof empty);
    return;
  }
  detail::require_cuda(device, "clear_error_record");
#if TOKEMB_WITH_CUDA
  // Memset, not a copy from this stack frame: the call stays asynchronous. 0xff bytes make
  // first_key ~0; the other fields are only meaningful once count > 0.
  TOKEMB_CUDA_TRY(cudaMemsetAsync(record, 0, sizeof(ErrorRecord), stream.value()));
  detail::ErrorRecordData* data = detail::record_data(record);
  TOKEMB_CUDA_TRY(cudaMemsetAsync(&data->first_key, 0xff, sizeof(data->first_key), stream.value()));
#else
  (void)stream;
#endif
}

void check_error_record(ErrorRecord* record, Device device, StreamView stream, bool clear) {
  TOKEMB_EXPECTS(record != nullptr, InvalidArgument,
                 "check_error_record: record is a null pointer");
  detail::ErrorRecordData host = detail::empty_error_record();
  if (device.is_cpu()) {
    std::memcpy(&host, record, sizeof host);
  } else {
    detail::require_cuda(device, "check_error_record");
#if TOKEMB_WITH_CUDA
    TOKEMB_CUDA_TRY(
        cudaMemcpyAsync(&host, record, sizeof host, cudaMemcpyDeviceToHost, stream.value()));
    TOKEMB_CUDA_TRY(cudaStreamSynchronize(stream.value()));
#endif
  }
  if (host.count == 0) return;
  if (clear) clear_error_record(record, device, stream);
  TOKEMB_THROW(detail::make_index_error(host, "tokemb"));
}

ErrorMonitor::ErrorMonitor(Device device, StreamView stream)
    : device_(device),
      buffer_(DType::i64, Shape{static_cast<std::int64_t>(sizeof(ErrorRecord) / 8)}, device) {
  clear_error_record(get(), device_, stream);
}

}  // namespace tokemb
