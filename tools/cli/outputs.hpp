#pragma once
// Private to the tokemb CLI: never losing a user's file. Outputs are compared with the inputs
// and with each other as files (not spellings) before anything is read; each output is staged
// in its own directory at the start (so a missing or unwritable directory fails before the long
// work) and published (renamed over its path) only after every output is complete and ready.

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <tokemb/io.hpp>

namespace tokemb::cli {

/// A file named on the command line, with the option that named it ("--ids").
struct NamedFile {
  std::string option;
  std::string path;
};

/// True when \p a and \p b are the same file: the same device and inode when both exist
/// (hard links and symbolic links included), else the same resolved path (".", ".." and links
/// in the directory part resolved).
bool same_file(const std::string& a, const std::string& b);

/// Throws UsageError when an output is the same file as an input or as another output, naming
/// both options and paths.
void check_distinct_files(const std::vector<NamedFile>& inputs,
                          const std::vector<NamedFile>& outputs);

/// An output in the making (tokemb::OutputFile: the library's rule for outputs, an unnamed
/// O_TMPFILE file or a uniquely named temporary next to the output, kept open from creation to
/// publication), created when the run starts so that a missing or unwritable directory or an
/// overlong name fails before the long work. Errors name \p file's option and path.
std::unique_ptr<OutputFile> open_output(const NamedFile& file);

/// Publishes every output, or none: each is prepared (flushed to disk, the output checked
/// again) before the first is renamed into place, in the given order. Errors name the option.
void publish_all(const std::vector<std::pair<NamedFile, OutputFile*>>& outputs);

/// Writes \p text to stdout, remembering the system's reason if it fails (ENOSPC on a full
/// disk) for flush_stdout.
void print_stdout(const std::string& text);

/// Flushes stdout; IoError ("cannot write to standard output: ...") if anything written to it
/// failed. Called before outputs are published, so that a failing stdout leaves them alone.
void flush_stdout();

}  // namespace tokemb::cli
