#pragma once
/// \file token_files.hpp
/// Readers for files of token ids, and the sliding windows the book's data loader cuts from them.
///
/// Supported formats:
///  - NumPy `.npy` of int32 (`<i4`), int64 (`<i8`) or uint16 (`<u2`), C order, any shape
///    (read flattened);
///  - raw little-endian uint16 with no header, as nanoGPT's `prepare.py` writes `train.bin`;
///  - llm.c token shards: a header of 256 little-endian int32 (magic, version, token count, then
///    zeros) followed by the tokens. Magic 20240520 with version 1 holds uint16 tokens (GPT-2);
///    magic 20240801 with version 7 holds uint32 tokens (Llama 3). The file size must be exactly
///    1024 + count * token size, as llm.c's own loader requires.
///
/// The parsers take a whole file image and never read outside it; every malformed input raises
/// tokemb::IoError (tokemb::InvalidArgument for bad arguments) before anything large is
/// allocated — what is allocated is bounded by the size of the input. Files are read with
/// pread, never memory-mapped: a file that shrinks while it is read raises IoError ("changed
/// while reading") rather than crashing the process. TokenReader reads any range of ids, so a
/// file of any size can be processed in memory bounded by the range. In every format the data
/// must end exactly where the file does (trailing bytes are an error, as in parse_npy).

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace tokemb {

/// The layout of a token file.
enum class TokenFormat : std::uint8_t {
  automatic,  ///< decide from the contents, then from the file name (see detect_token_format)
  npy,        ///< NumPy .npy, int32 / int64 / uint16
  raw_u16,    ///< headerless little-endian uint16 (nanoGPT's train.bin / val.bin)
  llmc,       ///< llm.c shard: 1024-byte header, uint16 (v1) or uint32 (v7) tokens
};

/// The element type a token file stores its ids in.
enum class TokenType : std::uint8_t { u16, u32, i32, i64 };

/// "auto", "npy", "bin" (raw_u16) or "llmc".
const char* token_format_name(TokenFormat format) noexcept;
/// Inverse of token_format_name (also accepts "raw" and "raw_u16" for raw_u16, "automatic" for
/// automatic); throws InvalidArgument naming the valid choices otherwise.
TokenFormat parse_token_format(const std::string& name);
/// "uint16", "uint32", "int32" or "int64".
const char* token_type_name(TokenType type) noexcept;

/// Magic numbers and versions of llm.c's token shards.
inline constexpr std::int32_t llmc_magic_gpt2 = 20240520;    ///< version 1, uint16 tokens
inline constexpr std::int32_t llmc_magic_llama3 = 20240801;  ///< version 7, uint32 tokens
/// Size of an llm.c shard header: 256 int32.
inline constexpr std::size_t llmc_header_bytes = 256 * 4;

/// Token ids read from a file.
struct TokenFile {
  TokenFormat format = TokenFormat::automatic;  ///< the format actually read (never automatic)
  TokenType type = TokenType::u16;              ///< element type stored in the file
  std::int64_t total_tokens = 0;                ///< number of ids the file holds
  /// The first min(total_tokens, max_tokens) ids, widened to int64 (not range-checked: see
  /// check_token_ids).
  std::vector<std::int64_t> ids;
};

/// Decides the format of a file image: the .npy magic ("\x93NUMPY") means npy; an int32 llm.c
/// magic (20240520 or 20240801) at offset 0 means llmc; otherwise a \p name ending in ".bin"
/// means raw_u16. Throws IoError when the image has no known magic and the name does not settle
/// it: a name ending in ".npy" (wrong magic), an image that looks like an llm.c shard with an
/// unknown magic (at least 1024 bytes with int32 words 3..255 all zero), or any other name.
/// \p name is only used for its extension and in messages.
TokenFormat detect_token_format(const void* bytes, std::size_t size, const std::string& name);

/// Parses a complete token file image of \p size bytes.
/// \param format     the layout, or TokenFormat::automatic to call detect_token_format
/// \param max_tokens decode at most this many ids from the start (negative: all of them); the
///                   whole header and the file size are checked either way
/// \param name       names the source in error messages (and, for automatic, its extension)
/// \throws IoError on a wrong magic or version, an unsupported dtype, a size that does not match
///         the header, or a raw file of odd length; InvalidArgument if bytes is null with size > 0.
TokenFile parse_token_file(const void* bytes, std::size_t size,
                           TokenFormat format = TokenFormat::automatic,
                           std::int64_t max_tokens = -1, const std::string& name = "<memory>");

/// Reads the token file at \p path (see parse_token_file). Only the header and the first
/// \p max_tokens ids are read from disk; the whole header and the file size are checked.
/// \throws IoError if the file is missing, unreadable, malformed or changes while it is read;
/// OutOfMemory (naming the count and bytes) if the ids do not fit in memory.
TokenFile read_token_file(const std::string& path, TokenFormat format = TokenFormat::automatic,
                          std::int64_t max_tokens = -1);

/// An open token file whose ids are read on demand, range by range: for files too large to
/// decode at once (a 17 GB train.bin is 70 GB of int64). The constructor reads and checks the
/// header and the file size exactly as read_token_file does.
class TokenReader {
 public:
  /// \throws IoError if the file is missing, unreadable or malformed.
  explicit TokenReader(const std::string& path, TokenFormat format = TokenFormat::automatic);
  ~TokenReader();
  TokenReader(TokenReader&&) noexcept;
  TokenReader& operator=(TokenReader&&) noexcept;
  TokenReader(const TokenReader&) = delete;
  TokenReader& operator=(const TokenReader&) = delete;

  const std::string& path() const noexcept;
  TokenFormat format() const noexcept;  ///< the format actually read (never automatic)
  TokenType type() const noexcept;      ///< element type stored in the file
  std::int64_t size() const noexcept;   ///< number of ids the file holds
  /// Decodes ids [first, first + count) into \p out (not range-checked against a vocabulary).
  /// \throws InvalidArgument if the range is outside [0, size()) or out is null; IoError if
  /// the read fails or the file has become shorter since it was opened.
  void read(std::int64_t first, std::int64_t count, std::int64_t* out) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// Throws IndexOutOfRange (kind token, time = the id's index in \p ids, batch 0) naming
/// \p source, the first id outside [0, vocab_size), the valid range and how many ids are
/// outside it. Throws InvalidArgument if vocab_size < 1.
void check_token_ids(const std::vector<std::int64_t>& ids, std::int64_t vocab_size,
                     const std::string& source);

// ---- sliding windows ---------------------------------------------------------------------------

/// Number of windows the book's data loader (`GPTDatasetV1`) cuts from \p num_tokens ids:
/// `for i in range(0, num_tokens - max_length, stride)`, i.e. every start i = k * stride with
/// i + max_length < num_tokens (each window keeps room for its next-token target, the id after
/// it). That is 0 when num_tokens <= max_length, else (num_tokens - max_length - 1) / stride + 1.
/// Throws InvalidArgument unless max_length >= 1, stride >= 1 and num_tokens >= 0.
std::int64_t window_count(std::int64_t num_tokens, std::int64_t max_length, std::int64_t stride);

/// Number of ids windows [0, count) span, targets included: (count - 1) * stride + max_length + 1
/// (0 for count 0). A file prefix of this many ids yields exactly \p count windows.
/// Throws InvalidArgument on non-positive sizes or int64 overflow.
std::int64_t tokens_for_windows(std::int64_t count, std::int64_t max_length, std::int64_t stride);

/// Copies windows [first, first + count) of \p ids into \p out, row-major [count, max_length]:
/// out[w * max_length + t] = ids[(first + w) * stride + t]. Throws InvalidArgument (before
/// writing anything) if a window does not lie within window_count(num_ids, ...) or out is null.
void cut_windows(const std::int64_t* ids, std::size_t num_ids, std::int64_t max_length,
                 std::int64_t stride, std::int64_t first, std::int64_t count, std::int64_t* out);

/// All windows of \p ids, row-major [window_count(...), max_length].
std::vector<std::int64_t> sliding_windows(const std::vector<std::int64_t>& ids,
                                          std::int64_t max_length, std::int64_t stride);

}  // namespace tokemb
