// A small strict JSON pull parser, its key set, and string quoting, for safetensors headers.
#include "host/io/json.hpp"

#include <cstring>

#include <tokemb/error.hpp>

#include "core/check.hpp"

namespace tokemb::detail::json {

namespace {

bool is_digit(unsigned char c) noexcept { return c >= '0' && c <= '9'; }

void append_utf8(std::string& s, unsigned cp) {
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

}  // namespace

Reader::Reader(const char* data, std::size_t size, const std::string& what)
    : p_(data), n_(size), what_(what) {
  static const char empty = 0;
  if (data == nullptr) {
    TOKEMB_EXPECTS(size == 0, InvalidArgument, what, ": null data");
    p_ = &empty;
  }
  TOKEMB_EXPECTS(size < (std::size_t{1} << 32) - 1, IoError, what, ": ", size,
                 " bytes of JSON is more than this parser reads (4 GiB)");
}

void Reader::fail(const char* why) const {
  TOKEMB_FAIL(IoError, what_, ": malformed JSON at byte ", i_, ": ", why);
}

void Reader::skip_ws() noexcept {
  while (i_ < n_ && (p_[i_] == ' ' || p_[i_] == '\t' || p_[i_] == '\n' || p_[i_] == '\r')) ++i_;
}

char Reader::peek() {
  skip_ws();
  return at_end() ? '\0' : p_[i_];
}

void Reader::expect(char c, const char* why) {
  if (at_end() || p_[i_] != c) fail(why);
  ++i_;
}

void Reader::literal(const char* word) {
  for (const char* w = word; *w; ++w) {
    if (at_end() || p_[i_] != *w) fail("invalid literal (expected true, false or null)");
    ++i_;
  }
}

void Reader::begin_object() {
  skip_ws();
  if (at_end()) fail("unexpected end of input, a value was expected");
  expect('{', "an object was expected");
  ++values_;
}

bool Reader::next_member(bool& first, std::string& key) {
  skip_ws();
  if (at_end()) fail("unexpected end of input inside an object");
  if (first) {
    first = false;
    if (p_[i_] == '}') {
      ++i_;
      return false;
    }
  } else {
    if (p_[i_] == '}') {
      ++i_;
      return false;
    }
    expect(',', "',' or '}' was expected in an object");
    skip_ws();
  }
  if (at_end() || p_[i_] != '"') fail("an object key (a string) was expected");
  key_offset_ = i_;
  key = string();
  skip_ws();
  expect(':', "':' was expected after an object key");
  return true;
}

void Reader::begin_array() {
  skip_ws();
  if (at_end()) fail("unexpected end of input, a value was expected");
  expect('[', "an array was expected");
  ++values_;
}

bool Reader::next_item(bool& first) {
  skip_ws();
  if (at_end()) fail("unexpected end of input inside an array");
  if (p_[i_] == ']') {
    ++i_;
    return false;
  }
  if (!first) {
    expect(',', "',' or ']' was expected in an array");
  }
  first = false;
  return true;
}

std::string Reader::string_value(const char* why) {
  if (peek() != '"') fail(why);
  ++values_;
  return string();
}

std::string Reader::number_value(const char* why) {
  const char c = peek();
  if (!(c == '-' || (c >= '0' && c <= '9'))) fail(why);
  ++values_;
  return number();
}

void Reader::skip_value(int depth) {
  if (depth >= max_depth) fail("nesting is too deep");
  const char c = peek();
  if (at_end()) fail("unexpected end of input, a value was expected");
  switch (c) {
    case '{': {
      begin_object();
      KeySet keys;
      bool first = true;
      std::string key;
      while (next_member(first, key)) {
        if (!keys.insert(key, key_offset_, *this)) {
          i_ = key_offset_;
          fail("duplicate key in an object");
        }
        skip_value(depth + 1);
      }
      return;
    }
    case '[': {
      begin_array();
      bool first = true;
      while (next_item(first)) skip_value(depth + 1);
      return;
    }
    case '"':
      (void)string_value("");
      return;
    case 't':
      ++values_;
      literal("true");
      return;
    case 'f':
      ++values_;
      literal("false");
      return;
    case 'n':
      ++values_;
      literal("null");
      return;
    default:
      (void)number_value("unexpected character, a value was expected");
  }
}

void Reader::finish() {
  skip_ws();
  if (i_ != n_) fail("unexpected data after the JSON value");
}

std::string Reader::string_at(std::size_t offset) const {
  Reader r(*this);
  r.i_ = offset;
  return r.string();
}

std::string Reader::number() {
  const std::size_t start = i_;
  if (p_[i_] == '-') ++i_;
  if (at_end() || !is_digit(static_cast<unsigned char>(p_[i_])))
    fail("a digit was expected in a number");
  if (p_[i_] == '0') {
    ++i_;
  } else {
    while (!at_end() && is_digit(static_cast<unsigned char>(p_[i_]))) ++i_;
  }
  if (!at_end() && p_[i_] == '.') {
    ++i_;
    if (at_end() || !is_digit(static_cast<unsigned char>(p_[i_])))
      fail("a digit was expected after '.' in a number");
    while (!at_end() && is_digit(static_cast<unsigned char>(p_[i_]))) ++i_;
  }
  if (!at_end() && (p_[i_] == 'e' || p_[i_] == 'E')) {
    ++i_;
    if (!at_end() && (p_[i_] == '+' || p_[i_] == '-')) ++i_;
    if (at_end() || !is_digit(static_cast<unsigned char>(p_[i_])))
      fail("a digit was expected in a number's exponent");
    while (!at_end() && is_digit(static_cast<unsigned char>(p_[i_]))) ++i_;
  }
  return std::string(p_ + start, i_ - start);
}

unsigned Reader::hex4() {
  unsigned v = 0;
  for (int k = 0; k < 4; ++k) {
    if (at_end()) fail("unexpected end of input in a \\u escape");
    const unsigned char c = cur();
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

// One UTF-8 encoded character starting at i_ (lead byte >= 0x80): checked and copied.
void Reader::utf8_char(std::string& s) {
  const unsigned char c = cur();
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

std::string Reader::string() {
  ++i_;  // opening quote
  std::string s;
  for (;;) {
    if (at_end()) fail("unterminated string");
    const unsigned char c = cur();
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

// ---- KeySet ------------------------------------------------------------------------------------

namespace {

std::uint32_t key_hash(const std::string& key) noexcept {
  std::uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a
  for (char c : key) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ull;
  }
  h ^= h >> 29;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 32;
  return static_cast<std::uint32_t>(h);
}

}  // namespace

bool KeySet::insert(const std::string& key, std::size_t offset, const Reader& r) {
  if ((count_ + 1) * 2 > slots_.size()) {
    std::vector<std::uint64_t> old;
    old.swap(slots_);
    slots_.assign(old.empty() ? 16 : old.size() * 2, 0);
    const std::size_t mask = slots_.size() - 1;
    for (std::uint64_t e : old) {
      if (e == 0) continue;
      std::size_t k = static_cast<std::size_t>(e >> 32) & mask;
      while (slots_[k] != 0) k = (k + 1) & mask;
      slots_[k] = e;
    }
  }
  const std::uint32_t h = key_hash(key);
  const std::size_t mask = slots_.size() - 1;
  std::size_t k = h & mask;
  for (; slots_[k] != 0; k = (k + 1) & mask) {
    if (static_cast<std::uint32_t>(slots_[k] >> 32) != h) continue;
    const std::size_t other = static_cast<std::size_t>(slots_[k] & 0xffffffffu) - 1;
    if (r.string_at(other) == key) return false;
  }
  slots_[k] = (std::uint64_t{h} << 32) | (static_cast<std::uint64_t>(offset) + 1);
  ++count_;
  return true;
}

// ---- writing -----------------------------------------------------------------------------------

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

bool valid_utf8(const std::string& s) {
  const std::string q = quote(s);
  try {
    Reader r(q.data(), q.size(), "name");
    (void)r.string_value("a string");
    r.finish();
    return true;
  } catch (const IoError&) {
    return false;
  }
}

}  // namespace tokemb::detail::json
