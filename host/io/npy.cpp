// NumPy .npy files: header parser (fuzzed: never trusts a size it has not checked against the
// input), whole-file parser, reader, writers.
#include <algorithm>
#include <cstring>
#include <limits>

#include <tokemb/io.hpp>

#include "core/check.hpp"
#include "host/io/bytes.hpp"
#include "host/io/file.hpp"
#include "host/io/npy.hpp"
#include "host/io/tensor_bytes.hpp"

namespace tokemb {

namespace {

using detail::npy_magic;
constexpr std::size_t max_npy_rank = 64;

// The header dictionary: a Python literal such as
//   {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }
// Only what NumPy writes is accepted: string keys and values without escapes, True/False,
// tuples of non-negative integers (an 'L' suffix from Python 2 is tolerated).
class DictParser {
 public:
  DictParser(const char* p, std::size_t n) : p_(p), n_(n) {}

  void parse(NpyHeader& h) {
    bool have_descr = false, have_order = false, have_shape = false;
    ws();
    expect('{', "the header must be a Python dict starting with '{'");
    for (;;) {
      ws();
      if (peek_is('}')) {
        ++i_;
        break;
      }
      const std::string key = py_string("a dict key");
      ws();
      expect(':', "':' was expected after a dict key");
      ws();
      if (key == "descr") {
        if (have_descr) fail("duplicate key 'descr'");
        have_descr = true;
        if (peek_is('[')) fail("structured dtypes (a list descr) are not supported");
        h.descr = py_string("the 'descr' value");
      } else if (key == "fortran_order") {
        if (have_order) fail("duplicate key 'fortran_order'");
        have_order = true;
        h.fortran_order = py_bool();
      } else if (key == "shape") {
        if (have_shape) fail("duplicate key 'shape'");
        have_shape = true;
        h.shape = py_tuple();
      } else {
        fail(("unexpected key '" + key + "' (expected descr, fortran_order, shape)").c_str());
      }
      ws();
      if (peek_is(',')) {
        ++i_;
        continue;
      }
      expect('}', "',' or '}' was expected in the header dict");
      break;
    }
    ws();
    if (i_ != n_) fail("unexpected characters after the header dict");
    if (!have_descr || !have_order || !have_shape)
      fail("the header dict must contain the keys 'descr', 'fortran_order' and 'shape'");
  }

 private:
  [[noreturn]] void fail(const char* why) const {
    TOKEMB_FAIL(IoError, ".npy header: ", why, " (at header character ", i_, ")");
  }
  bool peek_is(char c) const noexcept { return i_ < n_ && p_[i_] == c; }
  void ws() noexcept {
    while (i_ < n_ && (p_[i_] == ' ' || p_[i_] == '\t' || p_[i_] == '\n' || p_[i_] == '\r')) ++i_;
  }
  void expect(char c, const char* why) {
    if (!peek_is(c)) fail(why);
    ++i_;
  }
  std::string py_string(const char* what) {
    if (!(peek_is('\'') || peek_is('"')))
      fail((std::string("a quoted string was expected for ") + what).c_str());
    const char q = p_[i_++];
    const std::size_t start = i_;
    while (i_ < n_ && p_[i_] != q) {
      if (p_[i_] == '\\') fail("escape sequences in header strings are not supported");
      if (p_[i_] == '\n') fail("unterminated string in the header");
      ++i_;
    }
    if (i_ >= n_) fail("unterminated string in the header");
    std::string s(p_ + start, i_ - start);
    ++i_;
    return s;
  }
  bool word(const char* w) {
    const std::size_t len = std::strlen(w);
    if (n_ - i_ >= len && std::memcmp(p_ + i_, w, len) == 0) {
      i_ += len;
      return true;
    }
    return false;
  }
  bool py_bool() {
    if (word("True")) return true;
    if (word("False")) return false;
    fail("'fortran_order' must be True or False");
  }
  std::vector<std::int64_t> py_tuple() {
    expect('(', "'shape' must be a tuple such as (3, 4) or (5,)");
    std::vector<std::int64_t> dims;
    for (;;) {
      ws();
      if (peek_is(')')) {
        ++i_;
        return dims;
      }
      if (!(i_ < n_ && p_[i_] >= '0' && p_[i_] <= '9'))
        fail("a non-negative integer was expected in 'shape'");
      std::int64_t v = 0;
      while (i_ < n_ && p_[i_] >= '0' && p_[i_] <= '9') {
        if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, p_[i_] - '0', &v))
          fail("a dimension in 'shape' overflows int64");
        ++i_;
      }
      if (peek_is('L')) ++i_;
      if (dims.size() >= max_npy_rank) fail("'shape' has more than 64 dimensions");
      dims.push_back(v);
      ws();
      if (peek_is(',')) {
        ++i_;
        continue;
      }
      expect(')', "',' or ')' was expected in 'shape'");
      return dims;
    }
  }

  const char* p_;
  std::size_t n_;
  std::size_t i_ = 0;
};

// Item size of a NumPy dtype string such as "<f4", "|u1", "<U10", "<M8[ns]".
std::size_t descr_item_size(const std::string& d) {
  std::size_t i = 0;
  if (i < d.size() && (d[i] == '<' || d[i] == '>' || d[i] == '|' || d[i] == '=')) ++i;
  TOKEMB_EXPECTS(i < d.size(), IoError, ".npy header: descr '", d, "' has no type character");
  const char kind = d[i++];
  TOKEMB_EXPECTS(kind != 'O', IoError, ".npy header: descr '", d,
                 "' is an object array (pickled Python objects), which is not supported");
  TOKEMB_EXPECTS(std::strchr("biufcSaUVmM", kind) != nullptr && kind != '\0', IoError,
                 ".npy header: descr '", d, "' has an unknown type character '", kind, "'");
  std::size_t count = 0, digits = 0;
  while (i < d.size() && d[i] >= '0' && d[i] <= '9') {
    TOKEMB_EXPECTS(digits < 9, IoError, ".npy header: descr '", d, "' has an absurd item size");
    count = count * 10 + static_cast<std::size_t>(d[i] - '0');
    ++digits;
    ++i;
  }
  TOKEMB_EXPECTS(digits > 0 && count > 0, IoError, ".npy header: descr '", d,
                 "' has no item size (expected e.g. '<f4')");
  if ((kind == 'm' || kind == 'M') && i < d.size() && d[i] == '[') {
    ++i;
    while (i < d.size() && d[i] != ']') ++i;
    TOKEMB_EXPECTS(i < d.size(), IoError, ".npy header: descr '", d, "' has an unclosed unit");
    ++i;
  }
  TOKEMB_EXPECTS(i == d.size(), IoError, ".npy header: descr '", d,
                 "' has unexpected trailing characters");
  return kind == 'U' ? count * 4 : count;
}

// The .npy descr we write for a dtype (bf16 is widened to f32: NumPy has no bf16).
const char* descr_for(DType dtype) {
  switch (dtype) {
    case DType::f32:
      return "<f4";
    case DType::bf16:
      return "<f4";
    case DType::f16:
      return "<f2";
    case DType::i32:
      return "<i4";
    case DType::i64:
      return "<i8";
    case DType::f64:
      return "<f8";
  }
  return "?";
}

std::string header_bytes(DType dtype, const Shape& shape) {
  std::string dict = "{'descr': '";
  dict += descr_for(dtype);
  dict += "', 'fortran_order': False, 'shape': (";
  for (int i = 0; i < shape.rank(); ++i) {
    if (i) dict += ", ";
    dict += std::to_string(shape[i]);
  }
  if (shape.rank() == 1) dict += ",";
  dict += "), }";
  // NumPy pads the header with spaces and a final newline so that the data starts on a
  // 64-byte boundary.
  const std::size_t unpadded = 10 + dict.size() + 1;
  dict.append((64 - unpadded % 64) % 64, ' ');
  dict += '\n';
  std::string out(reinterpret_cast<const char*>(npy_magic), 6);
  out += '\x01';
  out += '\x00';
  unsigned char len[2];
  detail::store_u16_le(len, static_cast<std::uint16_t>(dict.size()));
  out.append(reinterpret_cast<const char*>(len), 2);
  return out + dict;
}

// bf16 elements widened (exactly) to f32.
std::vector<unsigned char> widen_bf16(const unsigned char* src, std::size_t count) {
  std::vector<unsigned char> out = detail::make_bytes(count * 4, "widening bf16 to f32");
  for (std::size_t i = 0; i < count; ++i) {
    bf16_t h;
    std::memcpy(&h.bits, src + 2 * i, 2);
    const float f = h.to_float();
    std::memcpy(out.data() + 4 * i, &f, 4);
  }
  return out;
}

void check_dtype(DType dtype, const char* what) {
  TOKEMB_EXPECTS(dtype_size(dtype) != 0, InvalidArgument, what, ": invalid dtype value ",
                 static_cast<int>(dtype));
}

}  // namespace

namespace detail {

NpyHeader read_npy_header(const ByteSource& src, Trailing trailing) {
  return with_tokemb_alloc_errors("reading a .npy header", [&] {
    const std::uint64_t size = src.size();
    TOKEMB_EXPECTS(size >= 10, IoError, ".npy: the data is ", size,
                   " bytes long, too short for the magic string and header length (10 bytes)");
    unsigned char b[12] = {};
    src.read_at(0, b, static_cast<std::size_t>(std::min<std::uint64_t>(size, 12)));
    TOKEMB_EXPECTS(has_magic(b, 10, npy_magic), IoError,
                   ".npy: bad magic string (expected \\x93NUMPY): not a .npy file");
    const unsigned major = b[6], minor = b[7];
    std::uint64_t header_len = 0, header_start = 0;
    if (major == 1 && minor == 0) {
      header_len = load_u16_le(b + 8);
      header_start = 10;
    } else if ((major == 2 || major == 3) && minor == 0) {
      TOKEMB_EXPECTS(size >= 12, IoError, ".npy: the data is ", size,
                     " bytes long, too short for a version ", major, ".0 header length");
      header_len = load_u32_le(b + 8);
      header_start = 12;
    } else {
      TOKEMB_FAIL(IoError, ".npy: format version ", major, ".", minor,
                  " is not supported (1.0, 2.0 and 3.0 are)");
    }
    // Refused before anything is allocated or read: a header claiming gigabytes is not a .npy.
    TOKEMB_EXPECTS(header_len <= npy_max_header_bytes, IoError, ".npy: the header declares ",
                   header_len, " bytes, more than the limit of ", npy_max_header_bytes,
                   " bytes (NumPy writes a few hundred at most): not a real .npy file");
    TOKEMB_EXPECTS(header_len <= size - header_start, IoError, ".npy: the header declares ",
                   header_len, " bytes but only ", size - header_start, " follow: truncated file");
    std::string dict(static_cast<std::size_t>(header_len), '\0');
    src.read_at(header_start, dict.data(), dict.size());
    NpyHeader h;
    DictParser(dict.data(), dict.size()).parse(h);
    const std::size_t item = descr_item_size(h.descr);
    std::uint64_t numel = 1;
    for (std::int64_t d : h.shape)
      TOKEMB_EXPECTS(!__builtin_mul_overflow(numel, static_cast<std::uint64_t>(d), &numel), IoError,
                     ".npy: the element count of the shape overflows");
    h.data_offset = static_cast<std::size_t>(header_start + header_len);
    h.data_bytes = static_cast<std::size_t>(checked_data_bytes(
        numel, item, h.data_offset, size, trailing, ".npy (descr '" + h.descr + "')"));
    return h;
  });
}

}  // namespace detail

NpyHeader parse_npy_header(const void* bytes, std::size_t size) {
  TOKEMB_EXPECTS(bytes != nullptr || size == 0, InvalidArgument,
                 "parse_npy_header: bytes is a null pointer but size is ", size);
  return detail::read_npy_header(detail::MemorySource(bytes, size, "<memory>"),
                                 detail::Trailing::allowed);
}

namespace {

// A whole .npy from \p src: the header is read and checked first, then only the data.
HostTensor npy_tensor(const detail::ByteSource& src) {
  const NpyHeader h = detail::read_npy_header(src, detail::Trailing::rejected);
  return detail::with_tokemb_alloc_errors("reading a .npy file", [&] {
    const std::string& d = h.descr;
    TOKEMB_EXPECTS(!(d.size() > 1 && d[0] == '>'), IoError, ".npy: descr '", d,
                   "' is big-endian, which is not supported (save little-endian data)");
    const std::string code = (d[0] == '<' || d[0] == '=' || d[0] == '|') ? d.substr(1) : d;
    DType dtype;
    if (code == "f4") {
      dtype = DType::f32;
    } else if (code == "f2") {
      dtype = DType::f16;
    } else if (code == "i4") {
      dtype = DType::i32;
    } else if (code == "i8") {
      dtype = DType::i64;
    } else if (code == "f8") {
      dtype = DType::f64;
    } else {
      TOKEMB_FAIL(IoError, ".npy: descr '", d,
                  "' is not supported; expected '<f4' (f32 or bf16 tables), '<f2', '<f8', '<i4' "
                  "or '<i8'");
    }
    TOKEMB_EXPECTS(h.shape.size() <= static_cast<std::size_t>(Shape::max_rank), IoError,
                   ".npy: the array has ", h.shape.size(), " dimensions; at most ", Shape::max_rank,
                   " are supported");
    TOKEMB_EXPECTS(!h.fortran_order || h.shape.size() <= 1, IoError,
                   ".npy: the array is in Fortran order; only C order is supported");
    HostTensor t;
    t.dtype = dtype;
    t.shape = detail::make_shape(h.shape);
    t.data = detail::make_bytes(h.data_bytes, "reading a .npy file");
    if (h.data_bytes) src.read_at(h.data_offset, t.data.data(), h.data_bytes);
    return t;
  });
}

}  // namespace

HostTensor parse_npy(const void* bytes, std::size_t size) {
  TOKEMB_EXPECTS(bytes != nullptr || size == 0, InvalidArgument,
                 "parse_npy: bytes is a null pointer but size is ", size);
  return npy_tensor(detail::MemorySource(bytes, size, "<memory>"));
}

HostTensor read_npy(const std::string& path) {
  // The header is read and checked before the data: a file whose header is absurd is refused
  // without reading (or allocating) the rest.
  const detail::InputFile file(path);
  try {
    return npy_tensor(file);
  } catch (const IoError& e) {
    // Name the file; keep the location of the check that failed.
    throw detail::ErrorLocation::at(IoError("'" + path + "': " + e.what()), e.file(), e.line());
  }
}

void save_npy(const std::string& path, const TensorView& tensor, StreamView stream) {
  check_dtype(tensor.dtype, "save_npy");
  TOKEMB_EXPECTS(tensor.data != nullptr, InvalidArgument, "save_npy('", path,
                 "'): the tensor has a null data pointer");
  std::vector<unsigned char> data = detail::tensor_to_host_bytes(tensor, stream, "save_npy");
  if (tensor.dtype == DType::bf16) data = widen_bf16(data.data(), data.size() / 2);
  OutputFile file(path);
  const std::string header = header_bytes(tensor.dtype, tensor.shape);
  file.write(header.data(), header.size());
  file.write(data.data(), data.size());
  file.commit();
}

void load_npy(const std::string& path, const TensorView& dst, StreamView stream) {
  check_dtype(dst.dtype, "load_npy");
  TOKEMB_EXPECTS(dst.data != nullptr, InvalidArgument, "load_npy('", path,
                 "'): the destination has a null data pointer");
  const HostTensor t = read_npy(path);
  const std::vector<unsigned char> bytes =
      detail::checked_load_bytes(t, dst, "load_npy('" + path + "')");
  copy(dst, TensorView(bytes.data(), dst.dtype, dst.shape, Device::cpu()), stream);
  if (dst.device.is_cuda()) synchronize(stream);  // bytes is freed when we return
}

// ---- NpyWriter -----------------------------------------------------------------------------

struct NpyWriter::Impl {
  std::unique_ptr<OutputFile> owned;  // null when the caller owns the file
  OutputFile* file = nullptr;
  DType dtype;
  std::uint64_t expected = 0;  // bytes of input (in dtype) still to come
  std::uint64_t written = 0;
};

std::unique_ptr<NpyWriter::Impl> NpyWriter::open(const std::string& path, OutputFile* file,
                                                 DType dtype, const Shape& shape) {
  check_dtype(dtype, "NpyWriter");
  const std::int64_t n = shape.numel();
  std::uint64_t bytes = 0;
  TOKEMB_EXPECTS(!__builtin_mul_overflow(static_cast<std::uint64_t>(n), dtype_size(dtype), &bytes),
                 InvalidArgument, "NpyWriter('", path, "'): ", shape.str(), " of ",
                 dtype_name(dtype), " overflows 64 bits");
  auto impl = std::make_unique<Impl>();
  if (file == nullptr) {
    impl->owned = std::make_unique<OutputFile>(path);
    file = impl->owned.get();
  }
  impl->file = file;
  impl->dtype = dtype;
  impl->expected = bytes;
  const std::string header = header_bytes(dtype, shape);
  impl->file->write(header.data(), header.size());
  return impl;
}

NpyWriter::NpyWriter(const std::string& path, DType dtype, Shape shape)
    : impl_(open(path, nullptr, dtype, shape)) {}

NpyWriter::NpyWriter(OutputFile& file, DType dtype, Shape shape)
    : impl_(open(file.path(), &file, dtype, shape)) {}

NpyWriter::~NpyWriter() = default;

void NpyWriter::write(const void* data, std::size_t bytes) {
  TOKEMB_EXPECTS(impl_ != nullptr, InvalidArgument, "NpyWriter::write: the writer is closed");
  const std::string& path = impl_->file->path();
  const std::size_t item = dtype_size(impl_->dtype);
  TOKEMB_EXPECTS(bytes % item == 0, InvalidArgument, "NpyWriter::write('", path, "'): ", bytes,
                 " bytes is not a whole number of ", dtype_name(impl_->dtype), " elements (", item,
                 " bytes each)");
  TOKEMB_EXPECTS(data != nullptr || bytes == 0, InvalidArgument, "NpyWriter::write('", path,
                 "'): data is a null pointer");
  TOKEMB_EXPECTS(bytes <= impl_->expected - impl_->written, InvalidArgument, "NpyWriter::write('",
                 path, "'): ", bytes, " more bytes would exceed the declared ", impl_->expected,
                 " (", impl_->written, " written so far)");
  if (impl_->dtype == DType::bf16) {
    const auto* src = static_cast<const unsigned char*>(data);
    constexpr std::size_t chunk = 1 << 20;  // elements per conversion
    for (std::size_t done = 0; done < bytes / 2; done += chunk) {
      const std::size_t count = std::min(chunk, bytes / 2 - done);
      const std::vector<unsigned char> wide = widen_bf16(src + 2 * done, count);
      impl_->file->write(wide.data(), wide.size());
    }
  } else {
    impl_->file->write(data, bytes);
  }
  impl_->written += bytes;
}

void NpyWriter::commit() {
  TOKEMB_EXPECTS(impl_ != nullptr, InvalidArgument, "NpyWriter::commit: the writer is closed");
  TOKEMB_EXPECTS(impl_->written == impl_->expected, InvalidArgument, "NpyWriter::commit('",
                 impl_->file->path(), "'): only ", impl_->written, " of the declared ",
                 impl_->expected, " bytes were written");
  if (impl_->owned) impl_->file->commit();
  impl_.reset();
}

}  // namespace tokemb
