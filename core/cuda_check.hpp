#pragma once
// Private, shared by host/ and kernels/, CUDA builds only: checking CUDA runtime calls. A failed
// call throws tokemb::CudaError (tokemb::OutOfMemory with Memory::device for
// cudaErrorMemoryAllocation) naming the call, the error name and text.
// Use TOKEMB_CUDA_ASSERT in destructors and other noexcept paths: it reports and continues.

#include <cuda_runtime_api.h>

#include <cstdio>

#include "core/check.hpp"

namespace tokemb::detail {

[[noreturn]] inline void throw_cuda_error(cudaError_t err, const char* call, const char* file,
                                          int line) {
  // Clear a non-sticky error so that the context stays usable for the caller's next call.
  (void)cudaGetLastError();
  std::string msg = format_message("CUDA call ", call, " failed: ", cudaGetErrorName(err), " (",
                                   cudaGetErrorString(err), ")");
  if (err == cudaErrorMemoryAllocation)
    throw ErrorLocation::at(OutOfMemory(msg, OutOfMemory::Memory::device, static_cast<int>(err)),
                            file, line);
  throw ErrorLocation::at(CudaError(msg, static_cast<int>(err)), file, line);
}

}  // namespace tokemb::detail

#define TOKEMB_CUDA_TRY(call)                                                     \
  do {                                                                            \
    cudaError_t tokemb_err_ = (call);                                             \
    if (tokemb_err_ != cudaSuccess)                                               \
      ::tokemb::detail::throw_cuda_error(tokemb_err_, #call, __FILE__, __LINE__); \
  } while (0)

/// Checks the launch that was just made (configuration errors surface here, asynchronously
/// raised kernel faults at the next synchronising call).
#define TOKEMB_CHECK_LAUNCH() TOKEMB_CUDA_TRY(cudaGetLastError())

#define TOKEMB_CUDA_ASSERT(call)                                                     \
  do {                                                                               \
    cudaError_t tokemb_err_ = (call);                                                \
    if (tokemb_err_ != cudaSuccess) {                                                \
      std::fprintf(stderr, "tokemb: %s failed in a destructor: %s (%s:%d)\n", #call, \
                   cudaGetErrorName(tokemb_err_), __FILE__, __LINE__);               \
      (void)cudaGetLastError();                                                      \
    }                                                                                \
  } while (0)
