// GPU rows: tokemb's forward and backward through the public API, each with its baseline, the
// copy ceiling of the same byte count and a correctness check against the baseline, all timed
// on one stream with CUDA events and L2 flushed between iterations (cuda_timer.hpp).
//
// Row names: fwd/<case>, bwd_atomic/<case>, bwd_det/<case>, and fwd_drop/<case>, bwd_drop/<case>
// (fused dropout p = 0.1, atomic mode) for the GPT-2 B = 64 uniform cases (Google Benchmark
// appends "/manual_time"). The backward rows time zeroing both f32 gradient tables (cudaMemsetAsync)
// plus tokemb::backward, i.e. fresh gradients, which is what PyTorch's backward produces;
// bwd_only_ms is tokemb::backward alone (accumulating into existing gradients).
//
// Counters (all times are medians over iterations, in ms):
//   median_ms, GBps          our time; min_bytes / median (min_bytes: cases.hpp)
//   bytes_per_second         Google Benchmark's, min_bytes / mean time
//   copy_ms, copy_GBps       cudaMemcpyAsync device-to-device of min_bytes / 2 bytes, so the
//                            copy reads + writes exactly min_bytes: the bandwidth ceiling
//   pct_of_copy_bw           100 * copy_ms / median_ms (same bytes, so a bandwidth ratio)
//   baseline_ms              unfused forward / naive backward (baselines.hpp), same zeroing
//   speedup_vs_baseline      baseline_ms / median_ms
//   speedup_vs_cpu           CPU-reference median / median_ms, same shape (cpu_cases.cpp)
//   det_vs_atomic            bwd_det only: median_ms / bwd_atomic's median_ms
//   check_ok                 1 when our result matches the baseline (forward: bitwise;
//                            backward: within a tolerance that allows for summation order)
#include "bench/gpu_cases.hpp"

#include <benchmark/benchmark.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <exception>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <tokemb/tokemb.hpp>

#include "bench/baselines.hpp"
#include "bench/common.hpp"
#include "bench/cuda_timer.hpp"

namespace bench {
namespace {

using tokemb::Buffer;
using tokemb::Device;
using tokemb::DType;

constexpr int kDevice = 0;

// One stream, one flusher, one timer for the whole run.
struct Gpu {
  tokemb::Stream stream{kDevice};
  L2Flusher flusher{kDevice};
  EventTimer timer{stream.view().value(), flusher};
  cudaStream_t s() const { return stream.view().value(); }
};

std::unique_ptr<Gpu> g_gpu;

Gpu& gpu() {
  if (!g_gpu) g_gpu = std::make_unique<Gpu>();
  return *g_gpu;
}

struct DeviceTables {
  std::int64_t V = 0, D = 0, P = 0;
  DType dtype = DType::f32;
  Buffer tok, pos;
  Buffer grad_tok, grad_pos;          // ours
  Buffer grad_tok_ref, grad_pos_ref;  // the baseline's, for the check
};

struct GpuFixture {
  std::string key;
  std::int64_t distinct = 0, max_count = 0;
  std::shared_ptr<DeviceTables> t;
  Buffer ids, out, out_ref, dout;
  Buffer copy_src, copy_dst;  // for the copy ceiling
  Buffer workspace;           // deterministic backward
  std::size_t workspace_bytes = 0;
};

Buffer device_bytes(std::size_t bytes) {
  // Whole 16-byte vectors so that both copy buffers are fully usable.
  const auto words = static_cast<std::int64_t>((bytes + 15) / 16 * 4);
  return Buffer(DType::f32, {std::max<std::int64_t>(words, 4)}, Device::cuda(kDevice));
}

// The latest case's tables and fixture (rows of one case run one after another, so one of each
// bounds device memory). Released explicitly by release_gpu_resources(), not at static
// destruction, when the CUDA runtime may already be unloading.
std::shared_ptr<DeviceTables> g_tables;
std::unique_ptr<GpuFixture> g_fixture;

std::shared_ptr<DeviceTables> device_tables(const Case& c) {
  std::shared_ptr<DeviceTables>& cached = g_tables;
  const ShapeSpec& s = c.shape;
  if (cached && cached->V == s.V && cached->D == s.D && cached->P == s.P &&
      cached->dtype == c.dtype)
    return cached;
  cached.reset();  // free the previous case's tables before allocating (the Llama case is large)
  const cudaStream_t st = gpu().s();
  auto t = std::make_shared<DeviceTables>();
  t->V = s.V;
  t->D = s.D;
  t->P = s.P;
  t->dtype = c.dtype;
  const Device dev = Device::cuda(kDevice);
  t->tok = Buffer(c.dtype, {s.V, s.D}, dev);
  t->pos = Buffer(c.dtype, {s.P, s.D}, dev);
  t->grad_tok = Buffer(DType::f32, {s.V, s.D}, dev);
  t->grad_pos = Buffer(DType::f32, {s.P, s.D}, dev);
  t->grad_tok_ref = Buffer(DType::f32, {s.V, s.D}, dev);
  t->grad_pos_ref = Buffer(DType::f32, {s.P, s.D}, dev);
  fill_device(t->tok.data(), c.dtype, s.V * s.D, kSeedTokenTable, kTableScale, st);
  fill_device(t->pos.data(), c.dtype, s.P * s.D, kSeedPositionTable, kTableScale, st);
  for (const Buffer* b : {&t->grad_tok, &t->grad_pos, &t->grad_tok_ref, &t->grad_pos_ref})
    BENCH_CUDA(cudaMemsetAsync(b->data(), 0, b->bytes(), st));
  BENCH_CUDA(cudaStreamSynchronize(st));
  cached = t;
  return cached;
}

GpuFixture& gpu_fixture(const Case& c) {
  std::unique_ptr<GpuFixture>& cached = g_fixture;
  if (cached && cached->key == c.key()) return *cached;
  cached.reset();
  const cudaStream_t st = gpu().s();
  const ShapeSpec& s = c.shape;
  auto f = std::make_unique<GpuFixture>();
  f->key = c.key();
  f->t = device_tables(c);
  const Device dev = Device::cuda(kDevice);

  const std::vector<std::int64_t> ids = make_ids(c.dist, s.V, c.rows());
  f->distinct = count_distinct(ids, s.V);
  std::map<std::int64_t, std::int64_t> counts;
  for (std::int64_t id : ids) f->max_count = std::max(f->max_count, ++counts[id]);
  f->ids = Buffer(c.id_type, {s.B, s.T}, dev);
  if (c.id_type == DType::i32) {
    std::vector<std::int32_t> narrow(ids.begin(), ids.end());
    BENCH_CUDA(cudaMemcpy(f->ids.data(), narrow.data(), f->ids.bytes(), cudaMemcpyHostToDevice));
  } else {
    BENCH_CUDA(cudaMemcpy(f->ids.data(), ids.data(), f->ids.bytes(), cudaMemcpyHostToDevice));
  }

  f->out = Buffer(c.dtype, {s.B, s.T, s.D}, dev);
  f->out_ref = Buffer(c.dtype, {s.B, s.T, s.D}, dev);
  f->dout = Buffer(c.dtype, {s.B, s.T, s.D}, dev);
  fill_device(f->dout.data(), c.dtype, c.rows() * s.D, kSeedDout, kDoutScale, st);

  const double copy_bytes =
      std::max(forward_min_bytes(c, f->distinct), zero_backward_min_bytes(c)) / 2.0;
  f->copy_src = device_bytes(static_cast<std::size_t>(copy_bytes) + 16);
  f->copy_dst = device_bytes(static_cast<std::size_t>(copy_bytes) + 16);
  BENCH_CUDA(cudaMemsetAsync(f->copy_src.data(), 0, f->copy_src.bytes(), st));

  tokemb::Options det;
  det.position_offset = s.offset;
  det.backward_mode = tokemb::BackwardMode::deterministic;
  f->workspace_bytes =
      tokemb::backward_workspace_size(f->ids, f->dout, f->t->grad_tok, f->t->grad_pos, det);
  if (f->workspace_bytes > 0) f->workspace = device_bytes(f->workspace_bytes);
  BENCH_CUDA(cudaStreamSynchronize(st));
  cached = std::move(f);
  return *cached;
}

// Copy of `bytes` bytes, device to device: reads + writes 2 * bytes.
void copy_op(GpuFixture& f, std::size_t bytes) {
  BENCH_CUDA(cudaMemcpyAsync(f.copy_dst.data(), f.copy_src.data(), bytes, cudaMemcpyDeviceToDevice,
                             gpu().s()));
}

// Extra measurements of a row, made once (Google Benchmark calls a row's function several times
// while it sizes the iteration count) and reused.
struct RowExtras {
  double copy_ms = 0, baseline_ms = 0, bwd_only_ms = 0, memset_accumulate_ms = 0;
  double check_bad = 0, check_max_abs_diff = 0;
};
std::map<std::string, RowExtras>& extras_cache() {
  static std::map<std::string, RowExtras> m;
  return m;
}
std::map<std::string, double>& atomic_medians() {
  static std::map<std::string, double> m;
  return m;
}
std::map<std::string, double>& forward_medians() {
  static std::map<std::string, double> m;
  return m;
}

// Dropout rows (fwd_drop, bwd_drop): the same call with fused dropout p = kDropoutP. Their
// counter vs_no_dropout = median / the p = 0 row's median; the target is <= 1.05 (the mask's
// Philox rounds must hide under the memory traffic). Their results are not compared with a
// baseline (none applies the same mask); tests/test_dropout.cpp checks them against the CPU.
constexpr float kDropoutP = 0.1f;
void set_dropout(tokemb::Options& o, float p) {
  o.dropout.p = p;
  o.dropout.seed = 1234;
  o.dropout.offset = 0;
}

void set_comparison_counters(benchmark::State& state, const RowExtras& x, double min_bytes,
                             double med, const std::string& cpu_key) {
  state.counters["copy_ms"] = x.copy_ms;
  state.counters["copy_GBps"] = x.copy_ms > 0 ? min_bytes / (x.copy_ms * 1e-3) / 1e9 : 0.0;
  state.counters["pct_of_copy_bw"] = med > 0 ? 100.0 * x.copy_ms / med : 0.0;
  state.counters["baseline_ms"] = x.baseline_ms;
  state.counters["speedup_vs_baseline"] = med > 0 ? x.baseline_ms / med : 0.0;
  if (auto cpu = CpuTimes::get().find(cpu_key); cpu && med > 0)
    state.counters["speedup_vs_cpu"] = *cpu / med;
  state.counters["check_ok"] = x.check_bad == 0 ? 1.0 : 0.0;
  state.counters["check_bad"] = x.check_bad;
  state.counters["check_max_abs_diff"] = x.check_max_abs_diff;
}

void gpu_forward(benchmark::State& state, Case c, std::string row, float dropout_p) {
  try {
    GpuFixture& f = gpu_fixture(c);
    DeviceTables& t = *f.t;
    EventTimer& timer = gpu().timer;
    const cudaStream_t st = gpu().s();
    tokemb::Options opt;
    opt.position_offset = c.shape.offset;
    set_dropout(opt, dropout_p);
    auto ours = [&] { tokemb::forward(f.ids, t.tok, t.pos, f.out, opt, st); };
    auto baseline = [&] {
      unfused_forward(f.ids.data(), c.id_type, t.tok.data(), t.pos.data(), f.out_ref.data(),
                      c.dtype, c.shape.V, c.shape.B, c.shape.T, c.shape.D, c.shape.offset, st);
    };
    const double min_bytes = forward_min_bytes(c, f.distinct);

    auto& cache = extras_cache();
    if (!cache.count(row)) {
      RowExtras x;
      // Both compute bf16/f16(f32(tok) + f32(pos)) with one rounding: results must be identical.
      ours();
      baseline();
      if (dropout_p == 0.0f)
        x.check_bad = static_cast<double>(
            count_byte_mismatches(f.out.data(), f.out_ref.data(), f.out.bytes(), st));
      x.copy_ms = timer.median_ms([&] { copy_op(f, static_cast<std::size_t>(min_bytes / 2)); });
      x.baseline_ms = timer.median_ms(baseline);
      for (int i = 0; i < 3; ++i) timer.time_ms(ours);  // warm-up
      cache[row] = x;
    }

    const std::vector<double> samples = run_iterations(state, [&] { return timer.time_ms(ours); });
    set_time_counters(state, min_bytes, samples);
    set_comparison_counters(state, cache[row], min_bytes, median(samples), "fwd/" + c.key());
    state.counters["distinct_tokens"] = static_cast<double>(f.distinct);
    if (dropout_p == 0.0f) {
      forward_medians()[c.key()] = median(samples);
    } else {
      state.counters.erase("check_ok");
      if (auto it = forward_medians().find(c.key()); it != forward_medians().end() && it->second > 0)
        state.counters["vs_no_dropout"] = median(samples) / it->second;
    }
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

void gpu_backward(benchmark::State& state, Case c, std::string row, tokemb::BackwardMode mode,
                  float dropout_p) {
  try {
    GpuFixture& f = gpu_fixture(c);
    DeviceTables& t = *f.t;
    EventTimer& timer = gpu().timer;
    const cudaStream_t st = gpu().s();
    // Timed: zeroing plus backward in one call (Options::accumulate = false; sort-based, each
    // token-gradient row written once). backward_only: accumulating into the existing gradients,
    // no zeroing. memset_accumulate (atomic rows): the other way to get fresh gradients, two
    // memsets and the accumulating atomic kernel, timed beside it to show which wins.
    tokemb::Options opt;
    opt.position_offset = c.shape.offset;
    opt.backward_mode = mode;
    set_dropout(opt, dropout_p);
    tokemb::Options accumulate_opt = opt;
    opt.accumulate = false;
    const tokemb::Workspace ws{f.workspace.data(), f.workspace_bytes};
    auto backward_only = [&] {
      tokemb::backward(f.ids, f.dout, t.grad_tok, t.grad_pos, accumulate_opt, ws, st);
    };
    auto ours = [&] { tokemb::backward(f.ids, f.dout, t.grad_tok, t.grad_pos, opt, ws, st); };
    auto memset_accumulate = [&] {
      BENCH_CUDA(cudaMemsetAsync(t.grad_tok.data(), 0, t.grad_tok.bytes(), st));
      BENCH_CUDA(cudaMemsetAsync(t.grad_pos.data(), 0, t.grad_pos.bytes(), st));
      backward_only();
    };
    auto baseline = [&] {
      BENCH_CUDA(cudaMemsetAsync(t.grad_tok_ref.data(), 0, t.grad_tok_ref.bytes(), st));
      BENCH_CUDA(cudaMemsetAsync(t.grad_pos_ref.data(), 0, t.grad_pos_ref.bytes(), st));
      naive_backward(f.ids.data(), c.id_type, f.dout.data(), c.dtype,
                     static_cast<float*>(t.grad_tok_ref.data()),
                     static_cast<float*>(t.grad_pos_ref.data()), c.shape.V, c.shape.B, c.shape.T,
                     c.shape.D, c.shape.offset, st);
    };
    const double min_bytes = zero_backward_min_bytes(c);

    auto& cache = extras_cache();
    if (!cache.count(row)) {
      RowExtras x;
      ours();
      baseline();
      // Both sum the same f32 values in different orders. |dout| < 1, so a row that receives n
      // contributions differs by far less than 1e-5 * n; a lost or doubled contribution does not.
      const float atol = 1e-5f * static_cast<float>(std::max(f.max_count, c.shape.B)) + 1e-6f;
      const float rtol = 1e-4f;
      const CompareResult a =
          compare_f32(static_cast<const float*>(t.grad_tok.data()),
                      static_cast<const float*>(t.grad_tok_ref.data()),
                      static_cast<std::size_t>(t.grad_tok.view().numel()), atol, rtol, st);
      const CompareResult b =
          compare_f32(static_cast<const float*>(t.grad_pos.data()),
                      static_cast<const float*>(t.grad_pos_ref.data()),
                      static_cast<std::size_t>(t.grad_pos.view().numel()), atol, rtol, st);
      if (dropout_p == 0.0f) {
        x.check_bad = static_cast<double>(a.violations + b.violations);
        x.check_max_abs_diff = std::max(a.max_abs_diff, b.max_abs_diff);
      }
      x.copy_ms = timer.median_ms([&] { copy_op(f, static_cast<std::size_t>(min_bytes / 2)); });
      x.baseline_ms = timer.median_ms(baseline);
      x.bwd_only_ms = timer.median_ms(backward_only);
      if (mode == tokemb::BackwardMode::atomic)
        x.memset_accumulate_ms = timer.median_ms(memset_accumulate);
      for (int i = 0; i < 3; ++i) timer.time_ms(ours);  // warm-up
      cache[row] = x;
    }

    const std::vector<double> samples = run_iterations(state, [&] { return timer.time_ms(ours); });
    const double med = median(samples);
    const RowExtras& x = cache[row];
    set_time_counters(state, min_bytes, samples);
    set_comparison_counters(state, x, min_bytes, med, "bwd/" + c.key());
    state.counters["distinct_tokens"] = static_cast<double>(f.distinct);
    state.counters["bwd_only_ms"] = x.bwd_only_ms;
    if (mode == tokemb::BackwardMode::atomic)
      state.counters["memset_accumulate_ms"] = x.memset_accumulate_ms;
    state.counters["bwd_only_GBps"] =
        x.bwd_only_ms > 0
            ? backward_accumulate_min_bytes(c, f.distinct) / (x.bwd_only_ms * 1e-3) / 1e9
            : 0.0;
    if (dropout_p > 0.0f) {
      state.counters.erase("check_ok");
      if (auto it = atomic_medians().find(c.key()); it != atomic_medians().end() && it->second > 0)
        state.counters["vs_no_dropout"] = med / it->second;
    } else if (mode == tokemb::BackwardMode::atomic) {
      atomic_medians()[c.key()] = med;
    } else if (auto it = atomic_medians().find(c.key());
               it != atomic_medians().end() && it->second > 0) {
      state.counters["det_vs_atomic"] = med / it->second;
    }
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

std::string nvidia_driver_version() {
  // "NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.95.05  ..." -> "580.95.05"
  std::ifstream in("/proc/driver/nvidia/version");
  std::string line;
  if (!std::getline(in, line)) return "unknown";
  const auto k = line.find("Kernel Module");
  if (k == std::string::npos) return line;
  std::istringstream rest(line.substr(k + 13));
  std::string v;
  rest >> v;
  return v.empty() ? line : v;
}

}  // namespace

void add_gpu_context() {
  try {
    cudaDeviceProp prop{};
    BENCH_CUDA(cudaGetDeviceProperties(&prop, kDevice));
    int driver = 0, runtime = 0;
    BENCH_CUDA(cudaDriverGetVersion(&driver));
    BENCH_CUDA(cudaRuntimeGetVersion(&runtime));
    auto ver = [](int v) { return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10); };
    benchmark::AddCustomContext("gpu", prop.name);
    benchmark::AddCustomContext("gpu_sm_count", std::to_string(prop.multiProcessorCount));
    benchmark::AddCustomContext("gpu_l2_bytes", std::to_string(prop.l2CacheSize));
    benchmark::AddCustomContext("gpu_memory_bytes", std::to_string(prop.totalGlobalMem));
    benchmark::AddCustomContext("nvidia_driver", nvidia_driver_version());
    benchmark::AddCustomContext("cuda_driver_api", ver(driver));
    benchmark::AddCustomContext("cuda_runtime", ver(runtime));
  } catch (const std::exception& e) {
    benchmark::AddCustomContext("gpu", std::string("query failed: ") + e.what());
  }
}

void release_gpu_resources() {
  g_fixture.reset();
  g_tables.reset();
  g_gpu.reset();
}

void register_gpu_cases(const Case& c) {
  const std::string fwd = "fwd/" + c.key(), atomic = "bwd_atomic/" + c.key(),
                    det = "bwd_det/" + c.key();
  benchmark::RegisterBenchmark(fwd.c_str(), gpu_forward, c, fwd, 0.0f)
      ->UseManualTime()
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark(atomic.c_str(), gpu_backward, c, atomic,
                               tokemb::BackwardMode::atomic, 0.0f)
      ->UseManualTime()
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark(det.c_str(), gpu_backward, c, det,
                               tokemb::BackwardMode::deterministic, 0.0f)
      ->UseManualTime()
      ->Unit(benchmark::kMillisecond);
  // Fused dropout at p = 0.1 beside p = 0, on the GPT-2 B = 64 training cases with uniform ids.
  if (std::string(c.shape.name) == kGpt2B64.name && c.dist == Dist::uniform &&
      c.id_type == DType::i64 && c.dtype != DType::f16) {
    const std::string fwd_drop = "fwd_drop/" + c.key(), bwd_drop = "bwd_drop/" + c.key();
    benchmark::RegisterBenchmark(fwd_drop.c_str(), gpu_forward, c, fwd_drop, kDropoutP)
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(bwd_drop.c_str(), gpu_backward, c, bwd_drop,
                                 tokemb::BackwardMode::atomic, kDropoutP)
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
  }
}

}  // namespace bench
