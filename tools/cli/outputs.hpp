#pragma once
// Private to the tokemb CLI: never losing a user's file. Outputs are compared with the inputs
// and with each other as files (not spellings) before anything is read; each output is staged
// in its own directory at the start (so a missing or unwritable directory fails before the long
// work) and published (renamed over its path) only after every output is complete.

#include <string>
#include <vector>

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

/// An output in the making: a new, uniquely named, empty staging file next to the output
/// (".NAME.tmp-XXXXXX", created exclusively, never through a link, with the permissions of the
/// file it will replace) that the writers fill by replacing it, and that publish() renames over
/// the output (tokemb::output_target: the target of a symbolic link; never a directory, device,
/// FIFO or read-only file). Destroying an unpublished output
/// removes the staging file; the output itself is never touched before publish().
class StagedOutput {
 public:
  /// Creates the staging file; IoError (naming \p option and the directory) when the
  /// directory is missing or not writable.
  StagedOutput(NamedFile file);
  ~StagedOutput();
  StagedOutput(const StagedOutput&) = delete;
  StagedOutput& operator=(const StagedOutput&) = delete;

  /// Where to write the output's contents (a writer may replace this file).
  const std::string& staging_path() const noexcept { return staging_; }
  const std::string& path() const noexcept { return file_.path; }
  /// Renames the staging file over the output. IoError if the staging file is gone or the
  /// rename fails.
  void publish();

 private:
  NamedFile file_;
  std::string target_;  // the file publish() replaces: file_.path, or the target of its link
  std::string staging_;
  bool published_ = false;
};

/// Flushes stdout; IoError ("cannot write to standard output: ...") if anything written to it
/// failed. Called before outputs are published, so that a failing stdout leaves them alone.
void flush_stdout();

}  // namespace tokemb::cli
