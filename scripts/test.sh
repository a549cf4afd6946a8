#!/usr/bin/env bash
# The test command: installs missing dependencies, builds tokemb (CUDA backend when nvcc is
# found, CPU-only otherwise) and runs the whole CTest suite, then installs the Python package
# (`pip install .`) into a venv and runs its pytest suite. Without a GPU the gpu-labelled tests
# are skipped: ctest marks them "Skipped", and the list after it gives each one's reason (pytest:
# "SKIPPED ... no CUDA device"); everything else must pass.
#   TOKEMB_BUILD_DIR  build directory (default: build)
#   CUDAARCHS         CUDA architectures (default: CMake's cache or tokemb's 80-real;90)
#   TOKEMB_WITH_CUDA  AUTO (default), ON or OFF: OFF skips the CUDA kernels even where nvcc is
#                     installed (the CPU backend only; also for the build directory's cache)
#   TOKEMB_PYTHON     interpreter for the Python package (default: /usr/bin/python3, Debian's,
#                     which has the python3-torch/numpy/pytest that install-deps.sh installs;
#                     `python3` on PATH may be another one, e.g. pyenv's)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${TOKEMB_BUILD_DIR:-$root/build}
TOKEMB_WITH_PYTHON_DEPS=1 bash "$root/scripts/install-deps.sh"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  ${TOKEMB_WITH_CUDA:+"-DTOKEMB_WITH_CUDA=$TOKEMB_WITH_CUDA"}
cmake --build "$build" -j "$(nproc)"
ctest --test-dir "$build" --output-on-failure -j "$(nproc)"
# ctest prints only "***Skipped": list each skipped test with the reason it gave (nothing if the
# log holds none; never fails the run).
python3 "$root/scripts/ctest_skips.py" "$build" || true

# ---- Python package ---------------------------------------------------------------------------
# A venv of Debian's interpreter that also sees its site packages (NumPy, PyTorch, pytest);
# nanobind and scikit-build-core come from PyPI. The extension links the library just built
# (installed to $build/prefix) instead of compiling it again, and its CMake tree is kept in
# $build/python, so reruns are incremental.
py=${TOKEMB_PYTHON:-/usr/bin/python3}
venv=$build/venv
[ -x "$venv/bin/python" ] || "$py" -m venv --system-site-packages "$venv"
"$venv/bin/python" -c 'import nanobind, scikit_build_core' 2>/dev/null ||
  "$venv/bin/python" -m pip install -q --disable-pip-version-check \
    'scikit-build-core>=0.10' 'nanobind>=2.4'
cmake --install "$build" --prefix "$build/prefix" >/dev/null
"$venv/bin/python" -m pip install -q --disable-pip-version-check --no-build-isolation --no-deps \
  --config-settings=build-dir="$build/python" \
  --config-settings=cmake.define.TOKEMB_PYTHON_PREBUILT="$build/prefix" "$root"
echo "== pytest (tests/python) with $("$venv/bin/python" -c 'import sys, torch, numpy; print(f"Python {sys.version.split()[0]}, torch {torch.__version__}, numpy {numpy.__version__}")')"
# Run outside the source tree so that `import tokemb` is the installed package. pytest's exit
# status 5 (no tests collected) fails this script like any other failure.
(cd "$build" && "$venv/bin/python" -m pytest -p no:cacheprovider -q -rs "$root/tests/python")
