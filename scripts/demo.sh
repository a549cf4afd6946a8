#!/usr/bin/env bash
# The main job: builds tokemb and runs `tokemb demo`, the book's token + positional embedding
# walk-through (GPU when present, CPU reference otherwise; it says which).
#   TOKEMB_BUILD_DIR  build directory (default: build)
#   TOKEMB_WITH_CUDA  AUTO (default), ON or OFF: OFF skips the CUDA kernels even where nvcc is
#                     installed (the demo then runs on the CPU reference backend)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${TOKEMB_BUILD_DIR:-$root/build}
bash "$root/scripts/install-deps.sh"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  ${TOKEMB_WITH_CUDA:+"-DTOKEMB_WITH_CUDA=$TOKEMB_WITH_CUDA"}
cmake --build "$build" -j "$(nproc)" --target tokemb_cli
"$build/tools/tokemb" demo "$@"
