// The tokemb command-line tool: `tokemb demo`, `tokemb embed`. Exit codes: 0 success,
// 1 data or runtime error, 2 usage error. Every exception is caught here; nothing aborts.
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <new>
#include <string>

#include <tokemb/tokemb.hpp>

#include "tools/cli/command_line.hpp"
#include "tools/cli/commands.hpp"
#include "tools/cli/errors.hpp"

namespace {

constexpr int kOk = 0, kDataError = 1, kUsageError = 2, kInterrupted = 130;

// Library messages end with the source location that raised them, e.g.
// " (/src/host/npy.cpp:270)"; a command-line user gets the message without it.
std::string without_locations(std::string msg) {
  for (;;) {
    if (msg.empty() || msg.back() != ')') return msg;
    const std::size_t open = msg.rfind(" (");
    if (open == std::string::npos) return msg;
    const std::string inner = msg.substr(open + 2, msg.size() - open - 3);
    const std::size_t colon = inner.rfind(':');
    if (colon == std::string::npos || colon + 1 == inner.size() ||
        inner.find_first_not_of("0123456789", colon + 1) != std::string::npos)
      return msg;
    const std::string file = inner.substr(0, colon);
    const auto ends = [&](const char* ext) {
      const std::size_t n = std::strlen(ext);
      return file.size() > n && file.compare(file.size() - n, n, ext) == 0;
    };
    if (!(ends(".cpp") || ends(".hpp") || ends(".cu") || ends(".cuh"))) return msg;
    msg.erase(open);
  }
}

int dispatch(int argc, char** argv, std::string& command) {
  const tokemb::cli::Invocation inv = tokemb::cli::parse_command_line(argc, argv, command);
  if (inv.help) {
    std::fputs(inv.help->c_str(), stdout);
    return kOk;
  }
  if (inv.command == "demo") return tokemb::cli::run_demo(inv.demo);
  if (inv.command == "embed") return tokemb::cli::run_embed(inv.embed);
  std::printf("%s\n", tokemb::cli::version_line().c_str());  // version, --version
  return kOk;
}

}  // namespace

int main(int argc, char** argv) {
  std::string command;
  const auto prefix = [&] { return command.empty() ? std::string("tokemb") : "tokemb " + command; };
  try {
    const int rc = dispatch(argc, argv, command);
    if (std::fflush(stdout) != 0) {
      std::fprintf(stderr, "%s: error: cannot write to standard output: %s\n", prefix().c_str(),
                   std::strerror(errno));
      return kDataError;
    }
    return rc;
  } catch (const tokemb::cli::UsageError& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "%s: usage error: %s\n", prefix().c_str(), e.what());
    return kUsageError;
  } catch (const tokemb::cli::Interrupted& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "%s: %s\n", prefix().c_str(), e.what());
    return kInterrupted;
  } catch (const tokemb::Error& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "%s: error: %s\n", prefix().c_str(), without_locations(e.what()).c_str());
    return kDataError;
  } catch (const std::bad_alloc&) {
    std::fflush(stdout);
    std::fprintf(stderr, "%s: error: out of host memory\n", prefix().c_str());
    return kDataError;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "%s: error: %s\n", prefix().c_str(), e.what());
    return kDataError;
  } catch (...) {
    std::fflush(stdout);
    std::fprintf(stderr, "%s: error: unknown exception\n", prefix().c_str());
    return kDataError;
  }
}
