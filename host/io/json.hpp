#pragma once
// Private: a small strict JSON pull parser (RFC 8259) for safetensors headers: objects, arrays,
// strings with escapes (UTF-8 checked, surrogate pairs decoded), numbers, true, false and null.
// It builds no tree: the caller walks the text value by value and keeps only what it needs, so
// memory stays a small multiple of what is kept, and time is linear in the input (duplicate keys
// are found with a hash set of the keys' offsets). Nesting is limited, so that hostile input
// cannot exhaust the stack; every error throws tokemb::IoError naming the byte offset.

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace tokemb::detail::json {

constexpr int max_depth = 64;

class Reader {
 public:
  /// Reads data[0, size); \p what names the source in error messages (e.g. "safetensors header
  /// of 'model.st'"). Inputs of 4 GiB or more are refused (offsets are kept in 32 bits).
  Reader(const char* data, std::size_t size, const std::string& what);

  [[noreturn]] void fail(const char* why) const;
  /// The next non-whitespace character, or '\0' at the end of the input.
  char peek();
  /// '{' then members: `bool first = true; std::string key; while (r.next_member(first, key))
  /// { ... read or skip the value ... }`. Duplicate keys are the caller's to check (KeySet);
  /// key_offset() is where the last key started.
  void begin_object();
  bool next_member(bool& first, std::string& key);
  std::size_t key_offset() const noexcept { return key_offset_; }
  /// '[' then items: `bool first = true; while (r.next_item(first)) { ... }`.
  void begin_array();
  bool next_item(bool& first);
  /// A string value (decoded), or fails with \p why.
  std::string string_value(const char* why);
  /// A number's literal text, or fails with \p why.
  std::string number_value(const char* why);
  /// Any value, validated (duplicate keys included) and dropped. \p depth: the nesting so far.
  void skip_value(int depth);
  /// Only whitespace may follow.
  void finish();
  /// The string (a key) starting at \p offset, decoded again (for KeySet's comparisons).
  std::string string_at(std::size_t offset) const;
  /// Values read so far (for periodic interrupt checks).
  std::uint64_t values() const noexcept { return values_; }

 private:
  bool at_end() const noexcept { return i_ >= n_; }
  unsigned char cur() const noexcept { return static_cast<unsigned char>(p_[i_]); }
  void skip_ws() noexcept;
  void expect(char c, const char* why);
  void literal(const char* word);
  std::string string();
  std::string number();
  unsigned hex4();
  void utf8_char(std::string& s);

  const char* p_;
  std::size_t n_;
  std::size_t i_ = 0;
  std::size_t key_offset_ = 0;
  std::uint64_t values_ = 0;
  std::string what_;
};

/// The keys of one object, to refuse duplicates in linear time: an open-addressing table of
/// 8 bytes per slot (a 32-bit hash and the key's offset), at most half full; equal hashes are
/// compared by decoding the earlier key again from the input.
class KeySet {
 public:
  /// False when a key equal to \p key was inserted before; \p offset is r.key_offset().
  bool insert(const std::string& key, std::size_t offset, const Reader& r);

 private:
  std::vector<std::uint64_t> slots_;  // 0: empty; else hash << 32 | (offset + 1)
  std::size_t count_ = 0;
};

/// \p s as a JSON string literal, quotes included (escapes '"', '\\' and control characters).
std::string quote(const std::string& s);

/// True when \p s is valid UTF-8 (what a JSON string may hold).
bool valid_utf8(const std::string& s);

}  // namespace tokemb::detail::json
