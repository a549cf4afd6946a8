#pragma once
// Private: the file layer. Reading files by offset with pread (never memory-mapped, so a file
// that shrinks while it is read is an IoError, not a SIGBUS; anything but a regular file is
// refused before a blocking open), and the public tokemb::OutputFile (tokemb/io.hpp): atomic,
// fsynced writes. Every failure throws tokemb::IoError naming the file and the system's reason;
// allocation failure throws tokemb::OutOfMemory.

#include <cstddef>
#include <cstdint>
#include <new>
#include <string>
#include <vector>

#include <tokemb/error.hpp>

#include "core/check.hpp"
#include "host/io/bytes.hpp"

namespace tokemb::detail {

/// A regular file opened for reading; its size is taken when it is opened. Anything else (a
/// FIFO, a device, a directory, a socket) is refused with IoError saying what it is, without a
/// blocking open: it is opened with O_NONBLOCK and checked with fstat before anything is read.
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

/// InvalidArgument when \p path is empty or holds a NUL byte (a C path would stop there and name
/// another file: "victim\0.npy" is "victim"). \p what names the caller in the message.
void check_path(const std::string& path, const char* what);

/// True when the installed write interrupt check (set_write_interrupt_check) asks to stop.
bool interrupt_requested() noexcept;

/// For tests: when false, OutputFile never uses O_TMPFILE (the named-temporary fallback).
void set_unnamed_output_files(bool enabled) noexcept;

/// "a directory", "a FIFO (named pipe)", ... for a file type from st_mode.
const char* file_type_name(unsigned mode) noexcept;

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
