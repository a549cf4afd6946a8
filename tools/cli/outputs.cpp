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

// \p e's message prefixed with the option that named the file ("--out: ...").
template <class E>
E detail_rethrow(const NamedFile& file, const E& e) {
  return E(file.option + ": " + e.what());
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

std::unique_ptr<OutputFile> open_output(const NamedFile& file) {
  try {
    return std::make_unique<OutputFile>(file.path);
  } catch (const IoError& e) {
    throw detail_rethrow<IoError>(file, e);
  } catch (const InvalidArgument& e) {
    throw detail_rethrow<InvalidArgument>(file, e);
  }
}

void publish_all(const std::vector<std::pair<NamedFile, OutputFile*>>& outputs) {
  // Every fsync first, then names and renames back to back: a kill during a long fsync leaves no
  // temporary name behind (the data is still in unnamed files), and the window in which one
  // output is published and another not is as short as the renames.
  for (const auto& [file, out] : outputs) {
    try {
      out->flush();
    } catch (const IoError& e) {
      throw detail_rethrow<IoError>(file, e);
    }
  }
  for (const auto& [file, out] : outputs) {
    try {
      out->prepare();
    } catch (const IoError& e) {
      throw detail_rethrow<IoError>(file, e);
    }
  }
  for (const auto& [file, out] : outputs) {
    try {
      out->publish();
    } catch (const IoError& e) {
      throw detail_rethrow<IoError>(file, e);
    }
  }
}

namespace {
int g_stdout_errno = 0;  // the reason of the first failed write to stdout
}  // namespace

void print_stdout(const std::string& text) {
  errno = 0;
  if (std::fwrite(text.data(), 1, text.size(), stdout) != text.size() && g_stdout_errno == 0) {
    g_stdout_errno = errno != 0 ? errno : EIO;
  }
}

void flush_stdout() {
  errno = 0;
  const bool flushed = std::fflush(stdout) == 0;
  const int err = errno;
  if (!flushed || std::ferror(stdout)) {
    // A write that failed earlier (inside fwrite) left its reason in g_stdout_errno; a later
    // fflush with nothing left to write reports none.
    fail_errno("cannot write to standard output",
               g_stdout_errno != 0 ? g_stdout_errno : (!flushed && err != 0 ? err : EIO));
  }
}

}  // namespace tokemb::cli
