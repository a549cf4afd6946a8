#pragma once
// Private to the tokemb CLI: a small strict command-line parser ("--name value" or
// "--name=value", no positional arguments) and the error type that maps to exit code 2.

#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

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

/// One option a command accepts.
struct OptionSpec {
  std::string name;  ///< without the leading "--"
  bool takes_value = true;
};

/// Parsed options of one command. Every accessor throws UsageError naming the option, the value
/// given and what was expected.
class Args {
 public:
  /// Parses argv[first..argc). "-h" and "--help" set help(); anything not in \p specs, any
  /// positional argument, a missing value or a repeated option throws UsageError.
  Args(std::string command, const std::vector<OptionSpec>& specs, int argc, char** argv, int first);

  bool help() const noexcept { return help_; }
  bool has(const std::string& name) const { return values_.count(name) != 0; }
  std::optional<std::string> get(const std::string& name) const;
  /// The value of a required option.
  std::string require(const std::string& name) const;
  /// A decimal integer in [lo, hi]; \p fallback when the option is absent.
  std::int64_t integer(const std::string& name, std::int64_t lo, std::int64_t hi,
                       std::optional<std::int64_t> fallback) const;
  /// A decimal unsigned 64-bit integer (a seed).
  std::uint64_t unsigned64(const std::string& name, std::uint64_t fallback) const;
  /// One of \p choices.
  std::string choice(const std::string& name, const std::vector<std::string>& choices,
                     const std::string& fallback) const;

 private:
  std::string command_;
  std::map<std::string, std::string> values_;
  bool help_ = false;
};

}  // namespace tokemb::cli
