// tokemb_bench: Google Benchmark suite of tokemb's forward and backward against the CPU
// reference, unfused/naive GPU baselines and the device-to-device copy ceiling.
//
//   tokemb_bench [--benchmark_filter=REGEX] [--benchmark_min_time=SECONDS]
//                [--benchmark_out=FILE --benchmark_out_format=json]
//
// Without a CUDA device (or in a CPU-only build) only the CPU-reference rows (cpu_fwd/...,
// cpu_bwd/...) are registered; the reason is printed and recorded in the JSON context.
// bench/report.py turns the JSON into a Markdown table and a chart; scripts/bench.sh runs
// everything (including bench/torch_baseline.py) into one directory.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <string>

#include <tokemb/config.hpp>
#include <tokemb/tokemb.hpp>

#include "bench/cases.hpp"
#include "bench/common.hpp"
#if TOKEMB_WITH_CUDA
#include "bench/gpu_cases.hpp"
#endif

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;

  const int devices = tokemb::cuda_device_count();
  std::string gpu_rows;
  if (!TOKEMB_WITH_CUDA)
    gpu_rows = "not registered: this build of tokemb has no CUDA backend (TOKEMB_WITH_CUDA=OFF)";
  else if (devices == 0)
    gpu_rows = "not registered: no CUDA device (tokemb::cuda_device_count() == 0)";
  else
    gpu_rows = "registered (device 0)";
  if (gpu_rows != "registered (device 0)")
    std::fprintf(stderr, "tokemb_bench: GPU cases %s; running the CPU-reference cases only.\n",
                 gpu_rows.c_str());

  benchmark::AddCustomContext("tokemb_version", std::to_string(TOKEMB_VERSION_MAJOR) + "." +
                                                    std::to_string(TOKEMB_VERSION_MINOR) + "." +
                                                    std::to_string(TOKEMB_VERSION_PATCH));
  benchmark::AddCustomContext("gpu_rows", gpu_rows);
  benchmark::AddCustomContext(
      "timing",
      "GPU: CUDA events, manual time, L2 flushed (>= 256 MiB memset) before "
      "each iteration; CPU reference: steady_clock, single thread");
  benchmark::AddCustomContext("backward_rows",
                              "zeroing both f32 gradient tables (cudaMemsetAsync / memset) + "
                              "tokemb::backward");

#if TOKEMB_WITH_CUDA
  const bool with_gpu = devices > 0;
  if (with_gpu) bench::add_gpu_context();
#endif
  for (const bench::Case& c : bench::all_cases()) {
    // CPU rows first: the GPU rows of the same case divide by their times (speedup_vs_cpu).
    bench::register_cpu_cases(c);
#if TOKEMB_WITH_CUDA
    if (with_gpu) bench::register_gpu_cases(c);
#endif
  }

  benchmark::RunSpecifiedBenchmarks();
#if TOKEMB_WITH_CUDA
  if (with_gpu) bench::release_gpu_resources();
#endif
  benchmark::Shutdown();
  return 0;
}
