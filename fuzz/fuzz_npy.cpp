// Fuzzes the .npy readers on arbitrary bytes: parse_npy_header and parse_npy must either throw a
// tokemb::Error or return something consistent with the input:
//  - the header's data lies inside the input (data_offset + data_bytes <= size);
//  - a parsed tensor has exactly numel * dtype_size bytes, its shape is the header's shape, and
//    for the dtypes stored as they are (<f4, <f2, <i4, <i8) its bytes are the file's bytes;
//  - whatever parse_npy accepts, parse_npy_header accepts too.
// Anything else thrown escapes and is reported as a crash; so are reads outside the input
// (AddressSanitizer) and allocations larger than -malloc_limit_mb.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <vector>

#include <tokemb/error.hpp>
#include <tokemb/io.hpp>

namespace {

void check(bool cond, const char* what) {
  if (!cond) {
    std::fprintf(stderr, "fuzz_npy: invariant violated: %s\n", what);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // An exact-size heap copy so that AddressSanitizer sees any read past the end.
  std::vector<std::uint8_t> copy(data, data + size);
  const void* bytes = copy.empty() ? nullptr : copy.data();

  std::optional<tokemb::NpyHeader> header;
  try {
    header = tokemb::parse_npy_header(bytes, size);
    check(header->data_offset <= size, "data_offset beyond the input");
    check(header->data_bytes <= size - header->data_offset, "data beyond the input");
    for (std::int64_t d : header->shape) check(d >= 0, "negative dimension");
  } catch (const tokemb::Error& e) {
    check(std::strlen(e.what()) > 0, "empty message");
  }

  try {
    const tokemb::HostTensor t = tokemb::parse_npy(bytes, size);
    check(header.has_value(), "parse_npy accepted what parse_npy_header rejected");
    const std::int64_t n = t.shape.numel();
    check(t.data.size() == static_cast<std::size_t>(n) * tokemb::dtype_size(t.dtype),
          "tensor byte size != numel * dtype size");
    check(static_cast<std::size_t>(t.shape.rank()) == header->shape.size(),
          "rank differs from header");
    for (int i = 0; i < t.shape.rank(); ++i)
      check(t.shape[i] == header->shape[static_cast<std::size_t>(i)], "shape differs from header");
    const std::string& d = header->descr;
    if (!header->fortran_order && (d == "<f4" || d == "<f2" || d == "<i4" || d == "<i8")) {
      check(header->data_bytes == t.data.size(), "data_bytes differs from the tensor's size");
      check(t.data.empty() ||
                std::memcmp(t.data.data(), copy.data() + header->data_offset, t.data.size()) == 0,
            "tensor bytes differ from the file's bytes");
    }
  } catch (const tokemb::Error& e) {
    check(std::strlen(e.what()) > 0, "empty message");
  }
  return 0;
}
