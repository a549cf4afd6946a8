#!/usr/bin/env bash
# The main job: builds tokemb and runs `tokemb demo`, the book's token + positional embedding
# walk-through (GPU when present, CPU reference otherwise; it says which).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${TOKEMB_BUILD_DIR:-$root/build}
bash "$root/scripts/install-deps.sh"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" -j "$(nproc)" --target tokemb_cli
"$build/tools/tokemb" demo "$@"
