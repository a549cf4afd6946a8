#pragma once
/// \file error.hpp
/// The exceptions tokemb throws. Every message names the argument, the value and the valid
/// range, and ends with the source location that raised it. tokemb never aborts its host process.

#include <cstdint>
#include <stdexcept>
#include <string>

namespace tokemb {

/// Base class of every tokemb exception.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// An argument is invalid: null pointer, wrong dtype, shape mismatch, non-positive size,
/// a size that overflows 64 bits, a device mismatch. Raised before anything is launched or
/// written, so tables and gradients are left exactly as they were.
class InvalidArgument : public Error {
 public:
  using Error::Error;
};

/// A token id or a position is outside its table. Carries the first offending element.
class IndexOutOfRange : public Error {
 public:
  /// What was out of range.
  enum class Kind : std::int32_t { token = 1, position = 2 };

  IndexOutOfRange(const std::string& what, Kind kind, std::int64_t value, std::int64_t batch,
                  std::int64_t time, std::int64_t limit, std::uint64_t count)
      : Error(what),
        kind_(kind),
        value_(value),
        batch_(batch),
        time_(time),
        limit_(limit),
        count_(count) {}

  Kind kind() const noexcept { return kind_; }
  /// The offending id or position.
  std::int64_t value() const noexcept { return value_; }
  /// Its batch index b and time index t.
  std::int64_t batch() const noexcept { return batch_; }
  std::int64_t time() const noexcept { return time_; }
  /// The valid range is [0, limit).
  std::int64_t limit() const noexcept { return limit_; }
  /// How many rows were out of range in total (since the record was last cleared).
  std::uint64_t count() const noexcept { return count_; }

 private:
  Kind kind_;
  std::int64_t value_, batch_, time_, limit_;
  std::uint64_t count_;
};

/// A CUDA runtime or library call failed. code() is the cudaError_t (or library status) value.
class CudaError : public Error {
 public:
  explicit CudaError(const std::string& what, int code = 0) : Error(what), code_(code) {}
  int code() const noexcept { return code_; }

 private:
  int code_;
};

/// A device or host allocation failed. Nothing is leaked.
class OutOfMemory : public CudaError {
 public:
  using CudaError::CudaError;
};

/// The operation needs a backend or library this build of tokemb does not have
/// (the CUDA backend in a CPU-only build, cuRAND's host generator where it is not installed).
class Unsupported : public Error {
 public:
  using Error::Error;
};

/// A file could not be read or written, or its contents are malformed.
class IoError : public Error {
 public:
  using Error::Error;
};

}  // namespace tokemb
