// Whole-file and ranged reads with pread; atomic writes through a uniquely named temporary and
// rename(2).
#include "host/io/file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>

#include <tokemb/io.hpp>

namespace tokemb {

namespace {
std::atomic<WriteInterruptCheck> g_interrupt_check{nullptr};
}  // namespace

void set_write_interrupt_check(WriteInterruptCheck check) noexcept { g_interrupt_check = check; }

std::string output_target(const std::string& path, int* existing_mode) {
  if (existing_mode != nullptr) *existing_mode = -1;
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return path;  // a new file (a missing directory fails later)
  std::string target = path;
  if (S_ISLNK(st.st_mode)) {
    char* resolved = ::realpath(path.c_str(), nullptr);
    if (resolved == nullptr) {
      const int err = errno;
      TOKEMB_FAIL(IoError, "'", path, "' is a symbolic link that points to no file (",
                  detail::errno_text(err), "); refusing to replace the link");
    }
    target = resolved;
    std::free(resolved);
    if (::stat(target.c_str(), &st) != 0) return target;
  }
  TOKEMB_EXPECTS(S_ISREG(st.st_mode), IoError, "'", path,
                 "' exists and is not a regular file (a directory, device or FIFO); tokemb "
                 "writes regular files only and will not replace it");
  TOKEMB_EXPECTS(::access(target.c_str(), W_OK) == 0, IoError, "'", path,
                 "' exists and is not writable; tokemb does not replace a read-only file");
  if (existing_mode != nullptr) *existing_mode = static_cast<int>(st.st_mode & 07777);
  return target;
}

}  // namespace tokemb

namespace tokemb::detail {

namespace {

// Largest write(2) between two interrupt checks.
constexpr std::size_t kWriteChunk = std::size_t{16} << 20;

// "dir/" and "name" of a path ("" and "name" for a bare name).
std::pair<std::string, std::string> split_path(const std::string& path) {
  const std::size_t slash = path.rfind('/');
  if (slash == std::string::npos) return {"", path};
  return {path.substr(0, slash + 1), path.substr(slash + 1)};
}

// Six random characters for a temporary's name: a per-process generator seeded from the
// clock, the process id and std::random_device, so that concurrent processes differ.
std::string random_suffix() {
  static const char alphabet[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  static std::atomic<std::uint64_t> counter{0};
  std::uint64_t seed = static_cast<std::uint64_t>(
      std::chrono::high_resolution_clock::now().time_since_epoch().count());
  seed ^= static_cast<std::uint64_t>(::getpid()) << 32;
  seed += counter.fetch_add(1) * 0x9E3779B97F4A7C15ull;
  try {
    std::random_device rd;
    seed ^= (static_cast<std::uint64_t>(rd()) << 32) | rd();
  } catch (...) {
    // No entropy source: the clock, pid and counter still make clashes unlikely, and O_EXCL
    // catches the rest.
  }
  std::mt19937_64 gen(seed);
  std::string s(6, 'x');
  for (char& c : s) c = alphabet[gen() % (sizeof alphabet - 1)];
  return s;
}

}  // namespace

InputFile::InputFile(const std::string& path) : path_(path), name_("'" + path + "'") {
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
    TOKEMB_EXPECTS(got > 0, IoError, "'", path_, "' changed while reading: it ended at offset ",
                   offset + done, ", but it had ", size_, " bytes when it was opened");
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

OutputFile::OutputFile(const std::string& path) {
  TOKEMB_EXPECTS(!path.empty(), InvalidArgument, "output path is empty");
  int mode = -1;
  path_ = output_target(path, &mode);
  const auto [dir, name] = split_path(path_);
  TOKEMB_EXPECTS(!name.empty(), InvalidArgument, "output path '", path, "' names a directory");
  // The output's own name may be up to NAME_MAX bytes: a prefix of it keeps the temporary's
  // name within the limit while still saying what it is for.
  const std::string stem = dir + "." + name.substr(0, 64) + ".tmp-";
  int err = 0;
  for (int attempt = 0; attempt < 100 && fd_ < 0; ++attempt) {
    tmp_ = stem + random_suffix();
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
    err = errno;
    if (fd_ < 0 && err != EEXIST && err != EINTR) break;
  }
  if (fd_ < 0) {
    TOKEMB_FAIL(IoError, "cannot create a temporary file '", tmp_, "' for '", path,
                "': ", errno_text(err));
  }
  // Replacing a file keeps its permissions (a private file stays private).
  if (mode >= 0) (void)::fchmod(fd_, static_cast<mode_t>(mode));
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
    const WriteInterruptCheck check = g_interrupt_check;
    if (check != nullptr && check()) {
      close_and_remove();
      TOKEMB_FAIL(IoError, "writing '", path_, "' was interrupted; the file was not written");
    }
    const std::size_t chunk = std::min(n - done, kWriteChunk);
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
  const WriteInterruptCheck check = g_interrupt_check;
  if (check != nullptr && check()) {
    close_and_remove();
    TOKEMB_FAIL(IoError, "writing '", path_, "' was interrupted; the file was not written");
  }
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
