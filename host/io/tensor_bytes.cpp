// Helpers shared by the .npy and safetensors code: shapes, host copies, load-time conversion.
#include "host/io/tensor_bytes.hpp"

#include <algorithm>
#include <cstring>

#include "core/check.hpp"
#include "host/io/file.hpp"

namespace tokemb::detail {

Shape make_shape(const std::vector<std::int64_t>& d) {
  TOKEMB_EXPECTS(d.size() <= static_cast<std::size_t>(Shape::max_rank), InvalidArgument,
                 "shape of rank ", d.size(), " exceeds the maximum rank ", Shape::max_rank);
  return Shape(d.data(), static_cast<int>(d.size()));
}

std::vector<std::int64_t> shape_dims(const Shape& shape) {
  std::vector<std::int64_t> d;
  for (int i = 0; i < shape.rank(); ++i) d.push_back(shape[i]);
  return d;
}

std::vector<unsigned char> tensor_to_host_bytes(const TensorView& tensor, StreamView stream,
                                                const char* what) {
  TOKEMB_EXPECTS(tensor.data != nullptr || tensor.numel() == 0, InvalidArgument, what,
                 ": the tensor ", tensor.shape.str(), " has a null data pointer");
  std::vector<unsigned char> bytes = make_bytes(tensor.bytes(), what);
  if (bytes.empty()) return bytes;
  copy(TensorView(bytes.data(), tensor.dtype, tensor.shape, Device::cpu()), tensor, stream);
  if (tensor.device.is_cuda()) synchronize(stream);
  return bytes;
}

std::vector<unsigned char> convert_for_load(const HostTensor& src, DType dst_dtype,
                                            const std::string& what) {
  if (src.dtype == dst_dtype) return src.data;
  TOKEMB_EXPECTS(src.dtype == DType::f32 && (dst_dtype == DType::bf16 || dst_dtype == DType::f16),
                 InvalidArgument, what, ": the file holds ", dtype_name(src.dtype),
                 " data but the destination is ", dtype_name(dst_dtype),
                 "; the dtypes must match (or an f32 file may be loaded into a bf16 or f16 table)");
  const std::size_t n = src.data.size() / 4;
  std::vector<unsigned char> out = make_bytes(n * 2, what.c_str());
  for (std::size_t i = 0; i < n; ++i) {
    float f;
    std::memcpy(&f, src.data.data() + 4 * i, 4);
    const std::uint16_t bits =
        dst_dtype == DType::bf16 ? bf16_t::from_float(f).bits : f16_t::from_float(f).bits;
    std::memcpy(out.data() + 2 * i, &bits, 2);
  }
  return out;
}

std::vector<unsigned char> checked_load_bytes(const HostTensor& src, const TensorView& dst,
                                              const std::string& what) {
  TOKEMB_EXPECTS(src.shape == dst.shape, InvalidArgument, what, ": the file's tensor has shape ",
                 src.shape.str(), " but the destination has shape ", dst.shape.str());
  std::vector<unsigned char> bytes = convert_for_load(src, dst.dtype, what);
  TOKEMB_EXPECTS(bytes.size() == dst.bytes(), InvalidArgument, what, ": ", bytes.size(),
                 " bytes of data, the destination needs ", dst.bytes());
  return bytes;
}

}  // namespace tokemb::detail
