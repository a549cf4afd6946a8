#!/usr/bin/env bash
# AddressSanitizer + UndefinedBehaviorSanitizer build of the CPU-only configuration, then the
# "cpu" tests (ctest -L cpu). Fails on a test failure and on any sanitizer report, including a
# report from a process whose exit status a test does not look at (a CLI test that expects a
# failure, say): every report is also written to <build-dir>/sanitizer-logs/, and the script
# fails if that directory is not empty at the end.
#
# Usage: scripts/ci-sanitize.sh [build-dir]      (default: build-asan)
#   JOBS     parallel compile jobs and tests (default 2)
#   CC, CXX  compilers (default: clang / clang++ when installed, else the system's cc / c++)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build-asan}
jobs=${JOBS:-2}
if [ -z "${CXX:-}" ] && command -v clang++ >/dev/null; then
  export CC=clang CXX=clang++
fi

flags="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g"
echo "== ci-sanitize: configuring $build (${CXX:-c++}; $flags)"
cmake -S "$root" -B "$build" -G Ninja \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DTOKEMB_WITH_CUDA=OFF -DTOKEMB_WITH_CURAND_HOST=OFF \
  -DTOKEMB_BUILD_BENCHMARKS=OFF \
  -DCMAKE_C_FLAGS="$flags" -DCMAKE_CXX_FLAGS="$flags" \
  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" \
  -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined" >/dev/null
echo "== ci-sanitize: building"
cmake --build "$build" -j "$jobs"

logs="$build/sanitizer-logs"
rm -rf "$logs"
mkdir -p "$logs"
# halt_on_error: the first report ends the process with a failure. allocator_may_return_null:
# a huge request returns null, as the system allocator does, instead of being reported, so the
# out-of-memory tests can check that tokemb raises OutOfMemory (and LeakSanitizer that it leaks
# nothing). log_path: every report also lands in a file that is checked below.
export ASAN_OPTIONS="halt_on_error=1:abort_on_error=0:detect_leaks=1:allocator_may_return_null=1:detect_stack_use_after_return=1:check_initialization_order=1:strict_init_order=1:log_path=$logs/asan"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$logs/ubsan"
export LSAN_OPTIONS="log_path=$logs/lsan"

# Projects that tests configure on their own (the installed-package consumer) link the
# sanitized static library, so they need the same flags; CMake takes them from the environment.
export CFLAGS="$flags" CXXFLAGS="$flags" LDFLAGS="-fsanitize=address,undefined"

echo "== ci-sanitize: ctest -L cpu"
rc=0
ctest --test-dir "$build" -L cpu --output-on-failure -j "$jobs" || rc=$?

# ASan also writes a (harmless) warning file when allocator_may_return_null turns a failed
# allocation into a null return; everything else is a finding.
findings=()
for f in "$logs"/*; do
  [ -e "$f" ] || continue
  if grep -q -E "ERROR: (Address|Leak|UndefinedBehavior)Sanitizer|runtime error:|SUMMARY: " "$f"; then
    findings+=("$f")
  fi
done
if [ ${#findings[@]} -gt 0 ]; then
  echo "ci-sanitize: ${#findings[@]} sanitizer report(s):"
  for f in "${findings[@]}"; do
    echo "---- $f"
    head -n 80 "$f"
  done
  rc=1
fi
if [ $rc -eq 0 ]; then
  echo "ci-sanitize: all cpu tests passed with no sanitizer report"
fi
exit $rc
