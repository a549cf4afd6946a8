// Whole-file and ranged reads; atomic writes through a temporary file and rename(2).
#include "host/io/file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>

namespace tokemb::detail {

namespace {

std::string errno_text(int err) { return std::strerror(err); }

}  // namespace

InputFile::InputFile(const std::string& path) : path_(path) {
  do {
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  } while (fd_ < 0 && errno == EINTR);
  if (fd_ < 0) {
    const int err = errno;
    TOKEMB_FAIL(IoError, "cannot open '", path, "' for reading: ", errno_text(err));
  }
  struct stat st {};
  if (::fstat(fd_, &st) != 0) {
    const int err = errno;
    ::close(fd_);
    fd_ = -1;
    TOKEMB_FAIL(IoError, "cannot stat '", path, "': ", errno_text(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd_);
    fd_ = -1;
    TOKEMB_FAIL(IoError, "'", path, "' is not a regular file");
  }
  size_ = static_cast<std::uint64_t>(st.st_size);
}

InputFile::~InputFile() {
  if (fd_ >= 0) ::close(fd_);
}

void InputFile::read_at(std::uint64_t offset, void* dst, std::size_t n) const {
  TOKEMB_EXPECTS(offset <= size_ && n <= size_ - offset, IoError, "'", path_, "' is truncated: ", n,
                 " bytes needed at offset ", offset, ", but the file has ", size_, " bytes");
  auto* p = static_cast<unsigned char*>(dst);
  std::size_t done = 0;
  while (done < n) {
    const std::size_t chunk = std::min<std::size_t>(n - done, std::size_t{1} << 30);
    const ssize_t got = ::pread(fd_, p + done, chunk, static_cast<off_t>(offset + done));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) {
      const int err = errno;
      TOKEMB_FAIL(IoError, "reading '", path_, "' at offset ", offset + done,
                  " failed: ", errno_text(err));
    }
    TOKEMB_EXPECTS(got > 0, IoError, "'", path_, "' is truncated: it ended at offset ",
                   offset + done, " while ", n - done, " more bytes were expected");
    done += static_cast<std::size_t>(got);
  }
}

std::vector<unsigned char> read_whole_file(const std::string& path) {
  InputFile f(path);
  TOKEMB_EXPECTS(f.size() <= static_cast<std::uint64_t>(SIZE_MAX), IoError, "'", path,
                 "' is too large (", f.size(), " bytes) for this platform");
  std::vector<unsigned char> bytes = make_bytes(static_cast<std::size_t>(f.size()), path.c_str());
  f.read_at(0, bytes.data(), bytes.size());
  return bytes;
}

OutputFile::OutputFile(const std::string& path) : path_(path), tmp_(path + ".tmp") {
  TOKEMB_EXPECTS(!path.empty(), InvalidArgument, "output path is empty");
  do {
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  } while (fd_ < 0 && errno == EINTR);
  if (fd_ < 0) {
    const int err = errno;
    TOKEMB_FAIL(IoError, "cannot create '", tmp_, "' (the temporary file for '", path,
                "'): ", errno_text(err));
  }
}

OutputFile::~OutputFile() { close_and_remove(); }

void OutputFile::close_and_remove() noexcept {
  if (fd_ < 0) return;
  ::close(fd_);
  fd_ = -1;
  ::unlink(tmp_.c_str());
}

void OutputFile::write(const void* data, std::size_t n) {
  TOKEMB_EXPECTS(fd_ >= 0, IoError, "writing '", path_, "': the file is already closed");
  const auto* p = static_cast<const unsigned char*>(data);
  std::size_t done = 0;
  while (done < n) {
    const std::size_t chunk = std::min<std::size_t>(n - done, std::size_t{1} << 30);
    const ssize_t put = ::write(fd_, p + done, chunk);
    if (put < 0 && errno == EINTR) continue;
    if (put <= 0) {
      const int err = put < 0 ? errno : EIO;
      close_and_remove();
      TOKEMB_FAIL(IoError, "writing '", tmp_, "' (for '", path_, "') failed: ", errno_text(err));
    }
    done += static_cast<std::size_t>(put);
  }
}

void OutputFile::commit() {
  TOKEMB_EXPECTS(fd_ >= 0, IoError, "committing '", path_, "': the file is already closed");
  if (::fsync(fd_) != 0 && errno != EINVAL && errno != EROFS) {
    const int err = errno;
    close_and_remove();
    TOKEMB_FAIL(IoError, "flushing '", tmp_, "' (for '", path_, "') failed: ", errno_text(err));
  }
  const int rc = ::close(fd_);
  const int close_err = errno;
  fd_ = -1;
  if (rc != 0) {
    ::unlink(tmp_.c_str());
    TOKEMB_FAIL(IoError, "closing '", tmp_, "' (for '", path_,
                "') failed: ", errno_text(close_err));
  }
  if (std::rename(tmp_.c_str(), path_.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp_.c_str());
    TOKEMB_FAIL(IoError, "renaming '", tmp_, "' to '", path_, "' failed: ", errno_text(err));
  }
}

}  // namespace tokemb::detail
