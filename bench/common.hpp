#pragma once
// Helpers shared by the CPU and GPU benchmark cases: medians, the counters every row carries,
// and the record of CPU-reference times that the GPU rows divide by.

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "bench/cases.hpp"

namespace bench {

inline double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Runs the benchmark loop: each iteration's time comes from time_one() in milliseconds (manual
// time), and the samples are returned for the median-based counters.
template <class TimeOne>
std::vector<double> run_iterations(benchmark::State& state, TimeOne&& time_one) {
  std::vector<double> samples;
  for (auto _ : state) {
    const double ms = time_one();
    state.SetIterationTime(ms * 1e-3);
    samples.push_back(ms);
  }
  return samples;
}

// Counters common to every row. Times are per call of the op; bytes are the op's minimum bytes
// (cases.hpp). Google Benchmark's own bytes_per_second uses its mean time per iteration; GBps
// uses the median, which is what the report and all ratios use.
inline void set_time_counters(benchmark::State& state, double min_bytes,
                              const std::vector<double>& samples_ms) {
  const double med = median(samples_ms);
  state.SetBytesProcessed(
      static_cast<std::int64_t>(min_bytes * static_cast<double>(state.iterations())));
  state.counters["min_bytes"] = min_bytes;
  state.counters["median_ms"] = med;
  state.counters["GBps"] = med > 0 ? min_bytes / (med * 1e-3) / 1e9 : 0.0;
}

// CPU-reference median milliseconds per op, keyed "fwd/<case key>" or "bwd/<case key>". The CPU
// rows of a case are registered (and so run) before its GPU rows, which read them to set
// speedup_vs_cpu. Both sides run the same shape, so the ratio is a plain time ratio.
class CpuTimes {
 public:
  static CpuTimes& get() {
    static CpuTimes t;
    return t;
  }
  void put(const std::string& key, double ms) {
    std::lock_guard<std::mutex> lock(mu_);
    ms_[key] = ms;
  }
  std::optional<double> find(const std::string& key) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = ms_.find(key);
    if (it == ms_.end()) return std::nullopt;
    return it->second;
  }

 private:
  mutable std::mutex mu_;
  std::map<std::string, double> ms_;
};

// Registers the CPU-reference rows of one case (cpu_cases.cpp).
void register_cpu_cases(const Case& c);

}  // namespace bench
