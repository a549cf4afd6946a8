#!/usr/bin/env bash
# The test command: installs missing dependencies, builds tokemb (CUDA backend when nvcc is
# found, CPU-only otherwise) and runs the whole CTest suite. Without a GPU the gpu-labelled tests
# report "Skipped" with the reason; everything else must pass.
#   TOKEMB_BUILD_DIR  build directory (default: build)
#   CUDAARCHS         CUDA architectures (default: CMake's cache or tokemb's 80-real;90)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${TOKEMB_BUILD_DIR:-$root/build}
bash "$root/scripts/install-deps.sh"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" -j "$(nproc)"
ctest --test-dir "$build" --output-on-failure -j "$(nproc)"
