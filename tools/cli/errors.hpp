#pragma once
// Private to the tokemb CLI: the error types that main() maps to exit codes other than 1.

#include <stdexcept>

namespace tokemb::cli {

/// The command line itself is wrong (unknown option, missing or malformed value): exit code 2.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// The user stopped a long run (SIGINT or SIGTERM): exit code 130, no output left behind.
class Interrupted : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace tokemb::cli
