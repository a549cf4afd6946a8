#!/usr/bin/env bash
# Installs the build and test dependencies that are missing (Debian/Ubuntu, needs root or sudo):
# CMake, Ninja, a C++17 compiler, GoogleTest, Google Benchmark, CLI11 (the CLI's parser),
# Python 3, and clang with libFuzzer for the fuzz targets. With TOKEMB_WITH_PYTHON_DEPS=1
# (scripts/test.sh sets it), also the Python package's build and test dependencies: Debian's
# python3-dev, python3-venv, python3-numpy, python3-torch and python3-pytest, all for Debian's
# own interpreter /usr/bin/python3 (a `python3` earlier on PATH, e.g. pyenv's, does not see
# them); scripts/test.sh takes nanobind and scikit-build-core from PyPI into a venv of that
# interpreter. The CUDA toolkit is optional and not installed here: without nvcc tokemb builds
# its CPU backend only (TOKEMB_WITH_CUDA=AUTO).
set -euo pipefail
need=()
command -v cmake >/dev/null || need+=(cmake)
command -v ninja >/dev/null || need+=(ninja-build)
command -v g++ >/dev/null || need+=(g++)
command -v python3 >/dev/null || need+=(python3)
sys_py=/usr/bin/python3
if [ "${TOKEMB_WITH_PYTHON_DEPS:-0}" != 1 ]; then
  :  # only scripts/test.sh needs the Python package's build and test dependencies
elif [ ! -x "$sys_py" ]; then
  need+=(python3 python3-dev python3-venv python3-numpy python3-torch python3-pytest)
else
  ver=$("$sys_py" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  [ -f "/usr/include/python$ver/Python.h" ] || need+=(python3-dev)
  "$sys_py" -c 'import ensurepip' 2>/dev/null || need+=(python3-venv)
  "$sys_py" -c 'import numpy' 2>/dev/null || need+=(python3-numpy)
  "$sys_py" -c 'import torch' 2>/dev/null || need+=(python3-torch)
  "$sys_py" -c 'import pytest' 2>/dev/null || need+=(python3-pytest)
fi
[ -f /usr/include/gtest/gtest.h ] || need+=(libgtest-dev)
[ -f /usr/include/benchmark/benchmark.h ] || need+=(libbenchmark-dev)
[ -f /usr/include/CLI/CLI.hpp ] || need+=(libcli11-dev)
if [ "${TOKEMB_WITH_FUZZ_DEPS:-0}" = 1 ]; then
  command -v clang++ >/dev/null || need+=(clang)
  ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1 || need+=(libclang-rt-dev)
fi
# The optional NCCL component (tokemb::tokemb_nccl) compiles where nvcc and NCCL are present.
# Without a system NCCL, TOKEMB_WITH_NCCL_DEPS=1 unpacks NVIDIA's nvidia-nccl-cu13 wheel from
# PyPI (headers and libnccl.so.2) into /usr/local/lib/tokemb-nccl, where cmake/TokembNccl.cmake
# looks; nothing is pip-installed into any Python.
nccl_dir=/usr/local/lib/tokemb-nccl
want_nccl=0
if [ "${TOKEMB_WITH_NCCL_DEPS:-0}" = 1 ] && { command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ]; } &&
   ! [ -f /usr/include/nccl.h ] && ! [ -f /usr/local/include/nccl.h ] &&
   ! [ -f "$nccl_dir/nvidia/nccl/include/nccl.h" ]; then
  want_nccl=1
  python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
fi
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
if [ ${#need[@]} -gt 0 ]; then
  echo "install-deps: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
if [ "$want_nccl" = 1 ]; then
  echo "install-deps: unpacking the nvidia-nccl-cu13 wheel into $nccl_dir"
  tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps -d "$tmp" nvidia-nccl-cu13
  $sudo mkdir -p "$nccl_dir"
  $sudo python3 -c "import sys, zipfile, glob; zipfile.ZipFile(glob.glob(sys.argv[1] + '/*.whl')[0]).extractall(sys.argv[2])" "$tmp" "$nccl_dir"
  rm -rf "$tmp"
fi
