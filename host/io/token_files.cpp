// Token-id file readers (.npy, raw uint16, llm.c shards) and the book's sliding windows.
// Every read of the input image is bounds-checked against its size; errors are tokemb::IoError.
#include <tokemb/token_files.hpp>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <exception>
#include <fstream>
#include <string>

#include <tokemb/error.hpp>
#include <tokemb/io.hpp>

#include "core/check.hpp"

#if defined(__unix__) || defined(__APPLE__)
#define TOKEMB_HAVE_MMAP 1
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#else
#define TOKEMB_HAVE_MMAP 0
#endif

namespace tokemb {

namespace {

constexpr unsigned char npy_magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};

std::uint32_t load_u32(const unsigned char* p) {
  return static_cast<std::uint32_t>(p[0]) | (static_cast<std::uint32_t>(p[1]) << 8) |
         (static_cast<std::uint32_t>(p[2]) << 16) | (static_cast<std::uint32_t>(p[3]) << 24);
}
std::int32_t load_i32(const unsigned char* p) {
  return static_cast<std::int32_t>(
      load_u32(p));  // two's complement (C++20, and every C++17 target)
}
std::uint16_t load_u16(const unsigned char* p) {
  return static_cast<std::uint16_t>(p[0] | (p[1] << 8));
}
std::int64_t load_i64(const unsigned char* p) {
  const std::uint64_t lo = load_u32(p), hi = load_u32(p + 4);
  return static_cast<std::int64_t>(lo | (hi << 32));
}

bool ends_with(const std::string& s, const char* suffix) {
  const std::size_t n = std::strlen(suffix);
  if (s.size() < n) return false;
  for (std::size_t i = 0; i < n; ++i) {
    const char c = s[s.size() - n + i];
    const char lower = (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
    if (lower != suffix[i]) return false;
  }
  return true;
}

bool has_npy_magic(const unsigned char* p, std::size_t size) {
  return size >= sizeof(npy_magic) && std::memcmp(p, npy_magic, sizeof(npy_magic)) == 0;
}

bool has_llmc_magic(const unsigned char* p, std::size_t size) {
  if (size < 4) return false;
  const std::int32_t magic = load_i32(p);
  return magic == llmc_magic_gpt2 || magic == llmc_magic_llama3;
}

// A 1024-byte header whose int32 words 3..255 are zero: llm.c's layout, whatever the magic.
bool looks_like_llmc_header(const unsigned char* p, std::size_t size) {
  if (size < llmc_header_bytes) return false;
  for (std::size_t i = 12; i < llmc_header_bytes; ++i)
    if (p[i] != 0) return false;
  return true;
}

std::size_t token_size(TokenType t) {
  switch (t) {
    case TokenType::u16:
      return 2;
    case TokenType::u32:
      return 4;
    case TokenType::i32:
      return 4;
    case TokenType::i64:
      return 8;
  }
  return 1;
}

// How many ids to decode out of `total`.
std::int64_t decode_count(std::int64_t total, std::int64_t max_tokens) {
  return max_tokens < 0 ? total : std::min(total, max_tokens);
}

// Decodes `count` ids of type `type` starting at `data` (the caller has checked the bounds).
std::vector<std::int64_t> decode(const unsigned char* data, TokenType type, std::int64_t count) {
  std::vector<std::int64_t> ids(static_cast<std::size_t>(count));
  const std::size_t n = ids.size();
  switch (type) {
    case TokenType::u16:
      for (std::size_t i = 0; i < n; ++i) ids[i] = load_u16(data + 2 * i);
      break;
    case TokenType::u32:
      for (std::size_t i = 0; i < n; ++i) ids[i] = load_u32(data + 4 * i);
      break;
    case TokenType::i32:
      for (std::size_t i = 0; i < n; ++i) ids[i] = load_i32(data + 4 * i);
      break;
    case TokenType::i64:
      for (std::size_t i = 0; i < n; ++i) ids[i] = load_i64(data + 8 * i);
      break;
  }
  return ids;
}

TokenFile parse_npy_tokens(const unsigned char* p, std::size_t size, std::int64_t max_tokens,
                           const std::string& name) {
  NpyHeader h;
  try {
    h = parse_npy_header(p, size);
  } catch (const Error& e) {
    throw detail::ErrorLocation::at(IoError(name + ": not a valid .npy file: " + e.what()),
                                    e.file(), e.line());
  }
  TokenFile f;
  f.format = TokenFormat::npy;
  if (h.descr == "<i4") {
    f.type = TokenType::i32;
  } else if (h.descr == "<i8") {
    f.type = TokenType::i64;
  } else if (h.descr == "<u2") {
    f.type = TokenType::u16;
  } else if (!h.descr.empty() && h.descr[0] == '>') {
    TOKEMB_FAIL(IoError, name, ": .npy dtype '", h.descr,
                "' is big-endian; token ids must be little-endian int32 ('<i4'), int64 ('<i8') "
                "or uint16 ('<u2')");
  } else {
    TOKEMB_FAIL(IoError, name, ": .npy dtype '", h.descr,
                "' is not supported for token ids; expected int32 ('<i4'), int64 ('<i8') or "
                "uint16 ('<u2')");
  }
  std::int64_t total = 1;
  int non_trivial = 0;
  for (std::int64_t d : h.shape) {
    TOKEMB_EXPECTS(d >= 0, IoError, name, ": .npy shape has a negative dimension ", d);
    TOKEMB_EXPECTS(!__builtin_mul_overflow(total, d, &total), IoError, name,
                   ": .npy element count overflows int64");
    if (d > 1) ++non_trivial;
  }
  TOKEMB_EXPECTS(!h.fortran_order || non_trivial <= 1, IoError, name,
                 ": .npy array is in Fortran order with ", h.shape.size(),
                 " dimensions; save token ids in C order (np.ascontiguousarray) or as 1-D");
  const std::size_t item = token_size(f.type);
  std::uint64_t data_bytes = 0;
  TOKEMB_EXPECTS(!__builtin_mul_overflow(static_cast<std::uint64_t>(total), item, &data_bytes),
                 IoError, name, ": .npy data size overflows");
  TOKEMB_EXPECTS(h.data_offset <= size && data_bytes <= size - h.data_offset, IoError, name,
                 ": .npy file is truncated: ", total, " ids of ", item, " bytes need ", data_bytes,
                 " bytes after the ", h.data_offset, "-byte header, but the file has ",
                 size < h.data_offset ? 0 : size - h.data_offset);
  f.total_tokens = total;
  f.ids = decode(p + h.data_offset, f.type, decode_count(total, max_tokens));
  return f;
}

TokenFile parse_raw_tokens(const unsigned char* p, std::size_t size, std::int64_t max_tokens,
                           const std::string& name) {
  TOKEMB_EXPECTS(size % 2 == 0, IoError, name, ": raw uint16 token file has an odd size of ", size,
                 " bytes; expected 2 bytes per token");
  TokenFile f;
  f.format = TokenFormat::raw_u16;
  f.type = TokenType::u16;
  f.total_tokens = static_cast<std::int64_t>(size / 2);
  f.ids = decode(p, f.type, decode_count(f.total_tokens, max_tokens));
  return f;
}

TokenFile parse_llmc_tokens(const unsigned char* p, std::size_t size, std::int64_t max_tokens,
                            const std::string& name) {
  TOKEMB_EXPECTS(size >= llmc_header_bytes, IoError, name, ": llm.c token shard is ", size,
                 " bytes, shorter than its ", llmc_header_bytes, "-byte header (256 int32)");
  const std::int32_t magic = load_i32(p);
  const std::int32_t version = load_i32(p + 4);
  const std::int32_t count = load_i32(p + 8);
  TokenFile f;
  f.format = TokenFormat::llmc;
  if (magic == llmc_magic_gpt2) {
    TOKEMB_EXPECTS(version == 1, IoError, name, ": llm.c shard with magic ", magic,
                   " (GPT-2, uint16 tokens) has version ", version, "; expected version 1");
    f.type = TokenType::u16;
  } else if (magic == llmc_magic_llama3) {
    TOKEMB_EXPECTS(version == 7, IoError, name, ": llm.c shard with magic ", magic,
                   " (Llama 3, uint32 tokens) has version ", version, "; expected version 7");
    f.type = TokenType::u32;
  } else {
    TOKEMB_FAIL(IoError, name, ": wrong magic ", magic, " for an llm.c token shard; expected ",
                llmc_magic_gpt2, " (GPT-2, version 1, uint16 tokens) or ", llmc_magic_llama3,
                " (Llama 3, version 7, uint32 tokens)");
  }
  TOKEMB_EXPECTS(count >= 0, IoError, name, ": llm.c shard header gives a negative token count ",
                 count);
  const std::uint64_t expected =
      llmc_header_bytes + static_cast<std::uint64_t>(count) * token_size(f.type);
  TOKEMB_EXPECTS(expected == size, IoError, name, ": llm.c shard header says ", count, " ",
                 token_type_name(f.type), " tokens, so the file should be ", expected,
                 " bytes, but it is ", size, " bytes", size < expected ? " (truncated)" : "");
  f.total_tokens = count;
  f.ids = decode(p + llmc_header_bytes, f.type, decode_count(count, max_tokens));
  return f;
}

}  // namespace

const char* token_format_name(TokenFormat format) noexcept {
  switch (format) {
    case TokenFormat::automatic:
      return "auto";
    case TokenFormat::npy:
      return "npy";
    case TokenFormat::raw_u16:
      return "bin";
    case TokenFormat::llmc:
      return "llmc";
  }
  return "?";
}

TokenFormat parse_token_format(const std::string& name) {
  if (name == "auto" || name == "automatic") return TokenFormat::automatic;
  if (name == "npy") return TokenFormat::npy;
  if (name == "bin" || name == "raw" || name == "raw_u16") return TokenFormat::raw_u16;
  if (name == "llmc") return TokenFormat::llmc;
  TOKEMB_FAIL(InvalidArgument, "token format '", name,
              "' is not one of auto, npy, bin (raw uint16), llmc");
}

const char* token_type_name(TokenType type) noexcept {
  switch (type) {
    case TokenType::u16:
      return "uint16";
    case TokenType::u32:
      return "uint32";
    case TokenType::i32:
      return "int32";
    case TokenType::i64:
      return "int64";
  }
  return "?";
}

TokenFormat detect_token_format(const void* bytes, std::size_t size, const std::string& name) {
  TOKEMB_EXPECTS(bytes != nullptr || size == 0, InvalidArgument, name,
                 ": bytes is a null pointer but size is ", size);
  const auto* p = static_cast<const unsigned char*>(bytes);
  if (has_npy_magic(p, size)) return TokenFormat::npy;
  if (has_llmc_magic(p, size)) return TokenFormat::llmc;
  if (ends_with(name, ".npy")) {
    TOKEMB_FAIL(IoError, name,
                ": wrong magic for a .npy file: it does not start with \"\\x93NUMPY\"");
  }
  if (looks_like_llmc_header(p, size)) {
    TOKEMB_FAIL(IoError, name,
                ": looks like an llm.c token shard (1024-byte header) but has the "
                "wrong magic ",
                load_i32(p), "; expected ", llmc_magic_gpt2,
                " (GPT-2, version 1) "
                "or ",
                llmc_magic_llama3,
                " (Llama 3, version 7). To read it as raw uint16 "
                "anyway, give the format explicitly (--format bin)");
  }
  if (ends_with(name, ".bin")) return TokenFormat::raw_u16;
  TOKEMB_FAIL(IoError, name,
              ": cannot tell the token file format: no .npy or llm.c magic, and "
              "the name does not end in .npy or .bin (raw uint16). Give the format explicitly "
              "(--format npy|bin|llmc)");
}

TokenFile parse_token_file(const void* bytes, std::size_t size, TokenFormat format,
                           std::int64_t max_tokens, const std::string& name) {
  TOKEMB_EXPECTS(bytes != nullptr || size == 0, InvalidArgument, name,
                 ": bytes is a null pointer but size is ", size);
  static const unsigned char empty = 0;
  const auto* p = bytes ? static_cast<const unsigned char*>(bytes) : &empty;
  if (format == TokenFormat::automatic) format = detect_token_format(p, size, name);
  switch (format) {
    case TokenFormat::npy:
      return parse_npy_tokens(p, size, max_tokens, name);
    case TokenFormat::raw_u16:
      return parse_raw_tokens(p, size, max_tokens, name);
    case TokenFormat::llmc:
      return parse_llmc_tokens(p, size, max_tokens, name);
    case TokenFormat::automatic:
      break;
  }
  TOKEMB_FAIL(InvalidArgument, name, ": invalid TokenFormat value ", static_cast<int>(format));
}

#if TOKEMB_HAVE_MMAP
namespace {

std::string errno_text(int err) { return std::strerror(err); }

// Closes a file descriptor and unmaps a mapping when the read is done (or throws).
struct MappedFile {
  int fd = -1;
  void* map = MAP_FAILED;
  std::size_t size = 0;
  ~MappedFile() {
    if (map != MAP_FAILED) ::munmap(map, size);
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

TokenFile read_token_file(const std::string& path, TokenFormat format, std::int64_t max_tokens) {
  MappedFile m;
  m.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (m.fd < 0) {
    const int err = errno;
    TOKEMB_FAIL(IoError, path, ": cannot open token file: ", errno_text(err));
  }
  struct stat st {};
  if (::fstat(m.fd, &st) != 0) {
    const int err = errno;
    TOKEMB_FAIL(IoError, path, ": cannot stat token file: ", errno_text(err));
  }
  TOKEMB_EXPECTS(S_ISREG(st.st_mode), IoError, path, ": not a regular file");
  m.size = static_cast<std::size_t>(st.st_size);
  if (m.size == 0) return parse_token_file(nullptr, 0, format, max_tokens, path);
  m.map = ::mmap(nullptr, m.size, PROT_READ, MAP_PRIVATE, m.fd, 0);
  if (m.map == MAP_FAILED) {
    const int err = errno;
    TOKEMB_FAIL(IoError, path, ": cannot map token file (", m.size, " bytes): ", errno_text(err));
  }
  ::madvise(m.map, m.size, MADV_SEQUENTIAL);
  return parse_token_file(m.map, m.size, format, max_tokens, path);
}
#else
TokenFile read_token_file(const std::string& path, TokenFormat format, std::int64_t max_tokens) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  TOKEMB_EXPECTS(in.good(), IoError, path, ": cannot open token file");
  const std::streamoff end = in.tellg();
  TOKEMB_EXPECTS(end >= 0, IoError, path, ": cannot determine the file size");
  std::vector<unsigned char> bytes(static_cast<std::size_t>(end));
  in.seekg(0);
  in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  TOKEMB_EXPECTS(in.good() || bytes.empty(), IoError, path, ": read error");
  return parse_token_file(bytes.data(), bytes.size(), format, max_tokens, path);
}
#endif

void check_token_ids(const std::vector<std::int64_t>& ids, std::int64_t vocab_size,
                     const std::string& source) {
  TOKEMB_EXPECTS(vocab_size >= 1, InvalidArgument, source, ": vocab_size is ", vocab_size,
                 ", must be >= 1");
  std::uint64_t bad = 0;
  std::size_t first = 0;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab_size) {
      if (bad++ == 0) first = i;
    }
  }
  if (bad == 0) return;
  const std::string what =
      detail::format_message(source, ": token id ", ids[first], " at index ", first,
                             " is outside the vocabulary [0, ", vocab_size, "); ", bad, " of ",
                             ids.size(), " ids are out of range");
  TOKEMB_THROW(IndexOutOfRange(what, IndexOutOfRange::Kind::token, ids[first], 0,
                               static_cast<std::int64_t>(first), vocab_size, bad));
}

std::int64_t window_count(std::int64_t num_tokens, std::int64_t max_length, std::int64_t stride) {
  TOKEMB_EXPECTS(max_length >= 1, InvalidArgument, "window_count: max_length is ", max_length,
                 ", must be >= 1");
  TOKEMB_EXPECTS(stride >= 1, InvalidArgument, "window_count: stride is ", stride,
                 ", must be >= 1");
  TOKEMB_EXPECTS(num_tokens >= 0, InvalidArgument, "window_count: num_tokens is ", num_tokens,
                 ", must be >= 0");
  if (num_tokens <= max_length) return 0;
  return (num_tokens - max_length - 1) / stride + 1;
}

std::int64_t tokens_for_windows(std::int64_t count, std::int64_t max_length, std::int64_t stride) {
  TOKEMB_EXPECTS(max_length >= 1 && stride >= 1 && count >= 0, InvalidArgument,
                 "tokens_for_windows: count ", count, ", max_length ", max_length, ", stride ",
                 stride, ": need count >= 0, max_length >= 1, stride >= 1");
  if (count == 0) return 0;
  std::int64_t n = 0;
  TOKEMB_EXPECTS(!__builtin_mul_overflow(count - 1, stride, &n) &&
                     !__builtin_add_overflow(n, max_length, &n) &&
                     !__builtin_add_overflow(n, std::int64_t{1}, &n),
                 InvalidArgument, "tokens_for_windows: ", count, " windows of ", max_length,
                 " with stride ", stride, " overflow int64");
  return n;
}

void cut_windows(const std::int64_t* ids, std::size_t num_ids, std::int64_t max_length,
                 std::int64_t stride, std::int64_t first, std::int64_t count, std::int64_t* out) {
  TOKEMB_EXPECTS(num_ids <= static_cast<std::size_t>(INT64_MAX), InvalidArgument,
                 "cut_windows: num_ids ", num_ids, " exceeds int64");
  const std::int64_t total = window_count(static_cast<std::int64_t>(num_ids), max_length, stride);
  TOKEMB_EXPECTS(first >= 0 && count >= 0 && first <= total && count <= total - first,
                 InvalidArgument, "cut_windows: windows [", first, ", ", first, " + ", count,
                 ") are outside the ", total, " windows of ", num_ids, " ids (max_length ",
                 max_length, ", stride ", stride, ")");
  if (count == 0) return;
  TOKEMB_EXPECTS(ids != nullptr && out != nullptr, InvalidArgument,
                 "cut_windows: ids or out is a null pointer");
  for (std::int64_t w = 0; w < count; ++w) {
    const std::int64_t* src = ids + (first + w) * stride;
    std::copy(src, src + max_length, out + w * max_length);
  }
}

std::vector<std::int64_t> sliding_windows(const std::vector<std::int64_t>& ids,
                                          std::int64_t max_length, std::int64_t stride) {
  const std::int64_t n = window_count(static_cast<std::int64_t>(ids.size()), max_length, stride);
  std::int64_t total = 0;
  TOKEMB_EXPECTS(!__builtin_mul_overflow(n, max_length, &total), InvalidArgument,
                 "sliding_windows: ", n, " windows of ", max_length, " ids overflow int64");
  std::vector<std::int64_t> out(static_cast<std::size_t>(total));
  cut_windows(ids.data(), ids.size(), max_length, stride, 0, n, out.data());
  return out;
}

}  // namespace tokemb
