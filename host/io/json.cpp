// A small strict JSON parser and string quoting, for safetensors headers.
#include "host/io/json.hpp"

#include <tokemb/error.hpp>

#include "core/check.hpp"

namespace tokemb::detail::json {

const Value* Value::find(const std::string& key) const noexcept {
  for (std::size_t i = 0; i < keys.size(); ++i)
    if (keys[i] == key) return &values[i];
  return nullptr;
}

bool Value::as_index(std::int64_t* out) const noexcept {
  if (type != Type::number || text.empty()) return false;
  std::int64_t v = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, c - '0', &v)) return false;
  }
  *out = v;
  return true;
}

namespace {

class Parser {
 public:
  Parser(const char* data, std::size_t size, const std::string& what)
      : p_(data), n_(size), what_(what) {}

  Value document() {
    skip_ws();
    Value v = value(0);
    skip_ws();
    if (i_ != n_) fail("unexpected data after the JSON value");
    return v;
  }

 private:
  [[noreturn]] void fail(const char* why) const {
    TOKEMB_FAIL(IoError, what_, ": malformed JSON at byte ", i_, ": ", why);
  }
  bool at_end() const noexcept { return i_ >= n_; }
  unsigned char peek() const noexcept { return static_cast<unsigned char>(p_[i_]); }

  void skip_ws() noexcept {
    while (i_ < n_ && (p_[i_] == ' ' || p_[i_] == '\t' || p_[i_] == '\n' || p_[i_] == '\r')) ++i_;
  }
  void expect(char c, const char* why) {
    if (at_end() || p_[i_] != c) fail(why);
    ++i_;
  }
  void literal(const char* word) {
    for (const char* w = word; *w; ++w) {
      if (at_end() || p_[i_] != *w) fail("invalid literal (expected true, false or null)");
      ++i_;
    }
  }

  Value value(int depth) {
    if (depth >= max_depth) fail("nesting is too deep");
    if (at_end()) fail("unexpected end of input, a value was expected");
    Value v;
    switch (p_[i_]) {
      case '{':
        object(v, depth);
        break;
      case '[':
        array(v, depth);
        break;
      case '"':
        v.type = Value::Type::string;
        v.text = string();
        break;
      case 't':
        literal("true");
        v.type = Value::Type::boolean;
        v.boolean = true;
        break;
      case 'f':
        literal("false");
        v.type = Value::Type::boolean;
        break;
      case 'n':
        literal("null");
        break;
      default:
        if (p_[i_] == '-' || (p_[i_] >= '0' && p_[i_] <= '9')) {
          v.type = Value::Type::number;
          v.text = number();
        } else {
          fail("unexpected character, a value was expected");
        }
    }
    return v;
  }

  void object(Value& v, int depth) {
    v.type = Value::Type::object;
    ++i_;  // '{'
    skip_ws();
    if (!at_end() && p_[i_] == '}') {
      ++i_;
      return;
    }
    for (;;) {
      skip_ws();
      if (at_end() || p_[i_] != '"') fail("an object key (a string) was expected");
      std::string key = string();
      if (v.find(key) != nullptr) fail("duplicate key in an object");
      skip_ws();
      expect(':', "':' was expected after an object key");
      skip_ws();
      Value member = value(depth + 1);
      v.keys.push_back(std::move(key));
      v.values.push_back(std::move(member));
      skip_ws();
      if (at_end()) fail("unexpected end of input inside an object");
      if (p_[i_] == ',') {
        ++i_;
        continue;
      }
      expect('}', "',' or '}' was expected in an object");
      return;
    }
  }

  void array(Value& v, int depth) {
    v.type = Value::Type::array;
    ++i_;  // '['
    skip_ws();
    if (!at_end() && p_[i_] == ']') {
      ++i_;
      return;
    }
    for (;;) {
      skip_ws();
      v.items.push_back(value(depth + 1));
      skip_ws();
      if (at_end()) fail("unexpected end of input inside an array");
      if (p_[i_] == ',') {
        ++i_;
        continue;
      }
      expect(']', "',' or ']' was expected in an array");
      return;
    }
  }

  std::string number() {
    const std::size_t start = i_;
    if (p_[i_] == '-') ++i_;
    if (at_end() || !is_digit(peek())) fail("a digit was expected in a number");
    if (p_[i_] == '0') {
      ++i_;
    } else {
      while (!at_end() && is_digit(peek())) ++i_;
    }
    if (!at_end() && p_[i_] == '.') {
      ++i_;
      if (at_end() || !is_digit(peek())) fail("a digit was expected after '.' in a number");
      while (!at_end() && is_digit(peek())) ++i_;
    }
    if (!at_end() && (p_[i_] == 'e' || p_[i_] == 'E')) {
      ++i_;
      if (!at_end() && (p_[i_] == '+' || p_[i_] == '-')) ++i_;
      if (at_end() || !is_digit(peek())) fail("a digit was expected in a number's exponent");
      while (!at_end() && is_digit(peek())) ++i_;
    }
    return std::string(p_ + start, i_ - start);
  }

  static bool is_digit(unsigned char c) noexcept { return c >= '0' && c <= '9'; }

  unsigned hex4() {
    unsigned v = 0;
    for (int k = 0; k < 4; ++k) {
      if (at_end()) fail("unexpected end of input in a \\u escape");
      const unsigned char c = peek();
      unsigned d;
      if (c >= '0' && c <= '9') {
        d = c - '0';
      } else if (c >= 'a' && c <= 'f') {
        d = c - 'a' + 10;
      } else if (c >= 'A' && c <= 'F') {
        d = c - 'A' + 10;
      } else {
        fail("a hexadecimal digit was expected in a \\u escape");
      }
      v = v * 16 + d;
      ++i_;
    }
    return v;
  }

  static void append_utf8(std::string& s, unsigned cp) {
    if (cp < 0x80) {
      s += static_cast<char>(cp);
    } else if (cp < 0x800) {
      s += static_cast<char>(0xC0 | (cp >> 6));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      s += static_cast<char>(0xE0 | (cp >> 12));
      s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      s += static_cast<char>(0xF0 | (cp >> 18));
      s += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  // One UTF-8 encoded character starting at i_ (lead byte >= 0x80): checked and copied.
  void utf8_char(std::string& s) {
    const unsigned char c = peek();
    int len;
    unsigned cp;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
      cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      cp = c & 0x07;
    } else {
      fail("invalid UTF-8 lead byte in a string");
    }
    if (n_ - i_ < static_cast<std::size_t>(len)) fail("truncated UTF-8 sequence in a string");
    for (int k = 1; k < len; ++k) {
      const unsigned char cc = static_cast<unsigned char>(p_[i_ + static_cast<std::size_t>(k)]);
      if ((cc & 0xC0) != 0x80) fail("invalid UTF-8 continuation byte in a string");
      cp = (cp << 6) | (cc & 0x3F);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
      fail("invalid UTF-8 sequence (overlong, surrogate or out of range) in a string");
    s.append(p_ + i_, static_cast<std::size_t>(len));
    i_ += static_cast<std::size_t>(len);
  }

  std::string string() {
    ++i_;  // opening quote
    std::string s;
    for (;;) {
      if (at_end()) fail("unterminated string");
      const unsigned char c = peek();
      if (c == '"') {
        ++i_;
        return s;
      }
      if (c < 0x20) fail("unescaped control character in a string");
      if (c >= 0x80) {
        utf8_char(s);
        continue;
      }
      if (c != '\\') {
        s += static_cast<char>(c);
        ++i_;
        continue;
      }
      ++i_;
      if (at_end()) fail("unterminated escape in a string");
      const char e = p_[i_++];
      switch (e) {
        case '"':
          s += '"';
          break;
        case '\\':
          s += '\\';
          break;
        case '/':
          s += '/';
          break;
        case 'b':
          s += '\b';
          break;
        case 'f':
          s += '\f';
          break;
        case 'n':
          s += '\n';
          break;
        case 'r':
          s += '\r';
          break;
        case 't':
          s += '\t';
          break;
        case 'u': {
          unsigned cp = hex4();
          if (cp >= 0xDC00 && cp <= 0xDFFF) fail("unpaired low surrogate in a \\u escape");
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (n_ - i_ < 2 || p_[i_] != '\\' || p_[i_ + 1] != 'u')
              fail("unpaired high surrogate in a \\u escape");
            i_ += 2;
            const unsigned lo = hex4();
            if (lo < 0xDC00 || lo > 0xDFFF) fail("invalid low surrogate in a \\u escape");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          append_utf8(s, cp);
          break;
        }
        default:
          --i_;
          fail("invalid escape character in a string");
      }
    }
  }

  const char* p_;
  std::size_t n_;
  std::size_t i_ = 0;
  const std::string& what_;
};

}  // namespace

Value parse(const char* data, std::size_t size, const std::string& what) {
  if (data == nullptr && size != 0) TOKEMB_FAIL(InvalidArgument, what, ": null data");
  static const char empty = 0;
  return Parser(data ? data : &empty, size, what).document();
}

std::string quote(const std::string& s) {
  static const char hex[] = "0123456789abcdef";
  std::string out = "\"";
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '"') {
      out += "\\\"";
    } else if (c == '\\') {
      out += "\\\\";
    } else if (c < 0x20) {
      out += "\\u00";
      out += hex[c >> 4];
      out += hex[c & 0xF];
    } else {
      out += ch;
    }
  }
  return out + "\"";
}

}  // namespace tokemb::detail::json
