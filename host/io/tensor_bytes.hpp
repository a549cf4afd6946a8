#pragma once
// Private: helpers shared by the .npy and safetensors readers and writers.

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <tokemb/io.hpp>
#include <tokemb/tensor.hpp>

namespace tokemb::detail {

/// A Shape from a dimension list (rank <= Shape::max_rank, dims >= 0; checked by the caller).
Shape make_shape(const std::vector<std::int64_t>& dims);
std::vector<std::int64_t> shape_dims(const Shape& shape);

/// Copies \p tensor (any device) into host memory, synchronising \p stream.
std::vector<unsigned char> tensor_to_host_bytes(const TensorView& tensor, StreamView stream,
                                                const char* what);

/// Converts \p src for a destination of dtype \p dst_dtype: the same bytes when the dtypes are
/// equal, f32 rounded to nearest even for a bf16 or f16 destination. Anything else throws
/// InvalidArgument naming \p what (the file and tensor) and both dtypes.
std::vector<unsigned char> convert_for_load(const HostTensor& src, DType dst_dtype,
                                            const std::string& what);

/// Checks a loaded tensor against its destination (shape equal; dtype equal, or f32 into a
/// 16-bit float table) and returns the bytes to copy.
std::vector<unsigned char> checked_load_bytes(const HostTensor& src, const TensorView& dst,
                                              const std::string& what);

}  // namespace tokemb::detail
