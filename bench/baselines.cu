// Baseline kernels (what tokemb is compared against) and device utilities for the benchmarks.
// The baselines are deliberately the straightforward designs a framework or a first attempt
// would use, written competently (coalesced, vectorised where rows allow) so that the
// "speedup over baseline" measures fusion and duplicate handling, not sloppy code.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include <tokemb/tensor.hpp>

#include "bench/baselines.hpp"
#include "bench/cases.hpp"
#include "bench/cuda_timer.hpp"
#include "kernels/common.cuh"

namespace bench {
namespace {

using tokemb::DType;

// Same f32 conversions and 16-byte packs as the library's kernels.
using tokemb::detail::from_float;
using tokemb::detail::Pack;
using tokemb::detail::to_float;

// Grid-stride launches: enough blocks to fill the GPU several times over, no more.
int grid_for(std::int64_t n, int threads) {
  static int sms = [] {
    int dev = 0, v = 0;
    BENCH_CUDA(cudaGetDevice(&dev));
    BENCH_CUDA(cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev));
    return v;
  }();
  const std::int64_t blocks = (n + threads - 1) / threads;
  return static_cast<int>(std::max<std::int64_t>(1, std::min<std::int64_t>(blocks, sms * 16LL)));
}

constexpr int kThreads = 256;

template <class T>
__global__ void fill_kernel(T* p, std::int64_t n, std::uint64_t seed, float scale) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    p[i] = from_float<T>(hash_value(seed, static_cast<std::uint64_t>(i), scale));
}

// Step 1 of the unfused forward: copy token rows, dtype-agnostic, in words of type W.
template <class IdT, class W>
__global__ void gather_rows_kernel(const IdT* ids, const W* tok, W* out, std::int64_t rows,
                                   std::int64_t row_words, std::int64_t V) {
  const std::int64_t n = rows * row_words;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t r = i / row_words, w = i - r * row_words;
    const std::int64_t id = static_cast<std::int64_t>(ids[r]);
    // The benchmark's ids are in range; the guard only keeps a broken input from faulting.
    out[i] = (id >= 0 && id < V) ? tok[id * row_words + w] : W{};
  }
}

// Step 2 of the unfused forward: out[b, t, :] += pos[offset + t, :], N elements per access.
template <class T, int N>
__global__ void add_positions_kernel(Pack<T, N>* out, const Pack<T, N>* pos, std::int64_t rows,
                                     std::int64_t T_, std::int64_t row_vecs, std::int64_t offset) {
  const std::int64_t n = rows * row_vecs;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t r = i / row_vecs, v = i - r * row_vecs;
    const std::int64_t t = r % T_;
    Pack<T, N> a = out[i];
    const Pack<T, N> b = pos[(offset + t) * row_vecs + v];
#pragma unroll
    for (int k = 0; k < N; ++k) a.v[k] = from_float<T>(to_float(a.v[k]) + to_float(b.v[k]));
    out[i] = a;
  }
}

// Naive token gradient: one atomicAdd per element; rows with the same id contend on the same
// addresses (the "same" distribution serialises completely).
template <class IdT, class G>
__global__ void naive_token_grad_kernel(const IdT* ids, const G* dout, float* grad,
                                        std::int64_t rows, std::int64_t D, std::int64_t V) {
  const std::int64_t n = rows * D;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t r = i / D, d = i - r * D;
    const std::int64_t id = static_cast<std::int64_t>(ids[r]);
    if (id >= 0 && id < V) atomicAdd(grad + id * D + d, to_float(dout[i]));
  }
}

// Separate positional reduction: grad_pos[offset + t, d] += sum_b dout[b, t, d]. One thread per
// (t, d), coalesced over d; reads dout a second time (that is the cost of not fusing).
template <class G>
__global__ void reduce_positions_kernel(const G* dout, float* grad_pos, std::int64_t B,
                                        std::int64_t T_, std::int64_t D, std::int64_t offset) {
  const std::int64_t n = T_ * D;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t t = i / D, d = i - t * D;
    float s = 0.0f;
    for (std::int64_t b = 0; b < B; ++b) s += to_float(dout[(b * T_ + t) * D + d]);
    grad_pos[(offset + t) * D + d] += s;
  }
}

__global__ void byte_mismatch_kernel(const unsigned char* a, const unsigned char* b, std::size_t n,
                                     unsigned long long* count) {
  unsigned long long local = 0;
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x)
    local += a[i] != b[i];
  if (local) atomicAdd(count, local);
}

// out[0]: violations; out[1]: bits of the largest |got - want| (non-negative floats order like
// their bit patterns, so an integer atomicMax finds the float maximum; NaN sorts above inf).
__global__ void compare_f32_kernel(const float* got, const float* want, std::size_t n, float atol,
                                   float rtol, unsigned long long* violations,
                                   unsigned int* max_bits) {
  unsigned long long bad = 0;
  unsigned int mx = 0;
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const float diff = fabsf(got[i] - want[i]);
    bad += !(diff <= atol + rtol * fabsf(want[i]));  // NaN fails the comparison
    mx = max(mx, __float_as_uint(diff));
  }
  if (bad) atomicAdd(violations, bad);
  atomicMax(max_bits, mx);
}

// Runtime dtypes become template types through the library's one dispatch helper.
using tokemb::detail::DeviceTypes;
using tokemb::detail::dispatch_float;
using tokemb::detail::dispatch_index;

template <class IdT, class W>
void launch_gather(const void* ids, const void* tok, void* out, std::int64_t rows,
                   std::int64_t row_bytes, std::int64_t V, cudaStream_t s) {
  const std::int64_t words = row_bytes / static_cast<std::int64_t>(sizeof(W));
  gather_rows_kernel<IdT, W><<<grid_for(rows * words, kThreads), kThreads, 0, s>>>(
      static_cast<const IdT*>(ids), static_cast<const W*>(tok), static_cast<W*>(out), rows, words,
      V);
  BENCH_CUDA(cudaGetLastError());
}

template <class T, int N>
void launch_add(void* out, const void* pos, std::int64_t rows, std::int64_t T_, std::int64_t D,
                std::int64_t offset, cudaStream_t s) {
  const std::int64_t vecs = D / N;
  add_positions_kernel<T, N><<<grid_for(rows * vecs, kThreads), kThreads, 0, s>>>(
      static_cast<Pack<T, N>*>(out), static_cast<const Pack<T, N>*>(pos), rows, T_, vecs, offset);
  BENCH_CUDA(cudaGetLastError());
}

}  // namespace

void fill_device(void* data, DType dtype, std::int64_t n, std::uint64_t seed, float scale,
                 cudaStream_t stream) {
  dispatch_float<DeviceTypes>(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    fill_kernel<T>
        <<<grid_for(n, kThreads), kThreads, 0, stream>>>(static_cast<T*>(data), n, seed, scale);
    BENCH_CUDA(cudaGetLastError());
  });
}

void unfused_forward(const void* ids, DType id_type, const void* tok, const void* pos, void* out,
                     DType dtype, std::int64_t V, std::int64_t B, std::int64_t T_, std::int64_t D,
                     std::int64_t offset, cudaStream_t stream) {
  const std::int64_t rows = B * T_;
  const std::int64_t row_bytes = D * static_cast<std::int64_t>(tokemb::dtype_size(dtype));
  // cudaMalloc'd bases are 256-byte aligned, so rows are 16-byte aligned when row_bytes is.
  dispatch_index(id_type, [&](auto id_tag) {
    using IdT = typename decltype(id_tag)::type;
    if (row_bytes % 16 == 0)
      launch_gather<IdT, uint4>(ids, tok, out, rows, row_bytes, V, stream);
    else if (row_bytes % 4 == 0)
      launch_gather<IdT, std::uint32_t>(ids, tok, out, rows, row_bytes, V, stream);
    else
      launch_gather<IdT, std::uint16_t>(ids, tok, out, rows, row_bytes, V, stream);
  });
  dispatch_float<DeviceTypes>(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    constexpr int N = 16 / static_cast<int>(sizeof(T));
    if (D % N == 0)
      launch_add<T, N>(out, pos, rows, T_, D, offset, stream);
    else
      launch_add<T, 1>(out, pos, rows, T_, D, offset, stream);
  });
}

void naive_backward(const void* ids, DType id_type, const void* dout, DType dout_type,
                    float* grad_tok, float* grad_pos, std::int64_t V, std::int64_t B,
                    std::int64_t T_, std::int64_t D, std::int64_t offset, cudaStream_t stream) {
  const std::int64_t rows = B * T_;
  dispatch_float<DeviceTypes>(dout_type, [&](auto tag) {
    using G = typename decltype(tag)::type;
    dispatch_index(id_type, [&](auto id_tag) {
      using IdT = typename decltype(id_tag)::type;
      naive_token_grad_kernel<IdT, G><<<grid_for(rows * D, kThreads), kThreads, 0, stream>>>(
          static_cast<const IdT*>(ids), static_cast<const G*>(dout), grad_tok, rows, D, V);
      BENCH_CUDA(cudaGetLastError());
    });
    if (grad_pos != nullptr) {
      reduce_positions_kernel<G><<<grid_for(T_ * D, kThreads), kThreads, 0, stream>>>(
          static_cast<const G*>(dout), grad_pos, B, T_, D, offset);
      BENCH_CUDA(cudaGetLastError());
    }
  });
}

namespace {

// Runs `launch(d)` on a zeroed device struct `Out` and returns its contents (synchronising: these
// checks run once per row, outside the timed loops). The scratch is an owning tokemb::Buffer,
// so it is freed on every path.
template <class Out, class Launch>
Out run_device_check(cudaStream_t stream, Launch&& launch) {
  int dev = 0;
  BENCH_CUDA(cudaGetDevice(&dev));
  tokemb::Buffer scratch(tokemb::DType::i64,
                         tokemb::Shape{static_cast<std::int64_t>((sizeof(Out) + 7) / 8)},
                         tokemb::Device::cuda(dev));
  Out* d = static_cast<Out*>(scratch.data());
  BENCH_CUDA(cudaMemsetAsync(d, 0, sizeof(Out), stream));
  launch(d);
  BENCH_CUDA(cudaGetLastError());
  Out h{};
  BENCH_CUDA(cudaMemcpyAsync(&h, d, sizeof(h), cudaMemcpyDeviceToHost, stream));
  BENCH_CUDA(cudaStreamSynchronize(stream));
  return h;
}

}  // namespace

std::uint64_t count_byte_mismatches(const void* a, const void* b, std::size_t bytes,
                                    cudaStream_t stream) {
  return run_device_check<unsigned long long>(stream, [&](unsigned long long* d) {
    byte_mismatch_kernel<<<grid_for(static_cast<std::int64_t>(bytes), kThreads), kThreads, 0,
                           stream>>>(static_cast<const unsigned char*>(a),
                                     static_cast<const unsigned char*>(b), bytes, d);
  });
}

CompareResult compare_f32(const float* got, const float* want, std::size_t n, float atol,
                          float rtol, cudaStream_t stream) {
  struct Out {
    unsigned long long violations;
    unsigned int max_bits;
  };
  const Out h = run_device_check<Out>(stream, [&](Out* d) {
    compare_f32_kernel<<<grid_for(static_cast<std::int64_t>(n), kThreads), kThreads, 0, stream>>>(
        got, want, n, atol, rtol, &d->violations, &d->max_bits);
  });
  CompareResult r;
  r.violations = h.violations;
  float mx;
  std::memcpy(&mx, &h.max_bits, sizeof(mx));
  r.max_abs_diff = static_cast<double>(mx);
  return r;
}

}  // namespace bench
