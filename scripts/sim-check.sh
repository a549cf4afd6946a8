#!/usr/bin/env bash
# scripts/sim-check.sh [--perf] [--src DIR] [--filter GTEST_FILTER] [--out DIR]
#
# Runs tokemb's CUDA kernels without a GPU, on GPGPU-Sim (a simulator that executes the PTX nvcc
# embeds in the binary, warp by warp, on the CPU):
#   1. builds the simulator once, from its published source (DIR, default ../shared/gpusim/, which
#      holds gpgpu-sim-src.tar.gz) plus this project's patches (scripts/gpusim/*.patch), into a
#      cache keyed by the hash of the tarball, the patch and this script's build recipe:
#      ${TOKEMB_CACHE:-~/.cache/tokemb}/gpusim-<key>/ (reused by every later run on the machine);
#   2. builds tokemb_tests (and, for --perf, tokemb_sim_perf) as compute_75 PTX ("75-virtual",
#      the oldest target of CUDA 13; the simulator runs PTX, not SASS) linked to a shared cudart,
#      in build-sim/ (TOKEMB_SIM_BUILD_DIR);
#   3. runs every gpu-labelled test that the simulator can run, each in its own process
#      (functional mode, SM75_RTX2060 configuration, TOKEMB_TEST_SIM=1: simulator-sized cases),
#      as many at a time as there are cores (SIM_JOBS to change), and
#      prints "N passed, N failed, N skipped"; exit status non-zero on any failure, time-out or
#      crash. Logs and summary.tsv in build-sim/results/ (--out).
# --perf: instead of the tests, runs the forward and both backward strategies at B=1,
#   T=${TOKEMB_SIM_T:-256}, D=768 (uniform and all-identical ids; bench/sim_perf.cu) beside a
#   device-to-device copy of the same bytes in the simulator's performance model, and prints each
#   kernel's simulated cycles and the case's ratio to the copy (scripts/gpusim/perf_report.py).
#   A relative signal to check ideas against, not an H200 and not a benchmark.
# What the simulator cannot run (left out, listed in README "Testing"): cuRAND device generators
# (GpuInit), CUDA graphs, device out-of-memory, 4 GB tables, multi-process and 100-run loops.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
kit=$root/scripts/gpusim
src=$root/../shared/gpusim
perf=0
filter=
out=
while [ $# -gt 0 ]; do
  case $1 in
    --perf) perf=1 ;;
    --src) src=${2:?--src needs a directory}; shift ;;
    --filter) filter=${2:?--filter needs a gtest filter}; shift ;;
    --out) out=${2:?--out needs a directory}; shift ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "sim-check: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
tarball=$src/gpgpu-sim-src.tar.gz
[ -f "$tarball" ] || { echo "sim-check: no simulator source at '$tarball' (--src DIR)" >&2; exit 2; }
cuda=${CUDA_HOME:-/usr/local/cuda}
[ -x "$cuda/bin/nvcc" ] || { echo "sim-check: no CUDA toolkit at '$cuda' (CUDA_HOME)" >&2; exit 2; }
jobs=${SIM_JOBS:-$(nproc)}
build=${TOKEMB_SIM_BUILD_DIR:-$root/build-sim}
out=${out:-$build/results}
t_start=$(date +%s)
stage() { local name=$1 t0; shift; t0=$(date +%s); echo "== sim-check: $name"; "$@"; echo "== sim-check: $name took $(( $(date +%s) - t0 )) s"; }

# ---- 1. the simulator, built once per (tarball, patch, recipe) ------------------------------------
# The key covers what changes the simulator's binary: the source, our patches (scripts/gpusim/
# *.patch: 10-cuda13 makes it run CUDA 13 binaries, 20-bitfield-64bit fixes bfe/bfi), and the
# lines of this script between the two markers (the build recipe).
recipe=$(sed -n '/^# >>> simulator recipe/,/^# <<< simulator recipe/p' "$0")
patches=("$kit"/*.patch)  # applied in name order
key=$( { sha256sum <"$tarball"; cat "${patches[@]}"; echo "$recipe"; } | sha256sum | cut -c1-16)
cache=${TOKEMB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tokemb}/gpusim-$key

# >>> simulator recipe
sim_deps() {
  local need=()
  command -v bison >/dev/null || need+=(bison)
  command -v flex >/dev/null || need+=(flex)
  command -v make >/dev/null || need+=(make)
  command -v bc >/dev/null || need+=(bc)
  command -v git >/dev/null || need+=(git)
  [ -f /usr/include/zlib.h ] || need+=(zlib1g-dev)
  [ -f /usr/include/GL/gl.h ] || need+=(libgl-dev)
  python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
  if [ ${#need[@]} -gt 0 ]; then
    local sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
    echo "sim-check: installing ${need[*]}"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
}

build_simulator() {
  local tmp=$cache.tmp-$$
  rm -rf "$tmp"; mkdir -p "$tmp"
  # cuobjdump (which the simulator runs to pull PTX out of a binary) is not part of the CUDA 13.0
  # install here; NVIDIA's wheel holds just bin/cuobjdump (13.2 reads 13.0 binaries).
  python3 -m pip download -q --disable-pip-version-check --no-deps -d "$tmp/wheels" \
    "nvidia-cuda-cuobjdump==13.2.51"
  python3 -c "import sys, zipfile, glob; zipfile.ZipFile(glob.glob(sys.argv[1] + '/*.whl')[0]).extractall(sys.argv[2])" \
    "$tmp/wheels" "$tmp/cuobj"
  chmod +x "$tmp/cuobj/nvidia/cu13/bin/cuobjdump"
  # A CUDA "install path" for the simulator: the toolkit's files plus that cuobjdump.
  mkdir -p "$tmp/cuda/bin"
  local f
  for f in "$cuda"/*; do [ "$(basename "$f")" = bin ] || ln -sfn "$f" "$tmp/cuda/"; done
  for f in "$cuda"/bin/*; do ln -sfn "$f" "$tmp/cuda/bin/"; done
  ln -sfn ../../cuobj/nvidia/cu13/bin/cuobjdump "$tmp/cuda/bin/cuobjdump"
  mkdir -p "$tmp/src"
  tar -xzf "$tarball" -C "$tmp/src" --strip-components=1
  # Its CMake files ask git for a build string.
  (cd "$tmp/src" && git init -q && git add -A && git -c user.email=sim@local -c user.name=sim commit -qm upstream &&
    for f in "${patches[@]}"; do git apply "$f" || exit 1; done)
  (export CUDA_INSTALL_PATH="$tmp/cuda" PATH="$tmp/cuda/bin:$PATH"
   cmake -S "$tmp/src" -B "$tmp/src/build" -DCMAKE_BUILD_TYPE=Release -DCUDAToolkit_ROOT="$tmp/cuda" \
     -DGPGPUSIM_ENABLE_TRACE=OFF >"$tmp/cmake.log" 2>&1 &&
   make -C "$tmp/src/build" -j"$jobs" cudart >"$tmp/build.log" 2>&1) ||
    { echo "sim-check: simulator build failed; log: $tmp/build.log" >&2; tail -20 "$tmp/build.log" >&2; exit 1; }
  mkdir -p "$tmp/lib" "$tmp/cfg"
  local v
  for v in libcudart.so libcudart.so.12 libcudart.so.13; do ln -sfn ../src/build/libcudart.so "$tmp/lib/$v"; done
  cp "$tmp/src/configs/tested-cfgs/SM75_RTX2060/"* "$tmp/cfg/"
  # Published as a whole or not at all: a run killed half-way leaves only the .tmp directory.
  rm -rf "$tmp/src/.git" "$tmp/wheels"
  rm -rf "$cache"; mv "$tmp" "$cache"
}
# <<< simulator recipe

if [ -f "$cache/lib/libcudart.so.13" ]; then
  echo "== sim-check: simulator cached in $cache"
else
  stage "install simulator build dependencies" sim_deps
  stage "build the simulator into $cache (once per machine: a few minutes)" build_simulator
fi

# ---- 2. the project, as compute_75 PTX with a shared cudart ---------------------------------------
# The tests need tokemb_tests; --perf needs tokemb_sim_perf.
build_project() {
  local benchmarks=OFF
  [ "$perf" = 0 ] || benchmarks=ON  # tokemb_sim_perf lives in bench/
  mkdir -p "$build"
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_CUDA_ARCHITECTURES=75-virtual -DCMAKE_CUDA_RUNTIME_LIBRARY=Shared \
    -DTOKEMB_WITH_CUDA=ON -DTOKEMB_WITH_NCCL=OFF -DTOKEMB_BUILD_BENCHMARKS=$benchmarks \
    -DTOKEMB_BUILD_TOOLS=OFF -DTOKEMB_BUILD_PYTHON=OFF -DTOKEMB_INSTALL=OFF >"$build/configure.log" 2>&1 ||
    { cat "$build/configure.log" >&2; exit 1; }
  ninja -C "$build" -j"$jobs" "$@"
}

# The simulator's environment: its libcudart in place of NVIDIA's, functional mode (instructions
# executed, no timing model) unless --perf, our PTX filter for the two forms its parser refuses.
# Its CUDA_INSTALL_PATH is $build/sim-cuda: the cached toolkit's files, except that bin/ptxas is
# scripts/gpusim/ptxas-memo.sh, which answers the simulator's per-process register-count queries
# from $build/sim-ptxas-memo once the real ptxas has answered them (30 s of each test's start-up).
sim_env() {
  local simcuda=$build/sim-cuda f
  rm -rf "$simcuda"; mkdir -p "$simcuda/bin"
  for f in "$cache"/cuda/*; do [ "$(basename "$f")" = bin ] || ln -sfn "$f" "$simcuda/"; done
  for f in "$cache"/cuda/bin/*; do ln -sfn "$f" "$simcuda/bin/"; done
  ln -sfn "$kit/ptxas-memo.sh" "$simcuda/bin/ptxas"
  export TOKEMB_SIM_REAL_PTXAS="$cache/cuda/bin/ptxas" TOKEMB_SIM_PTXAS_MEMO="$build/sim-ptxas-memo"
  export PTX_SIM_MODE_FUNC=1 LD_LIBRARY_PATH="$cache/lib" CUDA_INSTALL_PATH="$simcuda" PATH="$simcuda/bin:$PATH" \
    GPGPUSIM_PTX_FILTER="$kit/ptxfilter.py" CUDA_LAUNCH_BLOCKING=1 TOKEMB_TEST_SIM=1
}

# A directory in which one simulated process runs: the simulator reads gpgpusim.config from the
# working directory and leaves its PTX extracts there.
sim_dir() {
  local dir=$1 mode=$2
  mkdir -p "$dir"
  cp "$cache"/cfg/*.icnt "$dir/"
  sed "s/^-gpgpu_ptx_sim_mode .*/-gpgpu_ptx_sim_mode $mode/" "$cache/cfg/gpgpusim.config" >"$dir/gpgpusim.config"
}

# ---- 3. the gpu-labelled tests, one process each ----------------------------------------------------
# Left out, because the simulator cannot run them (README "Testing" lists them too):
#   GpuInit.*                    cuRAND's device generators: libcurand ships no PTX the simulator runs
#   GpuGraph.*, *Graph*          CUDA graphs (not implemented by the simulator)
#   *DeviceOutOfMemory*          its allocator never fails
#   *TableOfMoreThan2e31Elements* 4 GB tables (host memory and hours of simulation)
#   *AcrossProcesses*, GpuDeterminism.ChildProcessPart   a child process per run
#   *Over100Runs                 100 repetitions of a GPT-2-sized backward
default_filter='Gpu*:*/Gpu*-GpuInit.*:GpuGraph.*:*Graph*:*DeviceOutOfMemory*:*TableOfMoreThan2e31Elements*:*AcrossProcesses*:GpuDeterminism.ChildProcessPart:*Over100Runs'

run_one() {  # run_one TEST: one test in its own process and directory; prints a summary.tsv row
  local t=$1 dir rc st s
  dir=$out/run/${t//\//_}
  sim_dir "$dir" 1
  s=$(date +%s)
  (cd "$dir" && timeout --kill-after=10 "${PER_TEST_TIMEOUT:-900}" "$build/tests/tokemb_tests" \
     --gtest_filter="$t" --gtest_brief=0 >"$dir/log.txt" 2>&1)
  rc=$?
  if grep -q '^\[  PASSED  \] 1 test' "$dir/log.txt"; then st=PASS
  elif grep -q '^\[  SKIPPED \] 1 test' "$dir/log.txt"; then st=SKIP
  elif grep -q '^\[  FAILED  \] 1 test' "$dir/log.txt"; then st=FAIL
  elif [ $rc -ge 124 ]; then st=TIMEOUT
  else st="CRASH(rc=$rc)"; fi
  # keep the log, drop the PTX extracts (megabytes per test)
  find "$dir" -maxdepth 1 -type f ! -name log.txt -delete
  printf '%s\t%s\t%s\n' "$t" "$st" "$(( $(date +%s) - s ))"
}

run_tests() {
  rm -rf "$out"; mkdir -p "$out"
  # listed without the simulator (its banner goes to stdout too)
  "$build/tests/tokemb_tests" --gtest_list_tests --gtest_filter="${filter:-$default_filter}" |
    awk '/^[^ ]/{s=$1} /^  [^ ]/{print s $1}' >"$out/tests.txt"
  local total; total=$(wc -l <"$out/tests.txt")
  [ "$total" -gt 0 ] || { echo "sim-check: no test matches the filter" >&2; exit 1; }
  echo "sim-check: $total tests, $jobs at a time; logs in $out/run/"
  sim_env
  export -f run_one sim_dir
  export out build cache
  # The first test runs alone: it fills the ptxas memo, so that the others start in seconds instead
  # of each asking ptxas the same questions at once.
  { head -n 1 "$out/tests.txt" | xargs -P 1 -I{} bash -c 'run_one "$1"' _ {}
    tail -n +2 "$out/tests.txt" | xargs -P "$jobs" -I{} bash -c 'run_one "$1"' _ {}
  } | tee "$out/summary.tsv"
  local pass fail skip
  pass=$(awk -F'\t' '$2=="PASS"' "$out/summary.tsv" | wc -l)
  skip=$(awk -F'\t' '$2=="SKIP"' "$out/summary.tsv" | wc -l)
  fail=$(( total - pass - skip ))
  if [ "$fail" -gt 0 ]; then
    echo "sim-check: failures:"
    awk -F'\t' -v out="$out" '$2!="PASS" && $2!="SKIP" {d=$1; gsub("/", "_", d); print "  " $1 "  " $2 "  (log: " out "/run/" d "/log.txt)"}' "$out/summary.tsv"
  fi
  echo "sim-check: took $(( $(date +%s) - t_start )) s in all"
  echo "$pass passed, $fail failed, $skip skipped"
  [ "$fail" -eq 0 ]
}

if [ "$perf" = 1 ]; then
  stage "build tokemb_sim_perf for compute_75" build_project tokemb_sim_perf
  sim_env
  unset TOKEMB_TEST_SIM PTX_SIM_MODE_FUNC
  # T = 256 by default: the performance model simulates a few thousand cycles per second here,
  # and T = 1024 takes about four times as long (TOKEMB_SIM_T=1024 for the issue's shape).
  export TOKEMB_SIM_T=${TOKEMB_SIM_T:-256}
  rm -rf "$out/perf"
  sim_dir "$out/perf" 0
  echo "== sim-check: tokemb_sim_perf at B=1, T=$TOKEMB_SIM_T, D=768 in the performance model (log: $out/perf/sim.log)"
  (cd "$out/perf" && "$build/bench/tokemb_sim_perf" >sim.log 2>&1) ||
    { tail -20 "$out/perf/sim.log" >&2; exit 1; }
  python3 "$kit/perf_report.py" "$out/perf/sim.log" --markdown "$out/perf/report.md"
  echo "sim-check: took $(( $(date +%s) - t_start )) s in all; report: $out/perf/report.md"
else
  stage "build tokemb_tests for compute_75" build_project tokemb_tests
  run_tests
fi
