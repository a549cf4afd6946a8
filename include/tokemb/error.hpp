#pragma once
/// \file error.hpp
/// The exceptions tokemb throws. Every message names the argument, the value and the valid
/// range; the tokemb source location that raised it is available as data (Error::file() and
/// Error::line()), never inside the message. tokemb never aborts its host process.

#include <cstdint>
#include <stdexcept>
#include <string>

namespace tokemb {

namespace detail {
struct ErrorLocation;
}

/// Base class of every tokemb exception.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}

  /// The tokemb source file that raised the error ("" when it was constructed elsewhere).
  const char* file() const noexcept { return file_; }
  /// Its line (0 when unknown).
  int line() const noexcept { return line_; }

 private:
  friend struct detail::ErrorLocation;  // the library's throw macros stamp the location
  const char* file_ = "";
  int line_ = 0;
};

/// An argument is invalid: null pointer, wrong dtype, shape mismatch, non-positive size,
/// a size that overflows 64 bits, a device mismatch. Raised before anything is launched or
/// written, so tables and gradients are left exactly as they were.
class InvalidArgument : public Error {
 public:
  using Error::Error;
};

/// A token id or a position is outside its table (or packed-sequence boundaries are malformed).
/// Carries the first offending row.
class IndexOutOfRange : public Error {
 public:
  /// What was out of range. sequence: Options::cu_seqlens is not non-decreasing from 0 to
  /// B * T; value() is then the index of the offending cu_seqlens entry and limit() the number
  /// of entries.
  enum class Kind : std::int32_t { token = 1, position = 2, sequence = 3 };

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

/// A host or device allocation failed. Nothing is leaked. memory() says which; code() is the
/// cudaError_t (or cuRAND status) of a failed device allocation, 0 for the host. Not a
/// CudaError: host allocations fail this way too.
class OutOfMemory : public Error {
 public:
  /// Which memory ran out.
  enum class Memory : std::uint8_t { host, device };

  explicit OutOfMemory(const std::string& what, Memory memory = Memory::host, int code = 0)
      : Error(what), memory_(memory), code_(code) {}
  Memory memory() const noexcept { return memory_; }
  bool on_device() const noexcept { return memory_ == Memory::device; }
  int code() const noexcept { return code_; }

 private:
  Memory memory_;
  int code_;
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
