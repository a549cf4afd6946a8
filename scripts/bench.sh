#!/usr/bin/env bash
# scripts/bench.sh RESULTS_DIR — tokemb's benchmarks, the PyTorch baseline and the report:
#   RESULTS_DIR/bench.json, bench.txt   tokemb_bench (Google Benchmark JSON / console)
#   RESULTS_DIR/torch.json, torch.txt   bench/torch_baseline.py (status only if no PyTorch/CUDA)
#   RESULTS_DIR/torch-cpu.json, .txt    bench/torch_baseline.py --device cpu: PyTorch beside the
#                                       CPU-reference rows (status only if no PyTorch)
#   RESULTS_DIR/report.md, report.png   bench/report.py (table; chart if matplotlib is there)
#   RESULTS_DIR/merged.json, environment.txt
# Environment:
#   TOKEMB_BUILD_DIR        build tree holding bench/tokemb_bench (default: build); configured
#                           (Release) and built here if the binary is missing
#   TOKEMB_BENCH_MIN_TIME   Google Benchmark min time per row, seconds (default 0.03)
#   TOKEMB_TORCH_BUDGET_S   PyTorch script stops starting measurements after this (default 60)
#   TOKEMB_TORCH_CPU_BUDGET_S  the same for its --device cpu run (default 30; hard cap +30 s)
#   PYTHON                  interpreter for the two scripts (default python3)
# Budget: about 3 minutes on an H100 machine (tokemb_bench ~40 s, PyTorch incl. torch.compile
# warm-up <= ~90 s, PyTorch on the CPU <= ~60 s, each hard-capped). Exit status: non-zero if tokemb_bench or the report failed;
# a missing or failing PyTorch only leaves its columns empty.
set -uo pipefail
out=${1:?usage: scripts/bench.sh RESULTS_DIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
root=$(cd "$(dirname "$0")/.." && pwd)
build=${TOKEMB_BUILD_DIR:-$root/build}
min_time=${TOKEMB_BENCH_MIN_TIME:-0.03}
torch_budget=${TOKEMB_TORCH_BUDGET_S:-60}
torch_cpu_budget=${TOKEMB_TORCH_CPU_BUDGET_S:-30}
py=${PYTHON:-python3}
bin=$build/bench/tokemb_bench
t0=$(date +%s)

if [ ! -x "$bin" ]; then
  if [ ! -f "$build/CMakeCache.txt" ]; then
    cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DTOKEMB_BUILD_BENCHMARKS=ON \
      -DTOKEMB_BUILD_TESTS=OFF -DTOKEMB_BUILD_TOOLS=OFF -DTOKEMB_FETCH_DEPS=ON || exit 1
  fi
  cmake --build "$build" --target tokemb_bench -j "$(nproc)" || exit 1
fi

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>&1 ||
    echo "no nvidia-smi"
} >"$out/environment.txt" 2>&1

echo "== tokemb_bench (min_time ${min_time}s)"
"$bin" --benchmark_min_time="$min_time" --benchmark_out="$out/bench.json" \
  --benchmark_out_format=json 2>&1 | tee "$out/bench.txt"
bench_rc=${PIPESTATUS[0]}
echo "== tokemb_bench rc=$bench_rc ($(($(date +%s) - t0))s so far)"

echo "== PyTorch baseline (budget ${torch_budget}s)"
timeout --kill-after=5 $((torch_budget + 30)) "$py" "$root/bench/torch_baseline.py" \
  --out "$out/torch.json" --budget-s "$torch_budget" >"$out/torch.txt" 2>&1
torch_rc=$?
tail -n 40 "$out/torch.txt"
echo "== PyTorch baseline rc=$torch_rc ($(($(date +%s) - t0))s so far)"

echo "== PyTorch on the CPU, beside the CPU reference (budget ${torch_cpu_budget}s)"
timeout --kill-after=5 $((torch_cpu_budget + 30)) "$py" "$root/bench/torch_baseline.py" \
  --device cpu --out "$out/torch-cpu.json" --budget-s "$torch_cpu_budget" >"$out/torch-cpu.txt" 2>&1
echo "== PyTorch CPU rc=$? ($(($(date +%s) - t0))s so far)"

report_rc=1
if [ -s "$out/bench.json" ]; then
  "$py" "$root/bench/report.py" --bench "$out/bench.json" --torch "$out/torch.json" \
    --torch "$out/torch-cpu.json" \
    --env "$out/environment.txt" --out-md "$out/report.md" --out-png "$out/report.png" \
    --out-json "$out/merged.json"
  report_rc=$?
fi
echo "== report rc=$report_rc; total $(($(date +%s) - t0))s; results in $out"
[ "$bench_rc" -eq 0 ] && [ "$report_rc" -eq 0 ]
