#pragma once
/// \file io.hpp
/// Saving and loading tables: NumPy .npy and safetensors. Loading reads and checks the whole
/// file (dtype, shape, byte size, header) before anything is written to the destination, so a
/// truncated, corrupt or mismatched file raises IoError / InvalidArgument and leaves the table as
/// it was. Writers write to a temporary file and rename it into place.

#include <cstdint>
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

// ---- .npy --------------------------------------------------------------------------------------

/// The header of a .npy file: descr such as "<f4", "<i8", "<u2"; C-order shape; where the
/// data starts. parse_npy_header checks the magic, version, header syntax and that the file is
/// long enough for the data; it accepts any descr (callers decide which they support).
struct NpyHeader {
  std::string descr;
  bool fortran_order = false;
  std::vector<std::int64_t> shape;
  std::size_t data_offset = 0;
  std::size_t data_bytes = 0;  ///< numel * item size, checked against the file size
};
NpyHeader parse_npy_header(const void* bytes, std::size_t size);

/// Parses a complete .npy file image held in memory. Throws IoError on anything malformed.
HostTensor parse_npy(const void* bytes, std::size_t size);
HostTensor read_npy(const std::string& path);
/// Writes \p tensor (any device; synchronises \p stream) as .npy.
void save_npy(const std::string& path, const TensorView& tensor, StreamView stream);
/// Reads \p path into \p dst (any device), which must match its dtype and shape exactly.
void load_npy(const std::string& path, const TensorView& dst, StreamView stream);

/// Writes a large .npy of known dtype and shape chunk by chunk (the CLI's [N, T, D] output):
/// data goes to "path.tmp"; commit() checks that every byte was written and renames it into
/// place; destroying an uncommitted writer removes the temporary file.
class NpyWriter {
 public:
  NpyWriter(const std::string& path, DType dtype, Shape shape);
  ~NpyWriter();
  NpyWriter(const NpyWriter&) = delete;
  NpyWriter& operator=(const NpyWriter&) = delete;
  /// Appends host bytes (a whole number of elements).
  void write(const void* data, std::size_t bytes);
  void commit();

 private:
  struct Impl;
  Impl* impl_;
};

// ---- safetensors -------------------------------------------------------------------------------

/// Parses a complete safetensors file image held in memory into named tensors.
std::vector<std::pair<std::string, HostTensor>> parse_safetensors(const void* bytes, std::size_t size);
std::vector<std::pair<std::string, HostTensor>> read_safetensors(const std::string& path);
/// Writes named tensors (any devices; synchronises \p stream).
void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, TensorView>>& tensors,
                      StreamView stream);

/// Tensor names used for a module's tables; GPT-2 checkpoints call them these.
struct WeightNames {
  std::string token = "wte.weight";
  std::string position = "wpe.weight";
};

/// Saves the module's tables as safetensors.
void save_weights(Embedding& module, const std::string& path, const WeightNames& names = {});
/// Loads the module's tables from safetensors (other tensors in the file are ignored); both
/// tables are checked before either is written.
void load_weights(Embedding& module, const std::string& path, const WeightNames& names = {});

}  // namespace tokemb
