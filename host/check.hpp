#pragma once
// Private: error-raising helpers. Messages are built from the arguments and end with the
// source location, e.g. "forward: ids has rank 3, expected 2 ([B, T]) (host/validate.cpp:42)".

#include <sstream>
#include <string>

#include <tokemb/error.hpp>

namespace tokemb::detail {

template <class... Args>
std::string format_message(const char* file, int line, const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  os << " (" << file << ":" << line << ")";
  return os.str();
}

}  // namespace tokemb::detail

/// Throws ExcType(message built from the remaining arguments) unless cond holds.
#define TOKEMB_EXPECTS(cond, ExcType, ...)                                                         \
  do {                                                                                             \
    if (!(cond)) throw ExcType(::tokemb::detail::format_message(__FILE__, __LINE__, __VA_ARGS__)); \
  } while (0)

/// Throws ExcType(message) unconditionally.
#define TOKEMB_FAIL(ExcType, ...) \
  throw ExcType(::tokemb::detail::format_message(__FILE__, __LINE__, __VA_ARGS__))
