// safetensors: header validation (fuzzed: every offset and size is checked against the input
// before it is used), whole-file parser, reader, writer, and the module's weights.
#include <algorithm>
#include <cstring>
#include <string_view>
#include <unordered_set>

#include <tokemb/io.hpp>

#include "core/check.hpp"
#include "host/io/bytes.hpp"
#include "host/io/file.hpp"
#include "host/io/json.hpp"
#include "host/io/tensor_bytes.hpp"

namespace tokemb {

namespace {

// The safetensors reference implementation refuses headers above 100 MB; so do we.
constexpr std::uint64_t max_header_bytes = 100'000'000;
constexpr std::size_t max_rank = 64;

struct DtypeInfo {
  const char* name;
  std::size_t size;
  bool supported;  // representable as a tokemb DType
  DType dtype;
};

// Every dtype the format defines with a whole-byte item size. Tensors of the unsupported ones
// may sit in a file (they are validated, then ignored by load_weights) but cannot be returned.
constexpr DtypeInfo dtype_infos[] = {
    {"F32", 4, true, DType::f32},      {"F16", 2, true, DType::f16},
    {"BF16", 2, true, DType::bf16},    {"I32", 4, true, DType::i32},
    {"I64", 8, true, DType::i64},      {"F64", 8, true, DType::f64},
    {"I8", 1, false, DType::f32},      {"U8", 1, false, DType::f32},
    {"BOOL", 1, false, DType::f32},    {"I16", 2, false, DType::f32},
    {"U16", 2, false, DType::f32},     {"U32", 4, false, DType::f32},
    {"U64", 8, false, DType::f32},     {"F8_E4M3", 1, false, DType::f32},
    {"F8_E5M2", 1, false, DType::f32}, {"F8_E8M0", 1, false, DType::f32},
    {"C64", 8, false, DType::f32},
};

const char* st_name(DType d) {
  switch (d) {
    case DType::f32:
      return "F32";
    case DType::f16:
      return "F16";
    case DType::bf16:
      return "BF16";
    case DType::i32:
      return "I32";
    case DType::i64:
      return "I64";
    case DType::f64:
      return "F64";
  }
  return "?";
}

struct Entry {
  std::string name;
  const DtypeInfo* info = nullptr;
  std::vector<std::int64_t> shape;
  std::uint64_t begin = 0, end = 0;  // relative to the data buffer
};

struct Header {
  std::vector<Entry> entries;  // in file order
  std::uint64_t data_start = 0;
  const Entry* find(const std::string& name) const {
    for (const Entry& e : entries)
      if (e.name == name) return &e;
    return nullptr;
  }
  std::string names() const {
    std::string s;
    for (std::size_t i = 0; i < entries.size() && i < 12; ++i)
      s += (i ? ", '" : "'") + entries[i].name + "'";
    if (entries.size() > 12) s += ", ...";
    return s.empty() ? "no tensors" : s;
  }
};

// A shape entry or data offset: a plain non-negative integer below 2^63. Says which rule a
// value breaks: not an integer at all, or an integer too large for any file.
std::int64_t index_value(detail::json::Reader& r, const std::string& where, const std::string& name,
                         const char* field) {
  const char c = r.peek();
  if (!(c == '-' || (c >= '0' && c <= '9'))) {
    TOKEMB_FAIL(IoError, where, ": tensor '", name, "' has ", field,
                " value of another type that is not a non-negative integer");
  }
  const std::string text = r.number_value("a number was expected");
  std::int64_t v = 0;
  bool digits = !text.empty(), fits = true;
  for (char ch : text) {
    if (ch < '0' || ch > '9') {
      digits = false;
      break;
    }
    if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, ch - '0', &v)) fits = false;
  }
  TOKEMB_EXPECTS(!digits || fits, IoError, where, ": tensor '", name, "' has ", field, " value ",
                 text, ", larger than any file can hold (the limit is 2^63 - 1)");
  TOKEMB_EXPECTS(digits, IoError, where, ": tensor '", name, "' has ", field, " value ", text,
                 " that is not a non-negative integer");
  return v;
}

// The header length N from the first 8 bytes, checked against the total size.
std::uint64_t header_length(const unsigned char* first8, std::uint64_t total,
                            const std::string& what) {
  const std::uint64_t n = detail::load_u64_le(first8);
  TOKEMB_EXPECTS(n <= total - 8, IoError, what, ": the header length is ", n, " bytes but only ",
                 total - 8, " bytes follow: truncated or not a safetensors file");
  TOKEMB_EXPECTS(n <= max_header_bytes, IoError, what, ": the header length ", n,
                 " exceeds the limit of ", max_header_bytes, " bytes");
  TOKEMB_EXPECTS(n >= 2, IoError, what, ": the header length is ", n,
                 ", too short for a JSON object");
  return n;
}

// Checks for an interrupt every this many JSON values while parsing a header.
constexpr std::uint64_t interrupt_every = 4096;

// One tensor's object: dtype, shape and data_offsets (other members are validated and ignored).
Entry tensor_entry(detail::json::Reader& r, std::string name, std::uint64_t data_size,
                   const std::string& where) {
  TOKEMB_EXPECTS(r.peek() == '{', IoError, where, ": tensor '", name, "' is not an object");
  Entry e;
  e.name = std::move(name);
  const std::string& nm = e.name;
  bool have_dtype = false, have_shape = false, have_offsets = false;
  std::int64_t offsets[2] = {0, 0};
  std::size_t n_offsets = 0;
  detail::json::KeySet keys;
  r.begin_object();
  bool first = true;
  std::string key;
  while (r.next_member(first, key)) {
    if (!keys.insert(key, r.key_offset(), r)) r.fail("duplicate key in an object");
    if (key == "dtype") {
      TOKEMB_EXPECTS(r.peek() == '"', IoError, where, ": tensor '", nm, "' has no string 'dtype'");
      const std::string dtype = r.string_value("a string was expected");
      for (const DtypeInfo& info : dtype_infos)
        if (dtype == info.name) e.info = &info;
      TOKEMB_EXPECTS(e.info != nullptr, IoError, where, ": tensor '", nm, "' has unknown dtype '",
                     dtype, "'");
      have_dtype = true;
    } else if (key == "shape") {
      TOKEMB_EXPECTS(r.peek() == '[', IoError, where, ": tensor '", nm, "' has no array 'shape'");
      r.begin_array();
      bool f = true;
      while (r.next_item(f)) {
        TOKEMB_EXPECTS(e.shape.size() < max_rank, IoError, where, ": tensor '", nm,
                       "' has more than ", max_rank, " dimensions");
        e.shape.push_back(index_value(r, where, nm, "a 'shape'"));
      }
      have_shape = true;
    } else if (key == "data_offsets") {
      TOKEMB_EXPECTS(r.peek() == '[', IoError, where, ": tensor '", nm,
                     "' needs 'data_offsets': [begin, end] of non-negative integers");
      r.begin_array();
      bool f = true;
      while (r.next_item(f)) {
        TOKEMB_EXPECTS(n_offsets < 2, IoError, where, ": tensor '", nm,
                       "' needs 'data_offsets': [begin, end] of non-negative integers");
        offsets[n_offsets++] = index_value(r, where, nm, "a 'data_offsets'");
      }
      have_offsets = true;
    } else {
      r.skip_value(2);
    }
  }
  TOKEMB_EXPECTS(have_dtype, IoError, where, ": tensor '", nm, "' has no string 'dtype'");
  TOKEMB_EXPECTS(have_shape, IoError, where, ": tensor '", nm, "' has no array 'shape'");
  TOKEMB_EXPECTS(have_offsets && n_offsets == 2, IoError, where, ": tensor '", nm,
                 "' needs 'data_offsets': [begin, end] of non-negative integers");
  std::uint64_t numel = 1;
  for (std::int64_t dim : e.shape)
    TOKEMB_EXPECTS(!__builtin_mul_overflow(numel, static_cast<std::uint64_t>(dim), &numel), IoError,
                   where, ": tensor '", nm, "': the element count overflows");
  TOKEMB_EXPECTS(numel <= static_cast<std::uint64_t>(INT64_MAX), IoError, where, ": tensor '", nm,
                 "': the element count overflows int64");
  std::uint64_t nbytes = 0;
  TOKEMB_EXPECTS(!__builtin_mul_overflow(numel, e.info->size, &nbytes), IoError, where,
                 ": tensor '", nm, "': the byte size overflows");
  e.begin = static_cast<std::uint64_t>(offsets[0]);
  e.end = static_cast<std::uint64_t>(offsets[1]);
  TOKEMB_EXPECTS(e.begin <= e.end && e.end <= data_size, IoError, where, ": tensor '", nm,
                 "' has data_offsets [", e.begin, ", ", e.end, "] outside the data buffer of ",
                 data_size, " bytes (truncated or corrupt file)");
  TOKEMB_EXPECTS(e.end - e.begin == nbytes, IoError, where, ": tensor '", nm,
                 "' has data_offsets [", e.begin, ", ", e.end, "] (", e.end - e.begin,
                 " bytes) but its dtype ", e.info->name, " and shape need ", nbytes, " bytes");
  return e;
}

// Validates the JSON header against a data buffer of data_size bytes, in one pass: nothing but
// the entries and one key set is kept, so time is linear in n and memory a small multiple of it.
Header parse_header(const unsigned char* json, std::size_t n, std::uint64_t data_size,
                    const std::string& what) {
  const std::string where = what + " header";
  detail::json::Reader r(reinterpret_cast<const char*>(json), n, where);
  TOKEMB_EXPECTS(r.peek() == '{', IoError, where, ": the header must be a JSON object");
  Header h;
  h.data_start = 8 + n;
  detail::json::KeySet names;
  std::uint64_t next_check = 0;
  r.begin_object();
  bool first = true;
  std::string name;
  while (r.next_member(first, name)) {
    if (r.values() >= next_check) {
      next_check = r.values() + interrupt_every;
      TOKEMB_EXPECTS(!detail::interrupt_requested(), IoError, where,
                     ": reading the header was interrupted");
    }
    if (!names.insert(name, r.key_offset(), r)) r.fail("duplicate key in an object");
    if (name == "__metadata__") {
      TOKEMB_EXPECTS(r.peek() == '{', IoError, where, ": '__metadata__' must be an object");
      detail::json::KeySet keys;
      r.begin_object();
      bool f = true;
      std::string key;
      while (r.next_member(f, key)) {
        if (!keys.insert(key, r.key_offset(), r)) r.fail("duplicate key in an object");
        TOKEMB_EXPECTS(r.peek() == '"', IoError, where, ": '__metadata__' value '", key,
                       "' is not a string");
        (void)r.string_value("a string was expected");
        if (r.values() >= next_check) {
          next_check = r.values() + interrupt_every;
          TOKEMB_EXPECTS(!detail::interrupt_requested(), IoError, where,
                         ": reading the header was interrupted");
        }
      }
      continue;
    }
    h.entries.push_back(tensor_entry(r, std::move(name), data_size, where));
    name.clear();
  }
  r.finish();
  std::vector<const Entry*> sorted;
  for (const Entry& e : h.entries) sorted.push_back(&e);
  std::sort(sorted.begin(), sorted.end(), [](const Entry* a, const Entry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  for (std::size_t i = 1; i < sorted.size(); ++i)
    TOKEMB_EXPECTS(sorted[i]->begin >= sorted[i - 1]->end, IoError, where, ": tensors '",
                   sorted[i - 1]->name, "' and '", sorted[i]->name, "' overlap in the data buffer");
  return h;
}

HostTensor make_tensor(const Entry& e, const std::string& what) {
  TOKEMB_EXPECTS(e.info->supported, IoError, what, ": tensor '", e.name, "' has dtype ",
                 e.info->name, ", which tokemb cannot hold (F32, F16, BF16, I32, I64)");
  TOKEMB_EXPECTS(e.shape.size() <= static_cast<std::size_t>(Shape::max_rank), IoError, what,
                 ": tensor '", e.name, "' has ", e.shape.size(), " dimensions; at most ",
                 Shape::max_rank, " are supported");
  HostTensor t;
  t.dtype = e.info->dtype;
  t.shape = detail::make_shape(e.shape);
  t.data = detail::make_bytes(static_cast<std::size_t>(e.end - e.begin), what.c_str());
  return t;
}

// The tensor a module table is loaded from, checked against the table before anything is read.
const Entry& table_entry(const Header& h, const std::string& name, const TensorView& table,
                         const std::string& what) {
  const Entry* e = h.find(name);
  TOKEMB_EXPECTS(e != nullptr, InvalidArgument, what, ": there is no tensor named '", name,
                 "' (the file holds ", h.names(), ")");
  const bool dtype_ok =
      e->info->supported && (e->info->dtype == table.dtype ||
                             (e->info->dtype == DType::f32 && table.dtype != DType::f32));
  TOKEMB_EXPECTS(dtype_ok, InvalidArgument, what, ": tensor '", name, "' has dtype ", e->info->name,
                 " but the table is ", dtype_name(table.dtype),
                 " (the dtypes must match, or F32 may be loaded into a bf16 or f16 table)");
  std::string shape = "[";
  for (std::size_t i = 0; i < e->shape.size(); ++i)
    shape += (i ? ", " : "") + std::to_string(e->shape[i]);
  shape += "]";
  TOKEMB_EXPECTS(e->shape == detail::shape_dims(table.shape), InvalidArgument, what, ": tensor '",
                 name, "' has shape ", shape, " but the table has shape ", table.shape.str());
  return *e;
}

}  // namespace

std::vector<std::pair<std::string, HostTensor>> parse_safetensors(const void* bytes,
                                                                  std::size_t size) {
  TOKEMB_EXPECTS(bytes != nullptr || size == 0, InvalidArgument,
                 "parse_safetensors: bytes is a null pointer but size is ", size);
  return detail::with_tokemb_alloc_errors("parse_safetensors", [&] {
    const std::string what = "safetensors";
    const auto* b = static_cast<const unsigned char*>(bytes);
    TOKEMB_EXPECTS(size >= 8, IoError, what, ": the data is ", size,
                   " bytes long, too short for the 8-byte header length");
    const std::uint64_t n = header_length(b, size, what);
    const Header h = parse_header(b + 8, static_cast<std::size_t>(n), size - 8 - n, what);
    std::vector<std::pair<std::string, HostTensor>> out;
    for (const Entry& e : h.entries) {
      HostTensor t = make_tensor(e, what);
      if (!t.data.empty()) std::memcpy(t.data.data(), b + h.data_start + e.begin, t.data.size());
      out.emplace_back(e.name, std::move(t));
    }
    return out;
  });
}

std::vector<std::pair<std::string, HostTensor>> read_safetensors(const std::string& path) {
  const std::vector<unsigned char> bytes = detail::read_whole_file(path);
  try {
    return parse_safetensors(bytes.data(), bytes.size());
  } catch (const IoError& e) {
    // Name the file; keep the location of the check that failed.
    throw detail::ErrorLocation::at(IoError("'" + path + "': " + e.what()), e.file(), e.line());
  }
}

namespace {

// Checks the tensors' names and views, then writes the file into \p file (not published). The
// checks come first, so that with a path nothing is created for bad arguments.
void check_tensors(const std::vector<std::pair<std::string, TensorView>>& tensors,
                   const std::string& what) {
  std::unordered_set<std::string_view> seen;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const std::string& name = tensors[i].first;
    const TensorView& t = tensors[i].second;
    TOKEMB_EXPECTS(!name.empty(), InvalidArgument, what, ": tensor ", i, " has an empty name");
    TOKEMB_EXPECTS(name != "__metadata__", InvalidArgument, what,
                   ": '__metadata__' is reserved and cannot name a tensor");
    TOKEMB_EXPECTS(seen.insert(name).second, InvalidArgument, what, ": the name '", name,
                   "' is used twice");
    TOKEMB_EXPECTS(detail::json::valid_utf8(name), InvalidArgument, what, ": tensor ", i,
                   "'s name is not valid UTF-8");
    TOKEMB_EXPECTS(dtype_size(t.dtype) != 0, InvalidArgument, what, ": tensor '", name,
                   "' has an invalid dtype");
    TOKEMB_EXPECTS(t.data != nullptr, InvalidArgument, what, ": tensor '", name,
                   "' has a null data pointer");
  }
}

void write_safetensors(OutputFile& file,
                       const std::vector<std::pair<std::string, TensorView>>& tensors,
                       StreamView stream) {
  std::vector<std::vector<unsigned char>> data;
  std::string header = "{\"__metadata__\":{\"format\":\"pt\"}";
  std::uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    data.push_back(detail::tensor_to_host_bytes(t, stream, "save_safetensors"));
    header +=
        "," + detail::json::quote(name) + ":{\"dtype\":\"" + st_name(t.dtype) + "\",\"shape\":[";
    for (int d = 0; d < t.shape.rank(); ++d) header += (d ? "," : "") + std::to_string(t.shape[d]);
    header += "],\"data_offsets\":[" + std::to_string(offset) + "," +
              std::to_string(offset + data.back().size()) + "]}";
    offset += data.back().size();
  }
  header += "}";
  header.append((8 - header.size() % 8) % 8, ' ');  // the data buffer starts 8-byte aligned
  unsigned char len[8];
  detail::store_u64_le(len, header.size());
  file.write(len, 8);
  file.write(header.data(), header.size());
  for (const auto& d : data) file.write(d.data(), d.size());
}

}  // namespace

void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, TensorView>>& tensors,
                      StreamView stream) {
  check_tensors(tensors, "save_safetensors('" + path + "')");
  OutputFile file(path);
  write_safetensors(file, tensors, stream);
  file.commit();
}

void save_safetensors(OutputFile& file,
                      const std::vector<std::pair<std::string, TensorView>>& tensors,
                      StreamView stream) {
  check_tensors(tensors, "save_safetensors('" + file.path() + "')");
  write_safetensors(file, tensors, stream);
}

namespace {

std::vector<std::pair<std::string, TensorView>> weight_tensors(Embedding& module,
                                                               const std::string& path,
                                                               const WeightNames& names) {
  std::vector<std::pair<std::string, TensorView>> tensors = {{names.token, module.token_table()}};
  if (!module.position_table().empty()) {
    TOKEMB_EXPECTS(names.position != names.token, InvalidArgument, "save_weights('", path,
                   "'): the token and position tables have the same name '", names.token, "'");
    tensors.emplace_back(names.position, module.position_table());
  }
  return tensors;
}

}  // namespace

void save_weights(Embedding& module, const std::string& path, const WeightNames& names) {
  save_safetensors(path, weight_tensors(module, path, names), module.stream());
}

void save_weights(Embedding& module, OutputFile& file, const WeightNames& names) {
  save_safetensors(file, weight_tensors(module, file.path(), names), module.stream());
}

void load_weights(Embedding& module, const std::string& path, const WeightNames& names) {
  const std::string what = "load_weights('" + path + "')";
  const bool has_pos = !module.position_table().empty();
  TOKEMB_EXPECTS(!has_pos || names.position != names.token, InvalidArgument, what,
                 ": the token and position tables have the same name '", names.token, "'");
  detail::InputFile file(path);
  TOKEMB_EXPECTS(file.size() >= 8, IoError, what, ": the file is ", file.size(),
                 " bytes long, too short for a safetensors header");
  unsigned char first8[8];
  file.read_at(0, first8, 8);
  const std::uint64_t n = header_length(first8, file.size(), what);
  std::vector<unsigned char> json = detail::make_bytes(static_cast<std::size_t>(n), what.c_str());
  file.read_at(8, json.data(), json.size());
  const Header h = parse_header(json.data(), json.size(), file.size() - 8 - n, what);

  // Check both tables, then read both, then write both: a mismatch or a read error leaves the
  // module as it was.
  const Entry& tok = table_entry(h, names.token, module.token_table(), what);
  const Entry* pos =
      has_pos ? &table_entry(h, names.position, module.position_table(), what) : nullptr;
  auto read = [&](const Entry& e) {
    HostTensor t = make_tensor(e, what);
    file.read_at(h.data_start + e.begin, t.data.data(), t.data.size());
    return t;
  };
  const std::vector<unsigned char> tok_bytes = detail::checked_load_bytes(
      read(tok), module.token_table(), what + " tensor '" + names.token + "'");
  std::vector<unsigned char> pos_bytes;
  if (pos)
    pos_bytes = detail::checked_load_bytes(read(*pos), module.position_table(),
                                           what + " tensor '" + names.position + "'");
  module.load_token_table(tok_bytes.data(), tok_bytes.size());
  if (pos) module.load_position_table(pos_bytes.data(), pos_bytes.size());
}

}  // namespace tokemb
