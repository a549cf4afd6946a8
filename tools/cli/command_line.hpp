#pragma once
// Private to the tokemb CLI: its command line, declared with CLI11 (command_line.cpp), parsed into
// plain option structs. Only command_line.cpp includes CLI11; the commands see these structs.

#include <cstdint>
#include <optional>
#include <string>

namespace tokemb::cli {

/// `tokemb demo`'s options.
struct DemoOptions {
  std::optional<std::string> device;  ///< "cpu", "cuda" or "cuda:N"; absent: choose_device decides
};

/// `tokemb embed`'s options, already checked for type and range (see command_line.cpp).
struct EmbedOptions {
  std::string ids;
  std::int64_t vocab = 0, dim = 0, context = 0;
  std::string out;
  std::optional<std::int64_t> stride;  ///< absent: the context length
  std::int64_t batch = 8;
  std::optional<std::int64_t> max_windows;  ///< absent: every window
  std::uint64_t seed = 123;                 ///< unused with weights
  std::optional<std::string> weights;       ///< mutually exclusive with --seed
  std::string dtype = "f32";                ///< f32, bf16 or f16
  std::optional<std::string> device;        ///< "cpu", "cuda" or "cuda:N"
  std::string format = "auto";              ///< auto, npy, bin or llmc
  std::optional<std::string> save_weights;
  bool quiet = false;
};

/// What a command line asks for.
struct Invocation {
  /// "demo", "embed", "help" or "version" (also for --help / --version).
  std::string command;
  /// Set when the answer is a help text: print it and exit 0 (help, --help, CMD --help).
  std::optional<std::string> help;
  DemoOptions demo;
  EmbedOptions embed;
};

/// Parses argv[1..argc) with CLI11. Every malformed command line throws UsageError (exit code 2)
/// worded as "--batch 0 is out of range; expected ...", whatever CLI11 raised. \p command is set
/// as soon as a command is recognised, also when parsing it then fails, so that the error message
/// can name it.
Invocation parse_command_line(int argc, char** argv, std::string& command);

/// "tokemb 0.1.0 (CUDA backend: no; CUDA devices visible: 0)".
std::string version_line();

}  // namespace tokemb::cli
