// tokemb_sim_perf: the kernels at one GPT-2-like shape beside a device-to-device copy of the
// same bytes, for the simulator's performance model (scripts/sim-check.sh --perf parses what
// GPGPU-Sim prints per kernel: gpu_sim_cycle). Not a benchmark and not an H200: a relative
// signal (kernel cycles / copy cycles) to check ideas against where no GPU is at hand. On a real
// GPU it runs too, and only prints its markers.
//
// Cases: B = 1, T = TOKEMB_SIM_T (default 1024; sim-check.sh --perf passes a smaller one), D = 768,
// V = 50257, f32 tables, int64 ids, uniform and all-identical ids; forward, atomic backward and
// deterministic backward (both accumulating). Each case is preceded by a copy kernel that reads
// and writes the case's minimum bytes (bench/cases.hpp's definitions), so that the ratio is a
// bandwidth ratio on the simulated memory system. Left out: the overwriting backward, whose
// minimum bytes are the whole V x D gradient table (154 MB to simulate, mostly zeroing).
//
// Output: lines "@@sim_perf begin NAME min_bytes=N" and "@@sim_perf end NAME" around each
// measured part, with the simulator's own per-kernel report in between.
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include <tokemb/tokemb.hpp>

#include "bench/id_distributions.hpp"

namespace {

using namespace tokemb;

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "tokemb_sim_perf: %s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}

// The ceiling: 16-byte loads and stores, grid-stride, every element read once and written once.
__global__ void copy_kernel(const float4* __restrict__ src, float4* __restrict__ dst,
                            std::int64_t n) {
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    dst[i] = src[i];
}

void marker(const char* what, const std::string& name, double min_bytes = 0) {
  if (min_bytes > 0) {
    std::printf("@@sim_perf %s %s min_bytes=%.0f\n", what, name.c_str(), min_bytes);
  } else {
    std::printf("@@sim_perf %s %s\n", what, name.c_str());
  }
  std::fflush(stdout);
}

// A copy that reads and writes min_bytes in all (min_bytes / 2 each way).
void run_copy(const std::string& name, double min_bytes, cudaStream_t s) {
  const auto n = static_cast<std::int64_t>(min_bytes / 2 / 16);
  float4 *src = nullptr, *dst = nullptr;
  check(cudaMalloc(&src, n * 16), "cudaMalloc");
  check(cudaMalloc(&dst, n * 16), "cudaMalloc");
  check(cudaMemset(src, 0, n * 16), "cudaMemset");
  int sms = 1;
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0), "attribute");
  const auto blocks = static_cast<unsigned>(std::min<std::int64_t>((n + 255) / 256, sms * 8LL));
  marker("begin", "copy/" + name, min_bytes);
  copy_kernel<<<blocks, 256, 0, s>>>(src, dst, n);
  check(cudaGetLastError(), "copy launch");
  check(cudaStreamSynchronize(s), "copy");
  marker("end", "copy/" + name);
  cudaFree(src);
  cudaFree(dst);
}

}  // namespace

int main() {
  const std::int64_t B = 1, V = 50257, D = 768, P = 1024;
  const std::int64_t T = std::getenv("TOKEMB_SIM_T") ? std::atoll(std::getenv("TOKEMB_SIM_T")) : 1024;
  if (T < 1 || T > P) throw std::invalid_argument("TOKEMB_SIM_T must be in [1, 1024]");
  try {
    Stream stream(0);
    const cudaStream_t s = stream.view().value();
    const Device dev = Device::cuda(0);
    std::vector<float> host_tok(static_cast<std::size_t>(V * D)), host_pos(P * D),
        host_dout(static_cast<std::size_t>(B * T * D));
    for (std::size_t i = 0; i < host_tok.size(); ++i) host_tok[i] = 0.02f * ((i * 7919 % 2001) / 1000.0f - 1);
    for (std::size_t i = 0; i < host_pos.size(); ++i) host_pos[i] = 0.01f * ((i * 104729 % 2001) / 1000.0f - 1);
    for (std::size_t i = 0; i < host_dout.size(); ++i) host_dout[i] = (i * 31337 % 2001) / 1000.0f - 1;
    Buffer tok(DType::f32, Shape{V, D}, dev), pos(DType::f32, Shape{P, D}, dev),
        out(DType::f32, Shape{B, T, D}, dev), dout(DType::f32, Shape{B, T, D}, dev),
        gtok(DType::f32, Shape{V, D}, dev), gpos(DType::f32, Shape{P, D}, dev);
    check(cudaMemcpy(tok.data(), host_tok.data(), tok.bytes(), cudaMemcpyHostToDevice), "copy");
    check(cudaMemcpy(pos.data(), host_pos.data(), pos.bytes(), cudaMemcpyHostToDevice), "copy");
    check(cudaMemcpy(dout.data(), host_dout.data(), dout.bytes(), cudaMemcpyHostToDevice), "copy");
    check(cudaMemset(gtok.data(), 0, gtok.bytes()), "memset");
    check(cudaMemset(gpos.data(), 0, gpos.bytes()), "memset");

    for (const bench::Dist dist : {bench::Dist::uniform, bench::Dist::same}) {
      const std::vector<std::int64_t> host_ids = bench::make_ids(dist, V, B * T);
      const double distinct = static_cast<double>(bench::count_distinct(host_ids, V));
      Buffer ids(DType::i64, Shape{B, T}, dev);
      check(cudaMemcpy(ids.data(), host_ids.data(), ids.bytes(), cudaMemcpyHostToDevice), "copy");
      const double rows = static_cast<double>(B * T), Dd = static_cast<double>(D);
      // bench/cases.hpp: forward, backward (accumulate) and zeroing + backward minimum bytes.
      const double fwd_bytes = rows * 8 + distinct * Dd * 4 + T * Dd * 4 + rows * Dd * 4;
      const double bwd_bytes = rows * 8 + rows * Dd * 4 + 2 * distinct * Dd * 4 + 2.0 * T * Dd * 4;
      const std::string d = bench::dist_name(dist);

      run_copy("forward/" + d, fwd_bytes, s);
      marker("begin", "forward/" + d, fwd_bytes);
      forward(ids, tok, pos, out, Options{}, stream);
      stream.synchronize();
      marker("end", "forward/" + d);

      struct Bwd {
        const char* name;
        BackwardMode mode;
        bool accumulate;
        double bytes;
      };
      for (const Bwd& b : {Bwd{"backward_atomic", BackwardMode::atomic, true, bwd_bytes},
                           Bwd{"backward_deterministic", BackwardMode::deterministic, true,
                               bwd_bytes}}) {
        Options o;
        o.backward_mode = b.mode;
        o.accumulate = b.accumulate;
        const std::size_t ws_bytes = backward_workspace_size(ids, dout, gtok, gpos, o);
        Buffer ws(DType::i64, Shape{static_cast<std::int64_t>(ws_bytes / 8) + 1}, dev);
        run_copy(std::string(b.name) + "/" + d, b.bytes, s);
        marker("begin", std::string(b.name) + "/" + d, b.bytes);
        backward(ids, dout, gtok, gpos, o, Workspace{ws.data(), ws_bytes}, stream);
        stream.synchronize();
        marker("end", std::string(b.name) + "/" + d);
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tokemb_sim_perf: %s\n", e.what());
    return 1;
  }
  return 0;
}
