#pragma once
// Private: which backend runs a call, and the checks that a CUDA device can be used.

#include <tokemb/types.hpp>

namespace tokemb::detail {

/// Throws Unsupported in a CPU-only build, InvalidArgument if device.index is not a visible
/// CUDA device. \p what names the operation in the message.
void require_cuda(Device device, const char* what);

/// Multiprocessor count of a CUDA device (cached per device; used to size grids).
int multiprocessor_count(int device);

}  // namespace tokemb::detail
