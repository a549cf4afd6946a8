#pragma once
/// \file io.hpp
/// Saving and loading tables: NumPy .npy and safetensors. Loading reads and checks the whole
/// file (dtype, shape, byte size, header) before anything is written to the destination, so a
/// truncated, corrupt or mismatched file raises IoError / InvalidArgument and leaves the table as
/// it was. Writers write into an OutputFile (below) and publish it only when it is complete, so
/// \p path is never left half-written. Every function that takes a path refuses one that holds a
/// NUL byte (InvalidArgument), before touching any file.
///
/// Errors: IoError when a file cannot be opened, read or written, or is malformed (bad magic,
/// bad header, truncated, overlapping or out-of-range offsets, sizes that do not add up);
/// InvalidArgument when a well-formed file does not fit the destination (missing tensor name,
/// dtype or shape mismatch) or an argument is bad. The parse_* functions accept arbitrary bytes:
/// they never read outside [bytes, bytes + size), never allocate more than the input size
/// implies, and throw only tokemb exceptions.
///
/// dtypes. .npy: f32 is '<f4', f16 '<f2', i32 '<i4', i64 '<i8'. NumPy has no bfloat16, so a
/// bf16 tensor is saved widened (exactly) to '<f4', and loading '<f4' into a bf16 table rounds
/// to nearest even: a bf16 table survives a round trip bitwise and the file opens in any NumPy.
/// safetensors: F32, F16, BF16, I32, I64 natively. In both formats the file's dtype must equal
/// the destination's, except that f32 data may be loaded into a bf16 or f16 table (rounded to
/// nearest even; how GPT-2's f32 checkpoint fills a bf16 module). Data is little-endian.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <tokemb/embedding.hpp>
#include <tokemb/tensor.hpp>

namespace tokemb {

/// A tensor held in host memory (what the readers return).
struct HostTensor {
  DType dtype = DType::f32;
  Shape shape;
  std::vector<unsigned char> data;  ///< shape.numel() * dtype_size(dtype) bytes, little-endian
  TensorView view() const { return TensorView(data.data(), dtype, shape, Device::cpu()); }
};

// ---- interruption -----------------------------------------------------------------------------

/// A function that returns true once the program wants long writes to stop (e.g. it reads a flag
/// that the program's SIGINT handler sets). It must be safe to call from any thread.
using WriteInterruptCheck = bool (*)() noexcept;
/// Installs \p check for every writer of this library (save_npy, save_safetensors,
/// save_weights, NpyWriter, OutputFile) and for the safetensors header parser: writers call it
/// before each chunk of at most 16 MiB they write and before they publish the file, the parser
/// every 4096 JSON values; when it returns true they discard their output (or stop parsing) and
/// throw IoError ("... was interrupted"), leaving \p path as it was. nullptr (the default)
/// removes the check. Process-wide.
void set_write_interrupt_check(WriteInterruptCheck check) noexcept;

/// The rule every tokemb writer (and the CLI) applies to an output path before writing it:
/// returns the file to replace, \p path itself or, when \p path is a symbolic link, the file it
/// points to (written through, as a shell redirect does; the link stays a link). Sets
/// \p existing_mode to the permission bits of the file being replaced, or to -1 when there is
/// none (then a new file gets 0666 minus the umask). Throws IoError when an existing output is
/// not a regular file (a directory, device or FIFO: replacing /dev/null with a file would break
/// the system), when it is read-only (no write permission bit set, decided from the mode bits so
/// that root does not replace a 0444 file either, or not writable by this process), or when a
/// symbolic link points nowhere; InvalidArgument when \p path is empty or holds a NUL byte.
std::string output_target(const std::string& path, int* existing_mode = nullptr);

/// An output file in the making; every tokemb writer writes through one. The constructor applies
/// output_target, checks that the file's name fits the file system (NAME_MAX, usually 255
/// bytes) and opens the file's data in the output's directory: an unnamed file (Linux
/// O_TMPFILE) where the file system supports it, so that a process killed while it writes
/// (SIGKILL, the OOM killer) leaves nothing behind (prepare() gives the finished file a temporary
/// name that publish() renames away); elsewhere a new temporary ".NAME.tmp-XXXXXX"
/// created exclusively, never through a symbolic link. The descriptor is kept from creation to
/// publication: the data is never reopened by name. Errors (IoError) name \p path, never a
/// temporary. A replaced file keeps its permission bits; a new one gets 0666 minus the umask.
///
/// prepare() makes the file ready to publish: it calls the interrupt check, fsyncs the data,
/// checks the output again (output_target) and, for an unnamed file, links it into the
/// directory under a temporary name. publish() renames it over the output and fsyncs the
/// directory, so that the new file survives a crash once publish() returns. commit() is both.
/// Several outputs that must appear together are all flushed, then all prepared, then all
/// published.
/// Destroying an unpublished OutputFile discards its data (an unnamed file vanishes; a temporary
/// is removed), so \p path is either untouched or complete, and concurrent writers of one path
/// each publish a whole file.
class OutputFile {
 public:
  explicit OutputFile(const std::string& path);
  ~OutputFile();
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;

  /// Appends \p n bytes (interrupt check before every chunk of at most 16 MiB).
  void write(const void* data, std::size_t n);
  /// Makes the data durable (fsync) without naming it; prepare() does it when it has not been
  /// done. Outputs that appear together: flush all, then prepare all, then publish all, so that
  /// no temporary name exists while a (possibly long) fsync runs.
  void flush();
  void prepare();
  void publish();
  void commit();
  /// The path given to the constructor.
  const std::string& path() const noexcept { return path_; }
  /// True when the data lives in an unnamed (O_TMPFILE) file until prepare().
  bool unnamed() const noexcept { return unnamed_; }

 private:
  void discard() noexcept;
  void stop_if_interrupted();
  [[noreturn]] void fail(int err, const std::string& what);
  std::string path_;      // as given (messages)
  std::string dir_;       // directory of the file replaced ("" for the working directory)
  std::string name_;      // its name in dir_
  std::string tmp_name_;  // the temporary's name in dir_; empty while unnamed
  int dir_fd_ = -1, fd_ = -1;
  bool unnamed_ = false, flushed_ = false, prepared_ = false, published_ = false;
};

// ---- .npy --------------------------------------------------------------------------------------

/// The header of a .npy file: descr such as "<f4", "<i8", "<u2"; C-order shape; where the
/// data starts. parse_npy_header checks the magic, version, header syntax and that the file is
/// long enough for the data; it accepts any descr (callers decide which they support). A header
/// longer than npy_max_header_bytes is refused before it is read (NumPy itself reads at most
/// 10000 bytes by default; nothing real comes near the limit).
struct NpyHeader {
  std::string descr;
  bool fortran_order = false;
  std::vector<std::int64_t> shape;
  std::size_t data_offset = 0;
  std::size_t data_bytes = 0;  ///< numel * item size, checked against the file size
};
NpyHeader parse_npy_header(const void* bytes, std::size_t size);
/// The longest .npy header (the dict after the length field) tokemb reads: 256 KiB.
constexpr std::size_t npy_max_header_bytes = std::size_t{256} << 10;

/// Parses a complete .npy file image held in memory. Throws IoError on anything malformed, on a
/// descr other than '<f4', '<f2', '<i4', '<i8' (also '=' or '|' byte order), on big-endian or
/// Fortran-order (rank >= 2) data, rank > 4, or bytes after the data.
HostTensor parse_npy(const void* bytes, std::size_t size);
/// Reads and parses the .npy file \p path (errors name the file).
HostTensor read_npy(const std::string& path);
/// Writes \p tensor (any device; synchronises \p stream) as .npy version 1.0, header padded to
/// 64 bytes; bf16 is written as '<f4' (see above).
void save_npy(const std::string& path, const TensorView& tensor, StreamView stream);
/// Reads \p path into \p dst (any device): the shape must be equal, the dtype equal (or f32
/// into bf16/f16). Synchronises \p stream; \p dst is untouched on any error.
void load_npy(const std::string& path, const TensorView& dst, StreamView stream);

/// Writes a large .npy of known dtype and shape chunk by chunk (the CLI's [N, T, D] output):
/// data goes to an OutputFile (see above); commit() checks that every byte was written and
/// publishes the file; destroying an uncommitted writer discards it. Given an OutputFile of the
/// caller's, the writer writes into it and commit() only checks the byte count: the caller
/// prepares and publishes the file (with its other outputs).
class NpyWriter {
 public:
  NpyWriter(const std::string& path, DType dtype, Shape shape);
  NpyWriter(OutputFile& file, DType dtype, Shape shape);
  ~NpyWriter();
  NpyWriter(const NpyWriter&) = delete;
  NpyWriter& operator=(const NpyWriter&) = delete;
  /// Appends host bytes (a whole number of elements).
  void write(const void* data, std::size_t bytes);
  void commit();

 private:
  struct Impl;
  static std::unique_ptr<Impl> open(const std::string& path, OutputFile* file, DType dtype,
                                    const Shape& shape);
  std::unique_ptr<Impl> impl_;  // null once committed
};

// ---- safetensors -------------------------------------------------------------------------------

/// Parses a complete safetensors file image held in memory into named tensors, in file order.
/// Validates the 8-byte header length (<= 100 MB, the reference implementation's limit, and
/// within the input), the JSON header (strict RFC 8259, UTF-8, no duplicate keys; '__metadata__'
/// must map strings to strings; parsed in one pass, in time linear in its size and memory a small
/// multiple of it, calling the interrupt check as it goes), every
/// tensor's dtype, shape and data_offsets (inside the data buffer, size == numel * item size,
/// no two tensors overlapping). Throws IoError on any violation, and also for tensors of a dtype
/// tokemb cannot hold (F64, U8, ...) or of rank > 4.
std::vector<std::pair<std::string, HostTensor>> parse_safetensors(const void* bytes,
                                                                  std::size_t size);
/// Reads and parses the safetensors file \p path.
std::vector<std::pair<std::string, HostTensor>> read_safetensors(const std::string& path);
/// Writes named tensors (any devices; synchronises \p stream), in the given order, with
/// `__metadata__ = {"format": "pt"}` so that PyTorch / transformers accept the file. Names must be
/// non-empty, unique, valid UTF-8 and not "__metadata__".
void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, TensorView>>& tensors,
                      StreamView stream);
/// The same into a caller's OutputFile, which the caller prepares and publishes.
void save_safetensors(OutputFile& file,
                      const std::vector<std::pair<std::string, TensorView>>& tensors,
                      StreamView stream);

/// Tensor names used for a module's tables; GPT-2 checkpoints call them these.
struct WeightNames {
  std::string token = "wte.weight";
  std::string position = "wpe.weight";
};

/// Saves the module's tables as safetensors (the position table only if the module has one).
void save_weights(Embedding& module, const std::string& path, const WeightNames& names = {});
/// The same into a caller's OutputFile, which the caller prepares and publishes.
void save_weights(Embedding& module, OutputFile& file, const WeightNames& names = {});
/// Loads the module's tables from safetensors. Only the header and the two named tensors are
/// read (a whole GPT-2 checkpoint is fine; other tensors are validated and ignored). Each table
/// must be present with exactly the table's shape and a compatible dtype (equal, or F32 into a
/// bf16/f16 table); the position tensor is not looked for when the module has no position
/// table. Both tables are read and checked before either is written.
void load_weights(Embedding& module, const std::string& path, const WeightNames& names = {});

}  // namespace tokemb
