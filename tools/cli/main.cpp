// The tokemb command-line tool: `tokemb demo`, `tokemb embed`. Exit codes: 0 success,
// 1 data or runtime error, 2 usage error. Every exception is caught here; nothing aborts.
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <new>
#include <string>

#include <tokemb/tokemb.hpp>

#include "tools/cli/args.hpp"
#include "tools/cli/commands.hpp"
#include "tools/cli/outputs.hpp"

namespace {

constexpr int kOk = 0, kDataError = 1, kUsageError = 2, kInterrupted = 130;

const char* const kMainHelp =
    R"HELP(Usage: tokemb <command> [options]

tokemb: fused token + learned positional embedding for GPT-style models (forward and backward),
with CUDA kernels and a CPU reference backend.

Commands:
  demo     the book's chapter-2 embedding walk-through on the GPU if present, else on the CPU
  embed    embed a file of token ids (.npy, nanoGPT .bin, llm.c shard) into an [N, T, D] .npy
  help     this text, followed by the help of every command (also: tokemb --help)
  version  version and backends (also: tokemb --version)

Run 'tokemb <command> --help' for a command's options.
Exit codes: 0 success, 1 data or runtime error, 2 usage error, 130 interrupted (embed).
)HELP";

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

void print_version() {
  std::printf("tokemb %d.%d.%d (CUDA backend: %s; CUDA devices visible: %d)\n",
              TOKEMB_VERSION_MAJOR, TOKEMB_VERSION_MINOR, TOKEMB_VERSION_PATCH,
              TOKEMB_WITH_CUDA ? "yes" : "no", tokemb::cuda_device_count());
}

int dispatch(int argc, char** argv, std::string& command) {
  if (argc < 2) {
    throw tokemb::cli::UsageError(
        "no command given; the commands are demo, embed, help and "
        "version (run 'tokemb --help')");
  }
  command = argv[1];
  if (command == "demo") return tokemb::cli::run_demo(argc, argv, 2);
  if (command == "embed") return tokemb::cli::run_embed(argc, argv, 2);
  if (command == "help" || command == "--help" || command == "-h") {
    if (argc > 2) throw tokemb::cli::UsageError(command + " takes no arguments");
    std::printf("%s\n---- tokemb demo --help\n%s\n---- tokemb embed --help\n%s", kMainHelp,
                tokemb::cli::kDemoHelp, tokemb::cli::kEmbedHelp);
    return kOk;
  }
  if (command == "version" || command == "--version") {
    if (argc > 2) throw tokemb::cli::UsageError(command + " takes no arguments");
    print_version();
    return kOk;
  }
  throw tokemb::cli::UsageError("unknown command '" + command +
                                "'; the commands are demo, embed, "
                                "help and version (run 'tokemb --help')");
}

}  // namespace

int main(int argc, char** argv) {
  std::string command;
  const auto prefix = [&] {
    return command.empty() || command[0] == '-' ? std::string("tokemb") : "tokemb " + command;
  };
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
