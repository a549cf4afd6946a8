// Seeded init: cuRAND Philox4x32-10 on the CPU (host generator) and the GPU (host API on device
// memory), and the PyTorch-compatible init of a module.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <new>
#include <type_traits>
#include <vector>

#include <tokemb/config.hpp>
#include <tokemb/init.hpp>

#include "core/check.hpp"
#include "core/dispatch.hpp"
#include "host/backend.hpp"

#if TOKEMB_WITH_CUDA && !TOKEMB_WITH_CURAND_HOST
#error "a CUDA build always has cuRAND (cmake/TokembCurand.cmake)"
#endif
#if TOKEMB_WITH_CURAND_HOST
#include <curand.h>
#endif
#if TOKEMB_WITH_CUDA
#include <cuda_runtime_api.h>

#include "core/cuda_check.hpp"
#include "host/cuda_device.hpp"
#include "kernels/launch.hpp"
#endif

namespace tokemb {

namespace {

std::uint64_t splitmix64(std::uint64_t x) noexcept {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

void validate(const TensorView& table, const InitSpec& spec, const char* op) {
  TOKEMB_EXPECTS(is_floating(table.dtype), InvalidArgument, op, ": table dtype is ",
                 dtype_name(table.dtype), ", expected f32, bf16, f16 or f64");
  TOKEMB_EXPECTS(table.data != nullptr, InvalidArgument, op, ": table ", table.shape.str(),
                 " has a null data pointer");
  if (spec.kind == InitSpec::Kind::normal) {
    TOKEMB_EXPECTS(std::isfinite(spec.a), InvalidArgument, op, ": normal mean is ", spec.a,
                   ", must be finite");
    TOKEMB_EXPECTS(std::isfinite(spec.b) && spec.b >= 0.0f, InvalidArgument, op,
                   ": normal stddev is ", spec.b, ", must be finite and >= 0");
  } else if (spec.kind == InitSpec::Kind::uniform) {
    TOKEMB_EXPECTS(std::isfinite(spec.a) && std::isfinite(spec.b) && spec.a <= spec.b,
                   InvalidArgument, op, ": uniform range is [", spec.a, ", ", spec.b,
                   "], must be finite with low <= high");
    TOKEMB_EXPECTS(std::isfinite(spec.b - spec.a), InvalidArgument, op, ": uniform range [", spec.a,
                   ", ", spec.b, "] is wider than the largest float");
  } else {
    TOKEMB_FAIL(InvalidArgument, op, ": InitSpec kind ", static_cast<int>(spec.kind),
                " is neither normal nor uniform");
  }
}

#if TOKEMB_WITH_CURAND_HOST

const char* curand_status_name(curandStatus_t s) {
  switch (s) {
    case CURAND_STATUS_SUCCESS:
      return "CURAND_STATUS_SUCCESS";
    case CURAND_STATUS_VERSION_MISMATCH:
      return "CURAND_STATUS_VERSION_MISMATCH";
    case CURAND_STATUS_NOT_INITIALIZED:
      return "CURAND_STATUS_NOT_INITIALIZED";
    case CURAND_STATUS_ALLOCATION_FAILED:
      return "CURAND_STATUS_ALLOCATION_FAILED";
    case CURAND_STATUS_TYPE_ERROR:
      return "CURAND_STATUS_TYPE_ERROR";
    case CURAND_STATUS_OUT_OF_RANGE:
      return "CURAND_STATUS_OUT_OF_RANGE";
    case CURAND_STATUS_LENGTH_NOT_MULTIPLE:
      return "CURAND_STATUS_LENGTH_NOT_MULTIPLE";
    case CURAND_STATUS_DOUBLE_PRECISION_REQUIRED:
      return "CURAND_STATUS_DOUBLE_PRECISION_REQUIRED";
    case CURAND_STATUS_LAUNCH_FAILURE:
      return "CURAND_STATUS_LAUNCH_FAILURE";
    case CURAND_STATUS_PREEXISTING_FAILURE:
      return "CURAND_STATUS_PREEXISTING_FAILURE";
    case CURAND_STATUS_INITIALIZATION_FAILED:
      return "CURAND_STATUS_INITIALIZATION_FAILED";
    case CURAND_STATUS_ARCH_MISMATCH:
      return "CURAND_STATUS_ARCH_MISMATCH";
    case CURAND_STATUS_INTERNAL_ERROR:
      return "CURAND_STATUS_INTERNAL_ERROR";
    default:
      return "unknown cuRAND status";
  }
}

[[noreturn]] void throw_curand(curandStatus_t s, const char* call, const char* file, int line) {
  const std::string msg = detail::format_message(
      "cuRAND call ", call, " failed: ", curand_status_name(s), " (", static_cast<int>(s), ")");
  if (s == CURAND_STATUS_ALLOCATION_FAILED)
    throw detail::ErrorLocation::at(
        OutOfMemory(msg, OutOfMemory::Memory::device, static_cast<int>(s)), file, line);
  throw detail::ErrorLocation::at(CudaError(msg, static_cast<int>(s)), file, line);
}

#define TOKEMB_CURAND_TRY(call)                                                                   \
  do {                                                                                            \
    const curandStatus_t tokemb_st_ = (call);                                                     \
    if (tokemb_st_ != CURAND_STATUS_SUCCESS) throw_curand(tokemb_st_, #call, __FILE__, __LINE__); \
  } while (0)

// A Philox4x32-10 generator, host or device, seeded with philox_key(seed, stream_id).
class Philox {
 public:
  Philox(bool on_host, std::uint64_t key) {
    if (on_host) {
      TOKEMB_CURAND_TRY(curandCreateGeneratorHost(&gen_, CURAND_RNG_PSEUDO_PHILOX4_32_10));
    } else {
      TOKEMB_CURAND_TRY(curandCreateGenerator(&gen_, CURAND_RNG_PSEUDO_PHILOX4_32_10));
    }
    // The default ordering is named explicitly: it is part of the reproducibility contract.
    TOKEMB_CURAND_TRY(curandSetGeneratorOrdering(gen_, CURAND_ORDERING_PSEUDO_DEFAULT));
    TOKEMB_CURAND_TRY(curandSetPseudoRandomGeneratorSeed(gen_, key));
    TOKEMB_CURAND_TRY(curandSetGeneratorOffset(gen_, 0));
  }
  ~Philox() {
    if (gen_) (void)curandDestroyGenerator(gen_);
  }
  Philox(const Philox&) = delete;
  Philox& operator=(const Philox&) = delete;

  curandGenerator_t get() const noexcept { return gen_; }

  // n f32 values: N(mean, stddev), or cuRAND's uniform (0, 1] (the affine map comes later).
  void generate(float* out, std::size_t n, const InitSpec& spec) {
    if (spec.kind == InitSpec::Kind::normal) {
      TOKEMB_CURAND_TRY(curandGenerateNormal(gen_, out, n, spec.a, spec.b));
    } else {
      TOKEMB_CURAND_TRY(curandGenerateUniform(gen_, out, n));
    }
  }

 private:
  curandGenerator_t gen_ = nullptr;
};

#endif  // TOKEMB_WITH_CURAND_HOST

}  // namespace

std::uint64_t philox_key(std::uint64_t seed, std::uint64_t stream_id) noexcept {
  return splitmix64(seed ^ splitmix64(stream_id));
}

void init_table(const TensorView& table, std::uint64_t seed, std::uint64_t stream_id,
                const InitSpec& spec, StreamView stream) {
  const char* op = "tokemb::init_table";
  validate(table, spec, op);
  const std::int64_t n = table.numel();
  if (n == 0) return;
  // cuRAND makes normals in pairs and the device generator refuses odd counts, so both sides
  // always draw an even count and drop the last value of an odd table.
  const std::size_t n_gen = static_cast<std::size_t>(n) + static_cast<std::size_t>(n & 1);
  const bool affine = spec.kind == InitSpec::Kind::uniform;
  const float low = spec.a, width = spec.b - spec.a;
  const std::uint64_t key = philox_key(seed, stream_id);

  if (table.device.is_cpu()) {
#if TOKEMB_WITH_CURAND_HOST
    std::vector<float> tmp;
    try {
      tmp.resize(n_gen);
    } catch (const std::bad_alloc&) {
      TOKEMB_FAIL(OutOfMemory, op, ": host allocation of ", n_gen * 4, " bytes failed");
    }
    Philox gen(/*on_host=*/true, key);
    gen.generate(tmp.data(), n_gen, spec);
    detail::dispatch_float<detail::HostTypes>(table.dtype, [&](auto tag) {
      using T = typename decltype(tag)::type;
      T* dst = static_cast<T*>(table.data);
      for (std::size_t i = 0; i < static_cast<std::size_t>(n); ++i) {
        // std::fma rounds once, like fmaf on the GPU, so uniform tables agree bitwise.
        const float v = affine ? std::fma(tmp[i], width, low) : tmp[i];
        dst[i] = from_float<T>(v);
      }
    });
    (void)stream;
    return;
#else
    (void)stream;
    (void)key;
    (void)n_gen;
    (void)affine;
    (void)low;
    (void)width;
    TOKEMB_FAIL(Unsupported, op,
                ": seeded init of a CPU table needs cuRAND's host generator, "
                "and this build of tokemb has none (TOKEMB_WITH_CURAND_HOST=0: configure with the "
                "CUDA toolkit's cuRAND installed)");
#endif
  }

  detail::require_cuda(table.device, op);
#if TOKEMB_WITH_CUDA
  detail::DeviceGuard guard(table.device.index);
  Philox gen(/*on_host=*/false, key);
  TOKEMB_CURAND_TRY(curandSetStream(gen.get(), stream.value()));
  // Generate straight into an f32 table of even length (aligned, as cuRAND's vector stores
  // want); otherwise into f32 scratch, then convert.
  const bool direct = table.dtype == DType::f32 && n_gen == static_cast<std::size_t>(n) &&
                      reinterpret_cast<std::uintptr_t>(table.data) % 16 == 0;
  Buffer scratch;
  if (!direct) scratch = Buffer(DType::f32, Shape{static_cast<std::int64_t>(n_gen)}, table.device);
  float* target = static_cast<float*>(direct ? table.data : scratch.data());
  try {
    gen.generate(target, n_gen, spec);
    if (affine || !direct)
      detail::cuda::init_finish(target, table.data, table.dtype, n, affine, width, low,
                                detail::device_info(table.device.index), stream.value());
    // The generator's state and the scratch buffer are freed when we return.
    TOKEMB_CUDA_TRY(cudaStreamSynchronize(stream.value()));
  } catch (...) {
    (void)cudaStreamSynchronize(stream.value());
    (void)cudaGetLastError();
    throw;
  }
#endif
}

void init_module(Embedding& module, std::uint64_t seed, const InitSpec& spec) {
  validate(module.token_table(), spec, "tokemb::init_module");
  init_table(module.token_table(), seed, 0, spec, module.stream());
  if (!module.position_table().empty())
    init_table(module.position_table(), seed, 1, spec, module.stream());
}

namespace {

std::vector<unsigned char> to_table_bytes(const std::vector<float>& v, DType dtype) {
  std::vector<unsigned char> out(v.size() * dtype_size(dtype));
  detail::dispatch_float<detail::HostTypes>(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    for (std::size_t i = 0; i < v.size(); ++i) {
      const T x = from_float<T>(v[i]);
      std::memcpy(out.data() + sizeof(T) * i, &x, sizeof(T));
    }
  });
  return out;
}

}  // namespace

void init_module_pytorch(Embedding& module, std::uint64_t seed) {
  const char* op = "tokemb::init_module_pytorch";
  const EmbeddingConfig& c = module.config();
  const std::int64_t nt = module.token_table().numel();
  const std::int64_t np = module.position_table().empty() ? 0 : module.position_table().numel();
  std::vector<float> tok, pos;
  try {
    tok.resize(static_cast<std::size_t>(nt));
    pos.resize(static_cast<std::size_t>(np));
  } catch (const std::bad_alloc&) {
    TOKEMB_FAIL(OutOfMemory, op, ": host allocation of ", (nt + np) * 4, " bytes failed");
  }
  TorchGenerator gen(seed);
  gen.normal(tok.data(), tok.size(), 0.0f, 1.0f);
  if (np) gen.normal(pos.data(), pos.size(), 0.0f, 1.0f);
  if (c.padding_idx) {
    // nn.Embedding(V, D, padding_idx=p) zeroes row p after drawing.
    const std::int64_t p = *c.padding_idx < 0 ? *c.padding_idx + c.vocab_size : *c.padding_idx;
    std::fill_n(tok.begin() + p * c.dim, c.dim, 0.0f);
  }
  const std::vector<unsigned char> tb = to_table_bytes(tok, c.dtype);
  const std::vector<unsigned char> pb = to_table_bytes(pos, c.dtype);
  module.load_token_table(tb.data(), tb.size());
  if (np) module.load_position_table(pb.data(), pb.size());
}

}  // namespace tokemb
