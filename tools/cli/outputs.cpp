// Same-file checks and staged, publish-last outputs of the tokemb CLI.
#include "tools/cli/outputs.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <tokemb/error.hpp>
#include <tokemb/io.hpp>

#include "tools/cli/errors.hpp"

namespace tokemb::cli {

namespace {

// "dir/" and "name" of a path ("" and "name" for a bare name).
std::pair<std::string, std::string> split_path(const std::string& path) {
  const std::size_t slash = path.rfind('/');
  if (slash == std::string::npos) return {"", path};
  return {path.substr(0, slash + 1), path.substr(slash + 1)};
}

// The directory part resolved (realpath) joined with the last component; when the directory
// does not exist either, the path made absolute and "."/".." removed lexically.
std::string resolved_path(const std::string& path) {
  auto [dir, name] = split_path(path);
  if (name == "." || name == ".." || name.empty()) {
    dir = path;
    name.clear();
  }
  char buf[PATH_MAX];
  if (::realpath(dir.empty() ? "." : dir.c_str(), buf) != nullptr) {
    std::string r = buf;
    if (!name.empty()) r += (r == "/" ? "" : "/") + name;
    return r;
  }
  std::string abs = path;
  if (abs.empty() || abs[0] != '/') {
    if (::getcwd(buf, sizeof buf) != nullptr) abs = std::string(buf) + "/" + path;
  }
  std::vector<std::string> parts;
  std::size_t i = 0;
  while (i <= abs.size()) {
    const std::size_t j = std::min(abs.find('/', i), abs.size());
    const std::string part = abs.substr(i, j - i);
    if (part == "..") {
      if (!parts.empty()) parts.pop_back();
    } else if (!part.empty() && part != ".") {
      parts.push_back(part);
    }
    i = j + 1;
  }
  std::string r;
  for (const std::string& p : parts) r += "/" + p;
  return r.empty() ? "/" : r;
}

[[noreturn]] void fail_errno(const std::string& what, int err) {
  throw IoError(what + ": " + std::strerror(err));
}

}  // namespace

bool same_file(const std::string& a, const std::string& b) {
  struct stat sa {
  }, sb{};
  const bool ea = ::stat(a.c_str(), &sa) == 0, eb = ::stat(b.c_str(), &sb) == 0;
  if (ea && eb) return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
  if (ea != eb) return false;
  return resolved_path(a) == resolved_path(b);
}

void check_distinct_files(const std::vector<NamedFile>& inputs,
                          const std::vector<NamedFile>& outputs) {
  for (std::size_t o = 0; o < outputs.size(); ++o) {
    for (const NamedFile& in : inputs) {
      if (same_file(outputs[o].path, in.path)) {
        throw UsageError(outputs[o].option + " '" + outputs[o].path + "' is the same file as " +
                         in.option + " '" + in.path + "': an output must not replace an input");
      }
    }
    for (std::size_t p = 0; p < o; ++p) {
      if (same_file(outputs[o].path, outputs[p].path)) {
        throw UsageError(outputs[o].option + " '" + outputs[o].path + "' is the same file as " +
                         outputs[p].option + " '" + outputs[p].path +
                         "': each output needs its own file");
      }
    }
  }
}

StagedOutput::StagedOutput(NamedFile file) : file_(std::move(file)) {
  {
    const auto [dir, name] = split_path(file_.path);
    if (name.empty() || name == "." || name == "..") {
      throw IoError(file_.option + " '" + file_.path + "' names a directory, not a file");
    }
  }
  // The library's rule for outputs: through a symbolic link to its target, never over a
  // directory, device, FIFO or read-only file; a replaced file keeps its permissions.
  int mode = -1;
  try {
    target_ = output_target(file_.path, &mode);
  } catch (const IoError& e) {
    throw IoError(file_.option + ": " + e.what());
  }
  const auto [dir, name] = split_path(target_);
  // mkstemp creates the file with O_CREAT | O_EXCL: never an existing file, never a link.
  // The name is cut so that it stays within NAME_MAX for any valid output name.
  std::string templ = dir + "." + name.substr(0, 64) + ".tmp-XXXXXX";
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  const int fd = ::mkstemp(buf.data());
  if (fd < 0) {
    const int err = errno;
    fail_errno(file_.option + " '" + file_.path + "': cannot create a file in the directory '" +
                   (dir.empty() ? std::string(".") : dir) + "'",
               err);
  }
  if (mode < 0) {  // a new file: what open(2) with 0666 would give under this umask
    const mode_t mask = ::umask(0);
    ::umask(mask);
    mode = static_cast<int>(0666 & ~mask);
  }
  (void)::fchmod(fd, static_cast<mode_t>(mode));  // mkstemp made it 0600
  ::close(fd);
  staging_ = buf.data();
}

StagedOutput::~StagedOutput() {
  if (!published_ && !staging_.empty()) ::unlink(staging_.c_str());
}

void StagedOutput::publish() {
  if (std::rename(staging_.c_str(), target_.c_str()) != 0) {
    const int err = errno;
    fail_errno(file_.option + ": renaming '" + staging_ + "' to '" + target_ + "' failed", err);
  }
  published_ = true;
}

void flush_stdout() {
  errno = 0;
  if (std::fflush(stdout) != 0 || std::ferror(stdout)) {
    const int err = errno != 0 ? errno : EIO;
    fail_errno("cannot write to standard output", err);
  }
}

}  // namespace tokemb::cli
