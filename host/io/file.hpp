#pragma once
// Private: reading whole files or byte ranges, and writing files atomically (to "path.tmp",
// renamed into place on commit). Every failure throws tokemb::IoError naming the file and the
// system's reason; allocation failure throws tokemb::OutOfMemory.

#include <cstddef>
#include <cstdint>
#include <new>
#include <string>
#include <vector>

#include <tokemb/error.hpp>

#include "core/check.hpp"

namespace tokemb::detail {

/// A regular file opened for reading; its size is taken when it is opened.
class InputFile {
 public:
  explicit InputFile(const std::string& path);
  ~InputFile();
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;

  std::uint64_t size() const noexcept { return size_; }
  const std::string& path() const noexcept { return path_; }
  /// Reads exactly \p n bytes at \p offset; throws IoError if the file is shorter.
  void read_at(std::uint64_t offset, void* dst, std::size_t n) const;

 private:
  std::string path_;
  int fd_ = -1;
  std::uint64_t size_ = 0;
};

/// The whole contents of \p path.
std::vector<unsigned char> read_whole_file(const std::string& path);

/// Writes "path.tmp"; commit() flushes it to disk and renames it to \p path. Destroying an
/// uncommitted file removes the temporary, so \p path is either untouched or complete.
class OutputFile {
 public:
  explicit OutputFile(const std::string& path);
  ~OutputFile();
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;

  void write(const void* data, std::size_t n);
  void commit();
  const std::string& path() const noexcept { return path_; }

 private:
  void close_and_remove() noexcept;
  std::string path_, tmp_;
  int fd_ = -1;
};

/// A byte vector of \p n bytes; std::bad_alloc becomes tokemb::OutOfMemory naming \p what.
inline std::vector<unsigned char> make_bytes(std::size_t n, const char* what) {
  try {
    return std::vector<unsigned char>(n);
  } catch (const std::bad_alloc&) {
    TOKEMB_FAIL(OutOfMemory, what, ": host allocation of ", n, " bytes failed");
  } catch (const std::length_error&) {
    TOKEMB_FAIL(OutOfMemory, what, ": host allocation of ", n, " bytes failed");
  }
}

/// Runs \p f, turning the standard library's allocation failures into tokemb::OutOfMemory so
/// that parsers of untrusted bytes throw only tokemb exceptions.
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
