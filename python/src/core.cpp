// tokemb._core: the nanobind extension behind the Python package. It binds only the public C++
// API (include/tokemb/); everything framework-specific (allocating outputs, picking the current
// stream, autograd) lives in the Python package, so this file stays a thin translation layer:
// DLPack arrays in, TensorViews out, C++ exceptions translated to tokemb's Python exceptions.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <tokemb/tokemb.hpp>

namespace nb = nanobind;
using namespace nb::literals;

namespace {

using tokemb::Device;
using tokemb::DType;
using tokemb::InvalidArgument;
using tokemb::Shape;
using tokemb::StreamView;
using tokemb::TensorView;

// ---- DLPack arrays -> TensorView ----------------------------------------------------------------

// A view plus the references that keep its memory alive for the duration of a call.
struct Arg {
  TensorView view;
  nb::ndarray<> keep;
};

std::string prefix(const char* fn, const char* name) { return std::string(fn) + ": " + name; }

std::string dlpack_dtype_name(nb::dlpack::dtype dt) {
  const char* kind = "?";
  switch (static_cast<nb::dlpack::dtype_code>(dt.code)) {
    case nb::dlpack::dtype_code::Int:
      kind = "int";
      break;
    case nb::dlpack::dtype_code::UInt:
      kind = "uint";
      break;
    case nb::dlpack::dtype_code::Float:
      kind = "float";
      break;
    case nb::dlpack::dtype_code::Bfloat:
      kind = "bfloat";
      break;
    case nb::dlpack::dtype_code::Complex:
      kind = "complex";
      break;
    case nb::dlpack::dtype_code::Bool:
      return "bool";
    default:
      break;
  }
  std::string s = kind + std::to_string(dt.bits);
  if (dt.lanes != 1) s += "x" + std::to_string(dt.lanes);
  return s;
}

Shape make_shape(const std::vector<std::int64_t>& d, const char* fn, const char* name) {
  if (d.size() > static_cast<std::size_t>(Shape::max_rank))
    throw InvalidArgument(prefix(fn, name) + " has rank " + std::to_string(d.size()) +
                          "; tokemb tensors have rank 0 to " + std::to_string(Shape::max_rank));
  return Shape(d.data(), static_cast<int>(d.size()));
}

// Why \p src could not be taken as a DLPack array. An array that has __dlpack__ but cannot export
// itself (a big-endian or bool NumPy array, a structured view, ...) is named with its dtype and
// the exporter's own reason, not called "not a DLPack array".
InvalidArgument not_importable(nb::handle src, const char* fn, const char* name) {
  const std::string type = nb::cast<std::string>(nb::str(src.type()));
  if (!nb::hasattr(src, "__dlpack__"))
    return InvalidArgument(prefix(fn, name) + " is not a DLPack array (got " + type +
                           "); pass a NumPy, PyTorch, CuPy or JAX array");
  std::string dtype = "?", reason;
  if (nb::hasattr(src, "dtype")) {
    // str() of the dtype object (nb::str of an attribute accessor would only borrow a str).
    const nb::object d = src.attr("dtype");
    dtype = nb::cast<std::string>(nb::str(nb::handle(d)));
  }
  try {
    (void)src.attr("__dlpack__")();
    reason = "tokemb takes float32, bfloat16, float16, float64, int32 and int64 arrays";
  } catch (const nb::python_error& e) {
    // what() is the traceback; its last line is the exception: "BufferError: <message>".
    std::string text = e.what();
    while (!text.empty() && text.back() == '\n') text.pop_back();
    const std::size_t nl = text.rfind('\n');
    reason = nl == std::string::npos ? text : text.substr(nl + 1);
  }
  return InvalidArgument(prefix(fn, name) + " (" + type + " of dtype " + dtype +
                         ") cannot be passed through DLPack: " + reason);
}

// nb::try_cast of an array without conversion, false where nanobind cannot import it. Some
// arrays make nanobind's importer throw instead of fail (a big-endian NumPy array, through the
// buffer protocol: std::bad_cast); they are refused the same way.
template <class Array>
bool try_import(nb::handle src, Array& out) {
  try {
    return nb::try_cast(src, out, /*convert=*/false);
  } catch (const std::exception&) {
    return false;
  }
}

// Converts one argument. \p h is None (an absent tensor: empty view), an object with __dlpack__
// (or a DLPack capsule), or a tuple (array, "bf16") that reinterprets a 16-bit integer array as
// bfloat16 (how the package passes NumPy arrays of ml_dtypes.bfloat16, which NumPy cannot
// export through DLPack). Never copies: a copy of an output would silently drop the result.
Arg to_view(nb::handle h, const char* fn, const char* name, bool writable) {
  Arg a;
  if (h.is_none()) return a;
  bool as_bf16 = false;
  nb::handle src = h;
  if (nb::isinstance<nb::tuple>(h)) {
    nb::tuple t = nb::borrow<nb::tuple>(h);
    if (nb::len(t) != 2 || nb::cast<std::string>(t[1]) != "bf16")
      throw InvalidArgument(prefix(fn, name) + ": internal argument tuple must be (array, 'bf16')");
    src = t[0];
    as_bf16 = true;
  }
  nb::ndarray<> arr;
  if (writable) {
    if (!try_import(src, arr)) {
      nb::ndarray<nb::ro> ro_arr;
      if (try_import(src, ro_arr))
        throw InvalidArgument(prefix(fn, name) +
                              " is read-only (tokemb writes into it); pass a writable array");
      throw not_importable(src, fn, name);
    }
  } else {
    nb::ndarray<nb::ro> ro_arr;
    if (!try_import(src, ro_arr)) throw not_importable(src, fn, name);
    arr = nb::ndarray<>(ro_arr.handle());
  }

  const nb::dlpack::dtype dt = arr.dtype();
  DType dtype;
  using Code = nb::dlpack::dtype_code;
  const auto code = static_cast<Code>(dt.code);
  if (dt.lanes != 1) {
    throw InvalidArgument(prefix(fn, name) + " has vector dtype " + dlpack_dtype_name(dt) +
                          "; expected float32, bfloat16, float16, float64, int32 or int64");
  } else if (as_bf16 && dt.bits == 16 && (code == Code::UInt || code == Code::Int)) {
    dtype = DType::bf16;
  } else if (code == Code::Float && dt.bits == 32) {
    dtype = DType::f32;
  } else if (code == Code::Float && dt.bits == 16) {
    dtype = DType::f16;
  } else if (code == Code::Float && dt.bits == 64) {
    dtype = DType::f64;
  } else if (code == Code::Bfloat && dt.bits == 16) {
    dtype = DType::bf16;
  } else if (code == Code::Int && dt.bits == 32) {
    dtype = DType::i32;
  } else if (code == Code::Int && dt.bits == 64) {
    dtype = DType::i64;
  } else {
    throw InvalidArgument(prefix(fn, name) + " has dtype " + dlpack_dtype_name(dt) +
                          "; tokemb supports float32, bfloat16, float16 and float64 tables "
                          "and activations, int32 and int64 ids");
  }

  std::vector<std::int64_t> dims(arr.ndim()), strides(arr.ndim());
  for (std::size_t i = 0; i < arr.ndim(); ++i) {
    dims[i] = static_cast<std::int64_t>(arr.shape(i));
    strides[i] = static_cast<std::int64_t>(arr.stride(i));  // DLPack strides are in elements
  }
  // Row-major (C-contiguous) arrays become plain views; any other layout (a slice such as
  // batch[:, :-1], a transpose, a stride-0 broadcast, negative strides) is passed with its
  // strides, read in place, never copied. Which arguments may be strided is the library's rule
  // (ids, position_ids and dout; ops.hpp): its validation names an argument that must be
  // contiguous. Contiguity ignores dimensions of extent 1 (whose stride is meaningless; PyTorch
  // reports arbitrary values there), and an array with no elements (a [4, 0] slice of a wider
  // one, say) has no layout at all: both are plain views.
  const bool no_elements = std::find(dims.begin(), dims.end(), 0) != dims.end();
  bool contiguous = true;
  std::int64_t expect = 1;
  for (std::size_t i = arr.ndim(); !no_elements && i-- > 0;) {
    if (dims[i] != 1 && strides[i] != expect) contiguous = false;
    expect *= dims[i];
  }

  Device device;
  switch (arr.device_type()) {
    case nb::device::cpu::value:
    case nb::device::cuda_host::value:  // pinned host memory: the CPU backend reads it directly
      device = Device::cpu();
      break;
    case nb::device::cuda::value:
    case nb::device::cuda_managed::value:
      device = Device::cuda(arr.device_id());
      break;
    default:
      throw InvalidArgument(prefix(fn, name) + " lives on DLPack device type " +
                            std::to_string(arr.device_type()) +
                            "; tokemb supports CPU (1) and CUDA (2) memory");
  }
  const Shape shape = make_shape(dims, fn, name);
  a.view = contiguous ? TensorView(arr.data(), dtype, shape, device)
                      : TensorView(arr.data(), dtype, shape, strides.data(), device);
  a.keep = arr;
  // An array with no elements may report a null pointer; tokemb reads null as "absent", so give
  // it a dummy address (nothing is ever read through it) and let shape checks speak.
  if (a.view.data == nullptr && !dims.empty()) {
    static std::int64_t dummy[1];
    a.view.data = dummy;
  }
  return a;
}

StreamView stream_of(std::uintptr_t s) { return StreamView(reinterpret_cast<CUstream_st*>(s)); }

// ---- per-device state for CUDA calls -----------------------------------------------------------

// Out-of-range ids on the GPU are recorded on the device (never a crash) and raised by
// check_errors(). One record per device, created at the first CUDA call (before any CUDA-graph
// capture, which must be preceded by warm-up calls anyway). The records and workspaces are leaked
// on purpose: freeing device memory from a static destructor runs after the CUDA runtime may
// have been torn down at interpreter exit.
std::mutex g_mutex;
std::map<int, tokemb::ErrorMonitor*>& monitors() {
  static auto* m = new std::map<int, tokemb::ErrorMonitor*>();
  return *m;
}
tokemb::ErrorRecord* record_for(Device device, StreamView stream) {
  std::lock_guard<std::mutex> lock(g_mutex);
  auto& m = monitors();
  auto it = m.find(device.index);
  if (it == m.end()) it = m.emplace(device.index, new tokemb::ErrorMonitor(device, stream)).first;
  return it->second->get();
}

// Fallback backward workspace for frameworks whose allocator the package does not use (the
// package passes PyTorch and CuPy allocations instead). One buffer per (device, stream), so calls
// ordered on one stream never overlap in it; it only grows.
std::map<std::pair<int, std::uintptr_t>, tokemb::Buffer*>& workspaces() {
  static auto* m = new std::map<std::pair<int, std::uintptr_t>, tokemb::Buffer*>();
  return *m;
}
tokemb::Workspace cached_workspace(Device device, std::uintptr_t stream, std::size_t bytes) {
  std::lock_guard<std::mutex> lock(g_mutex);
  auto& m = workspaces();
  tokemb::Buffer*& b = m[{device.index, stream}];
  if (b == nullptr || b->bytes() < bytes) {
    // Growing frees the old buffer, and cudaFree waits for the device: only on growth.
    delete b;
    b = nullptr;
    b = new tokemb::Buffer(DType::i64, Shape{static_cast<std::int64_t>((bytes + 7) / 8)}, device);
  }
  return tokemb::Workspace{b->data(), b->bytes()};
}

// The options every op call shares, as the Python package passes them (already converted).
struct OpArgs {
  std::int64_t position_offset = 0;
  Arg position_ids, cu_seqlens, seed_offset;
  std::optional<std::int64_t> padding_idx;
  double dropout_p = 0.0;
  std::uint64_t seed = 0, offset = 0;
  std::string dropout_mode = "element";
  std::int64_t vocab_start = 0, vocab_size = 0;
};

OpArgs op_args(const char* fn, std::int64_t position_offset, nb::handle position_ids,
               nb::handle cu_seqlens, std::optional<std::int64_t> padding_idx, double dropout_p,
               std::uint64_t seed, std::uint64_t offset, const std::string& dropout_mode,
               nb::handle seed_offset, std::int64_t vocab_start, std::int64_t vocab_size) {
  OpArgs a;
  a.position_offset = position_offset;
  a.position_ids = to_view(position_ids, fn, "position_ids", false);
  a.cu_seqlens = to_view(cu_seqlens, fn, "cu_seqlens", false);
  a.seed_offset = to_view(seed_offset, fn, "seed_offset", false);
  a.padding_idx = padding_idx;
  a.dropout_p = dropout_p;
  a.seed = seed;
  a.offset = offset;
  a.dropout_mode = dropout_mode;
  a.vocab_start = vocab_start;
  a.vocab_size = vocab_size;
  return a;
}

tokemb::Options make_options(const char* fn, const OpArgs& a, const TensorView& anchor,
                             bool accumulate, bool deterministic) {
  tokemb::Options o;
  o.position_offset = a.position_offset;
  o.position_ids = a.position_ids.view;
  o.cu_seqlens = a.cu_seqlens.view;
  o.padding_idx = a.padding_idx;
  o.accumulate = accumulate;
  o.backward_mode =
      deterministic ? tokemb::BackwardMode::deterministic : tokemb::BackwardMode::atomic;
  o.dropout.p = a.dropout_p;
  o.dropout.seed = a.seed;
  o.dropout.offset = a.offset;
  o.vocab_start = a.vocab_start;
  o.vocab_size = a.vocab_size;
  if (a.dropout_mode == "element") {
    o.dropout.mode = tokemb::DropoutMode::element;
  } else if (a.dropout_mode == "token") {
    o.dropout.mode = tokemb::DropoutMode::token;
  } else {
    throw InvalidArgument(prefix(fn, "dropout_mode") + " is '" + a.dropout_mode +
                          "'; expected 'element' or 'token'");
  }
  const TensorView& so = a.seed_offset.view;
  if (!so.empty()) {
    // Two uint64 {seed, offset} read by the call when it runs; int64 is how PyTorch holds them.
    if (so.dtype != DType::i64 || so.numel() != 2)
      throw InvalidArgument(prefix(fn, "seed_offset") + " has dtype " +
                            tokemb::dtype_name(so.dtype) + " and shape " + so.shape.str() +
                            "; expected 2 int64 {seed, offset}");
    if (so.device != anchor.device)
      throw InvalidArgument(prefix(fn, "seed_offset") + " is on " + so.device.str() +
                            " but the call runs on " + anchor.device.str());
    o.dropout.seed_offset = static_cast<const std::uint64_t*>(so.data);
  }
  return o;
}

// ---- ops ---------------------------------------------------------------------------------------

// The keyword arguments the op bindings share, after the op's own arrays: spelled once, so that
// forward and backward cannot drift apart.
#define TOKEMB_OP_PARAMS                                                             \
  std::int64_t position_offset, nb::handle position_ids, nb::handle cu_seqlens,      \
      std::optional<std::int64_t> padding_idx, double dropout_p, std::uint64_t seed, \
      std::uint64_t offset, const std::string &dropout_mode, nb::handle seed_offset, \
      std::int64_t vocab_start, std::int64_t vocab_size
#define TOKEMB_OP_ARGS(fn)                                                                     \
  op_args(fn, position_offset, position_ids, cu_seqlens, padding_idx, dropout_p, seed, offset, \
          dropout_mode, seed_offset, vocab_start, vocab_size)

void py_forward(nb::handle ids, nb::handle token_table, nb::handle pos_table, nb::handle out,
                TOKEMB_OP_PARAMS, std::uintptr_t stream) {
  const char* fn = "tokemb.forward";
  Arg a_ids = to_view(ids, fn, "ids", false);
  Arg a_tok = to_view(token_table, fn, "token_table", false);
  Arg a_pos = to_view(pos_table, fn, "pos_table", false);
  Arg a_out = to_view(out, fn, "out", true);
  const OpArgs args = TOKEMB_OP_ARGS(fn);
  tokemb::Options o = make_options(fn, args, a_tok.view, true, false);
  const StreamView sv = stream_of(stream);
  if (a_ids.view.device.is_cuda() && a_out.view.device == a_ids.view.device)
    o.error_record = record_for(a_ids.view.device, sv);
  nb::gil_scoped_release release;
  tokemb::forward(a_ids.view, a_tok.view, a_pos.view, a_out.view, o, sv);
}

// The workspace an allocator callback returned: any C-contiguous array (PyTorch and CuPy hand
// out uint8 buffers, which to_view rejects as a dtype) on the call's device, of at least \p need
// bytes. \p arr keeps its memory alive until the call returns.
tokemb::Workspace workspace_of(nb::handle h, const char* fn, Device device, std::size_t need,
                               nb::ndarray<>& arr) {
  if (!nb::try_cast(h, arr, /*convert=*/false))
    throw InvalidArgument(prefix(fn, "workspace") + " from the allocator is not a writable " +
                          "DLPack array (got " + nb::cast<std::string>(nb::str(h.type())) + ")");
  std::size_t n = 1;
  std::int64_t expect = 1;
  for (std::size_t i = arr.ndim(); i-- > 0;) {
    const auto d = static_cast<std::int64_t>(arr.shape(i));
    if (d != 1 && arr.stride(i) != expect)
      throw InvalidArgument(prefix(fn, "workspace") + " from the allocator is not C-contiguous");
    expect *= d;
    n *= static_cast<std::size_t>(d);
  }
  const std::size_t bytes = n * ((arr.dtype().bits * arr.dtype().lanes + 7) / 8);
  const bool cuda = arr.device_type() == nb::device::cuda::value ||
                    arr.device_type() == nb::device::cuda_managed::value;
  const Device got = cuda ? Device::cuda(arr.device_id()) : Device::cpu();
  if (got != device)
    throw InvalidArgument(prefix(fn, "workspace") + " from the allocator is on " + got.str() +
                          " but the call runs on " + device.str());
  if (bytes < need)
    throw InvalidArgument(prefix(fn, "workspace") + " from the allocator has " +
                          std::to_string(bytes) + " bytes; the call needs " + std::to_string(need));
  return tokemb::Workspace{arr.data(), bytes};
}

// \p allocate: None, or a callable taking a byte count and returning an array on the call's
// device (the framework's allocator), or None for the extension's cached buffer. It is called
// only when this call needs a workspace, which is computed here once, from the same converted
// arguments the call runs with.
void py_backward(nb::handle ids, nb::handle dout, nb::handle grad_token, nb::handle grad_pos,
                 nb::handle allocate, TOKEMB_OP_PARAMS, bool accumulate, bool deterministic,
                 std::uintptr_t stream) {
  const char* fn = "tokemb.backward";
  Arg a_ids = to_view(ids, fn, "ids", false);
  Arg a_dout = to_view(dout, fn, "dout", false);
  Arg a_gt = to_view(grad_token, fn, "grad_token", true);
  Arg a_gp = to_view(grad_pos, fn, "grad_pos", true);
  const OpArgs args = TOKEMB_OP_ARGS(fn);
  tokemb::Options o = make_options(fn, args, a_gt.view, accumulate, deterministic);
  const StreamView sv = stream_of(stream);
  const std::size_t need =
      tokemb::backward_workspace_size(a_ids.view, a_dout.view, a_gt.view, a_gp.view, o);
  tokemb::Workspace ws;
  nb::ndarray<> keep_ws;
  if (need > 0) {
    nb::object got;
    if (!allocate.is_none()) got = allocate(need);
    if (got.is_valid() && !got.is_none()) {
      ws = workspace_of(got, fn, a_ids.view.device, need, keep_ws);
    } else {
      ws = cached_workspace(a_ids.view.device, stream, need);
    }
  }
  if (a_ids.view.device.is_cuda() && a_gt.view.device == a_ids.view.device)
    o.error_record = record_for(a_ids.view.device, sv);
  nb::gil_scoped_release release;
  tokemb::backward(a_ids.view, a_dout.view, a_gt.view, a_gp.view, o, ws, sv);
}

void py_check_errors(int device_index, std::uintptr_t stream, bool clear) {
  tokemb::ErrorMonitor* m = nullptr;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    auto it = monitors().find(device_index);
    if (it != monitors().end()) m = it->second;
  }
  if (m == nullptr) return;  // no CUDA call on this device yet: nothing can have been recorded
  nb::gil_scoped_release release;
  m->check(stream_of(stream), clear);
}

// ---- host tensors -> NumPy ---------------------------------------------------------------------

// A NumPy array that owns \p t's bytes. bf16 comes back as uint16 (NumPy has no bfloat16); the
// package reinterprets it. Returns (array, dtype name).
std::pair<nb::object, std::string> to_numpy(tokemb::HostTensor&& t) {
  auto* held = new tokemb::HostTensor(std::move(t));
  nb::capsule owner(held, [](void* p) noexcept { delete static_cast<tokemb::HostTensor*>(p); });
  std::vector<std::size_t> shape(static_cast<std::size_t>(held->shape.rank()));
  for (int i = 0; i < held->shape.rank(); ++i) shape[i] = static_cast<std::size_t>(held->shape[i]);
  nb::dlpack::dtype dt;
  switch (held->dtype) {
    case DType::f32:
      dt = nb::dtype<float>();
      break;
    case DType::f16:
      dt = {static_cast<std::uint8_t>(nb::dlpack::dtype_code::Float), 16, 1};
      break;
    case DType::f64:
      dt = nb::dtype<double>();
      break;
    case DType::bf16:
      dt = nb::dtype<std::uint16_t>();
      break;
    case DType::i32:
      dt = nb::dtype<std::int32_t>();
      break;
    case DType::i64:
    default:
      dt = nb::dtype<std::int64_t>();
      break;
  }
  nb::ndarray<nb::numpy> arr(held->data.data(), shape.size(), shape.data(), owner, nullptr, dt);
  return {arr.cast(), tokemb::dtype_name(held->dtype)};
}

nb::object int64_numpy(std::vector<std::int64_t>&& v, std::vector<std::size_t> shape) {
  auto* held = new std::vector<std::int64_t>(std::move(v));
  nb::capsule owner(held,
                    [](void* p) noexcept { delete static_cast<std::vector<std::int64_t>*>(p); });
  return nb::ndarray<nb::numpy, std::int64_t>(held->data(), shape.size(), shape.data(), owner)
      .cast();
}

std::pair<const void*, std::size_t> bytes_of(const nb::bytes& b) { return {b.c_str(), b.size()}; }

// ---- init --------------------------------------------------------------------------------------

void py_init_table(nb::handle table, std::uint64_t seed, std::uint64_t stream_id,
                   const std::string& kind, float a, float b, std::uintptr_t stream) {
  Arg t = to_view(table, "tokemb.init_table", "table", true);
  tokemb::InitSpec spec;
  if (kind == "normal") {
    spec = tokemb::InitSpec::normal(a, b);
  } else if (kind == "uniform") {
    spec = tokemb::InitSpec::uniform(a, b);
  } else {
    throw InvalidArgument("tokemb.init_table: kind is '" + kind +
                          "'; expected 'normal' or 'uniform'");
  }
  nb::gil_scoped_release release;
  tokemb::init_table(t.view, seed, stream_id, spec, stream_of(stream));
}

// What torch.manual_seed(seed); nn.Embedding(V, D); nn.Embedding(P, D) draws: one generator over
// the tables in order, N(0, 1), then the padding row of the first table zeroed. Every table is
// checked and drawn on the host before any is written, like tokemb::init_module_pytorch.
void py_init_pytorch(const std::vector<nb::handle>& tables, std::uint64_t seed,
                     std::optional<std::int64_t> padding_idx, std::uintptr_t stream) {
  const char* fn = "tokemb.init_pytorch";
  std::vector<Arg> args;
  for (std::size_t i = 0; i < tables.size(); ++i) {
    const char* name = i == 0 ? "token_table" : "pos_table";
    args.push_back(to_view(tables[i], fn, name, true));
    const TensorView& v = args.back().view;
    if (v.empty()) continue;
    // Not f64: PyTorch draws a float64 table with other arithmetic than the float32 draws that
    // TorchGenerator reproduces, and the conversion below writes f32, bf16 or f16 only.
    if (!tokemb::is_floating(v.dtype) || v.dtype == DType::f64 || v.shape.rank() != 2)
      throw InvalidArgument(prefix(fn, name) + " must be a [rows, dim] table of float32, " +
                            "bfloat16 or float16 (got " + tokemb::dtype_name(v.dtype) + " " +
                            v.shape.str() + ")");
  }
  if (padding_idx && !args.empty() && !args[0].view.empty()) {
    const std::int64_t rows = args[0].view.shape[0];
    if (*padding_idx < -rows || *padding_idx >= rows)
      throw InvalidArgument(std::string(fn) + ": padding_idx is " + std::to_string(*padding_idx) +
                            "; valid range [" + std::to_string(-rows) + ", " +
                            std::to_string(rows) + ")");
  }
  std::vector<tokemb::Buffer> host;
  {
    nb::gil_scoped_release release;
    tokemb::TorchGenerator gen(seed);
    for (std::size_t i = 0; i < args.size(); ++i) {
      const TensorView& v = args[i].view;
      if (v.empty()) {
        host.emplace_back();
        continue;
      }
      const auto n = static_cast<std::size_t>(v.numel());
      std::vector<float> f(n);
      gen.normal(f.data(), n, 0.0f, 1.0f);
      if (i == 0 && padding_idx) {
        const std::int64_t dim = v.shape[1];
        const std::int64_t row = *padding_idx < 0 ? *padding_idx + v.shape[0] : *padding_idx;
        std::fill(f.begin() + row * dim, f.begin() + (row + 1) * dim, 0.0f);
      }
      tokemb::Buffer h(v.dtype, v.shape, Device::cpu());
      for (std::size_t k = 0; k < n; ++k) {
        if (v.dtype == DType::f32) {
          static_cast<float*>(h.data())[k] = f[k];
        } else if (v.dtype == DType::bf16) {
          static_cast<tokemb::bf16_t*>(h.data())[k] = tokemb::bf16_t::from_float(f[k]);
        } else {
          static_cast<tokemb::f16_t*>(h.data())[k] = tokemb::f16_t::from_float(f[k]);
        }
      }
      host.push_back(std::move(h));
    }
    for (std::size_t i = 0; i < args.size(); ++i)
      if (!args[i].view.empty()) tokemb::copy(args[i].view, host[i].view(), stream_of(stream));
    tokemb::synchronize(stream_of(stream));  // the host buffers die at the end of this scope
  }
}

// ---- safetensors into tables -------------------------------------------------------------------

// Copies \p src (a host tensor from a file) into \p dst: equal shape, and equal dtype or f32 into
// bf16/f16 (rounded to nearest even), as tokemb::load_weights and load_npy accept.
tokemb::Buffer converted(const tokemb::HostTensor& src, const TensorView& dst,
                         const std::string& what) {
  if (src.shape != dst.shape)
    throw InvalidArgument(what + " has shape " + src.shape.str() + "; the table is " +
                          dst.shape.str());
  tokemb::Buffer h(dst.dtype, dst.shape, Device::cpu());
  if (src.dtype == dst.dtype) {
    std::memcpy(h.data(), src.data.data(), src.data.size());
  } else if (src.dtype == DType::f32 && (dst.dtype == DType::bf16 || dst.dtype == DType::f16)) {
    const auto* f = reinterpret_cast<const float*>(src.data.data());
    const auto n = static_cast<std::size_t>(dst.numel());
    for (std::size_t k = 0; k < n; ++k) {
      if (dst.dtype == DType::bf16)
        static_cast<tokemb::bf16_t*>(h.data())[k] = tokemb::bf16_t::from_float(f[k]);
      else
        static_cast<tokemb::f16_t*>(h.data())[k] = tokemb::f16_t::from_float(f[k]);
    }
  } else {
    throw InvalidArgument(what + " has dtype " + tokemb::dtype_name(src.dtype) + "; the table is " +
                          tokemb::dtype_name(dst.dtype) +
                          " (only an equal dtype, or f32 into bf16/f16, loads)");
  }
  return h;
}

void py_load_tables(const std::string& path, const std::vector<nb::handle>& tables,
                    const std::vector<std::string>& names, std::uintptr_t stream) {
  const char* fn = "tokemb.load_weights";
  std::vector<Arg> args;
  for (std::size_t i = 0; i < tables.size(); ++i)
    args.push_back(to_view(tables[i], fn, i == 0 ? "token_table" : "pos_table", true));
  std::vector<tokemb::Buffer> host(args.size());
  {
    nb::gil_scoped_release release;
    auto tensors = tokemb::read_safetensors(path);
    for (std::size_t i = 0; i < args.size(); ++i) {
      if (args[i].view.empty()) continue;
      const tokemb::HostTensor* found = nullptr;
      for (const auto& [name, t] : tensors)
        if (name == names[i]) found = &t;
      if (found == nullptr)
        throw InvalidArgument(std::string(fn) + ": " + path + " has no tensor named '" + names[i] +
                              "'");
      host[i] =
          converted(*found, args[i].view, std::string(fn) + ": " + path + ": '" + names[i] + "'");
    }
    // Everything checked and converted: only now write the tables.
    for (std::size_t i = 0; i < args.size(); ++i)
      if (!args[i].view.empty()) tokemb::copy(args[i].view, host[i].view(), stream_of(stream));
    tokemb::synchronize(stream_of(stream));
  }
}

// ---- exceptions --------------------------------------------------------------------------------

void raise_py(const char* cls_name, const char* what, nb::handle fill = nb::handle()) {
  try {
    nb::object cls = nb::module_::import_("tokemb._errors").attr(cls_name);
    nb::object inst = cls(nb::str(what));
    if (fill.is_valid()) fill(inst);
    PyErr_SetObject(cls.ptr(), inst.ptr());
  } catch (nb::python_error& e) {
    e.restore();
  }
}

void translate(const std::exception_ptr& p, void*) {
  try {
    std::rethrow_exception(p);
  } catch (const tokemb::IndexOutOfRange& e) {
    try {
      nb::object cls = nb::module_::import_("tokemb._errors").attr("IndexOutOfRange");
      const char* kind = "token";
      if (e.kind() == tokemb::IndexOutOfRange::Kind::position) kind = "position";
      if (e.kind() == tokemb::IndexOutOfRange::Kind::sequence) kind = "sequence";
      nb::object inst =
          cls(nb::str(e.what()), "kind"_a = kind, "value"_a = e.value(), "batch"_a = e.batch(),
              "time"_a = e.time(), "limit"_a = e.limit(), "count"_a = e.count());
      PyErr_SetObject(cls.ptr(), inst.ptr());
    } catch (nb::python_error& pe) {
      pe.restore();
    }
  } catch (const tokemb::InvalidArgument& e) {
    raise_py("InvalidArgument", e.what());
  } catch (const tokemb::OutOfMemory& e) {  // before CudaError, which it may derive from
    raise_py("OutOfMemory", e.what());
  } catch (const tokemb::CudaError& e) {
    try {
      nb::object cls = nb::module_::import_("tokemb._errors").attr("CudaError");
      nb::object inst = cls(nb::str(e.what()), "code"_a = e.code());
      PyErr_SetObject(cls.ptr(), inst.ptr());
    } catch (nb::python_error& pe) {
      pe.restore();
    }
  } catch (const tokemb::Unsupported& e) {
    raise_py("Unsupported", e.what());
  } catch (const tokemb::IoError& e) {
    raise_py("IoError", e.what());
  } catch (const tokemb::Error& e) {
    raise_py("Error", e.what());
  }
}

}  // namespace

NB_MODULE(_core, m) {
  m.doc() = "tokemb's C++ library (private: use the tokemb package)";
  nb::register_exception_translator(translate);

  m.attr("with_cuda") = bool(TOKEMB_WITH_CUDA);
  m.attr("with_curand_host") = bool(TOKEMB_WITH_CURAND_HOST);
  m.attr("version") = std::to_string(TOKEMB_VERSION_MAJOR) + "." +
                      std::to_string(TOKEMB_VERSION_MINOR) + "." +
                      std::to_string(TOKEMB_VERSION_PATCH);
  m.def("cuda_device_count", &tokemb::cuda_device_count);
  m.def("synchronize", [](std::uintptr_t s) {
    nb::gil_scoped_release release;
    tokemb::synchronize(stream_of(s));
  });

#define TOKEMB_OP_KW                                                                           \
  "position_offset"_a, "position_ids"_a.none(), "cu_seqlens"_a.none(), "padding_idx"_a.none(), \
      "dropout_p"_a, "seed"_a, "offset"_a, "dropout_mode"_a, "seed_offset"_a.none(),           \
      "vocab_start"_a, "vocab_size"_a
  m.def("forward", &py_forward, "ids"_a, "token_table"_a, "pos_table"_a.none(), "out"_a,
        TOKEMB_OP_KW, "stream"_a);
  m.def("backward", &py_backward, "ids"_a, "dout"_a, "grad_token"_a, "grad_pos"_a.none(),
        "allocate"_a.none(), TOKEMB_OP_KW, "accumulate"_a, "deterministic"_a, "stream"_a);
#undef TOKEMB_OP_KW
  m.def("check_errors", &py_check_errors, "device_index"_a, "stream"_a, "clear"_a);
  // The checks to_view makes (a DLPack array, a dtype tokemb has, CPU or CUDA); for ids an
  // index dtype (any strides), for a table row-major memory: what forward() checks before it
  // allocates its output.
  m.def("check_array", [](nb::handle x, const std::string& fn, const std::string& name, bool ids) {
    const Arg a = to_view(x, fn.c_str(), name.c_str(), false);
    if (ids && a.view.dtype != DType::i32 && a.view.dtype != DType::i64) {
      throw InvalidArgument(prefix(fn.c_str(), name.c_str()) + " has dtype " +
                            tokemb::dtype_name(a.view.dtype) + ", expected i32 or i64");
    }
    if (!ids && !tokemb::is_floating(a.view.dtype)) {
      throw InvalidArgument(prefix(fn.c_str(), name.c_str()) + " has dtype " +
                            tokemb::dtype_name(a.view.dtype) +
                            ", expected f32, bf16, f16 or f64 (a table)");
    }
    if (!ids && !a.view.is_contiguous()) {
      std::string strides;
      for (int j = 0; j < a.view.shape.rank(); ++j)
        strides += (j ? ", " : "") + std::to_string(a.view.stride(j));
      // The library's wording (host/validate.cpp), with what to do about it.
      throw InvalidArgument(prefix(fn.c_str(), name.c_str()) + " of shape " +
                            a.view.shape.str() + " has strides [" + strides +
                            "]; it must be contiguous (only ids, position_ids and dout may be "
                            "strided): use .contiguous() (PyTorch) or numpy.ascontiguousarray");
    }
  });

  // Fallback allocation for frameworks without an allocator the package knows (JAX): an
  // uninitialised tensor owned by a tokemb::Buffer, returned as a nanobind array (__dlpack__).
  m.def("empty", [](const std::vector<std::int64_t>& shape, const std::string& dtype,
                    int device_type, int device_id) {
    const char* fn = "tokemb.empty";
    const Device dev =
        device_type == nb::device::cuda::value ? Device::cuda(device_id) : Device::cpu();
    const DType dt = tokemb::parse_dtype(dtype);
    auto* buf = new tokemb::Buffer(dt, make_shape(shape, fn, "shape"), dev);
    nb::capsule owner(buf, [](void* p) noexcept { delete static_cast<tokemb::Buffer*>(p); });
    std::vector<std::size_t> s(shape.begin(), shape.end());
    nb::dlpack::dtype ddt;
    using Code = nb::dlpack::dtype_code;
    switch (dt) {
      case DType::f32:
        ddt = {static_cast<std::uint8_t>(Code::Float), 32, 1};
        break;
      case DType::f16:
        ddt = {static_cast<std::uint8_t>(Code::Float), 16, 1};
        break;
      case DType::f64:
        ddt = {static_cast<std::uint8_t>(Code::Float), 64, 1};
        break;
      case DType::bf16:
        ddt = {static_cast<std::uint8_t>(Code::Bfloat), 16, 1};
        break;
      case DType::i32:
        ddt = {static_cast<std::uint8_t>(Code::Int), 32, 1};
        break;
      default:
        ddt = {static_cast<std::uint8_t>(Code::Int), 64, 1};
        break;
    }
    return nb::ndarray<nb::array_api>(
        buf->data(), s.size(), s.data(), owner, nullptr, ddt,
        dev.is_cuda() ? nb::device::cuda::value : nb::device::cpu::value, dev.index);
  });

  // init
  m.def("init_table", &py_init_table, "table"_a, "seed"_a, "stream_id"_a, "kind"_a, "a"_a, "b"_a,
        "stream"_a);
  m.def("init_pytorch", &py_init_pytorch, "tables"_a, "seed"_a, "padding_idx"_a.none(), "stream"_a);
  m.def("philox_key", &tokemb::philox_key, "seed"_a, "stream_id"_a);

  // io
  m.def("save_npy", [](const std::string& path, nb::handle t, std::uintptr_t s) {
    Arg a = to_view(t, "tokemb.save_npy", "tensor", false);
    nb::gil_scoped_release release;
    tokemb::save_npy(path, a.view, stream_of(s));
  });
  m.def("load_npy", [](const std::string& path, nb::handle t, std::uintptr_t s) {
    Arg a = to_view(t, "tokemb.load_npy", "out", true);
    nb::gil_scoped_release release;
    tokemb::load_npy(path, a.view, stream_of(s));
  });
  m.def("read_npy", [](const std::string& path) {
    tokemb::HostTensor t;
    {
      nb::gil_scoped_release release;
      t = tokemb::read_npy(path);
    }
    return to_numpy(std::move(t));
  });
  m.def("parse_npy", [](const nb::bytes& b) {
    auto [p, n] = bytes_of(b);
    return to_numpy(tokemb::parse_npy(p, n));
  });
  auto named = [](std::vector<std::pair<std::string, tokemb::HostTensor>>&& v) {
    std::vector<std::tuple<std::string, nb::object, std::string>> r;
    for (auto& [name, t] : v) {
      auto [arr, dt] = to_numpy(std::move(t));
      r.emplace_back(name, arr, dt);
    }
    return r;
  };
  m.def("read_safetensors", [named](const std::string& path) {
    std::vector<std::pair<std::string, tokemb::HostTensor>> v;
    {
      nb::gil_scoped_release release;
      v = tokemb::read_safetensors(path);
    }
    return named(std::move(v));
  });
  m.def("parse_safetensors", [named](const nb::bytes& b) {
    auto [p, n] = bytes_of(b);
    return named(tokemb::parse_safetensors(p, n));
  });
  m.def("save_safetensors",
        [](const std::string& path, const std::vector<std::pair<std::string, nb::handle>>& items,
           std::uintptr_t s) {
          std::vector<Arg> keep;
          std::vector<std::pair<std::string, TensorView>> views;
          for (const auto& [name, h] : items) {
            keep.push_back(to_view(h, "tokemb.save_safetensors", name.c_str(), false));
            if (keep.back().view.empty())
              throw InvalidArgument("tokemb.save_safetensors: tensor '" + name + "' is None");
            views.emplace_back(name, keep.back().view);
          }
          nb::gil_scoped_release release;
          tokemb::save_safetensors(path, views, stream_of(s));
        });
  m.def("load_tables", &py_load_tables, "path"_a, "tables"_a, "names"_a, "stream"_a);

  // token files
  auto token_file = [](tokemb::TokenFile&& f) {
    const auto n = f.ids.size();
    return std::make_tuple(std::string(tokemb::token_format_name(f.format)),
                           std::string(tokemb::token_type_name(f.type)), f.total_tokens,
                           int64_numpy(std::move(f.ids), {n}));
  };
  m.def("read_token_file",
        [token_file](const std::string& path, const std::string& format, std::int64_t max_tokens) {
          const tokemb::TokenFormat fmt = tokemb::parse_token_format(format);
          tokemb::TokenFile f;
          {
            nb::gil_scoped_release release;
            f = tokemb::read_token_file(path, fmt, max_tokens);
          }
          return token_file(std::move(f));
        });
  m.def("parse_token_file", [token_file](const nb::bytes& b, const std::string& format,
                                         std::int64_t max_tokens, const std::string& name) {
    auto [p, n] = bytes_of(b);
    return token_file(
        tokemb::parse_token_file(p, n, tokemb::parse_token_format(format), max_tokens, name));
  });
  m.def("window_count", &tokemb::window_count, "num_tokens"_a, "max_length"_a, "stride"_a);
  m.def("tokens_for_windows", &tokemb::tokens_for_windows, "count"_a, "max_length"_a, "stride"_a);
  m.def(
      "cut_windows",
      [](nb::ndarray<const std::int64_t, nb::ndim<1>, nb::c_contig, nb::device::cpu> ids,
         std::int64_t max_length, std::int64_t stride, std::int64_t first, std::int64_t count) {
        // window_count checks max_length and stride; the range is checked here so that the
        // output is sized only for a valid request (cut_windows checks it again).
        const std::int64_t have =
            tokemb::window_count(static_cast<std::int64_t>(ids.shape(0)), max_length, stride);
        if (first < 0 || count < 0 || first > have || count > have - first)
          throw InvalidArgument("tokemb.cut_windows: windows [" + std::to_string(first) + ", " +
                                std::to_string(first + count) + ") requested; valid: [0, " +
                                std::to_string(have) + ") (ids: " + std::to_string(ids.shape(0)) +
                                ", max_length: " + std::to_string(max_length) +
                                ", stride: " + std::to_string(stride) + ")");
        std::vector<std::int64_t> out(static_cast<std::size_t>(count * max_length));
        if (count > 0)
          tokemb::cut_windows(ids.data(), ids.shape(0), max_length, stride, first, count,
                              out.data());
        return int64_numpy(std::move(out),
                           {static_cast<std::size_t>(count), static_cast<std::size_t>(max_length)});
      },
      "ids"_a, "max_length"_a, "stride"_a, "first"_a, "count"_a);
  m.def(
      "check_token_ids",
      [](nb::ndarray<const std::int64_t, nb::ndim<1>, nb::c_contig, nb::device::cpu> ids,
         std::int64_t vocab_size, const std::string& source) {
        std::vector<std::int64_t> v(ids.data(), ids.data() + ids.shape(0));
        tokemb::check_token_ids(v, vocab_size, source);
      },
      "ids"_a, "vocab_size"_a, "source"_a);
}
