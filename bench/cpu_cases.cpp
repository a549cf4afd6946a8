// CPU-reference rows: tokemb::forward / tokemb::backward on CPU tensors through the public API,
// timed with std::chrono around each call (manual time, like the GPU rows).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <exception>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <tokemb/tokemb.hpp>

#include "bench/cases.hpp"
#include "bench/common.hpp"

namespace bench {
namespace {

using tokemb::Buffer;
using tokemb::Device;
using tokemb::DType;

// Fills n elements of a host tensor with hash_value(seed, i), in parallel (the Llama table has
// half a billion elements).
void fill_host(void* data, DType dtype, std::int64_t n, std::uint64_t seed, float scale) {
  const unsigned workers = std::max(1u, std::min(16u, std::thread::hardware_concurrency()));
  auto work = [=](std::int64_t lo, std::int64_t hi) {
    for (std::int64_t i = lo; i < hi; ++i) {
      const float v = hash_value(seed, static_cast<std::uint64_t>(i), scale);
      switch (dtype) {
        case DType::f32:
          static_cast<float*>(data)[i] = v;
          break;
        case DType::bf16:
          static_cast<tokemb::bf16_t*>(data)[i] = tokemb::bf16_t::from_float(v);
          break;
        case DType::f16:
          static_cast<tokemb::f16_t*>(data)[i] = tokemb::f16_t::from_float(v);
          break;
        default:
          break;
      }
    }
  };
  std::vector<std::thread> threads;
  const std::int64_t chunk = (n + workers - 1) / workers;
  for (unsigned w = 0; w < workers; ++w) {
    const std::int64_t lo = std::min<std::int64_t>(n, w * chunk);
    const std::int64_t hi = std::min<std::int64_t>(n, lo + chunk);
    if (lo < hi) threads.emplace_back(work, lo, hi);
  }
  for (auto& t : threads) t.join();
}

// Host tensors of the case being run. Rows of one case run one after another, so keeping only
// the latest case (and the latest tables) bounds memory: the Llama-like case needs ~3.3 GB.
struct HostTables {
  std::int64_t V = 0, D = 0, P = 0;
  DType dtype = DType::f32;
  Buffer tok, pos, grad_tok, grad_pos;
};

struct HostFixture {
  std::string key;
  std::int64_t distinct = 0;
  std::shared_ptr<HostTables> tables;
  Buffer ids, out, dout;
};

std::shared_ptr<HostTables> host_tables(const Case& c) {
  static std::shared_ptr<HostTables> cached;
  const ShapeSpec& s = c.shape;
  if (cached && cached->V == s.V && cached->D == s.D && cached->P == s.P &&
      cached->dtype == c.dtype)
    return cached;
  cached.reset();  // free the previous tables first
  auto t = std::make_shared<HostTables>();
  t->V = s.V;
  t->D = s.D;
  t->P = s.P;
  t->dtype = c.dtype;
  t->tok = Buffer(c.dtype, {s.V, s.D}, Device::cpu());
  t->pos = Buffer(c.dtype, {s.P, s.D}, Device::cpu());
  t->grad_tok = Buffer(DType::f32, {s.V, s.D}, Device::cpu());
  t->grad_pos = Buffer(DType::f32, {s.P, s.D}, Device::cpu());
  fill_host(t->tok.data(), c.dtype, s.V * s.D, kSeedTokenTable, kTableScale);
  fill_host(t->pos.data(), c.dtype, s.P * s.D, kSeedPositionTable, kTableScale);
  std::memset(t->grad_tok.data(), 0, t->grad_tok.bytes());
  std::memset(t->grad_pos.data(), 0, t->grad_pos.bytes());
  cached = t;
  return cached;
}

HostFixture& host_fixture(const Case& c) {
  static std::unique_ptr<HostFixture> cached;
  if (cached && cached->key == c.key()) return *cached;
  cached.reset();
  auto f = std::make_unique<HostFixture>();
  f->key = c.key();
  f->tables = host_tables(c);
  const ShapeSpec& s = c.shape;
  const std::vector<std::int64_t> ids = make_ids(c.dist, s.V, c.rows());
  f->distinct = count_distinct(ids, s.V);
  f->ids = Buffer(c.id_type, {s.B, s.T}, Device::cpu());
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (c.id_type == DType::i32)
      static_cast<std::int32_t*>(f->ids.data())[i] = static_cast<std::int32_t>(ids[i]);
    else
      static_cast<std::int64_t*>(f->ids.data())[i] = ids[i];
  }
  f->out = Buffer(c.dtype, {s.B, s.T, s.D}, Device::cpu());
  f->dout = Buffer(c.dtype, {s.B, s.T, s.D}, Device::cpu());
  fill_host(f->dout.data(), c.dtype, c.rows() * s.D, kSeedDout, kDoutScale);
  cached = std::move(f);
  return *cached;
}

// Rows already warmed up: the first call of an op touches freshly allocated output pages (and
// gradient pages), which costs more than the op itself; that is not what we measure.
bool first_call(const std::string& row) {
  static std::set<std::string> seen;
  return seen.insert(row).second;
}

template <class Op>
double time_ms(Op&& op) {
  const auto t0 = std::chrono::steady_clock::now();
  op();
  const auto t1 = std::chrono::steady_clock::now();
  return std::chrono::duration<double, std::milli>(t1 - t0).count();
}

void cpu_forward(benchmark::State& state, Case c) {
  try {
    HostFixture& f = host_fixture(c);
    HostTables& t = *f.tables;
    tokemb::Options opt;
    opt.position_offset = c.shape.offset;
    const auto stream = tokemb::StreamView::legacy_default();  // ignored for CPU tensors
    auto op = [&] { tokemb::forward(f.ids, t.tok, t.pos, f.out, opt, stream); };
    if (first_call("cpu_fwd/" + c.key())) op();
    const std::vector<double> samples = run_iterations(state, [&] { return time_ms(op); });
    set_time_counters(state, forward_min_bytes(c, f.distinct), samples);
    state.counters["distinct_tokens"] = static_cast<double>(f.distinct);
    CpuTimes::get().put("fwd/" + c.key(), median(samples));
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

// Zeroing plus backward (Options::accumulate = false), like the GPU backward rows (the CPU
// backward mode is irrelevant: the CPU reference is deterministic in both modes).
void cpu_backward(benchmark::State& state, Case c) {
  try {
    HostFixture& f = host_fixture(c);
    HostTables& t = *f.tables;
    tokemb::Options opt;
    opt.position_offset = c.shape.offset;
    opt.accumulate = false;
    const auto stream = tokemb::StreamView::legacy_default();
    auto op = [&] {
      tokemb::backward(f.ids, f.dout, t.grad_tok, t.grad_pos, opt, tokemb::Workspace{}, stream);
    };
    if (first_call("cpu_bwd/" + c.key())) op();
    const std::vector<double> samples = run_iterations(state, [&] { return time_ms(op); });
    set_time_counters(state, zero_backward_min_bytes(c), samples);
    state.counters["distinct_tokens"] = static_cast<double>(f.distinct);
    CpuTimes::get().put("bwd/" + c.key(), median(samples));
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

}  // namespace

void register_cpu_cases(const Case& c) {
  benchmark::RegisterBenchmark(("cpu_fwd/" + c.key()).c_str(), cpu_forward, c)
      ->UseManualTime()
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark(("cpu_bwd/" + c.key()).c_str(), cpu_backward, c)
      ->UseManualTime()
      ->Unit(benchmark::kMillisecond);
}

}  // namespace bench
