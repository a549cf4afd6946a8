#pragma once
// Private: the byte layer every file format is written on. Little-endian loads and stores,
// magic-number checks, the system's error text, the one rule for "a run of fixed-size elements
// fits in a file", and ByteSource (bytes read by offset, from memory or from a file) so that each
// format's parser is written once for both.

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>

#include <tokemb/error.hpp>

namespace tokemb::detail {

// ---- little-endian loads and stores (any host byte order, any alignment) ------------------------

inline std::uint16_t load_u16_le(const unsigned char* p) noexcept {
  return static_cast<std::uint16_t>(p[0] | (p[1] << 8));
}
inline std::uint32_t load_u32_le(const unsigned char* p) noexcept {
  return static_cast<std::uint32_t>(p[0]) | (static_cast<std::uint32_t>(p[1]) << 8) |
         (static_cast<std::uint32_t>(p[2]) << 16) | (static_cast<std::uint32_t>(p[3]) << 24);
}
inline std::uint64_t load_u64_le(const unsigned char* p) noexcept {
  return static_cast<std::uint64_t>(load_u32_le(p)) |
         (static_cast<std::uint64_t>(load_u32_le(p + 4)) << 32);
}
// Two's complement conversions (guaranteed by C++20, and by every C++17 target we build for).
inline std::int32_t load_i32_le(const unsigned char* p) noexcept {
  return static_cast<std::int32_t>(load_u32_le(p));
}
inline std::int64_t load_i64_le(const unsigned char* p) noexcept {
  return static_cast<std::int64_t>(load_u64_le(p));
}

inline void store_u16_le(unsigned char* p, std::uint16_t v) noexcept {
  p[0] = static_cast<unsigned char>(v);
  p[1] = static_cast<unsigned char>(v >> 8);
}
inline void store_u32_le(unsigned char* p, std::uint32_t v) noexcept {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
}
inline void store_u64_le(unsigned char* p, std::uint64_t v) noexcept {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
}

// ---- magic numbers ------------------------------------------------------------------------------

/// "\x93NUMPY", the first six bytes of every .npy file.
inline constexpr unsigned char npy_magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};

/// True when the \p size bytes at \p p start with \p magic.
template <std::size_t N>
bool has_magic(const unsigned char* p, std::size_t size, const unsigned char (&magic)[N]) noexcept {
  return size >= N && std::memcmp(p, magic, N) == 0;
}

// ---- the system's error text ----------------------------------------------------------------

/// strerror(\p err), thread-safe (the XSI and GNU strerror_r differ; both are handled).
std::string errno_text(int err);

// ---- sizes --------------------------------------------------------------------------------------

/// What may follow a run of elements in a file.
enum class Trailing : std::uint8_t {
  allowed,   ///< the run may end before the file does (only the header is being checked)
  rejected,  ///< the run must end exactly where the file does (a whole-file reader)
};

/// The one rule for data laid out after a header: \p count elements of \p item bytes starting
/// at \p offset must lie within a file (or buffer) of \p total bytes, and, when \p trailing is
/// rejected, end exactly at its end. Every product and sum is overflow-checked. Returns the
/// data size count * item in bytes; throws IoError naming \p what ("'f.npy': .npy") otherwise.
std::uint64_t checked_data_bytes(std::uint64_t count, std::uint64_t item, std::uint64_t offset,
                                 std::uint64_t total, Trailing trailing, const std::string& what);

// ---- reading by offset --------------------------------------------------------------------------

/// Bytes read by offset: a memory image, or a file read with pread (InputFile). Parsers take a
/// ByteSource so that parsing an image and reading a file are one code path.
class ByteSource {
 public:
  virtual ~ByteSource() = default;
  /// The size in bytes (of a file: when it was opened).
  virtual std::uint64_t size() const noexcept = 0;
  /// Copies exactly \p n bytes at \p offset to \p dst; IoError when they are not there.
  virtual void read_at(std::uint64_t offset, void* dst, std::size_t n) const = 0;
  /// Names the source in messages ("'train.bin'" or "<memory>").
  virtual const std::string& name() const noexcept = 0;
};

/// A ByteSource over \p size bytes at \p bytes (not copied; must outlive the source).
class MemorySource final : public ByteSource {
 public:
  MemorySource(const void* bytes, std::size_t size, std::string name)
      : p_(static_cast<const unsigned char*>(bytes)), size_(size), name_(std::move(name)) {}
  std::uint64_t size() const noexcept override { return size_; }
  void read_at(std::uint64_t offset, void* dst, std::size_t n) const override;
  const std::string& name() const noexcept override { return name_; }
  /// The bytes themselves (for parsers that can use them in place).
  const unsigned char* data() const noexcept { return p_; }

 private:
  const unsigned char* p_;
  std::size_t size_;
  std::string name_;
};

}  // namespace tokemb::detail
