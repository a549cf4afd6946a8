#pragma once
/// \file tensor.hpp
/// TensorView (non-owning; row-major, or with explicit element strides) and Buffer (owning,
/// move-only, RAII).

#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>

#include <tokemb/stream.hpp>
#include <tokemb/types.hpp>

namespace tokemb {

/// The shape of a tensor of rank 0 to 8.
class Shape {
 public:
  static constexpr int max_rank = 8;

  Shape() = default;
  Shape(std::initializer_list<std::int64_t> dims);
  /// The first \p rank entries of \p dims (a shape from a runtime dimension list, e.g. a file
  /// header or a DLPack tensor). Throws InvalidArgument if rank is outside [0, max_rank] or a
  /// dimension is negative.
  Shape(const std::int64_t* dims, int rank);

  int rank() const noexcept { return rank_; }
  std::int64_t operator[](int i) const noexcept { return dims_[static_cast<std::size_t>(i)]; }
  /// Product of the dimensions; throws InvalidArgument if it overflows int64.
  std::int64_t numel() const;
  /// "[8, 4, 256]".
  std::string str() const;
  friend bool operator==(const Shape& a, const Shape& b) noexcept;
  friend bool operator!=(const Shape& a, const Shape& b) noexcept { return !(a == b); }

 private:
  std::array<std::int64_t, max_rank> dims_{};
  int rank_ = 0;
};

/// A non-owning view of a tensor: pointer, dtype, shape, device and, optionally, element
/// strides. Without strides (the default, and what Buffer gives) the view is contiguous
/// row-major. Like DLPack it stores a mutable pointer; operations never write through a view
/// they take as an input. Which arguments may be strided is documented per operation (ops.hpp:
/// ids, position_ids and dout may; tables, outputs and gradients must be contiguous).
struct TensorView {
  void* data = nullptr;
  DType dtype = DType::f32;
  Shape shape;
  Device device;
  /// true: strides[i] is the distance, in elements, between neighbours along dimension i (any
  /// value, 0 and negative included, as DLPack allows). false: contiguous row-major, and
  /// strides is unused.
  bool strided = false;
  std::array<std::int64_t, Shape::max_rank> strides{};

  TensorView() = default;
  TensorView(const void* data_, DType dtype_, Shape shape_, Device device_)
      : data(const_cast<void*>(data_)), dtype(dtype_), shape(shape_), device(device_) {}
  /// A strided view: \p strides_ has shape_.rank() entries, in elements.
  TensorView(const void* data_, DType dtype_, Shape shape_, const std::int64_t* strides_,
             Device device_);

  std::int64_t numel() const { return shape.numel(); }
  /// Bytes of a contiguous view's data (numel * element size). For a strided view see extent().
  std::size_t bytes() const { return static_cast<std::size_t>(numel()) * dtype_size(dtype); }
  bool empty() const noexcept { return data == nullptr; }
  /// Stride of dimension \p i in elements (the row-major one when the view is not strided).
  std::int64_t stride(int i) const noexcept;
  /// True when the elements are laid out contiguously in row-major order (strides of dimensions
  /// of size 1 do not matter, and an empty tensor is contiguous), as PyTorch's is_contiguous().
  bool is_contiguous() const noexcept;
  /// The elements' byte range relative to data: [first, last) (both 0 for an empty tensor).
  /// Throws InvalidArgument if it overflows int64.
  std::pair<std::int64_t, std::int64_t> extent() const;
};

/// Owning, move-only memory for one tensor on the host (64-byte aligned) or on a CUDA device
/// (cudaMalloc). Contents are uninitialised. Allocation failure throws tokemb::OutOfMemory.
class Buffer {
 public:
  Buffer() = default;
  Buffer(DType dtype, Shape shape, Device device);
  ~Buffer();
  Buffer(Buffer&& other) noexcept;
  Buffer& operator=(Buffer&& other) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  TensorView view() const noexcept { return view_; }
  operator TensorView() const noexcept { return view_; }  // NOLINT: implicit by design
  void* data() const noexcept { return view_.data; }
  DType dtype() const noexcept { return view_.dtype; }
  const Shape& shape() const noexcept { return view_.shape; }
  Device device() const noexcept { return view_.device; }
  std::size_t bytes() const noexcept { return bytes_; }

 private:
  void release() noexcept;
  TensorView view_;
  std::size_t bytes_ = 0;
};

/// Copies \p src into \p dst (same dtype and element count; any devices), ordered on
/// \p stream. Copies that involve a CUDA device are asynchronous with respect to the host
/// unless host memory is pageable; call synchronize(stream) before reading a host result.
void copy(const TensorView& dst, const TensorView& src, StreamView stream);

/// Sets every byte of \p dst to zero, ordered on \p stream.
void fill_zero(const TensorView& dst, StreamView stream);

}  // namespace tokemb
