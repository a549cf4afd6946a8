#pragma once
// Private to the tokemb CLI: the commands. Each returns the process exit code; errors are thrown
// (UsageError: exit 2; tokemb::Error and other exceptions: exit 1) and reported by main().

namespace tokemb::cli {

int run_demo(int argc, char** argv, int first);
int run_embed(int argc, char** argv, int first);

extern const char* const kDemoHelp;
extern const char* const kEmbedHelp;

}  // namespace tokemb::cli
