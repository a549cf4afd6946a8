// Whole-file and ranged reads with pread; atomic, fsynced writes through an unnamed (O_TMPFILE)
// or uniquely named temporary in the output's directory, published with rename(2).
#include "host/io/file.hpp"

#include <fcntl.h>
#include <limits.h>
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
std::atomic<bool> g_unnamed_files{true};
}  // namespace

void set_write_interrupt_check(WriteInterruptCheck check) noexcept { g_interrupt_check = check; }

namespace detail {

bool interrupt_requested() noexcept {
  const WriteInterruptCheck check = g_interrupt_check;
  return check != nullptr && check();
}

void set_unnamed_output_files(bool enabled) noexcept { g_unnamed_files = enabled; }
bool g_unnamed_files_enabled() noexcept { return g_unnamed_files; }

void check_path(const std::string& path, const char* what) {
  TOKEMB_EXPECTS(!path.empty(), InvalidArgument, what, ": the path is empty");
  const std::size_t nul = path.find('\0');
  if (nul != std::string::npos) {
    std::string shown;
    for (char c : path) shown += c == '\0' ? std::string("\\0") : std::string(1, c);
    TOKEMB_FAIL(InvalidArgument, what, ": the path '", shown, "' holds a NUL byte at index ", nul,
                "; a path cannot contain NUL (the system would see '", path.substr(0, nul), "')");
  }
}

const char* file_type_name(unsigned mode) noexcept {
  switch (mode & S_IFMT) {
    case S_IFREG:
      return "a regular file";
    case S_IFDIR:
      return "a directory";
    case S_IFIFO:
      return "a FIFO (named pipe)";
    case S_IFCHR:
      return "a character device";
    case S_IFBLK:
      return "a block device";
    case S_IFSOCK:
      return "a socket";
    case S_IFLNK:
      return "a symbolic link";
    default:
      return "not a regular file";
  }
}

}  // namespace detail

std::string output_target(const std::string& path, int* existing_mode) {
  if (existing_mode != nullptr) *existing_mode = -1;
  detail::check_path(path, "output path");
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
  TOKEMB_EXPECTS(S_ISREG(st.st_mode), IoError, "'", path, "' exists and is ",
                 detail::file_type_name(st.st_mode),
                 ", not a regular file; tokemb writes regular files only and will not replace it");
  // Read-only is decided from the mode bits, so that root (whom access() always grants) does
  // not replace a 0444 file either; access() adds ACLs and read-only mounts for other users.
  const bool no_write_bit = (st.st_mode & (S_IWUSR | S_IWGRP | S_IWOTH)) == 0;
  TOKEMB_EXPECTS(!no_write_bit && ::access(target.c_str(), W_OK) == 0, IoError, "'", path,
                 "' exists and is read-only (mode 0", std::oct, (st.st_mode & 07777), std::dec,
                 "); tokemb does not replace a read-only file");
  if (existing_mode != nullptr) *existing_mode = static_cast<int>(st.st_mode & 07777);
  return target;
}

}  // namespace tokemb

namespace tokemb::detail {

namespace {

// Largest write(2) between two interrupt checks.
constexpr std::size_t kWriteChunk = std::size_t{16} << 20;

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
  check_path(path, "input path");
  // O_NONBLOCK: opening a FIFO that has no writer would otherwise block forever. The type is
  // checked on the descriptor (no race with a rename), before anything is read; regular files
  // ignore the flag, which is cleared anyway.
  do {
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
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
    TOKEMB_FAIL(IoError, "'", path, "' is ", file_type_name(st.st_mode),
                ", not a regular file; tokemb reads regular files only");
  }
  const int flags = ::fcntl(fd_, F_GETFL);
  if (flags >= 0) (void)::fcntl(fd_, F_SETFL, flags & ~O_NONBLOCK);
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

}  // namespace tokemb::detail

namespace tokemb {

using detail::errno_text;

OutputFile::OutputFile(const std::string& path) : path_(path) {
  detail::check_path(path, "output path");
  int mode = -1;
  const std::string target = output_target(path, &mode);
  {
    const std::size_t slash = target.rfind('/');
    dir_ = slash == std::string::npos ? "" : target.substr(0, slash + 1);
    name_ = slash == std::string::npos ? target : target.substr(slash + 1);
  }
  TOKEMB_EXPECTS(!name_.empty() && name_ != "." && name_ != "..", InvalidArgument, "output path '",
                 path, "' names a directory, not a file");
  // The directory is opened once: the data is created in it, linked, renamed and fsynced
  // through this descriptor, never looked up by name again.
  do {
    dir_fd_ = ::open(dir_.empty() ? "." : dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  } while (dir_fd_ < 0 && errno == EINTR);
  if (dir_fd_ < 0) {
    const int err = errno;
    TOKEMB_FAIL(IoError, "cannot write '", path, "': cannot open its directory '",
                dir_.empty() ? std::string(".") : dir_, "': ", errno_text(err));
  }
  // A name the file system cannot hold would only fail at the final rename, after all the work.
  long name_max = ::fpathconf(dir_fd_, _PC_NAME_MAX);
  if (name_max <= 0) name_max = NAME_MAX;
  if (name_.size() > static_cast<std::size_t>(name_max)) {
    discard();
    TOKEMB_FAIL(IoError, "cannot write '", path, "': its file name is ", name_.size(),
                " bytes long; the file system allows at most ", name_max, " (",
                errno_text(ENAMETOOLONG), ")");
  }
  int err = 0;
#ifdef O_TMPFILE
  // An unnamed file is linked into the directory through /proc/self/fd (linkat with
  // AT_EMPTY_PATH needs a capability most processes lack): without /proc, the named fallback.
  if (detail::g_unnamed_files_enabled() && ::access("/proc/self/fd", X_OK) == 0) {
    do {
      fd_ = ::openat(dir_fd_, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, 0666);
    } while (fd_ < 0 && errno == EINTR);
    err = fd_ < 0 ? errno : 0;
    // Kernels and file systems without O_TMPFILE: the named fallback below.
    if (fd_ < 0 && err != EOPNOTSUPP && err != EISDIR && err != EINVAL && err != ENOENT) {
      discard();
      TOKEMB_FAIL(IoError, "cannot write '", path, "': cannot create a file in its directory '",
                  dir_.empty() ? std::string(".") : dir_, "': ", errno_text(err));
    }
    unnamed_ = fd_ >= 0;
  }
#endif
  if (fd_ < 0) {
    // A unique name, created exclusively and never through a symbolic link; the output's own
    // name is cut so that any valid output name leaves room for the suffix.
    const std::string stem = "." + name_.substr(0, 64) + ".tmp-";
    for (int attempt = 0; attempt < 100 && fd_ < 0; ++attempt) {
      tmp_name_ = stem + detail::random_suffix();
      fd_ = ::openat(dir_fd_, tmp_name_.c_str(),
                     O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
      err = errno;
      if (fd_ < 0 && err != EEXIST && err != EINTR) break;
    }
    if (fd_ < 0) {
      tmp_name_.clear();
      discard();
      TOKEMB_FAIL(IoError, "cannot write '", path, "': cannot create a file in its directory '",
                  dir_.empty() ? std::string(".") : dir_, "': ", errno_text(err));
    }
  }
  // Replacing a file keeps its permissions (a private file stays private); a new file has
  // 0666 minus the umask from open(2).
  if (mode >= 0) (void)::fchmod(fd_, static_cast<mode_t>(mode));
}

OutputFile::~OutputFile() {
  if (!published_) discard();
}

void OutputFile::discard() noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  if (!tmp_name_.empty() && dir_fd_ >= 0) ::unlinkat(dir_fd_, tmp_name_.c_str(), 0);
  tmp_name_.clear();
  if (dir_fd_ >= 0) ::close(dir_fd_);
  dir_fd_ = -1;
}

void OutputFile::fail(int err, const std::string& what) {
  discard();
  TOKEMB_FAIL(IoError, what, " '", path_, "' failed: ", errno_text(err));
}

void OutputFile::write(const void* data, std::size_t n) {
  TOKEMB_EXPECTS(fd_ >= 0 && !prepared_, IoError, "writing '", path_,
                 "': the file is already closed");
  const auto* p = static_cast<const unsigned char*>(data);
  std::size_t done = 0;
  while (done < n) {
    if (detail::interrupt_requested()) {
      discard();
      TOKEMB_FAIL(IoError, "writing '", path_, "' was interrupted; the file was not written");
    }
    const std::size_t chunk = std::min(n - done, detail::kWriteChunk);
    const ssize_t put = ::write(fd_, p + done, chunk);
    if (put < 0 && errno == EINTR) continue;
    if (put <= 0) fail(put < 0 ? errno : EIO, "writing");
    done += static_cast<std::size_t>(put);
  }
}

void OutputFile::flush() {
  if (flushed_ || prepared_) return;
  TOKEMB_EXPECTS(fd_ >= 0, IoError, "publishing '", path_, "': the file is already closed");
  stop_if_interrupted();
  if (::fsync(fd_) != 0 && errno != EINVAL && errno != EROFS) fail(errno, "flushing");
  flushed_ = true;
}

// Ctrl-C before a step that gives the data a name: discard it, the output stays as it was.
void OutputFile::stop_if_interrupted() {
  if (!detail::interrupt_requested()) return;
  discard();
  TOKEMB_FAIL(IoError, "writing '", path_, "' was interrupted; the file was not written");
}

void OutputFile::prepare() {
  if (prepared_) return;
  flush();
  stop_if_interrupted();  // flush() may have run long before, in publish_all's first pass
  // The output may have changed since the constructor checked it (a directory or a read-only
  // file put in its place): check again before anything is published.
  try {
    (void)output_target(path_);
  } catch (...) {
    discard();
    throw;
  }
  if (unnamed_) {
    // Give the data a temporary name in the directory: publish() is then one rename.
    const std::string stem = "." + name_.substr(0, 64) + ".tmp-";
    const std::string proc = "/proc/self/fd/" + std::to_string(fd_);
    int err = 0;
    for (int attempt = 0; attempt < 100; ++attempt) {
      tmp_name_ = stem + detail::random_suffix();
      int rc = ::linkat(AT_FDCWD, proc.c_str(), dir_fd_, tmp_name_.c_str(), AT_SYMLINK_FOLLOW);
      if (rc != 0 && errno == ENOENT) {  // no /proc: needs CAP_DAC_READ_SEARCH
        rc = ::linkat(fd_, "", dir_fd_, tmp_name_.c_str(), AT_EMPTY_PATH);
      }
      err = rc == 0 ? 0 : errno;
      if (rc == 0 || (err != EEXIST && err != EINTR)) break;
    }
    if (err != 0) {
      tmp_name_.clear();
      fail(err, "giving a name to");
    }
    unnamed_ = false;
  }
  prepared_ = true;
}

void OutputFile::publish() {
  prepare();
  // The temporary's name must still be our data: a file or link put in its place is never
  // published (the data itself was never reopened by name).
  struct stat mine {
  }, named{};
  if (::fstat(fd_, &mine) != 0 ||
      ::fstatat(dir_fd_, tmp_name_.c_str(), &named, AT_SYMLINK_NOFOLLOW) != 0 ||
      mine.st_dev != named.st_dev || mine.st_ino != named.st_ino) {
    discard();
    TOKEMB_FAIL(IoError, "publishing '", path_,
                "' failed: its temporary file was replaced by another file; nothing was "
                "published");
  }
  if (::renameat(dir_fd_, tmp_name_.c_str(), dir_fd_, name_.c_str()) != 0) {
    const int err = errno;
    discard();
    TOKEMB_FAIL(IoError, "publishing '", path_,
                "' (renaming it into place) failed: ", errno_text(err));
  }
  tmp_name_.clear();
  published_ = true;
  // The rename is durable once the directory is: fsync it before reporting success.
  const int rc = ::fsync(dir_fd_);
  const int err = errno;
  ::close(fd_);
  fd_ = -1;
  ::close(dir_fd_);
  dir_fd_ = -1;
  if (rc != 0 && err != EINVAL && err != EROFS) {
    TOKEMB_FAIL(IoError, "'", path_,
                "' was written, but flushing its directory failed: ", errno_text(err));
  }
}

void OutputFile::commit() {
  prepare();
  publish();
}

}  // namespace tokemb
