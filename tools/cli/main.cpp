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
#include "tools/cli/outputs.hpp"

namespace {

constexpr int kOk = 0, kDataError = 1, kUsageError = 2, kInterrupted = 130;

int dispatch(int argc, char** argv, std::string& command) {
  const tokemb::cli::Invocation inv = tokemb::cli::parse_command_line(argc, argv, command);
  if (inv.help) {
    tokemb::cli::print_stdout(*inv.help);
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
    // A write that failed earlier (a full buffer flushed inside printf) only shows in ferror.
    tokemb::cli::flush_stdout();
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
    std::fprintf(stderr, "%s: error: %s\n", prefix().c_str(), e.what());
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
