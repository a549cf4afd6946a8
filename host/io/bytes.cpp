// The byte layer's out-of-line parts: error text, the data-size rule, memory sources.
#include "host/io/bytes.hpp"

#include "core/check.hpp"

namespace tokemb::detail {

namespace {

// strerror_r comes in two flavours: XSI returns int and fills the buffer, GNU returns the text.
[[maybe_unused]] const char* strerror_result(int rc, const char* buf) {
  return rc == 0 ? buf : nullptr;
}
[[maybe_unused]] const char* strerror_result(const char* text, const char*) { return text; }

}  // namespace

std::string errno_text(int err) {
  char buf[256] = {};
  const char* text = strerror_result(strerror_r(err, buf, sizeof buf), buf);
  return text && *text ? std::string(text) : "error " + std::to_string(err);
}

std::uint64_t checked_data_bytes(std::uint64_t count, std::uint64_t item, std::uint64_t offset,
                                 std::uint64_t total, Trailing trailing, const std::string& what) {
  std::uint64_t bytes = 0, end = 0;
  TOKEMB_EXPECTS(!__builtin_mul_overflow(count, item, &bytes), IoError, what, ": the data size (",
                 count, " elements of ", item, " bytes) overflows 64 bits");
  TOKEMB_EXPECTS(!__builtin_add_overflow(offset, bytes, &end), IoError, what, ": the data (", bytes,
                 " bytes after offset ", offset, ") ends beyond 2^64 bytes");
  TOKEMB_EXPECTS(end <= total, IoError, what, ": ", count, " elements of ", item, " bytes need ",
                 bytes, " bytes after offset ", offset, " (the file should be ", end,
                 " bytes), but only ", total > offset ? total - offset : 0,
                 " follow: truncated file");
  TOKEMB_EXPECTS(trailing == Trailing::allowed || end == total, IoError, what, ": ", total - end,
                 " unexpected bytes follow the ", bytes, " bytes of data (the file should be ", end,
                 " bytes, but it is ", total, "): corrupt or concatenated file");
  return bytes;
}

void MemorySource::read_at(std::uint64_t offset, void* dst, std::size_t n) const {
  TOKEMB_EXPECTS(offset <= size_ && n <= size_ - offset, IoError, name_, " is truncated: ", n,
                 " bytes needed at offset ", offset, ", but it has ", size_, " bytes");
  if (n) std::memcpy(dst, p_ + offset, n);
}

}  // namespace tokemb::detail
