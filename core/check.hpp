#pragma once
// Private, shared by host/ and kernels/: the error-raising macros. Messages are built from the
// arguments ("forward: ids has rank 3, expected 2 ([B, T])"); the source location that raised
// the error travels as data (tokemb::Error::file() / line()), never inside the message.

#include <charconv>
#include <new>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include <tokemb/error.hpp>

namespace tokemb::detail {

template <class... Args>
std::string format_message(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

/// A double as the shortest text that reads back as the same value (1.000000001, -1e-50), so a
/// message shows the value given, not a rounded one.
inline std::string format_double(double x) {
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, x);
  return std::string(buf, r.ptr);
}

/// Stamps an exception with the tokemb source location that raises it (Error::file/line are
/// private; this is the one writer).
struct ErrorLocation {
  template <class E>
  static E at(E e, const char* file, int line) noexcept {
    static_assert(std::is_base_of_v<Error, E>, "tokemb raises tokemb::Error types only");
    e.file_ = file;
    e.line_ = line;
    return e;
  }
};

}  // namespace tokemb::detail

/// Throws \p exception (a tokemb::Error) stamped with this source location.
#define TOKEMB_THROW(exception) \
  throw ::tokemb::detail::ErrorLocation::at((exception), __FILE__, __LINE__)

/// Throws ExcType(message built from the remaining arguments) unless cond holds.
#define TOKEMB_EXPECTS(cond, ExcType, ...)                                             \
  do {                                                                                 \
    if (!(cond)) TOKEMB_THROW(ExcType(::tokemb::detail::format_message(__VA_ARGS__))); \
  } while (0)

/// Throws ExcType(message) unconditionally.
#define TOKEMB_FAIL(ExcType, ...) \
  TOKEMB_THROW(ExcType(::tokemb::detail::format_message(__VA_ARGS__)))

namespace tokemb::detail {

/// Runs \p f, turning the standard library's allocation failures into tokemb::OutOfMemory (host
/// memory) naming \p what, so that the library throws only tokemb exceptions (file parsers of
/// untrusted sizes, the CPU backend's scratch vectors).
template <class F>
decltype(auto) with_tokemb_alloc_errors(const char* what, F&& f) {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    TOKEMB_FAIL(OutOfMemory, what, ": host allocation failed");
  } catch (const std::length_error&) {
    TOKEMB_FAIL(OutOfMemory, what, ": host allocation failed (length error)");
  }
}

}  // namespace tokemb::detail
