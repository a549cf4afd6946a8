// Streams, device queries and the check that a CUDA device is usable.
#include <array>
#include <atomic>

#include <tokemb/config.hpp>
#include <tokemb/error.hpp>
#include <tokemb/stream.hpp>

#include "host/backend.hpp"
#include "core/check.hpp"

#if TOKEMB_WITH_CUDA
#include <cuda_runtime_api.h>

#include "core/cuda_check.hpp"
#include "host/cuda_device.hpp"
#endif

namespace tokemb {

int cuda_device_count() noexcept {
#if TOKEMB_WITH_CUDA
  // Asked once: the devices visible to a process do not change while it runs.
  static const int count = [] {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
      (void)cudaGetLastError();  // no driver or no device: not an error for the caller
      return 0;
    }
    return n;
  }();
  return count;
#else
  return 0;
#endif
}

void synchronize(StreamView stream) {
#if TOKEMB_WITH_CUDA
  if (cuda_device_count() > 0) TOKEMB_CUDA_TRY(cudaStreamSynchronize(stream.value()));
#else
  (void)stream;
#endif
}

namespace detail {

void require_cuda(Device device, const char* what) {
#if TOKEMB_WITH_CUDA
  const int n = cuda_device_count();
  TOKEMB_EXPECTS(n > 0, Unsupported, what, ": device ", device.str(),
                 " requested but no CUDA device is available");
  TOKEMB_EXPECTS(device.index >= 0 && device.index < n, InvalidArgument, what, ": device ",
                 device.str(), " does not exist; valid CUDA device indices are [0, ", n, ")");
#else
  TOKEMB_FAIL(Unsupported, what, ": device ", device.str(),
              " requested but this build of tokemb has no CUDA backend (TOKEMB_WITH_CUDA=OFF)");
#endif
}

void check_pointer_location(const char* op, const char* name, const void* p, Device device) {
#if TOKEMB_WITH_CUDA
  // Without a device the call fails in require_cuda with the clearer message.
  if (!device.is_cuda() || p == nullptr || cuda_device_count() == 0) return;
  cudaPointerAttributes a{};
  if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
    (void)cudaGetLastError();
    a.type = cudaMemoryTypeUnregistered;
  }
  switch (a.type) {
    case cudaMemoryTypeManaged: return;
    case cudaMemoryTypeHost:
      // Pinned and mapped: a kernel may use the host address itself only where the device can
      // use host pointers of registered memory (cudaDevAttrCanUseHostPointerForRegisteredMem;
      // then, as for cudaHostAlloc under UVA, the device address is the host address).
      // Elsewhere the device address differs, and the host one would fault in the kernel.
      if (a.devicePointer == nullptr) break;
      TOKEMB_EXPECTS(a.devicePointer == p, InvalidArgument, op, ": ", name, " at ", p,
                     " is mapped host memory whose device address is ", a.devicePointer, "; ",
                     device.str(),
                     " cannot use host pointers of registered memory "
                     "(cudaDevAttrCanUseHostPointerForRegisteredMem is 0): pass the device "
                     "address (cudaHostGetDevicePointer) or device memory");
      return;
    case cudaMemoryTypeDevice:
      TOKEMB_EXPECTS(a.device == device.index, InvalidArgument, op, ": ", name, " at ", p,
                     " is memory of cuda:", a.device, " but the call runs on ", device.str());
      return;
    default: break;
  }
  TOKEMB_FAIL(InvalidArgument, op, ": ", name, " at ", p, " is host memory but the call runs on ",
              device.str(), "; pass device memory (or label the tensor Device::cpu())");
#else
  (void)op;
  (void)name;
  (void)p;
  (void)device;
#endif
}

int multiprocessor_count(int device) {
#if TOKEMB_WITH_CUDA
  static std::array<std::atomic<int>, 64> cache{};
  if (device >= 0 && device < 64) {
    int v = cache[static_cast<std::size_t>(device)].load(std::memory_order_relaxed);
    if (v > 0) return v;
  }
  int v = 0;
  TOKEMB_CUDA_TRY(cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, device));
  if (device >= 0 && device < 64) cache[static_cast<std::size_t>(device)].store(v);
  return v;
#else
  (void)device;
  return 1;
#endif
}

}  // namespace detail

Stream::Stream(int device) : device_(device) {
  detail::require_cuda(Device::cuda(device), "Stream");
#if TOKEMB_WITH_CUDA
  detail::DeviceGuard guard(device);
  cudaStream_t s = nullptr;
  TOKEMB_CUDA_TRY(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  stream_ = s;
#endif
}

Stream::~Stream() {
#if TOKEMB_WITH_CUDA
  if (stream_ != nullptr) TOKEMB_CUDA_ASSERT(cudaStreamDestroy(stream_));
#endif
}

Stream::Stream(Stream&& other) noexcept : stream_(other.stream_), device_(other.device_) {
  other.stream_ = nullptr;
}

Stream& Stream::operator=(Stream&& other) noexcept {
  if (this != &other) {
#if TOKEMB_WITH_CUDA
    if (stream_ != nullptr) TOKEMB_CUDA_ASSERT(cudaStreamDestroy(stream_));
#endif
    stream_ = other.stream_;
    device_ = other.device_;
    other.stream_ = nullptr;
  }
  return *this;
}

void Stream::synchronize() const {
#if TOKEMB_WITH_CUDA
  TOKEMB_CUDA_TRY(cudaStreamSynchronize(stream_));
#endif
}

}  // namespace tokemb
