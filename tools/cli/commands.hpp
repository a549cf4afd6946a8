#pragma once
// Private to the tokemb CLI: the commands. Each takes its parsed options and returns the process
// exit code; errors are thrown (UsageError: exit 2; tokemb::Error and other exceptions: exit 1)
// and reported by main().

#include "tools/cli/command_line.hpp"

namespace tokemb::cli {

int run_demo(const DemoOptions& options);
int run_embed(const EmbedOptions& options);

}  // namespace tokemb::cli
