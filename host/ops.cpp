// forward / backward: validate, then run on the CPU reference or enqueue the CUDA kernels.
#include <tokemb/config.hpp>
#include <tokemb/ops.hpp>

#include "core/check.hpp"
#include "host/backend.hpp"
#include "host/cpu_reference.hpp"
#include "host/index_errors.hpp"
#include "host/validate.hpp"

#if TOKEMB_WITH_CUDA
#include "host/cuda_device.hpp"
#include "kernels/launch.hpp"
#endif

namespace tokemb {

namespace {

// CPU calls find out-of-range rows before writing: without a record they throw (nothing
// written), with one they record the rows and go on, as the GPU does.
void scan_cpu_rows(const detail::RowParams& p, const char* op) {
  if (p.error_record != nullptr) {
    detail::scan_rows_on_host(p, *p.error_record);
    return;
  }
  detail::ErrorRecordData rec = detail::empty_error_record();
  if (detail::scan_rows_on_host(p, rec) > 0)
    TOKEMB_THROW(detail::make_index_error(rec, op, detail::BadRows::not_written));
}

}  // namespace

void forward(const TensorView& ids, const TensorView& token_table, const TensorView& pos_table,
             const TensorView& out, const Options& options, StreamView stream) {
  const detail::ForwardParams p =
      detail::validate_forward(ids, token_table, pos_table, out, options);
  if (ids.device.is_cpu()) {
    scan_cpu_rows(p, "tokemb::forward");
    detail::with_tokemb_alloc_errors("tokemb::forward (CPU)", [&] { detail::cpu::forward(p); });
    return;
  }
#if TOKEMB_WITH_CUDA
  if (p.rows() == 0) return;  // an empty batch: nothing to write, and no 0-sized grid
  detail::DeviceGuard guard(ids.device.index);
  detail::cuda::forward(p, detail::device_info(ids.device.index), stream.value());
#else
  (void)stream;
#endif
}

std::size_t backward_workspace_size(const TensorView& ids, const TensorView& dout,
                                    const TensorView& grad_token, const TensorView& grad_pos,
                                    const Options& options) {
  const detail::BackwardParams p =
      detail::validate_backward(ids, dout, grad_token, grad_pos, options);
  if (ids.device.is_cpu() || p.rows() == 0) return 0;  // an empty batch sorts nothing
#if TOKEMB_WITH_CUDA
  detail::DeviceGuard guard(ids.device.index);  // the size depends on the device's architecture
  return detail::cuda::backward_workspace_size(p);
#else
  (void)p;
  return 0;
#endif
}

void backward(const TensorView& ids, const TensorView& dout, const TensorView& grad_token,
              const TensorView& grad_pos, const Options& options, Workspace workspace,
              StreamView stream) {
  detail::BackwardParams p = detail::validate_backward(ids, dout, grad_token, grad_pos, options);
  if (ids.device.is_cpu()) {
    scan_cpu_rows(p, "tokemb::backward");
    // The CPU reference sorts the rows and keeps scratch of B * T (and, with dropout, B * T * D).
    detail::with_tokemb_alloc_errors("tokemb::backward (CPU)", [&] { detail::cpu::backward(p); });
    return;
  }
#if TOKEMB_WITH_CUDA
  detail::DeviceGuard guard(ids.device.index);
  if (p.rows() == 0) {
    // An empty batch: accumulating adds nothing; overwriting leaves every gradient row zero
    // (the rows this call may write: a padded vocabulary's extra rows stay untouched). No kernel
    // runs, so no 0-sized grid is launched.
    if (!p.accumulate) {
      fill_zero(TensorView(p.grad_token, p.grad_type, Shape{p.V, p.D}, ids.device), stream);
      if (p.grad_pos != nullptr)
        fill_zero(TensorView(p.grad_pos, p.grad_type, Shape{p.P, p.D}, ids.device), stream);
    }
    return;
  }
  const std::size_t need = detail::cuda::backward_workspace_size(p);
  TOKEMB_EXPECTS(need == 0 || (workspace.data != nullptr && workspace.bytes >= need),
                 InvalidArgument, "tokemb::backward: workspace of ", workspace.bytes, " bytes at ",
                 workspace.data, " is too small; this call needs ", need,
                 " bytes (ask backward_workspace_size)");
  if (need > 0)
    detail::check_pointer_location("tokemb::backward", "workspace", workspace.data, ids.device);
  p.workspace = workspace.data;
  p.workspace_bytes = workspace.bytes;
  detail::cuda::backward(p, detail::device_info(ids.device.index), stream.value());
#else
  (void)workspace;
  (void)stream;
#endif
}

}  // namespace tokemb
