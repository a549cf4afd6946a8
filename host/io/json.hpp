#pragma once
// Private: a small strict JSON parser (RFC 8259) for safetensors headers: objects, arrays,
// strings with escapes (UTF-8 checked), numbers, true, false and null. Nesting is limited, so
// that hostile input cannot exhaust the stack; every error throws tokemb::IoError naming the
// byte offset. Duplicate keys in an object are an error.

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace tokemb::detail::json {

struct Value {
  enum class Type : std::uint8_t { null, boolean, number, string, array, object };
  Type type = Type::null;
  bool boolean = false;
  std::string text;               ///< a string's contents (UTF-8), or a number's literal
  std::vector<Value> items;       ///< an array's elements
  std::vector<std::string> keys;  ///< an object's keys, in file order
  std::vector<Value> values;      ///< an object's values, parallel to keys

  bool is_object() const noexcept { return type == Type::object; }
  bool is_array() const noexcept { return type == Type::array; }
  bool is_string() const noexcept { return type == Type::string; }
  bool is_number() const noexcept { return type == Type::number; }
  /// The member called \p key, or nullptr (objects only).
  const Value* find(const std::string& key) const noexcept;
  /// A number written as a plain non-negative integer (no sign, fraction or exponent) that fits
  /// 63 bits; false otherwise.
  bool as_index(std::int64_t* out) const noexcept;
};

constexpr int max_depth = 64;

/// Parses exactly one JSON value from data[0, size), surrounded by optional whitespace.
/// \p what names the source in error messages (e.g. "safetensors header of 'model.st'").
Value parse(const char* data, std::size_t size, const std::string& what);

/// \p s as a JSON string literal, quotes included (escapes '"', '\\' and control characters).
std::string quote(const std::string& s);

}  // namespace tokemb::detail::json
