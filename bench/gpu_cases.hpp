#pragma once
// GPU rows (gpu_cases.cpp, compiled only when the CUDA backend is on).

#include "bench/cases.hpp"

namespace bench {

// Adds the GPU's name, driver, CUDA versions, SM count and L2 size to the benchmark context
// (the "context" object of the JSON output, which bench/report.py prints).
void add_gpu_context();

// Registers fwd/, bwd_atomic/ and bwd_det/ rows for one case.
void register_gpu_cases(const Case& c);

// Frees the device memory, stream and events the rows kept (call before main returns).
void release_gpu_resources();

}  // namespace bench
