// Fuzzes parse_safetensors on arbitrary bytes: it must either throw a tokemb::Error or return
// tensors whose byte sizes are numel * dtype_size, with distinct names, whose total size fits in
// the input. Anything else thrown escapes and is reported as a crash; so are reads outside the
// input (AddressSanitizer) and allocations larger than -malloc_limit_mb.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include <tokemb/error.hpp>
#include <tokemb/io.hpp>

namespace {

void check(bool cond, const char* what) {
  if (!cond) {
    std::fprintf(stderr, "fuzz_safetensors: invariant violated: %s\n", what);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::vector<std::uint8_t> copy(data, data + size);  // exact size: overreads are caught
  try {
    const auto tensors = tokemb::parse_safetensors(copy.empty() ? nullptr : copy.data(), size);
    std::set<std::string> names;
    std::size_t total = 0;
    for (const auto& [name, t] : tensors) {
      check(names.insert(name).second, "duplicate tensor name");
      const std::int64_t n = t.shape.numel();
      check(n >= 0, "negative element count");
      check(t.data.size() == static_cast<std::size_t>(n) * tokemb::dtype_size(t.dtype),
            "tensor byte size != numel * dtype size");
      total += t.data.size();
    }
    // Tensors may not overlap in a valid file, so together they fit in what follows the header.
    check(total <= size, "tensors hold more bytes than the input");
  } catch (const tokemb::Error& e) {
    check(std::strlen(e.what()) > 0, "empty message");
  }
  return 0;
}
