#pragma once
// Private: which backend runs a call, and the checks that a CUDA device can be used.

#include <tokemb/types.hpp>

#include "core/params.hpp"

namespace tokemb::detail {

/// Throws Unsupported in a CPU-only build, InvalidArgument if device.index is not a visible
/// CUDA device. \p what names the operation in the message.
void require_cuda(Device device, const char* what);

/// For a call on a CUDA device: throws InvalidArgument unless \p p is memory that device can
/// use (its own device memory, managed memory, or mapped pinned host memory). A host pointer
/// handed to a kernel would fault and end the caller's CUDA context, so it is caught here.
/// CPU calls are not checked (asking the driver could create a CUDA context for a CPU-only
/// user). No-op in a CPU-only build.
void check_pointer_location(const char* op, const char* name, const void* p, Device device);

/// Multiprocessor count of a CUDA device (cached per device; used to size grids).
int multiprocessor_count(int device);

/// What the kernels' launchers need to know about CUDA device \p device (kernels/launch.hpp).
inline DeviceInfo device_info(int device) {
  return DeviceInfo{device, multiprocessor_count(device)};
}

}  // namespace tokemb::detail
