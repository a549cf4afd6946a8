#pragma once
// Private, CUDA builds only: make a device current for a scope and restore the previous one.

#include <cuda_runtime_api.h>

#include "core/cuda_check.hpp"

namespace tokemb::detail {

class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    TOKEMB_CUDA_TRY(cudaGetDevice(&previous_));
    if (device != previous_) TOKEMB_CUDA_TRY(cudaSetDevice(device));
  }
  ~DeviceGuard() {
    int now = previous_;
    if (cudaGetDevice(&now) == cudaSuccess && now != previous_)
      TOKEMB_CUDA_ASSERT(cudaSetDevice(previous_));
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};

}  // namespace tokemb::detail
