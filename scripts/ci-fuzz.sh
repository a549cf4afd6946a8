#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, CPU-only configuration, ASan + UBSan) and runs every one
# of them for a bounded time, starting from its seed corpus fuzz/corpus/<target>/. The corpus is
# copied to a temporary directory first, so a run never changes the source tree. Exits non-zero
# if a target finds a crash, a sanitizer error, a leak, a timeout or an out-of-memory; the
# reproducers are copied to <build-dir>/fuzz-artifacts/ (replay one with
# `<build-dir>/fuzz/fuzz_<target> <file>`).
#
# Usage: scripts/ci-fuzz.sh [build-dir]      (default: build-fuzz)
#   FUZZ_SECONDS  total wall time of the fuzzing runs (default 60); targets run two at a time
#   FUZZ_JOBS     parallel fuzzing lanes (default 2)
#   JOBS          parallel compile jobs (default 2)
#   CC, CXX       clang and clang++ (default: clang, clang++)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build-fuzz}
total=${FUZZ_SECONDS:-60}
lanes=${FUZZ_JOBS:-2}
jobs=${JOBS:-2}
cc=${CC:-clang}
cxx=${CXX:-clang++}

command -v "$cxx" >/dev/null || { echo "ci-fuzz: $cxx not found (libFuzzer needs clang)" >&2; exit 2; }

echo "== ci-fuzz: configuring $build"
cmake -S "$root" -B "$build" -G Ninja \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER="$cc" -DCMAKE_CXX_COMPILER="$cxx" \
  -DTOKEMB_WITH_CUDA=OFF -DTOKEMB_BUILD_FUZZERS=ON \
  -DTOKEMB_BUILD_TESTS=OFF -DTOKEMB_BUILD_BENCHMARKS=OFF -DTOKEMB_BUILD_TOOLS=OFF \
  -DTOKEMB_INSTALL=OFF >/dev/null
echo "== ci-fuzz: building"
cmake --build "$build" -j "$jobs" --target tokemb_fuzzers

mapfile -t targets < <(find "$build/fuzz" -maxdepth 1 -type f -name 'fuzz_*' -perm -u+x | sort)
[ ${#targets[@]} -gt 0 ] || { echo "ci-fuzz: no fuzz targets were built" >&2; exit 2; }

# Each lane runs its share of the targets one after the other; every target gets the same time.
per_lane=$(( (${#targets[@]} + lanes - 1) / lanes ))
seconds=$(( total / per_lane ))
[ "$seconds" -ge 5 ] || seconds=5
echo "== ci-fuzz: ${#targets[@]} targets, ${seconds} s each, $lanes at a time"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
artifacts="$build/fuzz-artifacts"
rm -rf "$artifacts"
mkdir -p "$artifacts"

# ASan/UBSan options for the fuzzers: fail on the first report, keep stack traces readable.
export ASAN_OPTIONS=${ASAN_OPTIONS:-halt_on_error=1:detect_leaks=1:detect_stack_use_after_return=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

run_target() {
  local bin=$1 name corpus
  name=$(basename "$bin")
  name=${name#fuzz_}
  corpus="$work/$name/corpus"
  mkdir -p "$corpus" "$work/$name/artifacts"
  if [ -d "$root/fuzz/corpus/$name" ]; then cp -R "$root/fuzz/corpus/$name/." "$corpus/"; fi
  # -timeout: one input may take at most 10 s; -rss_limit_mb / -malloc_limit_mb: a reader
  # must never allocate more than its input justifies. -max_len 8192 leaves room for llm.c
  # shards (1 KiB header).
  if "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=2048 \
      -max_len=8192 -print_final_stats=1 -artifact_prefix="$work/$name/artifacts/" "$corpus" \
      >"$work/$name/log" 2>&1; then
    echo "ok" >"$work/$name/status"
  else
    echo "failed" >"$work/$name/status"
  fi
}

for ((lane = 0; lane < lanes; ++lane)); do
  (
    for ((i = lane; i < ${#targets[@]}; i += lanes)); do run_target "${targets[$i]}"; done
  ) &
done
wait

rc=0
for bin in "${targets[@]}"; do
  name=$(basename "$bin")
  name=${name#fuzz_}
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$name/log" | tail -1)
  corpus_files=$(find "$work/$name/corpus" -type f | wc -l)
  if [ "$(cat "$work/$name/status" 2>/dev/null)" = ok ]; then
    echo "ci-fuzz: $name: ok, ${runs:-?} executions, corpus $corpus_files inputs"
  else
    rc=1
    echo "ci-fuzz: $name: FAILED after ${runs:-?} executions; the end of its log:"
    tail -n 60 "$work/$name/log" | sed 's/^/    /'
    for f in "$work/$name/artifacts"/*; do
      [ -e "$f" ] || continue
      cp "$f" "$artifacts/${name}-$(basename "$f")"
      echo "    reproducer: $artifacts/${name}-$(basename "$f")  (replay: $bin <file>)"
    done
  fi
done
exit $rc
