#!/usr/bin/env bash
# Installs the build and test dependencies that are missing (Debian/Ubuntu, needs root or sudo):
# CMake, Ninja, a C++17 compiler, GoogleTest, Google Benchmark, CLI11 (the CLI's parser), Python 3,
# and clang with libFuzzer for the fuzz targets. The CUDA toolkit is optional and not installed here: without
# nvcc tokemb builds its CPU backend only (TOKEMB_WITH_CUDA=AUTO).
set -euo pipefail
need=()
command -v cmake >/dev/null || need+=(cmake)
command -v ninja >/dev/null || need+=(ninja-build)
command -v g++ >/dev/null || need+=(g++)
command -v python3 >/dev/null || need+=(python3)
[ -f /usr/include/gtest/gtest.h ] || need+=(libgtest-dev)
[ -f /usr/include/benchmark/benchmark.h ] || need+=(libbenchmark-dev)
[ -f /usr/include/CLI/CLI.hpp ] || need+=(libcli11-dev)
if [ "${TOKEMB_WITH_FUZZ_DEPS:-0}" = 1 ]; then
  command -v clang++ >/dev/null || need+=(clang)
  ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1 || need+=(libclang-rt-dev)
fi
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
echo "install-deps: installing ${need[*]}"
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
