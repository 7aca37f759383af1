#!/usr/bin/env bash
# The Python package on a GPU machine: builds `nattn` with the CUDA backends (pip, scikit-build-core,
# no build isolation: scikit-build-core, nanobind, ninja and torch must already be installed, as on
# a machine without network access) into a private folder and runs the Python tests there,
# including tests/python/test_torch_cuda.py (every CUDA backend present vs the reference backend).
#
#   scripts/test_gpu_python.sh [pytest arguments]
#
#   NATTN_CUDA_ARCHS       (default: the GPU present)   architectures to build
#   NATTN_CUTLASS_INCLUDE  folder holding cute/ and cutlass/ (default: the pip package nvidia-cutlass)
#   NATTN_PY_DIR           where the build and the installed package go (default build-python-gpu/)
#   NATTN_JOBS             parallel compile jobs (default: all cores)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${NATTN_PY_DIR:-$root/build-python-gpu}"
py="${PYTHON:-python3}"

defines=(-C cmake.define.NATTN_ENABLE_CUDA=ON)
[ -n "${NATTN_CUDA_ARCHS:-}" ] && defines+=(-C "cmake.define.NATTN_CUDA_ARCHS=${NATTN_CUDA_ARCHS}")
[ -n "${NATTN_CUTLASS_INCLUDE:-}" ] && defines+=(-C "cmake.define.NATTN_CUTLASS_INCLUDE=${NATTN_CUTLASS_INCLUDE}")

mkdir -p "$dir"
echo "[nattn] building the Python package with CUDA into $dir/site"
CMAKE_BUILD_PARALLEL_LEVEL="${NATTN_JOBS:-$(nproc)}" \
  "$py" -m pip install -q --no-build-isolation --no-deps --upgrade --target "$dir/site" \
  -C build-dir="$dir/skbuild" "${defines[@]}" "$root"

cd "$root"
PYTHONPATH="$dir/site${PYTHONPATH:+:$PYTHONPATH}" "$py" -m pytest tests/python -q -p no:cacheprovider "$@"
