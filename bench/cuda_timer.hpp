#pragma once
// GPU timing: CUDA events around the op on an explicit stream, with L2 flushed before every
// iteration so that each iteration reads its inputs from DRAM (as a training step would: the
// batch's tables and activations do not stay in L2 between steps).
//
// Sequence per iteration, all on one stream:
//   memset(flush buffer)  -> record(start) -> op -> record(stop) -> host waits for stop
// The flush is enqueued first and takes ~0.1 ms, so by the time the GPU reaches `start` the
// host has already enqueued the op: the measured interval is GPU execution of the op (plus
// inter-kernel gaps inside it), not host launch latency. This is the same method as
// triton.testing.do_bench (256 MiB zeroed between repetitions), which bench/torch_baseline.py
// uses, so both sides are timed alike.

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <vector>

namespace bench {

struct CudaFailure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

inline void cuda_check(cudaError_t e, const char* what, const char* file, int line) {
  if (e != cudaSuccess)
    throw CudaFailure(std::string(what) + ": " + cudaGetErrorName(e) + " (" +
                      cudaGetErrorString(e) + ") at " + file + ":" + std::to_string(line));
}
#define BENCH_CUDA(call) ::bench::cuda_check((call), #call, __FILE__, __LINE__)

// Evicts L2 by overwriting a buffer larger than it: max(256 MiB, 2 x L2 size).
class L2Flusher {
 public:
  explicit L2Flusher(int device) {
    int l2 = 0;
    BENCH_CUDA(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, device));
    bytes_ = std::max<std::size_t>(std::size_t{256} << 20, 2 * static_cast<std::size_t>(l2));
    BENCH_CUDA(cudaMalloc(&buf_, bytes_));
  }
  ~L2Flusher() { cudaFree(buf_); }
  L2Flusher(const L2Flusher&) = delete;
  L2Flusher& operator=(const L2Flusher&) = delete;

  void flush(cudaStream_t s) { BENCH_CUDA(cudaMemsetAsync(buf_, 0, bytes_, s)); }
  std::size_t bytes() const { return bytes_; }

 private:
  void* buf_ = nullptr;
  std::size_t bytes_ = 0;
};

class EventTimer {
 public:
  EventTimer(cudaStream_t stream, L2Flusher& flusher) : stream_(stream), flusher_(flusher) {
    BENCH_CUDA(cudaEventCreate(&start_));
    BENCH_CUDA(cudaEventCreate(&stop_));
  }
  ~EventTimer() {
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
  }
  EventTimer(const EventTimer&) = delete;
  EventTimer& operator=(const EventTimer&) = delete;

  // Milliseconds of one execution of op() (which enqueues work on stream()), L2 flushed first.
  template <class Op>
  double time_ms(Op&& op) {
    flusher_.flush(stream_);
    BENCH_CUDA(cudaEventRecord(start_, stream_));
    op();
    BENCH_CUDA(cudaEventRecord(stop_, stream_));
    BENCH_CUDA(cudaEventSynchronize(stop_));
    float ms = 0.0f;
    BENCH_CUDA(cudaEventElapsedTime(&ms, start_, stop_));
    return static_cast<double>(ms);
  }

  // Median of repeated timings after 2 warm-up runs: at least min_iters runs, and more until
  // budget_ms of measured time has accumulated or max_iters is reached. Used for the baselines
  // and copy ceilings measured next to each row.
  template <class Op>
  double median_ms(Op&& op, int min_iters = 5, int max_iters = 100, double budget_ms = 50.0) {
    for (int i = 0; i < 2; ++i) time_ms(op);
    std::vector<double> v;
    double total = 0.0;
    while (static_cast<int>(v.size()) < max_iters &&
           (static_cast<int>(v.size()) < min_iters || total < budget_ms)) {
      v.push_back(time_ms(op));
      total += v.back();
    }
    std::sort(v.begin(), v.end());
    const std::size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
  }

  cudaStream_t stream() const { return stream_; }

 private:
  cudaStream_t stream_;
  L2Flusher& flusher_;
  cudaEvent_t start_ = nullptr, stop_ = nullptr;
};

}  // namespace bench
