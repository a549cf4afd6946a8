#pragma once
// Private: the file layer. Reading files by offset with pread (never memory-mapped, so a file
// that shrinks while it is read is an IoError, not a SIGBUS), and writing files atomically: to a
// temporary with a unique name in the output's directory, created exclusively and never through
// a symbolic link, renamed over the output on commit. Every failure throws tokemb::IoError naming
// the file and the system's reason; allocation failure throws tokemb::OutOfMemory.

#include <cstddef>
#include <cstdint>
#include <new>
#include <string>
#include <vector>

#include <tokemb/error.hpp>

#include "core/check.hpp"
#include "host/io/bytes.hpp"

namespace tokemb::detail {

/// A regular file opened for reading; its size is taken when it is opened.
class InputFile final : public ByteSource {
 public:
  explicit InputFile(const std::string& path);
  ~InputFile() override;
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;

  std::uint64_t size() const noexcept override { return size_; }
  const std::string& path() const noexcept { return path_; }
  /// "'path'", for messages.
  const std::string& name() const noexcept override { return name_; }
  /// Reads exactly \p n bytes at \p offset. IoError if [offset, offset + n) is beyond the size
  /// the file had when it was opened, and ("changed while reading") if the file has since
  /// become shorter.
  void read_at(std::uint64_t offset, void* dst, std::size_t n) const override;

 private:
  std::string path_, name_;
  int fd_ = -1;
  std::uint64_t size_ = 0;
};

/// The whole contents of \p path.
std::vector<unsigned char> read_whole_file(const std::string& path);

/// Writes a new temporary file in the directory of \p path, named ".NAME.tmp-XXXXXX" (NAME cut
/// to 64 bytes, so any valid output name works; XXXXXX random), created with O_EXCL|O_NOFOLLOW
/// so that it is never an existing file or a link. commit() flushes it to disk and renames it
/// over \p path. Destroying an uncommitted file removes the temporary, so \p path is either
/// untouched or complete, and concurrent writers of one path each publish a whole file.
/// write() calls the interrupt check (set_write_interrupt_check) before every chunk of at most
/// 16 MiB and, when it asks to stop, removes the temporary and throws IoError.
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

}  // namespace tokemb::detail
