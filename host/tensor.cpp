// Shape, Buffer (host and device memory), copy and fill_zero.
#include <cstring>
#include <new>

#include <tokemb/config.hpp>
#include <tokemb/error.hpp>
#include <tokemb/tensor.hpp>

#include "core/check.hpp"
#include "host/backend.hpp"

#if TOKEMB_WITH_CUDA
#include <cuda_runtime_api.h>

#include "core/cuda_check.hpp"
#include "host/cuda_device.hpp"
#endif

namespace tokemb {

namespace {
constexpr std::size_t host_alignment = 64;
}

Shape::Shape(std::initializer_list<std::int64_t> dims) {
  TOKEMB_EXPECTS(dims.size() <= static_cast<std::size_t>(max_rank), InvalidArgument, "Shape: rank ",
                 dims.size(), " exceeds the maximum rank ", max_rank);
  *this = Shape(dims.begin(), static_cast<int>(dims.size()));
}

Shape::Shape(const std::int64_t* dims, int rank) {
  TOKEMB_EXPECTS(rank >= 0 && rank <= max_rank, InvalidArgument, "Shape: rank ", rank,
                 " is outside the supported range [0, ", max_rank, "]");
  for (int i = 0; i < rank; ++i) {
    TOKEMB_EXPECTS(dims[i] >= 0, InvalidArgument, "Shape: dimension ", i, " is ", dims[i],
                   ", must be >= 0");
    dims_[static_cast<std::size_t>(rank_++)] = dims[i];
  }
}

std::int64_t Shape::numel() const {
  std::int64_t n = 1;
  for (int i = 0; i < rank_; ++i) {
    std::int64_t r;
    TOKEMB_EXPECTS(!__builtin_mul_overflow(n, dims_[static_cast<std::size_t>(i)], &r),
                   InvalidArgument, "Shape ", str(), ": element count overflows int64");
    n = r;
  }
  return n;
}

std::string Shape::str() const {
  std::string s = "[";
  for (int i = 0; i < rank_; ++i) {
    if (i) s += ", ";
    s += std::to_string(dims_[static_cast<std::size_t>(i)]);
  }
  return s + "]";
}

bool operator==(const Shape& a, const Shape& b) noexcept {
  if (a.rank_ != b.rank_) return false;
  for (int i = 0; i < a.rank_; ++i)
    if (a.dims_[static_cast<std::size_t>(i)] != b.dims_[static_cast<std::size_t>(i)]) return false;
  return true;
}

TensorView::TensorView(const void* data_, DType dtype_, Shape shape_, const std::int64_t* strides_,
                       Device device_)
    : TensorView(data_, dtype_, shape_, device_) {
  TOKEMB_EXPECTS(strides_ != nullptr || shape.rank() == 0, InvalidArgument,
                 "TensorView: strides is a null pointer for a tensor of rank ", shape.rank());
  strided = true;
  for (int i = 0; i < shape.rank(); ++i) strides[static_cast<std::size_t>(i)] = strides_[i];
}

std::int64_t TensorView::stride(int i) const noexcept {
  if (strided) return strides[static_cast<std::size_t>(i)];
  // Row-major. The product cannot overflow when numel() does not, except in an empty tensor
  // ([0, 2^40, 2^40]), whose strides address nothing: unsigned arithmetic keeps that defined.
  std::uint64_t s = 1;
  for (int j = shape.rank() - 1; j > i; --j) s *= static_cast<std::uint64_t>(shape[j]);
  return static_cast<std::int64_t>(s);
}

bool TensorView::is_contiguous() const noexcept {
  if (!strided) return true;
  for (int i = 0; i < shape.rank(); ++i)
    if (shape[i] == 0) return true;  // no elements, no layout (wherever the zero is)
  std::int64_t expect = 1;
  for (int i = shape.rank() - 1; i >= 0; --i) {
    if (shape[i] != 1 && strides[static_cast<std::size_t>(i)] != expect) return false;
    if (__builtin_mul_overflow(expect, shape[i], &expect)) return false;
  }
  return true;
}

std::pair<std::int64_t, std::int64_t> TensorView::extent() const {
  const std::int64_t n = numel();
  if (n == 0) return {0, 0};
  const auto size = static_cast<std::int64_t>(dtype_size(dtype));
  std::int64_t lo = 0, hi = 0;  // element offsets of the first and last element
  for (int i = 0; i < shape.rank(); ++i) {
    std::int64_t span = 0;
    TOKEMB_EXPECTS(!__builtin_mul_overflow(stride(i), shape[i] - 1, &span), InvalidArgument,
                   "TensorView ", shape.str(), ": the stride of dimension ", i, " (", stride(i),
                   ") times its size overflows int64");
    TOKEMB_EXPECTS(!__builtin_add_overflow(span < 0 ? lo : hi, span, span < 0 ? &lo : &hi),
                   InvalidArgument, "TensorView ", shape.str(), ": its extent overflows int64");
  }
  std::int64_t first = 0, last = 0, end = 0;  // end: one past the last element
  TOKEMB_EXPECTS(!__builtin_add_overflow(hi, std::int64_t{1}, &end) &&
                     !__builtin_mul_overflow(lo, size, &first) &&
                     !__builtin_mul_overflow(end, size, &last),
                 InvalidArgument, "TensorView ", shape.str(), ": its extent overflows int64");
  return {first, last};
}

Buffer::Buffer(DType dtype, Shape shape, Device device) {
  const std::int64_t n = shape.numel();
  std::size_t bytes = 0;
  TOKEMB_EXPECTS(!__builtin_mul_overflow(static_cast<std::size_t>(n), dtype_size(dtype), &bytes),
                 InvalidArgument, "Buffer: ", shape.str(), " x ", dtype_size(dtype),
                 " bytes overflows size_t");
  void* p = nullptr;
  if (bytes > 0) {
    if (device.is_cpu()) {
      p = ::operator new(bytes, std::align_val_t(host_alignment), std::nothrow);
      TOKEMB_EXPECTS(p != nullptr, OutOfMemory, "Buffer: host allocation of ", bytes,
                     " bytes failed");
    } else {
      detail::require_cuda(device, "Buffer");
#if TOKEMB_WITH_CUDA
      detail::DeviceGuard guard(device.index);
      cudaError_t err = cudaMalloc(&p, bytes);
      if (err != cudaSuccess) {
        (void)cudaGetLastError();
        if (err == cudaErrorMemoryAllocation)
          TOKEMB_THROW(
              OutOfMemory(detail::format_message("Buffer: cudaMalloc of ", bytes, " bytes on ",
                                                 device.str(), " failed: out of memory"),
                          OutOfMemory::Memory::device, static_cast<int>(err)));
        detail::throw_cuda_error(err, "cudaMalloc", __FILE__, __LINE__);
      }
#endif
    }
  }
  view_ = TensorView(p, dtype, shape, device);
  bytes_ = bytes;
}

Buffer::~Buffer() { release(); }

Buffer::Buffer(Buffer&& other) noexcept : view_(other.view_), bytes_(other.bytes_) {
  other.view_.data = nullptr;
  other.bytes_ = 0;
}

Buffer& Buffer::operator=(Buffer&& other) noexcept {
  if (this != &other) {
    release();
    view_ = other.view_;
    bytes_ = other.bytes_;
    other.view_.data = nullptr;
    other.bytes_ = 0;
  }
  return *this;
}

void Buffer::release() noexcept {
  if (view_.data == nullptr) return;
  if (view_.device.is_cpu()) {
    ::operator delete(view_.data, std::align_val_t(host_alignment));
  } else {
#if TOKEMB_WITH_CUDA
    int previous = 0;
    if (cudaGetDevice(&previous) == cudaSuccess) {
      if (previous != view_.device.index) TOKEMB_CUDA_ASSERT(cudaSetDevice(view_.device.index));
      TOKEMB_CUDA_ASSERT(cudaFree(view_.data));
      if (previous != view_.device.index) TOKEMB_CUDA_ASSERT(cudaSetDevice(previous));
    }
#endif
  }
  view_.data = nullptr;
  bytes_ = 0;
}

void copy(const TensorView& dst, const TensorView& src, StreamView stream) {
  TOKEMB_EXPECTS(dst.dtype == src.dtype, InvalidArgument, "copy: dst dtype ", dtype_name(dst.dtype),
                 " differs from src dtype ", dtype_name(src.dtype));
  TOKEMB_EXPECTS(dst.numel() == src.numel(), InvalidArgument, "copy: dst has ", dst.numel(),
                 " elements ", dst.shape.str(), ", src has ", src.numel(), " ", src.shape.str());
  const std::size_t bytes = src.bytes();
  if (bytes == 0) return;
  TOKEMB_EXPECTS(dst.data != nullptr && src.data != nullptr, InvalidArgument,
                 "copy: null pointer (dst ", dst.data, ", src ", src.data, ")");
  if (dst.device.is_cpu() && src.device.is_cpu()) {
    std::memmove(dst.data, src.data, bytes);
    return;
  }
  detail::require_cuda(dst.device.is_cuda() ? dst.device : src.device, "copy");
#if TOKEMB_WITH_CUDA
  TOKEMB_CUDA_TRY(cudaMemcpyAsync(dst.data, src.data, bytes, cudaMemcpyDefault, stream.value()));
#else
  (void)stream;
#endif
}

void fill_zero(const TensorView& dst, StreamView stream) {
  if (dst.empty()) return;  // no tensor (an absent table)
  const std::size_t bytes = dst.bytes();
  if (bytes == 0) return;
  if (dst.device.is_cpu()) {
    std::memset(dst.data, 0, bytes);
    return;
  }
  detail::require_cuda(dst.device, "fill_zero");
#if TOKEMB_WITH_CUDA
  TOKEMB_CUDA_TRY(cudaMemsetAsync(dst.data, 0, bytes, stream.value()));
#else
  (void)stream;
#endif
}

}  // namespace tokemb
