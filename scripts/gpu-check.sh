#!/usr/bin/env bash
# scripts/gpu-check.sh RESULTS_DIR — everything that needs an NVIDIA GPU, in one run:
#   1. configure a Release build for the local GPU (CMAKE_CUDA_ARCHITECTURES=native) and build it;
#   2. run the whole ctest suite (cpu tests in parallel, gpu tests one at a time);
#   3. compute-sanitizer memcheck, racecheck, initcheck and synccheck over a reduced gpu test
#      filter (TOKEMB_TEST_SMALL=1 drops the largest shapes: the sanitizers slow kernels 10-100x);
#   4. the Python package's tests on CUDA tensors (tests/python/test_gpu.py: bf16, streams, CUDA
#      graph capture, torch.compile), when a CUDA-enabled PyTorch is importable;
#   5. the benchmarks, the PyTorch baseline and the report (scripts/bench.sh), if present.
# Logs go to RESULTS_DIR/*.log; a summary is printed last. Budget: under 6 minutes on a 16-core
# H100 machine. Exit status: non-zero if any step failed.
set -uo pipefail
out=${1:?usage: scripts/gpu-check.sh RESULTS_DIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
root=$(cd "$(dirname "$0")/.." && pwd)
build=${TOKEMB_GPU_BUILD_DIR:-$root/build-gpu}
jobs=$(nproc)
summary=()
failed=0
t_start=$(date +%s)

# step NAME TIMEOUT_S COMMAND...: runs COMMAND with a time limit, logs to $out/NAME.log.
step() {
  local name=$1 limit=$2
  shift 2
  local t0 rc
  t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" >"$out/$name.log" 2>&1
  rc=$?
  summary+=("$(printf '%-22s %s (%ss)' "$name" "$([ $rc -eq 0 ] && echo ok || echo "FAILED rc=$rc")" $(($(date +%s) - t0)))")
  [ $rc -eq 0 ] || failed=1
  return $rc
}

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
  nvcc --version | tail -1
  cmake --version | head -1
} >"$out/environment.txt" 2>&1

step configure 120 cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CUDA_ARCHITECTURES=native -DTOKEMB_BUILD_BENCHMARKS=ON -DTOKEMB_FETCH_DEPS=ON
step build 300 cmake --build "$build" -j "$jobs"
if [ $failed -eq 0 ]; then
  step ctest-cpu 240 ctest --test-dir "$build" -L cpu -j "$jobs" --output-on-failure
  step ctest-gpu 240 ctest --test-dir "$build" -L gpu --output-on-failure
  grep -E "tests passed|Skipped|Failed" "$out/ctest-gpu.log" | tail -5 >"$out/ctest-gpu-summary.txt"

  # memcheck (the cheapest tool) sees the broad filter; racecheck, initcheck and synccheck, which
  # slow kernels far more, see every kernel once through a narrower one. Excluded everywhere: the
  # 100-run determinism loop, the 4 GB table and the deliberate out-of-memory test.
  heavy='*Over100Runs:*TableOfMoreThan2e31Elements*:*DeviceOutOfMemory*:*AcrossProcesses*'
  broad="GpuOps/f32_i64.*:GpuOps/bf16_i32.*:GpuOverwrite.*:GpuModule.*:GpuGraph.*:GpuBadInput.*:GpuBadInputRows/*:GpuInit.Uniform*:GpuIo.*:GpuDropout.*:GpuShards.*-$heavy"
  narrow="GpuOps/bf16_i32.*:GpuOverwrite.*:GpuModule.*:GpuGraph.*:GpuBadInput.ErrorRecordMatchesTheCpuRecord:GpuDropout.*-$heavy"
  for tool in memcheck racecheck initcheck synccheck; do
    extra=()
    filter=$narrow
    if [ "$tool" = memcheck ]; then
      extra=(--leak-check full)
      filter=$broad
    fi
    step "sanitizer-$tool" 150 env TOKEMB_TEST_SMALL=1 compute-sanitizer --tool "$tool" \
      --error-exitcode 1 "${extra[@]}" "$build/tests/tokemb_tests" --gtest_filter="$filter"
  done

  # The Python package against this build (python3 on PATH: a GPU machine's PyTorch with CUDA,
  # not Debian's CPU-only one). Skipped with a line in the summary where no such PyTorch exists.
  gpy=${PYTHON:-python3}
  if "$gpy" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    cmake --install "$build" --prefix "$build/prefix" >/dev/null 2>&1
    pyenv_dir="$build/pyvenv"
    step python-install 300 bash -c "[ -x '$pyenv_dir/bin/python' ] || '$gpy' -m venv --system-site-packages '$pyenv_dir'; \
      '$pyenv_dir/bin/python' -m pip install -q 'scikit-build-core>=0.10' 'nanobind>=2.4' pytest && \
      '$pyenv_dir/bin/python' -m pip install -q --no-build-isolation --no-deps \
        --config-settings=build-dir='$build/python' \
        --config-settings=cmake.define.TOKEMB_PYTHON_PREBUILT='$build/prefix' '$root'" &&
      step pytest-gpu 300 bash -c "cd '$build' && '$pyenv_dir/bin/python' -m pytest -p no:cacheprovider -q -rs '$root/tests/python'"
  else
    summary+=("$(printf '%-22s %s' pytest-gpu "skipped: no CUDA-enabled PyTorch for $gpy")")
  fi

  if [ -f "$root/scripts/bench.sh" ]; then
    # The venv above (if built) also has tokemb: the PyTorch baseline then adds its module's row.
    bench_py=$gpy
    [ -x "$build/pyvenv/bin/python" ] && bench_py="$build/pyvenv/bin/python"
    # The PyTorch CPU rows are secondary here: a short budget keeps the step inside its 200 s.
    step bench 200 env TOKEMB_BUILD_DIR="$build" PYTHON="$bench_py" TOKEMB_TORCH_CPU_BUDGET_S=15 \
      bash "$root/scripts/bench.sh" "$out/bench"
  fi
fi

echo
echo "== tokemb gpu-check summary ($(head -3 "$out/environment.txt" | tail -1)) =="
for line in "${summary[@]}"; do echo "  $line"; done
[ -f "$out/pytest-gpu.log" ] && echo "  pytest: $(tail -1 "$out/pytest-gpu.log")"
for f in ctest-cpu ctest-gpu; do
  [ -f "$out/$f.log" ] && echo "  $f: $(grep -E 'tests passed' "$out/$f.log" | tail -1)"
done
for tool in memcheck racecheck initcheck synccheck; do
  f="$out/sanitizer-$tool.log"
  [ -f "$f" ] && echo "  $tool: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$f" | tail -1)"
done
echo "  total $(($(date +%s) - t_start))s; logs in $out"
# Only a few files come back from a lent device machine: every log in one archive as well.
tar -czf "$out/gpu-check.tgz" -C "$out" --exclude=gpu-check.tgz . 2>/dev/null &&
  echo "  archive: $out/gpu-check.tgz"
exit $failed
