// Token-id file readers (.npy, raw uint16, llm.c shards) and the book's sliding windows.
// Files and memory images go through one code path (a detail::ByteSource): the header is read
// and checked, then ids are decoded chunk by chunk, so memory is bounded by what is asked for.
// Files are read with pread, never mapped: a file that shrinks while it is read raises IoError.
#include <tokemb/token_files.hpp>

#include <algorithm>
#include <cstring>
#include <exception>
#include <new>
#include <string>

#include <tokemb/error.hpp>
#include <tokemb/io.hpp>

#include "core/check.hpp"
#include "host/io/bytes.hpp"
#include "host/io/file.hpp"
#include "host/io/npy.hpp"

namespace tokemb {

namespace {

using detail::load_i32_le;

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

bool has_llmc_magic(const unsigned char* p, std::size_t size) {
  if (size < 4) return false;
  const std::int32_t magic = load_i32_le(p);
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

// Where a file's ids are: their type, count and the byte offset of the first.
struct Layout {
  TokenFormat format = TokenFormat::automatic;
  TokenType type = TokenType::u16;
  std::int64_t count = 0;
  std::uint64_t data_offset = 0;
};

Layout npy_layout(const detail::ByteSource& src, const std::string& name) {
  NpyHeader h;
  try {
    // Trailing bytes are rejected here exactly as parse_npy rejects them: one rule for both.
    h = detail::read_npy_header(src, detail::Trailing::rejected);
  } catch (const IoError& e) {
    throw detail::ErrorLocation::at(IoError(name + ": not a valid .npy file: " + e.what()),
                                    e.file(), e.line());
  }
  Layout f;
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
  int non_trivial = 0;
  for (std::int64_t d : h.shape)
    if (d > 1) ++non_trivial;
  TOKEMB_EXPECTS(!h.fortran_order || non_trivial <= 1, IoError, name,
                 ": .npy array is in Fortran order with ", h.shape.size(),
                 " dimensions; save token ids in C order (np.ascontiguousarray) or as 1-D");
  // read_npy_header checked numel * item against the file size, so the count fits int64.
  f.count = static_cast<std::int64_t>(h.data_bytes / token_size(f.type));
  f.data_offset = h.data_offset;
  return f;
}

Layout raw_layout(const detail::ByteSource& src, const std::string& name) {
  TOKEMB_EXPECTS(src.size() % 2 == 0, IoError, name, ": raw uint16 token file has an odd size of ",
                 src.size(), " bytes; expected 2 bytes per token");
  Layout f;
  f.format = TokenFormat::raw_u16;
  f.type = TokenType::u16;
  f.count = static_cast<std::int64_t>(src.size() / 2);
  return f;
}

Layout llmc_layout(const detail::ByteSource& src, const std::string& name) {
  TOKEMB_EXPECTS(src.size() >= llmc_header_bytes, IoError, name, ": llm.c token shard is ",
                 src.size(), " bytes, shorter than its ", llmc_header_bytes,
                 "-byte header (256 int32)");
  unsigned char h[12];
  src.read_at(0, h, sizeof h);
  const std::int32_t magic = load_i32_le(h);
  const std::int32_t version = load_i32_le(h + 4);
  const std::int32_t count = load_i32_le(h + 8);
  Layout f;
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
  // As llm.c's own loader requires, the file is exactly header + tokens.
  detail::checked_data_bytes(static_cast<std::uint64_t>(count), token_size(f.type),
                             llmc_header_bytes, src.size(), detail::Trailing::rejected,
                             name + ": llm.c shard of " + std::to_string(count) + " " +
                                 token_type_name(f.type) + " tokens (as its header says)");
  f.count = count;
  f.data_offset = llmc_header_bytes;
  return f;
}

Layout read_layout(const detail::ByteSource& src, TokenFormat format, const std::string& name) {
  if (format == TokenFormat::automatic) {
    // Detection needs at most the first 1024 bytes (an llm.c header).
    unsigned char prefix[llmc_header_bytes];
    const std::size_t n =
        static_cast<std::size_t>(std::min<std::uint64_t>(src.size(), llmc_header_bytes));
    src.read_at(0, prefix, n);
    format = detect_token_format(prefix, n, name);
  }
  switch (format) {
    case TokenFormat::npy:
      return npy_layout(src, name);
    case TokenFormat::raw_u16:
      return raw_layout(src, name);
    case TokenFormat::llmc:
      return llmc_layout(src, name);
    case TokenFormat::automatic:
      break;
  }
  TOKEMB_FAIL(InvalidArgument, name, ": invalid TokenFormat value ", static_cast<int>(format));
}

// Decodes ids [first, first + count) of a checked layout into out, a chunk at a time.
void decode(const detail::ByteSource& src, const Layout& f, std::int64_t first, std::int64_t count,
            std::int64_t* out) {
  const std::size_t item = token_size(f.type);
  constexpr std::int64_t kChunkIds = 1 << 16;
  std::vector<unsigned char> buf(static_cast<std::size_t>(std::min(count, kChunkIds)) * item);
  for (std::int64_t done = 0; done < count;) {
    const std::size_t n = static_cast<std::size_t>(std::min<std::int64_t>(count - done, kChunkIds));
    src.read_at(f.data_offset + static_cast<std::uint64_t>(first + done) * item, buf.data(),
                n * item);
    std::int64_t* o = out + done;
    switch (f.type) {
      case TokenType::u16:
        for (std::size_t i = 0; i < n; ++i) o[i] = detail::load_u16_le(buf.data() + 2 * i);
        break;
      case TokenType::u32:
        for (std::size_t i = 0; i < n; ++i) o[i] = detail::load_u32_le(buf.data() + 4 * i);
        break;
      case TokenType::i32:
        for (std::size_t i = 0; i < n; ++i) o[i] = load_i32_le(buf.data() + 4 * i);
        break;
      case TokenType::i64:
        for (std::size_t i = 0; i < n; ++i) o[i] = detail::load_i64_le(buf.data() + 8 * i);
        break;
    }
    done += static_cast<std::int64_t>(n);
  }
}

// A TokenFile for a checked layout, with room for its first min(count, max_tokens) ids.
TokenFile token_file_for(const Layout& f, std::int64_t max_tokens, const std::string& name) {
  TokenFile t;
  t.format = f.format;
  t.type = f.type;
  t.total_tokens = f.count;
  const std::int64_t n = max_tokens < 0 ? f.count : std::min(f.count, max_tokens);
  try {
    t.ids.resize(static_cast<std::size_t>(n));
  } catch (const std::exception&) {  // bad_alloc, or length_error beyond max_size()
    TOKEMB_FAIL(OutOfMemory, name, ": cannot allocate memory for ", n,
                " token ids widened to int64 (", static_cast<std::uint64_t>(n) * 8,
                " bytes); read fewer (max_tokens), or stream them with TokenReader");
  }
  return t;
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
  if (detail::has_magic(p, size, detail::npy_magic)) return TokenFormat::npy;
  if (has_llmc_magic(p, size)) return TokenFormat::llmc;
  if (ends_with(name, ".npy")) {
    TOKEMB_FAIL(IoError, name,
                ": wrong magic for a .npy file: it does not start with \"\\x93NUMPY\"");
  }
  if (looks_like_llmc_header(p, size)) {
    TOKEMB_FAIL(IoError, name,
                ": looks like an llm.c token shard (1024-byte header) but has the "
                "wrong magic ",
                load_i32_le(p), "; expected ", llmc_magic_gpt2,
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
  const detail::MemorySource src(bytes, size, name);
  const Layout f = read_layout(src, format, name);
  TokenFile t = token_file_for(f, max_tokens, name);
  decode(src, f, 0, static_cast<std::int64_t>(t.ids.size()), t.ids.data());
  return t;
}

struct TokenReader::Impl {
  detail::InputFile file;
  Layout layout;
  explicit Impl(const std::string& path) : file(path) {}
};

TokenReader::TokenReader(const std::string& path, TokenFormat format)
    : impl_(std::make_unique<Impl>(path)) {
  impl_->layout = read_layout(impl_->file, format, path);
}

TokenReader::~TokenReader() = default;
TokenReader::TokenReader(TokenReader&&) noexcept = default;
TokenReader& TokenReader::operator=(TokenReader&&) noexcept = default;

const std::string& TokenReader::path() const noexcept { return impl_->file.path(); }
TokenFormat TokenReader::format() const noexcept { return impl_->layout.format; }
TokenType TokenReader::type() const noexcept { return impl_->layout.type; }
std::int64_t TokenReader::size() const noexcept { return impl_->layout.count; }

void TokenReader::read(std::int64_t first, std::int64_t count, std::int64_t* out) const {
  const std::int64_t n = impl_->layout.count;
  TOKEMB_EXPECTS(first >= 0 && count >= 0 && first <= n && count <= n - first, InvalidArgument,
                 "TokenReader::read('", path(), "'): ids [", first, ", ", first, " + ", count,
                 ") are outside the file's ", n, " ids");
  TOKEMB_EXPECTS(out != nullptr || count == 0, InvalidArgument, "TokenReader::read('", path(),
                 "'): out is a null pointer");
  decode(impl_->file, impl_->layout, first, count, out);
}

TokenFile read_token_file(const std::string& path, TokenFormat format, std::int64_t max_tokens) {
  const TokenReader reader(path, format);
  TokenFile t =
      token_file_for(Layout{reader.format(), reader.type(), reader.size(), 0}, max_tokens, path);
  reader.read(0, static_cast<std::int64_t>(t.ids.size()), t.ids.data());
  return t;
}

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
